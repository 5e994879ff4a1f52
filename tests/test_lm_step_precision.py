"""charlstm.ops.lm_sgd_step in a narrower compute dtype (the AMP way), and its refusal of 16-bit
weights.

The specification is the same step written with autograd: the weights (the master copy) cast to
the compute dtype for the recurrence and the classifier, the loss computed in the weights' dtype,
the gradients cast back, clipping and SGD in the weights' dtype. The fused step is held to the
float64 step by the relative rule of tests/test_ops.py: at most twice the specification's own
error, plus a floor of about one unit of the compute dtype.
"""

import pytest
import torch
import torch.nn.functional as F

from charlstm import ops
from helpers import LM_STEP_GATES as GATES, autograd_step, make

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="16-bit compute runs on CUDA only: it needs a GPU")
FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def fused_step(cell, window, state, weights, lr, clip, compute):
    w = {k: None if v is None else v.clone() for k, v in weights.items()}
    loss, norm, logits, new_state = ops.lm_sgd_step(window, state, *w.values(), cell=cell, lr=lr, clip=clip,
                                                     compute_dtype=compute)
    return loss, norm, logits, w, new_state


def flat(step):
    loss, norm, logits, weights, state = step
    return [loss, norm, logits, *[v for v in weights.values() if v is not None], *state]


def error(a, b):
    return (a.double() - b.double()).abs().max().item()


def assert_within_twice_the_specs_error(got, spec, exact, floor):
    for g, s, e in zip(flat(got), flat(spec), flat(exact)):
        assert g.dtype == e.dtype == s.dtype
        assert error(g, e) <= 2 * error(s, e) + floor * max(1.0, e.abs().max().item())


@pytest.mark.parametrize("cell", list(GATES))
def test_float32_compute_of_float64_weights(cell, device):
    window, state, weights = make(cell, 10, 8, 27, 33, device=device)
    exact = autograd_step(cell, window, state, weights, lr=1.0, clip=0.25)
    assert exact[1].item() > 0.25
    spec = autograd_step(cell, window, state, weights, 1.0, 0.25, torch.float32)
    got = fused_step(cell, window, state, weights, 1.0, 0.25, torch.float32)
    assert_within_twice_the_specs_error(got, spec, exact, FLOOR[torch.float32])
    # It did compute in float32: its logits carry float32's rounding, not float64's.
    assert error(got[2], exact[2]) > 1e-9


def test_compute_dtype_equal_to_the_weights_is_the_plain_step():
    window, state, weights = make("gru", 5, 4, 27, 9)
    a = fused_step("gru", window, state, weights, 0.3, 1.0, torch.float64)
    b = fused_step("gru", window, state, weights, 0.3, 1.0, None)
    for x, y in zip(flat(a), flat(b)):
        assert torch.equal(x, y)


def test_opcheck_with_a_compute_dtype():
    window, state, weights = make("lstm", 3, 2, 5, 4)
    torch.library.opcheck(torch.ops.charlstm.lm_sgd_step.default,
                          (window, *state, *weights.values(), "lstm", 0.5, 1.0, torch.float32))


@pytest.mark.parametrize("dtype, advice", [
    (torch.bfloat16, r"0\.4% of a weight rounds away: keep the weights in float32 \(the master copy\) and pass "
                     r"compute_dtype=torch\.bfloat16"),
    (torch.float16, r"0\.05% of a weight rounds away: .* compute_dtype=torch\.float16")])
def test_16bit_weights_are_refused_with_what_to_do(dtype, advice, device):
    window, state, weights = make("lstm", 3, 2, 5, 4, device=device)
    weights = {k: v.to(dtype) for k, v in weights.items()}
    state = tuple(s.to(dtype) for s in state)
    with pytest.raises(RuntimeError, match=r"lm_sgd_step updates the weights in place, and in \w+ an update "
                                           r"smaller than about " + advice):
        ops.lm_sgd_step(window, state, *weights.values(), cell="lstm", lr=1.0, clip=1.0)


@pytest.mark.parametrize("weights_dtype, compute, message", [
    (torch.float32, torch.float64, r"compute_dtype Double is wider than the weights' Float"),
    (torch.float64, torch.int64, r"compute_dtype Long is not one that charlstm's (CPU|CUDA) kernels take"),
])
def test_bad_compute_dtypes_raise_clear_errors(weights_dtype, compute, message, device):
    window, state, weights = make("rnn_tanh", 3, 2, 5, 4, dtype=weights_dtype, device=device)
    with pytest.raises(RuntimeError, match=message):
        ops.lm_sgd_step(window, state, *weights.values(), cell="rnn_tanh", lr=1.0, clip=1.0,
                        compute_dtype=compute)


def test_16bit_compute_is_refused_on_the_cpu():
    window, state, weights = make("lstm", 3, 2, 5, 4, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"compute_dtype BFloat16 is not one that charlstm's CPU kernels take: "
                                           r"float32 or float64 \(16-bit compute runs on CUDA\)"):
        ops.lm_sgd_step(window, state, *weights.values(), cell="lstm", lr=1.0, clip=1.0,
                        compute_dtype=torch.bfloat16)


@CUDA
@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("compute", [torch.float16, torch.bfloat16])
def test_16bit_compute_of_float32_weights(cell, compute):
    window, state, weights = make(cell, 20, 16, 27, 64, device="cuda")
    exact = autograd_step(cell, window, state, weights, lr=1.0, clip=0.5)
    as32 = {k: None if v is None else v.float() for k, v in weights.items()}
    state32 = tuple(s.float() for s in state)
    spec = autograd_step(cell, window, state32, as32, 1.0, 0.5, compute)
    got = fused_step(cell, window, state32, as32, 1.0, 0.5, compute)
    assert_within_twice_the_specs_error(got, spec, exact, FLOOR[compute])


@CUDA
@pytest.mark.parametrize("compute", [torch.float16, torch.bfloat16])
def test_16bit_compute_with_a_gradient_norm_near_1e5(compute):
    """A norm above float16's largest value (65504) while every gradient fits: computed in float32,
    it is finite and clipping scales the step, instead of an infinite norm skipping it."""
    window, state, weights = make("rnn_tanh", 5, 4, 27, 16, seed=2, device="cuda")
    weights["w_out"] = weights["w_out"] * 6e4
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        weights[k] = weights[k] * 3e-3
    state = tuple(s * 3e-3 for s in state)
    exact = autograd_step("rnn_tanh", window, state, weights, lr=1.0, clip=1.0)
    assert 65504 < exact[1].item() < 3e5
    as32 = {k: v.float() for k, v in weights.items()}
    before = {k: v.clone() for k, v in as32.items()}
    loss, norm, logits, new_state = ops.lm_sgd_step(window, tuple(s.float() for s in state), *as32.values(),
                                                     cell="rnn_tanh", lr=1.0, clip=1.0, compute_dtype=compute)
    assert torch.isfinite(loss) and torch.isfinite(norm)
    assert abs(norm.item() / exact[1].item() - 1) < 0.02
    # Clipped to norm 1: the whole update has length lr * 1 and the direction of the exact one (up
    # to float32's spacing of 0.004 at the largest weights, about 3.6e4).
    got = torch.cat([(as32[k].double() - before[k].double()).flatten() for k in as32])
    want = torch.cat([(exact[3][k] - weights[k]).flatten() for k in as32])
    assert abs(got.norm().item() - 1) < 0.05
    assert F.cosine_similarity(got, want, dim=0).item() > 0.99
