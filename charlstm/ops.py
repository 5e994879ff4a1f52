"""The fused ops: Python entry points, fake kernels for torch.compile, autograd formulas.

Every function here has the signature and semantics of its twin in `charlstm.reference`, which is
the specification, and of single-layer, seq-first torch.nn modules. Weights use torch.nn's layout
and gate order (LSTM i f g o, GRU r z n). Sequence inputs `x` are float [T, B, I] or int64 token
ids [T, B], which stand for one-hot inputs with I = w_ih.size(1); cell inputs are [B, I] or [B].

The fused ops give first derivatives only: differentiating their backward (create_graph=True)
raises, and `charlstm.reference` serves for higher derivatives.
"""

import torch

from charlstm import _C

_ops = torch.ops.charlstm


def extension_path() -> str:
    return _C.__file__


def lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """LSTM over a sequence -> (y [T, B, H], (hT, cT)), as torch.nn.LSTM with one layer."""
    y, hT, cT, _, _ = _ops.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return y, (hT, cT)


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    """GRU over a sequence -> (y [T, B, H], hT), as torch.nn.GRU with one layer."""
    y, hT, _ = _ops.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    return y, hT


def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """Elman RNN over a sequence -> (y [T, B, H], hT), as torch.nn.RNN with one layer."""
    return _ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)


def lstm_states(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """lstm over a sequence -> (y [T, B, H], cs [T, B, H], gates [T, B, 4H] activations i f g o):
    the cell states and gates of every step are what the forward saves for its backward, so they
    cost nothing extra. For reading a model: no gradient flows back through cs and gates."""
    y, _, _, gates, cs = _ops.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return y, cs.detach(), gates.detach()


def gru_states(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    """gru over a sequence -> (y [T, B, H], gates [T, B, 3H] activations r z n), read from what
    the forward saves for its backward (r z n and the h-side candidate term). For reading a
    model: no gradient flows back through gates."""
    y, _, save = _ops.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    return y, save[..., :3 * h0.shape[-1]].detach()


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step -> (h1, c1), as torch.nn.LSTMCell."""
    h1, c1, _ = _ops.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return h1, c1


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step -> h1, as torch.nn.GRUCell."""
    h1, _ = _ops.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return h1


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One Elman RNN step -> h1, as torch.nn.RNNCell."""
    return _ops.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)


CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def layers(x, hx, weights, *, cell, bias=True, dropout=0.0):
    """Every layer of a recurrent module in one call -> (y [T, B, H], hy), as torch.nn's modules.

    ``cell`` is "lstm", "gru", "rnn_tanh" or "rnn_relu"; ``hx`` holds one [L, B, H] tensor per
    state ((h0, c0) for the LSTM, (h0,) otherwise); ``weights`` are torch.nn's ``_flat_weights``:
    per layer w_ih, w_hh and, when ``bias``, b_ih, b_hh. ``dropout`` zeroes each layer's output
    but the last with that probability before the next layer reads it, drawing from the default
    generator as torch.nn's CPU modules do (pass 0 outside training). ``hy`` is a tuple like hx.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    y, hy, _ = _ops.layers_forward(x, list(hx), list(weights), cell, bool(bias), float(dropout))
    return y, tuple(hy)


def lm_sgd_step(window, state, w_ih, w_hh, b_ih, b_hh, w_out, b_out, *, cell="lstm", lr, clip,
                compute_dtype=None):
    """One training step of a character language model, in place -> (loss, norm, logits, state).

    The step is the assignment's: the recurrence over token ids ``window[:-1]`` [T, B] from
    ``state`` ((h, c) for the LSTM, (h,) otherwise), logits ``y @ w_out + b_out`` with w_out
    [H, V], the mean softmax cross-entropy against ``window[1:]``, backward, every gradient scaled
    by ``clip / max(norm, clip)`` (tf.clip_by_global_norm; ``clip <= 0`` turns it off), and
    ``weight -= lr * gradient`` for all of w_ih, w_hh, the biases given, w_out and b_out.

    It equals that step written with the autograd ops, clip_by_global_norm and plain SGD, and is
    faster because nothing of it runs in Python. When the loss or the norm is not finite, no
    weight changes. Returns the loss (0-dim), the gradient norm before clipping, the logits
    [T * B, V] the loss was computed from, and the state after the window (a tuple like `state`).

    The weights are float32 or float64: updated in place, 16-bit weights would lose every update
    smaller than about 0.4% (bfloat16) or 0.05% (float16) of the weight. ``compute_dtype`` (default: the
    weights' dtype) runs the step the AMP way: the recurrence, the classifier and the backward on
    copies of the weights in that narrower dtype (``torch.bfloat16`` or ``torch.float16`` on CUDA,
    ``torch.float32`` for float64 weights anywhere), the loss, the norm and the update in the
    weights' dtype. float16 applies no loss scaling: gradients below about 6e-5 lose precision, so
    prefer bfloat16 where the GPU has it.

    On CUDA the host waits for the device once per call, to check the token ids (one transfer for
    all their bounds); whether to update is decided on the device, and the loss and norm come back
    as device tensors, so reading them is the caller's choice.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    c = state[1] if len(state) > 1 else None
    with torch.no_grad():
        loss, norm, logits, hT, cT = _ops.lm_sgd_step.default(window, state[0], c, w_ih, w_hh, b_ih, b_hh,
                                                              w_out, b_out, cell, float(lr), float(clip),
                                                              compute_dtype)
    return loss, norm, logits, ((hT, cT) if c is not None else (hT,))


# ---- fake kernels: output shapes and dtypes only, for torch.compile and opcheck ----

@torch.library.register_fake("charlstm::lstm_forward")
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    return (w_hh.new_empty(T, B, H), w_hh.new_empty(B, H), w_hh.new_empty(B, H),
            w_hh.new_empty(T, B, 4 * H), w_hh.new_empty(T, B, H))


@torch.library.register_fake("charlstm::lstm_cell")
def _(x, h, c, w_ih, w_hh, b_ih, b_hh):
    B, H = x.shape[0], w_hh.shape[1]
    return w_hh.new_empty(B, H), w_hh.new_empty(B, H), w_hh.new_empty(B, 4 * H)


@torch.library.register_fake("charlstm::gru_forward")
def _(x, h0, w_ih, w_hh, b_ih, b_hh):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    return w_hh.new_empty(T, B, H), w_hh.new_empty(B, H), w_hh.new_empty(T, B, 4 * H)


@torch.library.register_fake("charlstm::gru_cell")
def _(x, h, w_ih, w_hh, b_ih, b_hh):
    B, H = x.shape[0], w_hh.shape[1]
    return w_hh.new_empty(B, H), w_hh.new_empty(B, 4 * H)


@torch.library.register_fake("charlstm::rnn_forward")
def _(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    T, B, H = x.shape[0], x.shape[1], w_hh.shape[1]
    return w_hh.new_empty(T, B, H), w_hh.new_empty(B, H)


@torch.library.register_fake("charlstm::rnn_cell")
def _(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    return w_hh.new_empty(x.shape[0], w_hh.shape[1])


def _input_grads_fake(x, w_ih):
    dx = w_ih.new_empty(x.shape) if x.is_floating_point() else w_ih.new_empty(0)
    return dx, w_ih.new_empty(w_ih.shape)


@torch.library.register_fake("charlstm::lstm_backward")
def _(grad_y, grad_hT, grad_cT, x, h0, c0, w_ih, w_hh, y, gates, cs):
    dx, dw_ih = _input_grads_fake(x, w_ih)
    return dx, h0.new_empty(h0.shape), c0.new_empty(c0.shape), dw_ih, w_hh.new_empty(w_hh.shape), \
        w_hh.new_empty(w_hh.shape[0])


@torch.library.register_fake("charlstm::gru_backward")
def _(grad_y, grad_hT, x, h0, w_ih, w_hh, y, save):
    dx, dw_ih = _input_grads_fake(x, w_ih)
    G = w_hh.shape[0]
    return dx, h0.new_empty(h0.shape), dw_ih, w_hh.new_empty(w_hh.shape), w_hh.new_empty(G), w_hh.new_empty(G)


@torch.library.register_fake("charlstm::rnn_backward")
def _(grad_y, grad_hT, x, h0, w_ih, w_hh, y, nonlinearity):
    dx, dw_ih = _input_grads_fake(x, w_ih)
    return dx, h0.new_empty(h0.shape), dw_ih, w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0])


@torch.library.register_fake("charlstm::lm_sgd_step")
def _(window, h, c, w_ih, w_hh, b_ih, b_hh, w_out, b_out, cell, lr, clip, compute_dtype=None):
    n = (window.shape[0] - 1) * window.shape[1]
    return (w_hh.new_empty(()), w_hh.new_empty(()), w_hh.new_empty(n, w_out.shape[1]), h.new_empty(h.shape),
            c.new_empty(c.shape) if c is not None else h.new_empty(0))


def _layers_saved_fake(x, weights, cell, has_biases, dropout):
    per = 4 if has_biases else 2
    L, T, B, H = len(weights) // per, x.shape[0], x.shape[1], weights[1].shape[1]
    w = weights[1]
    layer = {"lstm": [(T, B, 4 * H), (T, B, H)], "gru": [(T, B, 4 * H)]}.get(cell, [])
    between = 2 * (L - 1) if dropout > 0 else L - 1  # outputs of the lower layers, then their masks
    return [w.new_empty(s) for _ in range(L) for s in layer] + [w.new_empty(T, B, H) for _ in range(between)]


@torch.library.register_fake("charlstm::layers_forward")
def _(x, hx, weights, cell, has_biases, dropout):
    T, B, H = x.shape[0], x.shape[1], weights[1].shape[1]
    return (weights[1].new_empty(T, B, H), [h.new_empty(h.shape) for h in hx],
            _layers_saved_fake(x, weights, cell, has_biases, dropout))


@torch.library.register_fake("charlstm::layers_backward")
def _(grad_y, grad_hy, x, hx, weights, y, saved, cell, has_biases, dropout, input_grad, state_grad):
    w = weights[0]
    dx = w.new_empty(x.shape) if input_grad and x.is_floating_point() else w.new_empty(0)
    return dx, [h.new_empty(h.shape) for h in hx] if state_grad else [], [t.new_empty(t.shape) for t in weights]


# ---- autograd: the forward ops return their saved intermediates, the backward ops consume them ----
# (layers_forward's autograd is in C++, csrc/autograd.cpp: its list arguments made the Python
# registration cost more than the op itself on small modules.)

def _input_grad(x, dx):
    return dx if x.is_floating_point() else None


def _bias_grads(ctx, db_ih, db_hh):
    has_ih, has_hh = ctx.has_bias
    return (db_ih if has_ih else None), (db_hh if has_hh else None)


def _remember_biases(ctx, b_ih, b_hh):
    ctx.has_bias = (b_ih is not None, b_hh is not None)
    # Outputs that got no gradient (the saved intermediates, often hT and cT) arrive as None
    # instead of zero tensors, which the backward ops treat as zero without reading them.
    ctx.set_materialize_grads(False)


def _lstm_setup(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = inputs
    y, _, _, gates, cs = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, y, gates, cs)
    _remember_biases(ctx, b_ih, b_hh)


def _lstm_backward(ctx, grad_y, grad_hT, grad_cT, _grad_gates, _grad_cs):
    x, h0, c0, w_ih, w_hh, y, gates, cs = ctx.saved_tensors
    dx, dh0, dc0, dw_ih, dw_hh, db = _ops.lstm_backward(grad_y, grad_hT, grad_cT, x, h0, c0, w_ih, w_hh,
                                                        y, gates, cs)
    return (_input_grad(x, dx), dh0, dc0, dw_ih, dw_hh, *_bias_grads(ctx, db, db.clone()))


def _lstm_cell_setup(ctx, inputs, output):
    x, h, c, w_ih, w_hh, b_ih, b_hh = inputs
    h1, c1, gates = output
    ctx.save_for_backward(x, h, c, w_ih, w_hh, h1, c1, gates)
    _remember_biases(ctx, b_ih, b_hh)


def _lstm_cell_backward(ctx, grad_h1, grad_c1, _grad_gates):
    x, h, c, w_ih, w_hh, h1, c1, gates = ctx.saved_tensors
    dx, dh, dc, dw_ih, dw_hh, db = _ops.lstm_backward(None, grad_h1, grad_c1, x[None], h, c, w_ih, w_hh,
                                                      h1[None], gates[None], c1[None])
    return (_input_grad(x, dx[0] if dx.numel() else dx), dh, dc, dw_ih, dw_hh,
            *_bias_grads(ctx, db, db.clone()))


def _gru_setup(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh = inputs
    y, _, save = output
    ctx.save_for_backward(x, h0, w_ih, w_hh, y, save)
    _remember_biases(ctx, b_ih, b_hh)


def _gru_backward(ctx, grad_y, grad_hT, _grad_save):
    x, h0, w_ih, w_hh, y, save = ctx.saved_tensors
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(grad_y, grad_hT, x, h0, w_ih, w_hh, y, save)
    return (_input_grad(x, dx), dh0, dw_ih, dw_hh, *_bias_grads(ctx, db_ih, db_hh))


def _gru_cell_setup(ctx, inputs, output):
    x, h, w_ih, w_hh, b_ih, b_hh = inputs
    h1, save = output
    ctx.save_for_backward(x, h, w_ih, w_hh, h1, save)
    _remember_biases(ctx, b_ih, b_hh)


def _gru_cell_backward(ctx, grad_h1, _grad_save):
    x, h, w_ih, w_hh, h1, save = ctx.saved_tensors
    dx, dh, dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(None, grad_h1, x[None], h, w_ih, w_hh, h1[None],
                                                           save[None])
    return (_input_grad(x, dx[0] if dx.numel() else dx), dh, dw_ih, dw_hh, *_bias_grads(ctx, db_ih, db_hh))


def _rnn_setup(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    y, _ = output
    ctx.save_for_backward(x, h0, w_ih, w_hh, y)
    ctx.nonlinearity = nonlinearity
    _remember_biases(ctx, b_ih, b_hh)


def _rnn_backward(ctx, grad_y, grad_hT):
    x, h0, w_ih, w_hh, y = ctx.saved_tensors
    dx, dh0, dw_ih, dw_hh, db = _ops.rnn_backward(grad_y, grad_hT, x, h0, w_ih, w_hh, y, ctx.nonlinearity)
    return (_input_grad(x, dx), dh0, dw_ih, dw_hh, *_bias_grads(ctx, db, db.clone()), None)


def _rnn_cell_setup(ctx, inputs, output):
    x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity = inputs
    ctx.save_for_backward(x, h, w_ih, w_hh, output)
    ctx.nonlinearity = nonlinearity
    _remember_biases(ctx, b_ih, b_hh)


def _rnn_cell_backward(ctx, grad_h1):
    x, h, w_ih, w_hh, h1 = ctx.saved_tensors
    dx, dh, dw_ih, dw_hh, db = _ops.rnn_backward(None, grad_h1, x[None], h, w_ih, w_hh, h1[None],
                                                 ctx.nonlinearity)
    return (_input_grad(x, dx[0] if dx.numel() else dx), dh, dw_ih, dw_hh, *_bias_grads(ctx, db, db.clone()),
            None)


torch.library.register_autograd("charlstm::lstm_forward", _lstm_backward, setup_context=_lstm_setup)
torch.library.register_autograd("charlstm::lstm_cell", _lstm_cell_backward, setup_context=_lstm_cell_setup)
torch.library.register_autograd("charlstm::gru_forward", _gru_backward, setup_context=_gru_setup)
torch.library.register_autograd("charlstm::gru_cell", _gru_cell_backward, setup_context=_gru_cell_setup)
torch.library.register_autograd("charlstm::rnn_forward", _rnn_backward, setup_context=_rnn_setup)
torch.library.register_autograd("charlstm::rnn_cell", _rnn_cell_backward, setup_context=_rnn_cell_setup)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("charlstm's fused ops give first derivatives only; for higher derivatives "
                       "use charlstm.reference (backend='reference' in charlstm.nn)")


for _name in ("lstm_backward", "gru_backward", "rnn_backward", "layers_backward"):
    torch.library.register_autograd(f"charlstm::{_name}", _no_double_backward)

