"""The hidden states of a char model at every step, from its own weights: what `explain` shows.

    layers = model_states(model, ids)     # ids: int64 [T], the text the model reads

returns one `States` per layer: `h` [T, H] for every model, and for an LSTM the cell state `c`
and the gate activations, for a GRU its reset and update gates and its candidate.

Each recurrent layer is one call over the whole text of the backend that runs the model, the
call its own forward makes: `charlstm.ops` (fused) or `charlstm.reference` (also for a model on
torch.nn's backend, which computes the same numbers). `lstm_states` / `gru_states` are that
call returning, besides the outputs h, what every step computed on the way: an LSTM's cell
states c and gate activations i f g o, a GRU's r z n. The fused forward saves exactly these for
its backward, so reading them costs nothing extra; an RNN has only h. Nothing is hooked into
training: this runs only when asked, on a model in eval mode.

Window models (fc3, char3, charloop, rnn) carry no state from one window to the next; for them
`h` is the vector their output layer reads for the window that ends at each step (fc3: its ReLU
hidden layer; char3, charloop: the tanh state after the window; rnn: the RNN's last output),
read from the model's own forward, and rows start at step context - 1, the first full window.
Calculators read one short string; their states are given per token as for the LMs.
"""

from dataclasses import dataclass, field

import torch

GATE_NAMES = {"lstm": ("input", "forget", "cell", "output"),
              "gru": ("reset", "update", "candidate")}
# Window models are run over this many windows at a time, so 20k windows stay small in memory.
WINDOW_CHUNK = 4096


@dataclass
class States:
    """One layer's states over a text: `h` [T, H] (rows from step `first` on), and for an LSTM
    `c` [T, H]; `gates` maps a gate's name to its activations [T, H] (LSTM input, forget, cell
    candidate, output; GRU reset, update, candidate). `kind` says what h is: "lstm", "gru",
    "rnn" (tanh), "relu" (fc3's hidden layer) or "linear" (the linear calculator's unbounded
    state)."""

    h: torch.Tensor
    kind: str
    c: torch.Tensor | None = None
    gates: dict = field(default_factory=dict)
    first: int = 0


def recurrent_states(cell: str, x, state, w_ih, w_hh, b_ih=None, b_hh=None,
                     backend: str = "fused") -> States:
    """One recurrent layer over x ([T, B, I] floats or [T, B] token ids) from `state` ((h0, c0)
    for an LSTM, (h0,) otherwise): States with h, c and gates of shape [T, B, H]."""
    if backend == "fused":
        from charlstm import ops as impl
    else:
        from charlstm import reference as impl
    weights = (w_ih, w_hh, b_ih, b_hh)
    if cell == "rnn":
        y, _ = impl.rnn(x, state[0], *weights, nonlinearity="tanh")
        return States(y, "rnn")
    if cell == "gru":
        y, gates = impl.gru_states(x, state[0], *weights)
    else:
        y, c, gates = impl.lstm_states(x, state[0], state[1], *weights)
    names = GATE_NAMES[cell]
    found = dict(zip(names, gates.chunk(len(names), dim=-1)))
    return States(y, "gru", gates=found) if cell == "gru" else States(y, "lstm", c=c, gates=found)


def module_states(rnn, x, hx=None) -> list[States]:
    """Every layer of a charlstm.nn LSTM / GRU / RNN (in eval mode) over x [T, B, I] (batch_first
    as the module says), the layers fed as its forward feeds them."""
    cell = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}[type(rnn).__name__]
    if rnn.batch_first:
        x = x.transpose(0, 1)
    B, H = x.shape[1], rnn.hidden_size
    count = 2 if cell == "lstm" else 1
    if hx is None:
        hx = tuple(x.new_zeros(rnn.num_layers, B, H, dtype=rnn.weight_hh_l0.dtype)
                   for _ in range(count))
    hx = hx if isinstance(hx, tuple) else (hx,)
    layers = []
    for k in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{k}", None)
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        states = recurrent_states(cell, x, tuple(s[k] for s in hx), *weights,
                                  backend="fused" if rnn.backend == "fused" else "reference")
        layers.append(states)
        x = states.h
    if rnn.batch_first:
        for states in layers:
            _transpose(states)
    return layers


def _transpose(states: States) -> None:
    states.h = states.h.transpose(0, 1)
    states.c = None if states.c is None else states.c.transpose(0, 1)
    states.gates = {name: g.transpose(0, 1) for name, g in states.gates.items()}


@torch.no_grad()
def model_states(model, ids: torch.Tensor) -> list[States]:
    """The states of any char model of charlstm.models as it reads the token ids [T]: one
    States of [T, H] tensors per layer (see the module's docstring)."""
    from charlstm import models

    if isinstance(model, models.UdacityLM):
        weights = (model.weight_ih, model.weight_hh, model.bias_ih, None)
        layers = [recurrent_states(model.cell, ids.unsqueeze(1), model.initial_state(1),
                                   *weights, "fused" if model.backend == "fused" else "reference")]
    elif isinstance(model, models.SequenceRNN):
        layers = module_states(model.rnn, model.embed(ids).unsqueeze(1))
    elif isinstance(model, models.RecurrentCalculator):
        layers = module_states(model.rnn, model.embedding(ids).unsqueeze(0))
        return [_squeeze(s, 0) for s in layers]
    elif isinstance(model, models.LinearCalculator):
        return [_calculator_states(model, ids)]
    elif getattr(model, "context", None) is not None:
        return [_window_states(model, ids)]
    else:
        raise TypeError(f"no states for a {type(model).__name__}")
    return [_squeeze(s, 1) for s in layers]


def _squeeze(states: States, dim: int) -> States:
    states.h = states.h.squeeze(dim)
    states.c = None if states.c is None else states.c.squeeze(dim)
    states.gates = {name: g.squeeze(dim) for name, g in states.gates.items()}
    return states


def _calculator_states(model, ids) -> States:
    """The linear and tanh calculators' own step, one token at a time."""
    from charlstm.models import TanhCalculator

    x = model.input(model.embedding(ids.unsqueeze(0)))
    h = x.new_zeros(1, model.recurrent.weight.shape[0])
    rows = []
    for t in range(x.shape[1]):
        h = model.step(x[:, t], h)
        rows.append(h[0])
    return States(torch.stack(rows), "rnn" if isinstance(model, TanhCalculator) else "linear")


def _window_states(model, ids) -> States:
    """What the output layer of a window model reads, for each window ending at a step."""
    from charlstm.models import FC3

    context = model.context
    if len(ids) < context:
        raise ValueError(f"the text has {len(ids)} chars; this model reads windows of {context}")
    windows = ids.unfold(0, context, 1)
    read = []
    hook = model.out.register_forward_pre_hook(lambda module, args: read.append(args[0]))
    try:
        for chunk in windows.split(WINDOW_CHUNK):
            model(chunk)
    finally:
        hook.remove()
    return States(torch.cat(read), "relu" if isinstance(model, FC3) else "rnn",
                  first=context - 1)

