"""The character models of charlstm."""

import torch
from torch import nn

from charlstm import nn as recurrent



CALCULATORS = ("linear", "tanh", "rnn", "gru", "lstm")
CALCULATOR_BACKENDS = recurrent.BACKENDS


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
        layers = {"rnn": recurrent.RNN, "gru": recurrent.GRU, "lstm": recurrent.LSTM}
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, n_fac)
        self.rnn = layers[kind](n_fac, hidden, batch_first=True, backend=backend)
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
    if model not in CALCULATORS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(CALCULATORS)}")
    if backend not in CALCULATOR_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(CALCULATOR_BACKENDS)}")
    if n_fac < 1 or hidden < 1:
        raise ValueError(f"--n-fac and --hidden must be at least 1, got --n-fac {n_fac} --hidden {hidden}")
    if model == "linear":
        return LinearCalculator(vocab_size, n_fac, hidden)
    if model == "tanh":
        return TanhCalculator(vocab_size, n_fac, hidden)
    return RecurrentCalculator(model, vocab_size, n_fac, hidden, backend)
