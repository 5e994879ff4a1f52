"""charlstm.ops.lm_sgd_step: one fused training step against the same step written with autograd.

The specification of a step is the reference recurrence, `y @ w_out + b_out`, F.cross_entropy,
tf.clip_by_global_norm (scale clip / max(norm, clip)) and w -= lr * grad. In float64 the two agree
to 1e-10 (the same sums in a different order); float32 is held to float64 with the relative rule
of tests/test_ops.py (twice the float32 reference's own error, plus a floor of 1e-6).
"""

import pytest
import torch
from helpers import LM_STEP_GATES as GATES
from helpers import autograd_step, fused_step, make

from charlstm import ops, reference

# (T, B, V, H): T=1, B=1, hidden sizes that are not multiples of 8, the assignment's 27 symbols.
SHAPES = [(1, 1, 5, 3), (4, 3, 27, 7), (10, 8, 27, 33), (7, 2, 11, 64)]


def assert_steps_close(got, want, atol):
    loss, norm, logits, weights, state = got
    loss_w, norm_w, logits_w, weights_w, state_w = want
    torch.testing.assert_close(loss, loss_w, atol=atol, rtol=0)
    torch.testing.assert_close(norm, norm_w, atol=atol, rtol=0)
    torch.testing.assert_close(logits, logits_w, atol=atol, rtol=0)
    for k in weights_w:
        if weights_w[k] is None:
            assert weights[k] is None
        else:
            torch.testing.assert_close(weights[k], weights_w[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")
    assert len(state) == len(state_w)
    for s, s_w in zip(state, state_w):
        torch.testing.assert_close(s, s_w, atol=atol, rtol=0)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}V{}H{}".format(*s))
def test_step_equals_autograd_step(cell, shape, device):
    window, state, weights = make(cell, *shape, device=device)
    # clip 0.1 is below the gradient norm of these weights (asserted), so clipping is exercised.
    want = autograd_step(cell, window, state, weights, lr=0.7, clip=0.1)
    assert want[1].item() > 0.1
    assert_steps_close(fused_step(cell, window, state, weights, lr=0.7, clip=0.1), want, atol=1e-10)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("bias", [(True, False), (False, True), (False, False)])
def test_step_with_one_or_no_bias(cell, bias, device):
    window, state, weights = make(cell, 5, 4, 27, 9, bias=bias, device=device)
    want = autograd_step(cell, window, state, weights, lr=1.3, clip=0.25)
    assert_steps_close(fused_step(cell, window, state, weights, lr=1.3, clip=0.25), want, atol=1e-10)


@pytest.mark.parametrize("clip", [0.0, -1.0, 1e9])
def test_no_clipping_when_clip_is_off_or_above_the_norm(clip):
    window, state, weights = make("lstm", 6, 4, 27, 16)
    plain = autograd_step("lstm", window, state, weights, lr=2.0, clip=0.0)
    got = fused_step("lstm", window, state, weights, lr=2.0, clip=clip)
    assert_steps_close(got, plain, atol=1e-10)
    clipped = fused_step("lstm", window, state, weights, lr=2.0, clip=0.01)
    assert not torch.allclose(clipped[3]["w_hh"], got[3]["w_hh"])


@pytest.mark.parametrize("cell", list(GATES))
# H = 67: weights of more than 4k values (the norm's chunks) and sides that are not multiples of 8
# (the tails of the blocked transposed update).
@pytest.mark.parametrize("shape", [(10, 16, 27, 32), (5, 8, 27, 67)], ids=lambda s: "T{}B{}V{}H{}".format(*s))
def test_float32_within_twice_the_reference_error(cell, shape, device):
    window, state, weights = make(cell, *shape, device=device)
    exact = autograd_step(cell, window, state, weights, lr=1.0, clip=1.25)
    as32 = ({k: None if v is None else v.float() for k, v in weights.items()}, tuple(s.float() for s in state))
    ref32 = autograd_step(cell, window, as32[1], as32[0], lr=1.0, clip=1.25)
    got32 = fused_step(cell, window, as32[1], as32[0], lr=1.0, clip=1.25)
    flat = lambda step: [step[0], step[1], step[2], *[v for v in step[3].values() if v is not None], *step[4]]
    for g, r, e in zip(flat(got32), flat(ref32), flat(exact)):
        ref_err = (r.double() - e).abs().max().item()
        assert (g.double() - e).abs().max().item() <= 2 * ref_err + 1e-6


def test_carried_state_over_windows_equals_one_long_sequence_without_updates(device):
    """lr = 0: three windows with the state carried give the long sequence's final state."""
    window, state, weights = make("lstm", 12, 3, 27, 8, device=device)
    carried = state
    for k in range(3):
        _, _, _, carried = ops.lm_sgd_step(window[4 * k:4 * k + 5], carried, *weights.values(), cell="lstm",
                                           lr=0.0, clip=1.0)
    _, (hT, cT) = reference.lstm(window[:-1], state[0], state[1], weights["w_ih"], weights["w_hh"],
                                 weights["b_ih"], weights["b_hh"])
    torch.testing.assert_close(carried[0], hT, atol=1e-12, rtol=0)
    torch.testing.assert_close(carried[1], cT, atol=1e-12, rtol=0)


def test_weights_that_are_views_are_updated_in_place(device):
    """torch.nn.Linear keeps [V, H]: its weight.t() is a strided view the step must update."""
    window, state, weights = make("gru", 4, 2, 27, 6, device=device)
    linear = torch.nn.Linear(6, 27, dtype=torch.float64, device=device)
    with torch.no_grad():
        linear.weight.copy_(weights["w_out"].t())
    want = autograd_step("gru", window, state, weights, lr=0.5, clip=1.0)
    w = {k: v.clone() for k, v in weights.items()}
    ops.lm_sgd_step(window, state, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], linear.weight.t(), w["b_out"],
                    cell="gru", lr=0.5, clip=1.0)
    torch.testing.assert_close(linear.weight.detach().t(), want[3]["w_out"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_a_non_finite_step_changes_no_weight(poison, device):
    window, state, weights = make("lstm", 4, 2, 27, 6, device=device)
    weights["w_out"][0, 0] = float(poison)
    before = {k: v.clone() for k, v in weights.items()}
    loss, norm, _, _ = ops.lm_sgd_step(window, state, *weights.values(), cell="lstm", lr=1.0, clip=1.0)
    assert not (torch.isfinite(loss) and torch.isfinite(norm))
    for k, v in weights.items():
        assert torch.equal(v, before[k]) or (torch.isnan(v) == torch.isnan(before[k])).all() and \
            torch.equal(v.nan_to_num(), before[k].nan_to_num())


def test_opcheck():
    window, state, weights = make("lstm", 3, 2, 5, 4)
    torch.library.opcheck(torch.ops.charlstm.lm_sgd_step.default,
                          (window, *state, *weights.values(), "lstm", 0.5, 1.0))
    window, state, weights = make("gru", 3, 2, 5, 4, bias=(True, False))
    torch.library.opcheck(torch.ops.charlstm.lm_sgd_step.default,
                          (window, state[0], None, *weights.values(), "gru", 0.5, 0.0))


def call(cell="lstm", window=None, state=None, lr=1.0, clip=1.0, **changes):
    w, s, weights = make(cell, 3, 2, 5, 4)
    weights.update(changes)
    return ops.lm_sgd_step(w if window is None else window, s if state is None else state, *weights.values(),
                           cell=cell, lr=lr, clip=clip)


@pytest.mark.parametrize("kwargs, message", [
    ({"window": torch.zeros(4, 2)}, r"window must hold int64 token ids.*\.long\(\)"),
    ({"window": torch.zeros(4, dtype=torch.long)}, r"window must have shape \[T \+ 1, B\] with T >= 1"),
    ({"window": torch.zeros(1, 2, dtype=torch.long)}, r"window must have shape \[T \+ 1, B\] with T >= 1"),
    ({"window": torch.tensor([[0, 1], [2, 7], [1, 1]])}, r"input ids window\[:-1\] must lie in \[0, 5\).*from 0 to 7"),
    ({"window": torch.tensor([[0, 1], [2, 3], [1, -1]])}, r"target ids window\[1:\] must lie in \[0, 5\).*from -1 to 3"),
    ({"state": (torch.zeros(2, 4, dtype=torch.float64),)}, r"the LSTM needs a cell state c"),
    ({"state": (torch.zeros(2, 4, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64))},
     r"c must have shape \[2, 4\]"),
    ({"state": (torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))},
     r"h must have shape \[2, 4\]"),
    ({"cell": "gru", "state": (torch.zeros(2, 4, dtype=torch.float64),) * 2}, r"c must be None: only the LSTM"),
    ({"w_out": torch.zeros(5, 5, dtype=torch.float64)}, r"w_out must have shape \[4, vocabulary\]"),
    ({"w_out": torch.zeros(4, 5)}, r"w_out has dtype Float but w_hh has Double"),
    ({"b_out": torch.zeros(4, dtype=torch.float64)}, r"b_out must have shape \[5\] \(w_out.size\(1\)\)"),
    ({"lr": float("nan")}, r"lr must be a finite number"),
    ({"clip": float("nan")}, r"clip must be a number"),
])
def test_bad_inputs_raise_clear_errors(kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        call(**kwargs)


def test_bad_cell_name_raises():
    with pytest.raises(ValueError, match="cell must be one of lstm, gru, rnn_tanh, rnn_relu, got 'lsmt'"):
        ops.lm_sgd_step(*make("lstm", 2, 2, 5, 4)[:2], *make("lstm", 2, 2, 5, 4)[2].values(), cell="lsmt",
                        lr=1.0, clip=1.0)


def test_target_vocabulary_may_differ_from_input_vocabulary():
    """Targets index w_out's columns: with 3 output symbols, a target id 3 is out of range."""
    window, state, weights = make("rnn_tanh", 3, 2, 5, 4)
    weights["w_out"], weights["b_out"] = weights["w_out"][:, :3].clone(), weights["b_out"][:3].clone()
    window = window % 3
    want = autograd_step("rnn_tanh", window, state, weights, lr=0.5, clip=1.0)
    assert_steps_close(fused_step("rnn_tanh", window, state, weights, lr=0.5, clip=1.0), want, atol=1e-10)
    window[-1, 0] = 4
    with pytest.raises(RuntimeError, match=r"target ids window\[1:\] must lie in \[0, 3\)"):
        fused_step("rnn_tanh", window, state, weights, lr=0.5, clip=1.0)


# ---- non-contiguous window, state and weights ----

def _relayout(t, layout):
    """An equal tensor laid out otherwise in memory (not contiguous); 1-D ones strided."""
    if layout == "strided" or t.dim() < 2:
        out = torch.stack([t, torch.zeros_like(t)], -1)[..., 0]
    else:
        out = t.transpose(0, -1).contiguous().transpose(0, -1)
    assert not out.is_contiguous() and torch.equal(out, t)
    return out


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_non_contiguous_window_state_and_weights(cell, layout, device):
    """A window taken as every other column of a larger batch, or from batch-first storage; states
    and every weight as views, which the step must update in place through the view."""
    window, state, weights = make(cell, 6, 4, 27, 9, device=device)
    want = autograd_step(cell, window, state, weights, lr=0.7, clip=0.1)
    assert want[1].item() > 0.1
    w = {k: None if v is None else _relayout(v.clone(), layout) for k, v in weights.items()}
    loss, norm, logits, new_state = ops.lm_sgd_step(
        _relayout(window, layout), tuple(_relayout(s, layout) for s in state), w["w_ih"], w["w_hh"], w["b_ih"],
        w["b_hh"], w["w_out"], w["b_out"], cell=cell, lr=0.7, clip=0.1)
    assert_steps_close((loss, norm, logits, w, new_state), want, atol=1e-10)
