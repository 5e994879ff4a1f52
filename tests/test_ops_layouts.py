"""Every op on non-contiguous inputs: float input, token ids, states, weights and incoming
gradients as strided views (every other element of a larger tensor) and as transposed storage
(batch-first data seen seq-first) give exactly what their contiguous copies give, on every device.

The training step's own layouts (window, state, weights updated in place through views) are in
tests/test_lm_step.py.
"""

import pytest
import torch

from charlstm import ops, reference
from ops_helpers import GATES, grads, kwargs_of, make

LAYOUTS = ["strided", "transposed"]


def relayout(t, layout):
    """A tensor equal to `t` whose storage is laid out otherwise: not contiguous, same values,
    and a leaf that requires grad when `t` does."""
    if t is None:
        return None
    base = t.detach()
    if layout == "strided" or base.dim() < 2:
        out = torch.stack([base, torch.zeros_like(base)], -1)[..., 0]
    else:
        out = base.transpose(0, 1).contiguous().transpose(0, 1)
    assert not out.is_contiguous() and torch.equal(out, base)
    return out.requires_grad_(t.requires_grad)


def relayout_all(tensors, layout):
    return [relayout(t, layout) for t in tensors]


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def cell_name(cell):
    return cell.split("_")[0]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ids", [False, True], ids=["float", "ids"])
def test_sequence_ops_on_non_contiguous_inputs(cell, layout, ids, device):
    x, states, weights = make(cell, 6, 4, 5, 7, device=device, ids=ids)
    fn = lambda *a: getattr(ops, cell_name(cell))(*a, **kwargs_of(cell))  # noqa: E731
    want_out, want_grads = grads(fn, x, states, weights)
    got_out, got_grads = grads(fn, relayout(x, layout), relayout_all(states, layout),
                               relayout_all(weights, layout))
    assert_same(got_out, want_out)
    assert_same(got_grads, want_grads)
    # The reference on the same views, as a check that the views hold the same problem.
    ref_fn = lambda *a: getattr(reference, cell_name(cell))(*a, **kwargs_of(cell))  # noqa: E731
    ref_out, _ = grads(ref_fn, relayout(x, layout), relayout_all(states, layout), relayout_all(weights, layout))
    for a, b in zip(got_out, ref_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ids", [False, True], ids=["float", "ids"])
def test_cell_ops_on_non_contiguous_inputs(cell, layout, ids, device):
    x, states, weights = make(cell, 1, 5, 6, 7, device=device, ids=ids)
    x = x[0].detach().requires_grad_(not ids)
    fn = getattr(ops, cell_name(cell) + "_cell")

    def run(x, states, weights):
        out = fn(x, *states, *weights, **kwargs_of(cell))
        out = out if isinstance(out, tuple) else (out,)
        leaves = [t for t in [x, *states, *weights] if t is not None and t.requires_grad]
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view(o.shape)).sum()
                   for o in out)
        return list(out), list(torch.autograd.grad(loss, leaves))

    want_out, want_grads = run(x, states, weights)
    got_out, got_grads = run(relayout(x, layout), relayout_all(states, layout), relayout_all(weights, layout))
    assert_same(got_out, want_out)
    assert_same(got_grads, want_grads)


def forward_and_saved(cell, x, states, weights):
    """The forward op's outputs and the arguments its backward op takes after the gradients."""
    w = weights
    if cell == "lstm":
        y, hT, cT, gates, cs = torch.ops.charlstm.lstm_forward(x, *states, *w)
        return [y, hT, cT], [x, *states, w[0], w[1], y, gates, cs]
    if cell == "gru":
        y, hT, save = torch.ops.charlstm.gru_forward(x, *states, *w)
        return [y, hT], [x, *states, w[0], w[1], y, save]
    y, hT = torch.ops.charlstm.rnn_forward(x, *states, *w, cell.split("_")[1])
    return [y, hT], [x, *states, w[0], w[1], y]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ids", [False, True], ids=["float", "ids"])
def test_backward_ops_on_non_contiguous_inputs(cell, layout, ids, device):
    """The public backward ops called directly: incoming gradients, inputs, weights and the saved
    tensors as views."""
    x, states, weights = make(cell, 5, 3, 6, 4, device=device, ids=ids, requires_grad=False)
    outs, saved = forward_and_saved(cell, x, states, weights)
    gen = torch.Generator(device="cpu").manual_seed(3)
    grad_outs = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(device) for o in outs]
    backward = getattr(torch.ops.charlstm, cell_name(cell) + "_backward")
    extra = [cell.split("_")[1]] if cell.startswith("rnn") else []
    want = backward(*grad_outs, *saved, *extra)
    got = backward(*relayout_all(grad_outs, layout), *relayout_all(saved, layout), *extra)
    assert_same(list(got), list(want))
