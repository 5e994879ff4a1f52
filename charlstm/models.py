"""The character models.

UdacityLM is the language model of the Udacity deep-learning assignment 6_lstm: one recurrent
cell over the 27 characters fed one-hot, `nodes` hidden units, and a softmax classifier
`logits = h @ w + b`. Weights follow torch's layout (weight_ih [gates * nodes, 27], LSTM gate
order i, f, g, o, which is also the assignment's order); there is one bias per gate, as in the
assignment, so b_hh is not used (torch's two biases would get the same gradient and, in effect,
learn at twice the rate and count twice in gradient clipping).

The calculators (LinearCalculator, TanhCalculator, RecurrentCalculator) read a short string of
token ids and predict one number: the tiny models of `charlstm calc`.

The speech ladder (the fast.ai lesson 6 notebook: FC3, CharLoop, WindowRNN, SequenceRNN) comes in
two kinds, told apart by `context`: window models (`context` an int) map a [B, context] block of
char ids to next-char logits [B, V]; sequence models (`context` None) map [T, B] char ids and a
carried state to logits [T, B, V] for every next char and the new state,
`forward(x, state=None) -> (logits, state)`. `build_model(name, vocab_size, **config)` rebuilds
any model of charlstm.config.MODELS from a checkpoint's name and config.
"""

import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from charlstm import nn as recurrent
from charlstm.config import (CALCULATORS, CELLS, DEFAULT_INIT, MODELS, SEQUENCE_MODELS,
                             WINDOW_MODELS, check_backend, check_choice, parse_init)
from charlstm.data.batches import VOCAB_SIZE

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
RECURRENT = {"rnn": recurrent.RNN, "gru": recurrent.GRU, "lstm": recurrent.LSTM}
TORCH_RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def init_weight_(weight: torch.Tensor, spec: str) -> torch.Tensor:
    name, a, b = parse_init(spec)
    with torch.no_grad():
        if name == "truncated_normal":
            # tf.truncated_normal(shape, mean, stddev) redraws values beyond two std of the mean
            return nn.init.trunc_normal_(weight, mean=a, std=b, a=a - 2 * b, b=a + 2 * b)
        if name == "normal":
            return nn.init.normal_(weight, mean=a, std=b)
        return nn.init.uniform_(weight, a, b)


class UdacityLM(nn.Module):
    """The assignment's character LSTM language model (or the same with a GRU or tanh RNN cell)."""

    def __init__(self, nodes: int = 64, cell: str = "lstm", backend: str = "fused",
                 init: str = DEFAULT_INIT, vocab_size: int = VOCAB_SIZE):
        super().__init__()
        check_choice("cell", cell, CELLS)
        check_backend(backend, "backend")
        self.cell, self.backend, self.nodes, self.vocab_size = cell, backend, nodes, vocab_size
        gates = GATES[cell] * nodes
        self.weight_ih = nn.Parameter(torch.empty(gates, vocab_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, nodes))
        self.bias_ih = nn.Parameter(torch.zeros(gates))
        self.w = nn.Parameter(torch.empty(nodes, vocab_size))
        self.b = nn.Parameter(torch.zeros(vocab_size))
        for weight in (self.weight_ih, self.weight_hh, self.w):
            init_weight_(weight, init)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero state: (h, c) for the LSTM, (h,) for the GRU and RNN, each [batch, nodes]."""
        zeros = self.w.new_zeros(batch_size, self.nodes)
        return (zeros, zeros.clone()) if self.cell == "lstm" else (zeros,)

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """Logits [T, B, 27] for int64 ids [T, B], and the state after the last step."""
        outputs, state = self.recurrence(ids, state)
        logits = self.readout(outputs.reshape(-1, self.nodes))
        return logits.view(*ids.shape, self.vocab_size), state

    def readout(self, outputs: torch.Tensor) -> torch.Tensor:
        """The classifier: logits [N, 27] of hidden outputs [N, nodes]."""
        return torch.addmm(self.b, outputs, self.w)

    def recurrence(self, ids, state):
        weights = (self.weight_ih, self.weight_hh, self.bias_ih)
        if self.backend == "torch":
            return _torch_recurrence(self.cell, F.one_hot(ids, self.vocab_size).to(self.w.dtype),
                                     state, weights)
        if self.backend == "fused":
            from charlstm import ops as impl
        else:
            from charlstm import reference as impl
        if self.cell == "lstm":
            outputs, (h, c) = impl.lstm(ids, state[0], state[1], *weights, None)
            return outputs, (h, c)
        if self.cell == "gru":
            outputs, h = impl.gru(ids, state[0], *weights, None)
        else:
            outputs, h = impl.rnn(ids, state[0], *weights, None, nonlinearity="tanh")
        return outputs, (h,)


def _torch_recurrence(cell, x, state, weights):
    """torch.nn's own LSTM / GRU / RNN run with these weights and a zero b_hh, so there is one
    bias. The template module lives on the meta device: it holds no data and draws no random
    numbers, and functional_call lends it the weights for the one call."""
    w_ih, w_hh, b_ih = weights
    template = _template(cell, w_ih.shape[1], w_hh.shape[1])
    borrowed = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih,
                "bias_hh_l0": torch.zeros_like(b_ih)}
    hx = tuple(s.unsqueeze(0) for s in state)
    outputs, final = functional_call(template, borrowed, (x, hx if cell == "lstm" else hx[0]))
    final = final if cell == "lstm" else (final,)
    return outputs, tuple(f[0] for f in final)


_templates = threading.local()  # functional_call swaps a module's weights: one per thread


def _template(cell, input_size, hidden_size):
    cache = _templates.__dict__.setdefault("modules", {})
    key = (cell, input_size, hidden_size)
    if key not in cache:
        cache[key] = TORCH_RECURRENT[cell](input_size, hidden_size, device="meta")
    return cache[key]


class LinearCalculator(nn.Module):
    """A calculator with no nonlinearity: h_t = W_in e_t + b + W_hh h_{t-1}, prediction w . h_T + c.

    Adding is a linear map of the digits, so this model can be exact; with --n-fac 1 each
    digit's embedding is one number, which comes out as an affine function of the digit.
    """

    def __init__(self, vocab_size: int, n_fac: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, n_fac)
        self.input = nn.Linear(n_fac, hidden)
        self.recurrent = nn.Linear(hidden, hidden, bias=False)
        self.output = nn.Linear(hidden, 1)
        # Identity recurrence (Le, Jaitly & Hinton 2015): the state starts as a running sum, and
        # long strings neither blow it up nor wash it out before training begins.
        with torch.no_grad():
            self.recurrent.weight.copy_(torch.eye(hidden))

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + self.recurrent(h)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Predictions [B] for token ids [B, T]."""
        x = self.input(self.embedding(ids))
        h = x.new_zeros(x.shape[0], self.recurrent.weight.shape[0])
        for t in range(x.shape[1]):
            h = self.step(x[:, t], h)
        return self.output(h).squeeze(-1)

    def recurrent_weights(self) -> dict:
        return {"recurrent.weight": self.recurrent.weight}


class TanhCalculator(LinearCalculator):
    """Embedding, input layer and a tanh recurrence: h_t = tanh(W_in e_t + b + W_hh h_{t-1})."""

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.recurrent(h))


class RecurrentCalculator(nn.Module):
    """Embedding, one charlstm.nn RNN / GRU / LSTM layer, and a linear read-out of the last state."""

    def __init__(self, kind: str, vocab_size: int, n_fac: int, hidden: int, backend: str = "fused"):
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, n_fac)
        self.rnn = RECURRENT[kind](n_fac, hidden, batch_first=True, backend=backend)
        self.output = nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Predictions [B] for token ids [B, T]."""
        y, _ = self.rnn(self.embedding(ids))
        return self.output(y[:, -1]).squeeze(-1)

    def recurrent_weights(self) -> dict:
        return {"rnn.weight_hh_l0": self.rnn.weight_hh_l0}


def make_calculator(model: str, vocab_size: int, n_fac: int, hidden: int,
                    backend: str = "fused") -> nn.Module:
    """A calculator by name: one of CALCULATORS. `backend` applies to rnn / gru / lstm."""
    check_choice("model", model, CALCULATORS)
    if model == "linear":
        return LinearCalculator(vocab_size, n_fac, hidden)
    if model == "tanh":
        return TanhCalculator(vocab_size, n_fac, hidden)
    return RecurrentCalculator(model, vocab_size, n_fac, hidden, backend)


DEFAULT_BACKEND = "fused"


def _recurrent(cell, input_size, hidden_size, num_layers=1, dropout=0.0, backend=DEFAULT_BACKEND):
    return RECURRENT[cell](input_size, hidden_size, num_layers=num_layers, dropout=dropout,
                           backend=backend)


class FC3(nn.Module):
    """Three embedded chars concatenated, one ReLU hidden layer, next-char logits."""

    def __init__(self, vocab_size, embedding=42, hidden=256, context=3):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, embedding)
        self.hidden = nn.Linear(context * embedding, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(self.embed(x).flatten(1))))


class CharLoop(nn.Module):
    """The fast.ai Char3Model / CharLoopModel: each char through one shared input layer, added to
    a tanh hidden state that one shared hidden layer updates char by char."""

    def __init__(self, vocab_size, embedding=42, hidden=256, context=8):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, embedding)
        self.inp = nn.Linear(embedding, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x):
        inputs = torch.relu(self.inp(self.embed(x)))
        h = torch.zeros_like(inputs[:, 0])
        for t in range(inputs.shape[1]):
            h = torch.tanh(self.hidden(h + inputs[:, t]))
        return self.out(h)


class WindowRNN(nn.Module):
    """An RNN over a fixed window of embedded chars; its last output predicts the next char."""

    def __init__(self, vocab_size, embedding=42, hidden=256, context=8, backend=DEFAULT_BACKEND):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = _recurrent("rnn", embedding, hidden, backend=backend)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x):
        y, _ = self.rnn(x.t(), embedding=self.embed.weight)
        return self.out(y[-1])


class SequenceRNN(nn.Module):
    """A stateful RNN, GRU or LSTM language model: reads text as long sequences, predicts every
    next char, and hands its final state back so training and sampling carry it on."""

    context = None

    def __init__(self, vocab_size, cell="lstm", embedding=42, hidden=256, layers=1, dropout=0.0,
                 backend=DEFAULT_BACKEND):
        super().__init__()
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = _recurrent(cell, embedding, hidden, layers, dropout if layers > 1 else 0.0, backend)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x, state=None):
        y, state = self.rnn(x, state, embedding=self.embed.weight)
        return self.out(self.drop(y)), state


def _window(cls, context):
    def build(vocab_size, embedding=42, hidden=256, context=context, **extra):
        return cls(vocab_size, embedding, hidden, context, **extra)
    return build


def _sequence(cell):
    def build(vocab_size, embedding=42, hidden=256, layers=1, dropout=0.0, backend=DEFAULT_BACKEND):
        return SequenceRNN(vocab_size, cell, embedding, hidden, layers, dropout, backend)
    return build


def _udacity(vocab_size, nodes=64, cell="lstm", backend="fused", init=DEFAULT_INIT):
    return UdacityLM(nodes, cell, backend, init, vocab_size)


def _calculator(vocab_size, kind="linear", n_fac=1, hidden=4, backend="fused"):
    return make_calculator(kind, vocab_size, n_fac, hidden, backend)


_WINDOW_CLASSES = {"fc3": FC3, "char3": CharLoop, "charloop": CharLoop, "rnn": WindowRNN}
_WINDOW_KEYS = {"rnn": ("embedding", "hidden", "context", "backend")}
# name -> (builder, the config keys it takes), for every name of charlstm.config.MODELS. The
# window models read the notebook's window lengths.
_BUILDERS = {
    "udacity": (_udacity, ("nodes", "cell", "backend", "init")),
    **{name: (_window(_WINDOW_CLASSES[name], context),
              _WINDOW_KEYS.get(name, ("embedding", "hidden", "context")))
       for name, context in WINDOW_MODELS.items()},
    **{name: (_sequence(cell), ("embedding", "hidden", "layers", "dropout", "backend"))
       for name, cell in SEQUENCE_MODELS.items()},
    "calculator": (_calculator, ("kind", "n_fac", "hidden", "backend")),
}


def model_config_keys(name: str) -> tuple[str, ...]:
    check_choice("model", name, MODELS)
    return _BUILDERS[name][1]


def build_model(name: str, vocab_size: int, **config) -> nn.Module:
    """The model `name` for a vocabulary of `vocab_size` chars; config keys a model does not take
    are ignored so one config dict can describe a whole ladder."""
    check_choice("model", name, MODELS)
    builder, keys = _BUILDERS[name]
    return builder(vocab_size, **{k: v for k, v in config.items() if k in keys and v is not None})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
