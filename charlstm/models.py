"""Character models, and `build_model` that rebuilds any of them from a checkpoint's name and config.

Two kinds of model, told apart by `context`:
- window models (`context` an int) map a [B, context] block of char ids to next-char logits [B, V];
- sequence models (`context` None) map [T, B] char ids and a carried state to logits [T, B, V] for
  every next char and the new state: `forward(x, state=None) -> (logits, state)`.
"""

import torch
from torch import nn

from charlstm import nn as charlstm_nn
from charlstm.nn import BACKENDS

DEFAULT_BACKEND = "fused"


def _recurrent(cell, input_size, hidden_size, num_layers=1, dropout=0.0, backend=DEFAULT_BACKEND):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    module = {"rnn": charlstm_nn.RNN, "gru": charlstm_nn.GRU, "lstm": charlstm_nn.LSTM}[cell]
    return module(input_size, hidden_size, num_layers=num_layers, dropout=dropout, backend=backend)


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
        y, _ = self.rnn(self.embed(x.t()))
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
        y, state = self.rnn(self.embed(x), state)
        return self.out(self.drop(y)), state


def _window(cls, context):
    def build(vocab_size, embedding=42, hidden=256, context=context, **extra):
        return cls(vocab_size, embedding, hidden, context, **extra)
    return build


def _sequence(cell):
    def build(vocab_size, embedding=42, hidden=256, layers=1, dropout=0.0, backend=DEFAULT_BACKEND):
        return SequenceRNN(vocab_size, cell, embedding, hidden, layers, dropout, backend)
    return build


# name -> (builder, config keys it takes). The window models use the notebook's window lengths.
SPEECH_MODELS = {
    "fc3": (_window(FC3, 3), ("embedding", "hidden", "context")),
    "char3": (_window(CharLoop, 3), ("embedding", "hidden", "context")),
    "charloop": (_window(CharLoop, 8), ("embedding", "hidden", "context")),
    "rnn": (_window(WindowRNN, 8), ("embedding", "hidden", "context", "backend")),
    "rnn-seq": (_sequence("rnn"), ("embedding", "hidden", "layers", "dropout", "backend")),
    "gru-seq": (_sequence("gru"), ("embedding", "hidden", "layers", "dropout", "backend")),
    "lstm-seq": (_sequence("lstm"), ("embedding", "hidden", "layers", "dropout", "backend")),
}

MODELS = dict(SPEECH_MODELS)


def model_config_keys(name: str) -> tuple[str, ...]:
    _known(name)
    return MODELS[name][1]


def _known(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


def build_model(name: str, vocab_size: int, **config) -> nn.Module:
    """The model `name` for a vocabulary of `vocab_size` chars; config keys a model does not take
    are ignored so one config dict can describe a whole ladder."""
    _known(name)
    builder, keys = MODELS[name]
    return builder(vocab_size, **{k: v for k, v in config.items() if k in keys and v is not None})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
