"""Shared pieces of the fused ops' tests: each op and its reference by cell, inputs of any shape,
layout and device, the gradients of a run, and the same run through torch.nn."""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
TORCH_MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN}


def kwargs_of(cell):
    return {"nonlinearity": cell.split("_")[1]} if cell.startswith("rnn") else {}


def seq_fn(lib, cell):
    name = cell.split("_")[0]
    fn = getattr(lib, name)
    kw = kwargs_of(cell)
    return lambda *a: fn(*a, **kw)


def flat(fn):
    """fn with its (y, (hT, cT)) output flattened to a tuple of tensors, as gradcheck wants."""
    def flat_fn(*a):
        out = fn(*a)
        return out if isinstance(out, torch.Tensor) else tuple(
            t for o in out for t in (o if isinstance(o, tuple) else (o,)))
    return flat_fn


def cell_fn(lib, cell):
    name = cell.split("_")[0] + "_cell"
    fn = getattr(lib, name)
    kw = kwargs_of(cell)
    return lambda *a: fn(*a, **kw)


def make(cell, T, B, I, H, dtype=torch.float64, device="cpu", bias=True, ids=False, requires_grad=True):
    """Random weights in torch.nn's layout, input and initial state(s); all leaves need grad."""
    G = GATES[cell]
    scale = H ** -0.5
    w_ih = (torch.rand(G * H, I, dtype=dtype, device=device) * 2 - 1) * scale
    w_hh = (torch.rand(G * H, H, dtype=dtype, device=device) * 2 - 1) * scale
    b = [(torch.rand(G * H, dtype=dtype, device=device) * 2 - 1) * scale for _ in range(2)] if bias else [None, None]
    if ids:
        x = torch.randint(0, I, (T, B), device=device)
    else:
        x = torch.randn(T, B, I, dtype=dtype, device=device)
    states = [torch.randn(B, H, dtype=dtype, device=device) * 0.5 for _ in range(2 if cell == "lstm" else 1)]
    leaves = [t for t in [x, *states, w_ih, w_hh, *b] if t is not None and t.is_floating_point()]
    for t in leaves:
        t.requires_grad_(requires_grad)
    return x, states, [w_ih, w_hh, *b]


def run(fn, x, states, weights):
    out = fn(x, *states, *weights)
    y, final = out
    finals = final if isinstance(final, tuple) else (final,)
    return y, finals


def loss_of(y, finals):
    # Distinct random weights per output so every gradient path is exercised; drawn in float64
    # and rounded, since randn draws other numbers for other dtypes (at 16 elements or more), and
    # a float32 run must weigh its outputs as the float64 run it is compared with does.
    g = torch.Generator(device="cpu").manual_seed(1)
    total = 0
    for t in (y, *finals):
        weight = torch.randn(t.shape, generator=g, dtype=torch.float64)
        total = total + (t * weight.to(t.dtype).to(t.device)).sum()
    return total


def grads(fn, x, states, weights):
    y, finals = run(fn, x, states, weights)
    leaves = [t for t in [x, *states, *weights] if t is not None and t.requires_grad]
    return [y, *finals], torch.autograd.grad(loss_of(y, finals), leaves)


def torch_nn_run(cell, x, states, weights):
    """The same computation through torch.nn's module with the same weights."""
    w_ih, w_hh, b_ih, b_hh = weights
    G = GATES[cell]
    H, I = w_hh.shape[1], w_ih.shape[1]
    kw = kwargs_of(cell)
    m = TORCH_MODULES[cell](I, H, bias=b_ih is not None, **kw).to(w_ih.dtype).to(w_ih.device)
    with torch.no_grad():
        for name, w in zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"], weights):
            if w is not None:
                getattr(m, name).copy_(w)
    if x.dtype == torch.long:
        x = F.one_hot(x, I).to(w_ih.dtype)
    hx = tuple(s[None] for s in states)
    y, final = m(x, hx if cell == "lstm" else hx[0])
    finals = tuple(f[0] for f in final) if isinstance(final, tuple) else (final[0],)
    assert G * H == w_ih.shape[0]
    return [y, *finals]


def error(a, b):
    return (a.double() - b.double()).abs().max().item()


def assert_within_twice_the_reference(fused, ref, exact, floor=1e-6):
    """The rule for a precision below float64: the fused result's error against the float64 one,
    `exact`, is at most twice the error of the reference computed in the fused result's dtype,
    plus `floor` times the largest exact value (at least 1), so that a reference exact by chance
    does not demand an exact fused op. 1e-6 is about 8 float32 ulp of that value."""
    assert error(fused, exact) <= 2 * error(ref, exact) + floor * max(1.0, exact.abs().max().item())


@contextmanager
def cpu_products(mode):
    """The CPU's float products in `mode` ("stored" or "panels", see csrc/gemm.h) for the block,
    then the layout chosen for this CPU again."""
    torch.ops.charlstm.cpu_products(mode)
    try:
        yield
    finally:
        torch.ops.charlstm.cpu_products("auto")


@contextmanager
def torch_threads(n):
    """torch's intra-op thread count set to n for the block, and restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
