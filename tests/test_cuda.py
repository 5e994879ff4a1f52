"""What only a GPU can show: 16-bit token ids and cells, long sequences over many thread blocks,
host-side id errors, streams and devices, waits for the device, determinism, torch.compile.

Every test here needs a visible CUDA device and is skipped, with that reason, without one. The
parity tests of tests/test_ops.py, tests/test_ops_layouts.py and tests/test_lm_step.py run on
CUDA through their `device` fixture as well. Accuracy follows the relative rule of
tests/test_ops.py: the fused op's error against float64 is at most twice the error of the
reference run in the same dtype, plus a floor of about one unit of that dtype times the largest
value compared.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from charlstm import ops, reference
from ops_helpers import GATES, assert_within_twice_the_reference, cell_fn, grads, make, seq_fn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible: these tests need a GPU")
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
LOW = [torch.float16, torch.bfloat16]
ROOT = Path(__file__).resolve().parents[1]


def as_dtype(tensors, dtype):
    return [None if t is None else (t.detach().to(dtype).requires_grad_() if t.is_floating_point() else t)
            for t in tensors]


def assert_relative_rule(fn_fused, fn_ref, x, states, weights, dtype):
    """fn over (x, states, weights) in float64 is exact; the fused op in `dtype` may be off by at
    most twice the reference in `dtype`, plus the floor (scaled by the size of the values)."""
    out64, g64 = grads(fn_ref, x, states, weights)
    x_low = as_dtype([x], dtype)[0]
    s_low, w_low = as_dtype(states, dtype), as_dtype(weights, dtype)
    out_f, g_f = grads(fn_fused, x_low, s_low, w_low)
    out_r, g_r = grads(fn_ref, x_low, s_low, w_low)
    assert len(g_f) == len(g64)
    for f, r, exact in zip([*out_f, *g_f], [*out_r, *g_r], [*out64, *g64]):
        assert f.dtype == dtype
        assert_within_twice_the_reference(f, r, exact, FLOOR[dtype])


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("dtype", LOW)
def test_16bit_token_ids_forward_and_gradients(cell, dtype):
    """The gather of the input projection and the float32-accumulated scatter-add of its gradient,
    in 16-bit storage, at T * B / V = 47 rows added into each row of the table."""
    x, states, weights = make(cell, 40, 32, 27, 64, device="cuda", ids=True)
    assert_relative_rule(seq_fn(ops, cell), seq_fn(reference, cell), x, states, weights, dtype)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("ids", [False, True], ids=["float", "ids"])
def test_16bit_cell_ops(cell, dtype, ids):
    x, states, weights = make(cell, 1, 64, 27, 96, device="cuda", ids=ids)
    x = x[0].detach().requires_grad_(not ids)

    def as_sequence_output(fn):
        def run(x, *rest):
            out = fn(x, *rest)
            out = out if isinstance(out, tuple) else (out,)
            return out[0], out[1:]
        return run

    assert_relative_rule(as_sequence_output(cell_fn(ops, cell)), as_sequence_output(cell_fn(reference, cell)),
                         x, states, weights, dtype)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, *LOW])
def test_long_sequences_over_many_blocks(cell, dtype):
    """T = 512 and B * H = 65536 (256 blocks of 256 threads per step)."""
    x, states, weights = make(cell, 512, 64, 27, 1024, device="cuda", ids=True)
    assert_relative_rule(seq_fn(ops, cell), seq_fn(reference, cell), x, states, weights, dtype)


@pytest.mark.parametrize("cell", list(GATES))
def test_out_of_range_ids_raise_on_the_host_and_leave_cuda_usable(cell):
    x, states, weights = make(cell, 4, 3, 5, 6, device="cuda", ids=True, requires_grad=False)
    bad = x.clone()
    bad[2, 1] = 5
    with pytest.raises(RuntimeError, match=r"token ids x must lie in \[0, 5\) .* got values from \d to 5"):
        seq_fn(ops, cell)(bad, *states, *weights)
    with pytest.raises(RuntimeError, match=r"token ids x must lie in \[0, 5\) .* got values from -3 to 1"):
        cell_fn(ops, cell)(torch.tensor([-3, 0, 1], device="cuda"), *states, *weights)
    window = torch.cat([x, x[:1]])
    w_out, b_out = torch.randn(6, 5, dtype=torch.float64, device="cuda"), torch.zeros(5, dtype=torch.float64,
                                                                                     device="cuda")
    window[-1, 0] = 7
    with pytest.raises(RuntimeError, match=r"target ids window\[1:\] must lie in \[0, 5\).*from \d to 7"):
        ops.lm_sgd_step(window, tuple(states), *weights, w_out, b_out, cell=cell, lr=1.0, clip=1.0)
    # No kernel read the bad ids: the context is intact and the op still works.
    y, _ = seq_fn(ops, cell)(x, *states, *weights)
    torch.cuda.synchronize()
    assert torch.isfinite(y).all().item()


def count_waits(fn):
    """How many times fn makes the host wait for the device (torch's sync debug mode)."""
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("cell", list(GATES))
def test_float_input_forward_and_backward_never_wait_for_the_device(cell):
    x, states, weights = make(cell, 8, 16, 27, 32, device="cuda")
    fn = seq_fn(ops, cell)
    grads(fn, x, states, weights)  # warm-up: cuBLAS handles, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, final = fn(x, *states, *weights)
        finals = final if isinstance(final, tuple) else (final,)
        torch.autograd.grad(y.sum() + sum(f.sum() for f in finals), [x, *states, *weights])
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("cell", list(GATES))
def test_token_id_forward_waits_once_and_its_backward_never(cell):
    x, states, weights = make(cell, 8, 16, 27, 32, device="cuda", ids=True)
    fn = seq_fn(ops, cell)
    grads(fn, x, states, weights)
    outputs = {}
    assert count_waits(lambda: outputs.update(y=fn(x, *states, *weights))) == 1
    y, final = outputs["y"]
    finals = final if isinstance(final, tuple) else (final,)
    loss = y.sum() + sum(f.sum() for f in finals)
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.autograd.grad(loss, [*states, *weights])
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("cell", list(GATES))
def test_training_step_waits_for_the_device_once(cell):
    """The steady-state step: one wait, for the bounds of its token ids; the loss and norm stay on
    the device, and the update is decided there."""
    window, state, weights = make(cell, 10, 16, 27, 32, device="cuda", ids=True, requires_grad=False)
    window = torch.cat([window, window[:1]])
    w = [*weights, torch.randn(32, 27, dtype=torch.float64, device="cuda") * 0.1,
         torch.zeros(27, dtype=torch.float64, device="cuda")]
    carried = tuple(state)

    def step():
        nonlocal carried
        _, _, _, carried = ops.lm_sgd_step(window, carried, *w, cell=cell, lr=0.1, clip=1.0)

    step()
    assert [count_waits(step) for _ in range(3)] == [1, 1, 1]


def test_runs_on_the_current_stream():
    """Inputs made on a side stream behind a long sleep: kernels that launched elsewhere than the
    current stream would read them before they exist."""
    x, (h0, c0), weights = make("lstm", 30, 32, 27, 64, device="cuda", requires_grad=False)
    want_y, (want_h, want_c) = ops.lstm(x, h0, c0, *weights)
    window = torch.randint(0, 27, (11, 32), device="cuda")
    w_out = torch.randn(64, 27, dtype=torch.float64, device="cuda") * 0.1
    step_weights = [w.clone() for w in weights] + [w_out.clone(),
                                                   torch.zeros(27, dtype=torch.float64, device="cuda")]
    want_loss = ops.lm_sgd_step(window, (h0, c0), *[w.clone() for w in step_weights], cell="lstm", lr=0.5,
                                clip=1.0)[0]
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        x_late = x * 1
        y, (h, c) = ops.lstm(x_late, h0, c0, *weights)
        window_late = window + 0
        loss = ops.lm_sgd_step(window_late, (h0, c0), *step_weights, cell="lstm", lr=0.5, clip=1.0)[0]
    side.synchronize()
    # Not bitwise: cuBLAS may pick another algorithm on another stream.
    torch.testing.assert_close(y, want_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, want_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, want_loss, rtol=0, atol=1e-12)


@TWO_GPUS
@pytest.mark.parametrize("cell", list(GATES))
def test_tensors_on_the_second_gpu_while_the_first_is_current(cell):
    torch.cuda.set_device(0)
    x, states, weights = make(cell, 6, 4, 27, 16, device="cuda:1", ids=True)
    fused_out, fused_grads = grads(seq_fn(ops, cell), x, states, weights)
    ref_out, ref_grads = grads(seq_fn(reference, cell), x, states, weights)
    assert all(t.device == torch.device("cuda:1") for t in [*fused_out, *fused_grads])
    for a, b in zip([*fused_out, *fused_grads], [*ref_out, *ref_grads]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_torch_compile_on_cuda():
    x, (h0, c0), weights = make("lstm", 5, 3, 27, 8, device="cuda", ids=True)

    def step(x, h0, c0, *w):
        y, (h, c) = ops.lstm(x, h0, c0, *w)
        return y.tanh().sum() + h.sum() + c.sum()

    compiled = torch.compile(step, fullgraph=True)
    eager_loss = step(x, h0, c0, *weights)
    compiled_loss = compiled(x, h0, c0, *weights)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for a, b in zip(torch.autograd.grad(compiled_loss, weights), torch.autograd.grad(eager_loss, weights)):
        torch.testing.assert_close(a, b)


_DETERMINISM_CHECK = r"""
import json, torch
torch.use_deterministic_algorithms(True)
from charlstm import ops
gen = torch.Generator().manual_seed(0)
T, B, V, H = 50, 64, 27, 128
x = torch.randint(0, V, (T, B), generator=gen).cuda()
w_ih = (torch.randn(4 * H, V, generator=gen) * 0.1).cuda()
w_hh = (torch.randn(4 * H, H, generator=gen) * 0.1).cuda()
h0, c0 = torch.zeros(B, H, device="cuda"), torch.zeros(B, H, device="cuda")
runs = []
for _ in range(3):
    w = w_ih.clone().requires_grad_()
    y, _ = ops.lstm(x, h0, c0, w, w_hh)
    (g,) = torch.autograd.grad((y * y).sum(), [w])
    runs.append(g)
print(json.dumps({"bitwise_equal": all(torch.equal(runs[0], r) for r in runs[1:])}))
"""


def test_deterministic_algorithms_give_bitwise_equal_id_gradients():
    """Under torch.use_deterministic_algorithms(True) the token-id gradient (a scatter-add) is
    the same to the bit on every run. A subprocess: cuBLAS reads CUBLAS_WORKSPACE_CONFIG once."""
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _DETERMINISM_CHECK], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"bitwise_equal": True}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lm_step_on_cuda_equals_the_cpu_step(cell):
    """The CUDA step decides and applies its update on the device; the CPU step on the host."""
    from test_lm_step import fused_step, make as make_step
    window, state, weights = make_step(cell, 8, 6, 27, 33)
    cpu = fused_step(cell, window, state, weights, lr=0.7, clip=0.1)
    gpu = fused_step(cell, window.cuda(), tuple(s.cuda() for s in state),
                     {k: None if v is None else v.cuda() for k, v in weights.items()}, lr=0.7, clip=0.1)
    for a, b in zip([cpu[0], cpu[1], cpu[2], *cpu[3].values(), *cpu[4]],
                    [gpu[0], gpu[1], gpu[2], *gpu[3].values(), *gpu[4]]):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-10)
