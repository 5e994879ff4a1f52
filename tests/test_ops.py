"""The fused ops against the reference (the specification) and against torch.nn.

float64 comparisons are tight (1e-10: both sides compute the same sums in a different order).
float32 follows a relative rule instead of hand-tuned tolerances: the fused op's error against
the float64 reference may be at most twice the float32 reference's own error, plus a floor of
1e-6 times the largest value compared (about 8 ulp of it) for points where the float32
reference happens to be exact.
"""

import pytest
import torch
import torch.nn.functional as F

from charlstm import ops, reference

from ops_helpers import (GATES, TORCH_MODULES, assert_within_twice_the_reference, cell_fn, cpu_products, flat,
                        grads, kwargs_of, loss_of, make, run, seq_fn, torch_nn_run, torch_threads)

# The two ways float products run on a CPU (csrc/gemm.h); each CPU picks one, the tests run both.
PRODUCTS = ["stored", "panels"]

# (T, B, I, H): B=1, T=1, T>=200, hidden sizes 1, 7, 33, 257, input sizes 1 and 27.
SHAPES = [(1, 1, 1, 1), (1, 4, 27, 7), (6, 1, 27, 33), (5, 3, 1, 8), (201, 2, 27, 7), (3, 2, 5, 257)]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_forward_and_gradients_match_reference_and_torch(cell, shape, bias, device):
    x, states, weights = make(cell, *shape, device=device, bias=bias)
    fused_out, fused_grads = grads(seq_fn(ops, cell), x, states, weights)
    ref_out, ref_grads = grads(seq_fn(reference, cell), x, states, weights)
    torch_out = torch_nn_run(cell, x, states, weights)
    for a, b, c in zip(fused_out, ref_out, torch_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
    assert len(fused_grads) == len(ref_grads) == (6 if bias else 4) + (cell == "lstm")
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def from_zero(states):
    """The state hx = None starts from: h0 all zeros, which the op detects and whose first product
    it skips. An LSTM's c0 stays random: the skip must not depend on it."""
    with torch.no_grad():
        states[0].zero_()
    return states


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_zero_initial_state_matches_reference_and_torch(cell, shape, ids, bias, device):
    """From a zero h0 the first step has no recurrent product and h0's rows drop out of the
    recurrent weight gradient: outputs and every gradient (h0's included) as from any state."""
    x, states, weights = make(cell, *shape, device=device, ids=ids, bias=bias)
    states = from_zero(states)
    fused_out, fused_grads = grads(seq_fn(ops, cell), x, states, weights)
    ref_out, ref_grads = grads(seq_fn(reference, cell), x, states, weights)
    expected = zip(ref_out, torch_nn_run(cell, x, states, weights))
    for a, (b, c) in zip(fused_out, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("ids", [False, True])
def test_states_are_the_references_and_give_back_the_outputs(cell, shape, ids, device):
    """lstm_states / gru_states: the fused op's saved cell states and gates equal the reference's,
    their y is the op's own, and the gates rebuild every step (LSTM c = f c' + i g, h = o tanh c;
    GRU h = (1 - z) n + z h')."""
    x, states, weights = make(cell, *shape, device=device, ids=ids, requires_grad=False)
    fused = getattr(ops, f"{cell}_states")(x, *states, *weights)
    expected = getattr(reference, f"{cell}_states")(x, *states, *weights)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    y, _ = run(seq_fn(ops, cell), x, states, weights)
    torch.testing.assert_close(fused[0], y, rtol=0, atol=0)
    previous = torch.cat([states[0][None], y[:-1]])
    if cell == "lstm":
        _, cs, gates = fused
        i, f, g, o = gates.chunk(4, dim=-1)
        c_before = torch.cat([states[1][None], cs[:-1]])
        torch.testing.assert_close(f * c_before + i * g, cs, rtol=0, atol=1e-12)
        torch.testing.assert_close(o * torch.tanh(cs), y, rtol=0, atol=1e-12)
    else:
        r, z, n = fused[1].chunk(3, dim=-1)
        torch.testing.assert_close((1 - z) * n + z * previous, y, rtol=0, atol=1e-12)
        assert ((r > 0) & (r < 1)).all()


def test_states_carry_no_gradient():
    x, states, weights = make("lstm", 4, 2, 3, 5)
    y, cs, gates = ops.lstm_states(x, *states, *weights)
    assert y.requires_grad and not cs.requires_grad and not gates.requires_grad


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 5, 27, 33), (1, 3, 4, 257)], ids=str)
def test_cell_ops_match_reference_and_torch_cells(cell, shape, device):
    _, B, I, H = shape
    x, states, weights = make(cell, *shape, device=device)
    x = x[0].detach().requires_grad_()
    fused = cell_fn(ops, cell)(x, *states, *weights)
    ref = cell_fn(reference, cell)(x, *states, *weights)
    fused, ref = (fused if isinstance(fused, tuple) else (fused,)), (ref if isinstance(ref, tuple) else (ref,))
    kw = kwargs_of(cell)
    m = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(cell.split("_")[0], torch.nn.RNNCell)(I, H, **kw)
    m = m.double().to(device)
    with torch.no_grad():
        for name, w in zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh"], weights):
            getattr(m, name).copy_(w)
    tm = m(x, tuple(states) if cell == "lstm" else states[0])
    tm = tm if isinstance(tm, tuple) else (tm,)
    for a, b, c in zip(fused, ref, tm):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)
    leaves = [x, *states, *weights]
    gf = torch.autograd.grad(loss_of(fused[0], fused[1:]), leaves)
    gr = torch.autograd.grad(loss_of(ref[0], ref[1:]), leaves)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("vocab", [1, 27])
def test_token_ids_equal_one_hot_input(cell, vocab, device):
    x, states, weights = make(cell, 9, 5, vocab, 7, device=device, ids=True)
    one_hot = F.one_hot(x, vocab).double()
    out_ids, g_ids = grads(seq_fn(ops, cell), x, states, weights)
    out_hot, g_hot = grads(seq_fn(ops, cell), one_hot, states, weights)
    for a, b in zip(out_ids, out_hot):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for a, b in zip(g_ids, g_hot):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # And the ids path against the reference, which builds the one-hot matrix itself.
    out_ref, g_ref = grads(seq_fn(reference, cell), x, states, weights)
    for a, b in zip(g_ids, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(GATES))
def test_token_id_cells_equal_one_hot(cell, device):
    x, states, weights = make(cell, 1, 6, 27, 5, device=device, ids=True)
    ids = x[0]
    a = cell_fn(ops, cell)(ids, *states, *weights)
    b = cell_fn(ops, cell)(F.one_hot(ids, 27).double(), *states, *weights)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", list(GATES))
def test_state_carried_over_windows_equals_one_long_sequence(cell, device):
    x, states, weights = make(cell, 12, 3, 27, 9, device=device, ids=True, requires_grad=False)
    fn = seq_fn(ops, cell)
    y_full, final_full = run(fn, x, states, weights)
    carried, ys = states, []
    for window in x.split(4):
        y, carried = run(fn, window, carried, weights)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys), y_full, rtol=0, atol=1e-12)
    for a, b in zip(carried, final_full):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("ids", [False, True])
def test_gradcheck_float64(cell, ids, device):
    x, states, weights = make(cell, 4, 3, 5, 4, device=device, ids=ids)
    assert torch.autograd.gradcheck(flat(seq_fn(ops, cell)), (x, *states, *weights))
    x1 = x[0].detach().requires_grad_(not ids)
    assert torch.autograd.gradcheck(flat(cell_fn(ops, cell)), (x1, *states, *weights))


@pytest.mark.parametrize("cell", list(GATES))
def test_reference_gradgradcheck(cell):
    x, states, weights = make(cell, 3, 2, 3, 3)
    assert torch.autograd.gradgradcheck(flat(seq_fn(reference, cell)), (x, *states, *weights))


@pytest.mark.parametrize("cell", list(GATES))
def test_fused_double_backward_raises(cell):
    x, states, weights = make(cell, 3, 2, 3, 3)
    y, finals = run(seq_fn(ops, cell), x, states, weights)
    (gx,) = torch.autograd.grad(y.sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="first derivatives only; for higher derivatives use charlstm.reference"):
        torch.autograd.grad(gx.sum(), [weights[0]])


def assert_float32_rule(cell, x, states, weights, ids=False):
    """The fused op in float32 is within twice the float32 reference's error from the float64
    reference, in its outputs and in every gradient."""
    out64, g64 = grads(seq_fn(reference, cell), x, states, weights)
    s32 = [s.detach().float().requires_grad_() for s in states]
    w32 = [w.detach().float().requires_grad_() if w is not None else None for w in weights]
    x32 = x if ids else x.detach().float().requires_grad_()
    out_f, g_f = grads(seq_fn(ops, cell), x32, s32, w32)
    out_r, g_r = grads(seq_fn(reference, cell), x32, s32, w32)
    for f, r, exact in zip([*out_f, *g_f], [*out_r, *g_r], [*out64, *g64]):
        assert_within_twice_the_reference(f, r, exact)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", [(10, 64, 27, 64), (50, 8, 27, 33), (3, 2, 1, 257)], ids=str)
@pytest.mark.parametrize("products", PRODUCTS)
def test_float32_error_within_twice_the_references(cell, shape, products, device):
    with cpu_products(products):
        assert_float32_rule(cell, *make(cell, *shape, device=device))


# Recurrent weights just over 512 KB: LSTM and GRU with 299 units (1.4 MB and 1.1 MB), the RNN
# with 370 (548 KB). Their per-step products pack w_hh in panels of 32 columns, leaving a last
# panel shorter than the rest in both directions: forward (G*H columns) 12 for the LSTM, 1 for the
# GRU and 18 for the RNN; backward (H columns) 11 and 18.
PANEL_HIDDEN = {"lstm": 299, "gru": 299, "rnn_tanh": 370, "rnn_relu": 370}


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("steps", [6, 13, 60], ids=["30_rows", "65_rows", "300_rows"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_float32_per_step_products_from_panels(cell, steps, threads):
    """Per-step products read from panels, split between 1 to 3 threads, meet the float32 rule,
    with the window's products on brgemm (30 rows) and on torch.mm (65 rows, the fewest that go
    there with these weights, and 300)."""
    with cpu_products("panels"), torch_threads(threads):
        assert_float32_rule(cell, *make(cell, steps, 5, 27, PANEL_HIDDEN[cell]))


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_float32_batch_slices_per_thread(cell, ids, threads, bias):
    """On the CPU a float batch of at least 8 rows per thread runs as one slice of rows per thread
    through all time steps; 37 rows split unevenly over 2 and 3 threads, stay on the per-step path
    with 5 and 1. Each way must meet the float32 rule."""
    with torch_threads(threads):
        assert_float32_rule(cell, *make(cell, 6, 37, 27, 33, ids=ids, bias=bias), ids=ids)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("ids", [False, True])
def test_float32_batch_of_one_with_weights_beyond_the_cache(cell, ids):
    """A batch of one with a recurrent weight over 1 MiB (300 units): each step's products are
    [1, H] by [H, G*H], the shape of the bandwidth-bound cells, run as dot products over the
    weights' rows, and must meet the float32 rule like the others. 300 leaves a tail of 12
    columns after the 16-wide vectors, and the RNN's 300 rows a tail of 4 after blocks of 8."""
    assert_float32_rule(cell, *make(cell, 4, 1, 27, 300, ids=ids), ids=ids)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("ids", [False, True])
def test_float32_batch_with_a_weight_over_8_mb(cell, ids):
    """With a recurrent weight of 8 MB or more, a batch of several rows reads w_hh as the left
    operand of each step's product and transposes the [G*H, B] result into the step's gates; 5
    rows leave a remainder in every vector of the transpose."""
    assert_float32_rule(cell, *make(cell, 6, 5, 27, 1024, ids=ids), ids=ids)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("ids", [False, True])
def test_float32_window_of_35_rows_with_a_weight_over_8_mb(cell, ids):
    """Where the CPU's products take packed panels, a window of 32 rows or more of a layer whose
    recurrent weight is 8 MB or more has its products on torch.mm (the input projection, the
    input and weight gradients), where smaller weights keep them on brgemm up to 63 rows."""
    with cpu_products("panels"):
        assert_float32_rule(cell, *make(cell, 7, 5, 27, 1024, ids=ids), ids=ids)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_large_batch_with_a_weight_over_8_mb_reads_panels(cell):
    """Where the CPU's products take packed panels, a batch of more than 64 rows reads a weight of
    8 MB or more from panels in the forward, not as the left operand: 65 rows, the fewest that do."""
    with cpu_products("panels"):
        assert_float32_rule(cell, *make(cell, 2, 65, 27, 1024))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_batch_of_one_with_a_weight_over_8_mb(cell):
    """With a recurrent weight of 8 MB or more, the backward's per-step products of a batch of one
    are streamed too: each step sums the rows of w_hh weighted by that step's gradient."""
    assert_float32_rule(cell, *make(cell, 9, 1, 27, 1024))


@pytest.mark.parametrize("cell", list(GATES))
def test_float32_products_over_many_rows(cell):
    """In the stored layout on two threads or more, the products over all T*B rows of a window (the
    input projection and the input gradient) run in blocks of 64 rows, 256 columns and reductions
    of 1024: 549 rows leave a block of 37, the GRU's 900 and the RNN's 300 columns a piece of 132
    and of 44, and the LSTM's input gradient reduces over 1200 in two pieces."""
    with cpu_products("stored"), torch_threads(2):
        assert_float32_rule(cell, *make(cell, 9, 61, 27, 300))


# (products, threads, T, B, H): each float32 way from a zero state, with the recurrent weight
# gradient over the other steps' rows on brgemm (rows >= H and rows < H), on torch.mm (300 rows
# of a panels layer), from batch slices per thread, and a single step (no product at all).
ZERO_STATE_PATHS = [("stored", 2, 10, 8, 33), ("stored", 2, 2, 3, 257), ("panels", 2, 6, 5, 299),
                    ("panels", 2, 60, 5, 299), ("stored", 2, 6, 37, 33), ("panels", 1, 1, 4, 299)]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("path", ZERO_STATE_PATHS, ids=lambda p: "{}-{}threads-T{}B{}H{}".format(*p))
@pytest.mark.parametrize("ids", [False, True])
def test_float32_zero_initial_state(cell, path, ids):
    products, threads, T, B, H = path
    with cpu_products(products), torch_threads(threads):
        x, states, weights = make(cell, T, B, 27, H, ids=ids)
        assert_float32_rule(cell, x, from_zero(states), weights, ids=ids)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("ids", [False, True])
def test_opcheck(cell, ids, device):
    name = cell.split("_")[0]
    kw = list(kwargs_of(cell).values())
    x, states, weights = make(cell, 3, 2, 5, 4, device=device, ids=ids)
    torch.library.opcheck(getattr(torch.ops.charlstm, f"{name}_forward").default, (x, *states, *weights, *kw))
    torch.library.opcheck(getattr(torch.ops.charlstm, f"{name}_cell").default,
                          (x[0].detach().requires_grad_(not ids), *states, *weights, *kw))
    no_bias = weights[:2] + [None, None]
    torch.library.opcheck(getattr(torch.ops.charlstm, f"{name}_forward").default, (x, *states, *no_bias, *kw))


def test_torch_compile_matches_eager():
    x, (h0, c0), weights = make("lstm", 5, 3, 27, 8, ids=True)

    def step(x, h0, c0, *w):
        y, (h, c) = ops.lstm(x, h0, c0, *w)
        return (y.tanh().sum() + h.sum() + c.sum())

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, h0, c0, *weights)
    compiled_loss = compiled(x, h0, c0, *weights)
    torch.testing.assert_close(compiled_loss, eager_loss)
    ge = torch.autograd.grad(eager_loss, weights)
    gc = torch.autograd.grad(compiled_loss, weights)
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b)


# ---- bad inputs: each raises an error naming the argument ----

def lstm_args(T=3, B=2, I=5, H=4, dtype=torch.float32):
    x, (h0, c0), w = make("lstm", T, B, I, H, dtype=dtype, requires_grad=False)
    return [x, h0, c0, *w]


BAD_LSTM = {
    "x rank": (lambda a: a.__setitem__(0, a[0][0]), r"x must have shape \[T, B, input_size\]"),
    "x input size": (lambda a: a.__setitem__(0, torch.randn(3, 2, 6)), r"input_size = 5"),
    "x dtype": (lambda a: a.__setitem__(0, a[0].double()), r"x has dtype Double but w_hh has Float"),
    "int32 ids": (lambda a: a.__setitem__(0, torch.zeros(3, 2, dtype=torch.int32)), r"\.long\(\)"),
    "ids too large": (lambda a: a.__setitem__(0, torch.full((3, 2), 5)), r"token ids x must lie in \[0, 5\)"),
    "negative ids": (lambda a: a.__setitem__(0, torch.full((3, 2), -1)), r"got values from -1"),
    "ids rank": (lambda a: a.__setitem__(0, torch.zeros(3, 2, 1, dtype=torch.long)), r"token ids x must have shape \[T, B\]"),
    "empty sequence": (lambda a: a.__setitem__(0, torch.randn(0, 2, 5)), r"no time step \(T = 0\)"),
    "empty batch": (lambda a: (a.__setitem__(0, torch.randn(3, 0, 5)), a.__setitem__(1, torch.randn(0, 4)),
                               a.__setitem__(2, torch.randn(0, 4))), r"empty batch"),
    "h0 shape": (lambda a: a.__setitem__(1, torch.randn(2, 3)), r"h0 must have shape \[2, 4\]"),
    "c0 shape": (lambda a: a.__setitem__(2, torch.randn(1, 4)), r"c0 must have shape \[2, 4\]"),
    "c0 dtype": (lambda a: a.__setitem__(2, a[2].double()), r"c0 has dtype Double"),
    "w_ih rows": (lambda a: a.__setitem__(3, torch.randn(12, 5)), r"w_ih must have shape \[16, input_size\]"),
    "w_hh shape": (lambda a: a.__setitem__(4, torch.randn(16, 5)), r"w_hh must have shape \[4\*hidden_size"),
    "b_ih shape": (lambda a: a.__setitem__(5, torch.randn(15)), r"b_ih must have shape \[16\]"),
    "b_hh dtype": (lambda a: a.__setitem__(6, a[6].double()), r"b_hh has dtype Double"),
    "half on cpu": (lambda a: a.__setitem__(slice(0, 7), [t.half() for t in a]), r"CPU kernels take float32 or float64"),
}


@pytest.mark.parametrize("case", list(BAD_LSTM))
def test_bad_lstm_inputs_raise_clear_errors(case):
    args = lstm_args()
    mutate, message = BAD_LSTM[case]
    mutate(args)
    with pytest.raises(RuntimeError, match=message):
        ops.lstm(*args)


def test_bad_cell_inputs_raise_clear_errors():
    x, h, c, *w = lstm_args()
    with pytest.raises(RuntimeError, match=r"x must have shape \[B, input_size\]"):
        ops.lstm_cell(x, h, c, *w)
    with pytest.raises(RuntimeError, match=r"h must have shape \[2, 4\]"):
        ops.lstm_cell(x[0], h[:1], c, *w)
    with pytest.raises(RuntimeError, match=r"token ids x must have shape \[B\]"):
        ops.gru_cell(torch.zeros(2, 1, dtype=torch.long), h, torch.randn(12, 5), torch.randn(12, 4))


@pytest.mark.parametrize("fn", [ops.rnn, ops.rnn_cell])
def test_bad_nonlinearity(fn):
    x, (h,), w = make("rnn_tanh", 2, 2, 3, 4, requires_grad=False)
    if fn is ops.rnn_cell:
        x = x[0]
    with pytest.raises(RuntimeError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        fn(x, h, *w, nonlinearity="sigmoid")


def test_cpu_products_names_its_modes():
    with pytest.raises(RuntimeError, match="mode must be 'auto', 'stored' or 'panels', got 'fast'"):
        torch.ops.charlstm.cpu_products("fast")
    with cpu_products("panels"):
        assert torch.ops.charlstm.cpu_products() == "panels"
    assert torch.ops.charlstm.cpu_products() in PRODUCTS


def test_gru_weights_must_have_three_gates():
    x, (h,), w = make("gru", 2, 2, 3, 4, requires_grad=False)
    with pytest.raises(RuntimeError, match=r"w_hh must have shape \[3\*hidden_size, hidden_size\]"):
        ops.gru(x, h, w[0], torch.randn(16, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed devices need a CUDA device")
def test_mixed_devices_rejected():
    x, h0, c0, *w = lstm_args()
    with pytest.raises(RuntimeError, match="is on cpu but w_(ih|hh) is on cuda.*move all inputs to one device"):
        ops.lstm(x, h0, c0, *[t.cuda() for t in w])


CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="16-bit storage runs on CUDA only")


@CUDA_ONLY
@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_storage_error_within_twice_the_references(cell, dtype):
    # 16-bit storage computes the cell math in float32; the reference in the same dtype rounds
    # every intermediate, so the fused op should be no worse than it (relative rule, as float32).
    x, states, weights = make(cell, 20, 16, 27, 64, device="cuda")
    out64, g64 = grads(seq_fn(reference, cell), x, states, weights)
    low = lambda ts: [t.detach().to(dtype).requires_grad_() if t is not None else None for t in ts]
    x16, s16, w16 = low([x])[0], low(states), low(weights)
    out_f, g_f = grads(seq_fn(ops, cell), x16, s16, w16)
    out_r, g_r = grads(seq_fn(reference, cell), x16, s16, w16)
    floor = 1e-3 if dtype == torch.float16 else 8e-3
    for f, r, exact in zip([*out_f, *g_f], [*out_r, *g_r], [*out64, *g64]):
        assert f.dtype == dtype
        assert_within_twice_the_reference(f, r, exact, floor)


# Run in a subprocess per CPU build: the float32 forward and gradients of every cell, fused and
# float32 reference, each against the float64 reference; prints the build, the worst errors and
# the largest exact value (the floor of the rule scales with it: these gradients reach ~30, where
# one float32 ulp is ~2e-6).
_BUILD_CHECK = r"""
import json, sys, torch, charlstm
from charlstm import ops, reference
torch.manual_seed(0)
T, I = 7, 27
out = {"cpu_kernels": charlstm.build_info()["cpu_kernels"], "errors": {}}
# A batch of one with a recurrent weight over 512 KB runs its forward products as dot products over
# the weight's rows (cpu::matvec), and one of 8 MB or more its backward products as sums of those
# rows (cpu::vecmat); both have their own per-build loops. 363 and 1031 units leave a tail of rows
# and of columns in each.
cases = [(c, s) for c in (("lstm", 4), ("gru", 3), ("rnn", 1)) for s in ((5, 37), (1, 363))]
for (cell, G), (B, H) in cases + [(("gru", 3), (1, 1031))]:
    w = [torch.randn(G * H, I) * 0.3, torch.randn(G * H, H) * 0.3, torch.randn(G * H) * 0.1, torch.randn(G * H) * 0.1]
    x = torch.randn(T, B, I)
    s = [torch.randn(B, H) * 0.5 for _ in range(2 if cell == "lstm" else 1)]
    def run(lib, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (x, *s, *w)]
        y, hT = getattr(lib, cell)(*leaves)
        y.sum().backward()
        return [y.detach().double()] + [t.grad.double() for t in leaves]
    exact, ref32, fused = run(reference, torch.float64), run(reference, torch.float32), run(ops, torch.float32)
    out["errors"][f"{cell} B={B}"] = [[(f - e).abs().max().item(), (r - e).abs().max().item(),
                                       e.abs().max().item()] for f, r, e in zip(fused, ref32, exact)]
# The whole training step on token ids: the id gradient's scatter-add, the softmax cross-entropy,
# the gradient norm and the transposed update run their own per-build loops. The specification
# and the comparison are tests/test_lm_step.py's float32 test (shared through tests/helpers.py).
sys.path.insert(0, "tests")
from helpers import autograd_step, fused_step, make
window, st, weights = make("lstm", T, 5, I, 37, seed=1)
w32, st32 = {k: v.float() for k, v in weights.items()}, tuple(s.float() for s in st)
exact = autograd_step("lstm", window, st, weights, lr=0.5, clip=0.1)
assert exact[1].item() > 0.1, "the step must clip"
steps = [exact, autograd_step("lstm", window, st32, w32, lr=0.5, clip=0.1),
         fused_step("lstm", window, st32, w32, lr=0.5, clip=0.1)]
flat = [[x.double() for x in (loss, norm, logits, *w.values())] for loss, norm, logits, w, _ in steps]
out["errors"]["lm_sgd_step"] = [[(f - e).abs().max().item(), (r - e).abs().max().item(), e.abs().max().item()]
                                for e, r, f in zip(*flat)]
print(json.dumps(out))
"""

_BUILD_NAMES = {"baseline": "baseline x86-64", "avx2": "avx2+fma"}


@pytest.mark.parametrize("build", list(_BUILD_NAMES))
def test_every_cpu_build_of_the_pointwise_loops_matches_the_reference(build):
    """The loops are compiled per instruction set and one is picked at run time; the tests above
    run the widest this machine has, CHARLSTM_CPU_SIMD selects the narrower ones here."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import charlstm

    if build == "avx2" and charlstm.build_info()["cpu_kernels"] not in ("avx2+fma", "avx512"):
        pytest.skip("this processor has no AVX2+FMA, so that build cannot run here")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CHARLSTM_CPU_SIMD=build,
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _BUILD_CHECK], capture_output=True, text=True, env=env,
                            cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cpu_kernels"] == _BUILD_NAMES[build]
    for cell, pairs in report["errors"].items():
        for k, (fused_err, ref_err, size) in enumerate(pairs):
            assert fused_err <= 2 * ref_err + 1e-6 * max(1.0, size), (cell, k, fused_err, ref_err, size)


# ---- every layer of a module in one call: charlstm.ops.layers ----

def make_layers(cell, L, T, B, I, H, dtype=torch.float64, bias=True, ids=False):
    """Random torch.nn-layout weights of an L-layer module (its _flat_weights), input and hx."""
    G = GATES[cell]
    weights = []
    for layer in range(L):
        fan_in = I if layer == 0 else H
        weights += [(torch.rand(G * H, fan_in, dtype=dtype) * 2 - 1) * H ** -0.5,
                    (torch.rand(G * H, H, dtype=dtype) * 2 - 1) * H ** -0.5]
        if bias:
            weights += [(torch.rand(G * H, dtype=dtype) * 2 - 1) * 0.3 for _ in range(2)]
    x = torch.randint(0, I, (T, B)) if ids else torch.randn(T, B, I, dtype=dtype)
    hx = [torch.randn(L, B, H, dtype=dtype) * 0.5 for _ in range(2 if cell == "lstm" else 1)]
    for t in [x, *hx, *weights]:
        if t.is_floating_point():
            t.requires_grad_()
    return x, hx, weights


def layers_grads(lib, cell, x, hx, weights, bias=True, dropout=0.0, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    y, hy = lib.layers(x, hx, weights, cell=cell, bias=bias, dropout=dropout)
    leaves = [t for t in [x, *hx, *weights] if t.requires_grad]
    return [y, *hy], torch.autograd.grad(loss_of(y, hy), leaves)


# (L, T, B, I, H): B = 1, T >= 200, H = 1024, uneven sizes; each takes another path somewhere
# (batch slices per thread, per-step products, one-row products).
LAYER_SHAPES = [(2, 4, 3, 5, 7), (3, 3, 1, 27, 33), (2, 201, 2, 3, 5), (1, 2, 2, 3, 1024), (2, 5, 40, 9, 16)]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "L{}T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("bias", [True, False])
def test_layers_match_reference_and_torch_nn(cell, shape, bias):
    L, T, B, I, H = shape
    x, hx, weights = make_layers(cell, *shape, bias=bias)
    fused_out, fused_grads = layers_grads(ops, cell, x, hx, weights, bias)
    ref_out, ref_grads = layers_grads(reference, cell, x, hx, weights, bias)
    m = TORCH_MODULES[cell](I, H, L, bias=bias, **kwargs_of(cell)).double()
    with torch.no_grad():
        for p, w in zip(m._flat_weights, weights):
            p.copy_(w)
    y, final = m(x, tuple(hx) if cell == "lstm" else hx[0])
    torch_out = [y, *(final if isinstance(final, tuple) else (final,))]
    for a, b, c in zip(fused_out, ref_out, torch_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)
    assert len(fused_grads) == 1 + len(hx) + len(weights)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cell", list(GATES))
def test_layers_token_ids_equal_one_hot(cell):
    x, hx, weights = make_layers(cell, 2, 6, 4, 27, 9, ids=True)
    out_ids, g_ids = layers_grads(ops, cell, x, hx, weights)
    out_hot, g_hot = layers_grads(ops, cell, F.one_hot(x, 27).double(), hx, weights)
    for a, b in zip(out_ids, out_hot):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert len(g_ids) == len(g_hot)  # neither input is a leaf that needs a gradient
    for a, b in zip(g_ids, g_hot):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", list(GATES))
def test_layers_dropout_draws_as_the_reference(cell):
    """Same seed, same draws: the masks between layers are F.dropout's, lower layers first."""
    x, hx, weights = make_layers(cell, 3, 5, 4, 6, 8)
    fused_out, fused_grads = layers_grads(ops, cell, x, hx, weights, dropout=0.4, seed=7)
    ref_out, ref_grads = layers_grads(reference, cell, x, hx, weights, dropout=0.4, seed=7)
    for a, b in zip([*fused_out, *fused_grads], [*ref_out, *ref_grads]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    other_out, _ = layers_grads(ops, cell, x, hx, weights, dropout=0.4, seed=8)
    assert not torch.allclose(other_out[0], fused_out[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("ids", [False, True])
def test_layers_gradcheck_float64(cell, ids):
    x, hx, weights = make_layers(cell, 2, 3, 2, 4, 3, ids=ids)

    def fn(x, *rest):
        y, hy = ops.layers(x, rest[:len(hx)], rest[len(hx):], cell=cell)
        return (y, *hy)
    assert torch.autograd.gradcheck(fn, (x, *hx, *weights))


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", [(2, 10, 64, 27, 64), (2, 30, 8, 27, 33)], ids=str)
def test_layers_float32_error_within_twice_the_references(cell, shape):
    x, hx, weights = make_layers(cell, *shape)
    out64, g64 = layers_grads(reference, cell, x, hx, weights)
    low = [t.detach().float().requires_grad_() for t in [x, *hx, *weights]]
    x32, hx32, w32 = low[0], low[1:1 + len(hx)], low[1 + len(hx):]
    out_f, g_f = layers_grads(ops, cell, x32, hx32, w32)
    out_r, g_r = layers_grads(reference, cell, x32, hx32, w32)
    for f, r, exact in zip([*out_f, *g_f], [*out_r, *g_r], [*out64, *g64]):
        assert_within_twice_the_reference(f, r, exact)


def test_layers_skip_the_gradients_nobody_needs():
    """Without requires_grad on x and hx the op computes neither dx nor dhx; the weights' gradients
    are those of the full computation."""
    x, hx, weights = make_layers("lstm", 2, 4, 3, 5, 6)
    _, full = layers_grads(ops, "lstm", x, hx, weights)
    x0, hx0 = x.detach(), [h.detach() for h in hx]
    y, hy = ops.layers(x0, hx0, weights, cell="lstm")
    part = torch.autograd.grad(loss_of(y, hy), weights)
    for a, b in zip(part, full[1 + len(hx):]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_layers_opcheck(dropout):
    x, hx, weights = make_layers("gru", 2, 3, 2, 5, 4)
    # With dropout the aot test would compare two different random draws.
    tests = ("test_schema", "test_autograd_registration", "test_faketensor") + \
        (("test_aot_dispatch_dynamic",) if dropout == 0 else ())
    torch.library.opcheck(torch.ops.charlstm.layers_forward.default, (x, hx, weights, "gru", True, dropout),
                          test_utils=tests)
    ids, _, _ = make_layers("gru", 2, 3, 2, 5, 4, ids=True)
    no_bias = [w for k, w in enumerate(weights) if k % 4 < 2]
    torch.library.opcheck(torch.ops.charlstm.layers_forward.default, (ids, hx, no_bias, "gru", False, dropout),
                          test_utils=tests)


def test_layers_torch_compile_matches_eager():
    x, hx, weights = make_layers("lstm", 2, 5, 3, 27, 8, ids=True)

    def step(x, h, c, *w):
        y, (hT, cT) = ops.layers(x, (h, c), w, cell="lstm")
        return y.tanh().sum() + hT.sum() + cT.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss, compiled_loss = step(x, *hx, *weights), compiled(x, *hx, *weights)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for a, b in zip(torch.autograd.grad(compiled_loss, weights), torch.autograd.grad(eager_loss, weights)):
        torch.testing.assert_close(a, b)


def test_layers_double_backward_raises():
    x, hx, weights = make_layers("lstm", 2, 3, 2, 3, 3)
    y, _ = ops.layers(x, hx, weights, cell="lstm")
    (gx,) = torch.autograd.grad(y.sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="first derivatives only; for higher derivatives use charlstm.reference"):
        torch.autograd.grad(gx.sum(), [weights[0]])


BAD_LAYERS = {
    "weight count": (lambda a: a.update(weights=a["weights"][:3]), r"weights must hold 4 tensors per layer"),
    "layer input": (lambda a: a["weights"].__setitem__(4, torch.randn(16, 3)),
                    r"layer 1's w_ih must take the 4 outputs of the layer below"),
    "hx layers": (lambda a: a.update(hx=[h[:1] for h in a["hx"]]), r"hx must have shape \[2, 2, 4\]"),
    "hx count": (lambda a: a.update(hx=a["hx"][:1]), r"hx must hold 2 state tensor\(s\) \(h0, c0\)"),
    "dropout": (lambda a: a.update(dropout=1.5), r"dropout must lie in \[0, 1\], got 1.5"),
    "x size": (lambda a: a.update(x=torch.randn(3, 2, 6)), r"input_size = 5"),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_bad_layers_inputs_raise_clear_errors(case):
    x, hx, weights = make_layers("lstm", 2, 3, 2, 5, 4, dtype=torch.float32)
    args = {"x": x.detach(), "hx": [h.detach() for h in hx], "weights": [w.detach() for w in weights],
            "dropout": 0.0}
    mutate, message = BAD_LAYERS[case]
    mutate(args)
    with pytest.raises(RuntimeError, match=message):
        ops.layers(args["x"], args["hx"], args["weights"], cell="lstm", dropout=args["dropout"])


def test_layers_bad_cell_name():
    x, hx, weights = make_layers("lstm", 1, 2, 2, 3, 4)
    with pytest.raises(ValueError, match="cell must be one of lstm, gru, rnn_tanh, rnn_relu"):
        ops.layers(x, hx, weights, cell="elman")
