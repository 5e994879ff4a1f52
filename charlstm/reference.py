"""The specification: every fused op in plain PyTorch, written to be read.

One function per op, the equations of torch.nn's cells as code, no speed tricks. The fused ops in
`charlstm.ops` are tested against these and against torch.nn itself.

Layouts and gate order are torch.nn's: w_ih [G*H, I], w_hh [G*H, H], biases [G*H], with the gates
stacked as LSTM (i, f, g, o), GRU (r, z, n), RNN (a single block). Sequence inputs are float
[T, B, I] or int64 token ids [T, B]; token ids mean the one-hot vectors of size I = w_ih.size(1).
"""

import torch
import torch.nn.functional as F


def _as_float_input(x, w_ih):
    if x.dtype == torch.long:
        return F.one_hot(x, w_ih.shape[1]).to(w_ih.dtype)
    return x


def _linear(x, w, b):
    return x @ w.t() + (b if b is not None else 0)


def lstm_step(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step -> (h1, c1, (i, f, g, o)), the gate activations [B, H] each."""
    x = _as_float_input(x, w_ih)
    gates = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c1 = f * c + i * g
    h1 = o * torch.tanh(c1)
    return h1, c1, (i, f, g, o)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    h1, c1, _ = lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return h1, c1


def gru_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step -> (h1, (r, z, n)), the activations [B, H] each."""
    x = _as_float_input(x, w_ih)
    xr, xz, xn = _linear(x, w_ih, b_ih).chunk(3, dim=-1)
    hr, hz, hn = _linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, (r, z, n)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    return gru_step(x, h, w_ih, w_hh, b_ih, b_hh)[0]


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x = _as_float_input(x, w_ih)
    pre = _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    h, c, ys = h0, c0, []
    for x_t in x:
        h, c = lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh)
        ys.append(h)
    return torch.stack(ys), (h, c)


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    h, ys = h0, []
    for x_t in x:
        h = gru_cell(x_t, h, w_ih, w_hh, b_ih, b_hh)
        ys.append(h)
    return torch.stack(ys), h


def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    h, ys = h0, []
    for x_t in x:
        h = rnn_cell(x_t, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        ys.append(h)
    return torch.stack(ys), h


# Every step's states, for reading a model (charlstm.states), not for training: the outputs of
# lstm / gru together with what each step computed on the way.

def lstm_states(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """lstm over a sequence -> (y [T, B, H], cs [T, B, H] the cell states, gates [T, B, 4H] the
    activations i f g o) of every step."""
    h, c, ys, cs, gates = h0, c0, [], [], []
    for x_t in x:
        h, c, g = lstm_step(x_t, h, c, w_ih, w_hh, b_ih, b_hh)
        ys.append(h)
        cs.append(c)
        gates.append(torch.cat(g, dim=-1))
    return torch.stack(ys), torch.stack(cs), torch.stack(gates)


def gru_states(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    """gru over a sequence -> (y [T, B, H], gates [T, B, 3H] the activations r z n) of every
    step."""
    h, ys, gates = h0, [], []
    for x_t in x:
        h, g = gru_step(x_t, h, w_ih, w_hh, b_ih, b_hh)
        ys.append(h)
        gates.append(torch.cat(g, dim=-1))
    return torch.stack(ys), torch.stack(gates)


def layers(x, hx, weights, *, cell, bias=True, dropout=0.0):
    """Every layer of a recurrent module: each layer reads the one below, through F.dropout
    between layers (as torch.nn's modules, lower layers first); hx holds [L, B, H] tensors."""
    per = 4 if bias else 2
    step = {"lstm": lstm, "gru": gru, "rnn_tanh": rnn, "rnn_relu": lambda *a: rnn(*a, nonlinearity="relu")}[cell]
    finals, inputs, count = [], x, len(weights) // per
    for layer in range(count):
        w = list(weights[layer * per:(layer + 1) * per]) + ([] if bias else [None, None])
        y, final = step(inputs, *(h[layer] for h in hx), *w)
        finals.append(final if isinstance(final, tuple) else (final,))
        inputs = F.dropout(y, dropout, training=True) if dropout > 0 and layer + 1 < count else y
    return y, tuple(torch.stack([f[k] for f in finals]) for k in range(len(hx)))
