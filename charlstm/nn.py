"""LSTM, GRU and RNN modules (and their cells): drop-in for torch.nn, with a choice of backend.

Each class subclasses its torch.nn twin, so parameter names (weight_ih_l0, ...), initialisation,
state_dict and repr are torch.nn's, and `load_state_dict(torch.nn.LSTM(...).state_dict())` works
both ways. `backend` chooses what runs the recurrence:
    "fused"      charlstm's C++/CUDA ops (charlstm.ops)
    "reference"  the plain-PyTorch specification (charlstm.reference)
    "torch"      torch.nn's own implementation
Besides float input, the sequence modules and the cells take int64 token ids ([T, B], [B, T] with
batch_first, or [B] for cells): the one-hot input of size input_size, which the fused ops compute
as a gather. Only the first layer sees the input, so ids work with any num_layers.

The sequence modules also take an embedding for token ids: `lstm(ids, hx, embedding=emb.weight)`
is `lstm(emb(ids), hx)`. On the fused backend, where a call has at least four ids per row of the
embedding (FOLD_IDS_PER_ROW), it runs as token-id input on the folded weight
weight_ih_l0 @ embedding.T: the input side then costs one product of vocabulary x input_size x
gates * hidden_size, instead of three over all T * B ids (the projection, its input gradient and
its weight gradient), and the gradients reach weight_ih_l0 and the embedding through that product.
Only the weight is used: an nn.Embedding's padding_idx and max_norm do not apply.
"""

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.config import check_backend


# Ids per embedding row from which the fused backend folds the embedding into the first layer.
# An LSTM (42 -> 256) forward and backward, folded and not alternating in one process on a 2-core
# AMD EPYC (Zen 4), unfolded time over folded at (T, B, vocabulary): (8, 64, 27) 1.09x, (8, 64, 91)
# 1.07x, (8, 64, 128) 1.04x, (50, 64, 91) 1.14x; (8, 64, 180) 0.96x, (4, 64, 91) 1.02x,
# (2, 64, 91) 0.92x, (100, 1, 91) 0.92x, (8, 64, 256) 0.93x, (8, 64, 512) 0.75x. The folded
# weight's products and the table of vocabulary x gates * hidden_size it is gathered from cost more
# than their FLOPs say, so the fold pays from about three ids per row.
FOLD_IDS_PER_ROW = 4


def folds_embedding(vocabulary: int, ids: int) -> bool:
    """Whether the fused backend folds an embedding of `vocabulary` rows into the first layer for
    a call over `ids` token ids."""
    return FOLD_IDS_PER_ROW * vocabulary <= ids


def _functions(backend):
    if backend == "fused":
        from charlstm import ops
        return ops
    if backend == "reference":
        from charlstm import reference
        return reference
    raise AssertionError(backend)


def _check_input(module, input):
    if isinstance(input, nn.utils.rnn.PackedSequence):
        raise TypeError(f"{type(module).__name__}(backend={module.backend!r}) takes padded tensors, not "
                        "PackedSequence: pad the batch, or use backend='torch'")
    if input.dtype == torch.long:
        return True
    if not input.is_floating_point():
        raise TypeError(f"input must be a float tensor or int64 token ids, got dtype {input.dtype}")
    return False


def _check_embedding(module, input, ids, embedding):
    name = type(module).__name__
    if not ids:
        raise TypeError(f"{name} with an embedding reads int64 token ids, got input of dtype {input.dtype}: "
                        "pass the ids, or embed them yourself and leave out embedding=")
    width = module.weight_ih_l0.shape[1]
    if embedding.dim() != 2 or embedding.shape[1] != width:
        raise ValueError(f"embedding must have shape [vocabulary, {width}] (input_size = {width}), got "
                         f"{list(embedding.shape)}")
    if embedding.dtype != module.weight_ih_l0.dtype or embedding.device != module.weight_ih_l0.device:
        raise TypeError(f"embedding is {embedding.dtype} on {embedding.device} but {name}'s weights are "
                        f"{module.weight_ih_l0.dtype} on {module.weight_ih_l0.device}: move one to the other")
    if input.numel():
        low, high = torch.stack(torch.aminmax(input)).tolist()
        if low < 0 or high >= embedding.shape[0]:
            raise IndexError(f"token ids must be in [0, {embedding.shape[0]}) for an embedding of "
                             f"{embedding.shape[0]} rows, got ids from {low} to {high}")


class _Recurrent:
    """What LSTM, GRU and RNN share on the fused and reference backends: all layers in one call
    (charlstm.ops.layers, or its specification charlstm.reference.layers), dropout between them
    drawn as torch.nn draws it."""

    _state_count = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 backend="fused", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, device=device, dtype=dtype)
        self.backend = check_backend(backend, "backend")

    def forward(self, input, hx=None, *, embedding=None):
        """torch.nn's forward; with `embedding` ([V, input_size]), `input` holds token ids and the
        first layer reads their rows of it (see the module's docstring)."""
        return self._forward_layers(input, hx, embedding)

    def extra_repr(self):
        return f"{super().extra_repr()}, backend={self.backend!r}"

    def _cell_name(self):
        raise NotImplementedError

    def _forward_layers(self, input, hx, embedding=None):
        ids = _check_input(self, input)
        weights = self._flat_weights
        if embedding is not None:
            _check_embedding(self, input, ids, embedding)
            if self.backend == "fused" and folds_embedding(embedding.shape[0], input.numel()):
                weights = [weights[0] @ embedding.t(), *weights[1:]]
            else:
                input, ids = F.embedding(input, embedding), False
        if self.backend == "torch":
            if ids:
                input = F.one_hot(input, self.input_size).to(self.weight_ih_l0.dtype)
            return super().forward(input, hx)
        seq_dim = 2 if ids else 3
        batched = input.dim() == seq_dim
        if not batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        B = input.shape[1]
        states = self._initial_states(hx, B, input, batched)
        dropout = self.dropout if self.training else 0.0
        fns = _functions(self.backend)
        x, out_states = fns.layers(input, states, weights, cell=self._cell_name(), bias=self.bias,
                                   dropout=dropout)
        if not batched:
            x = x.squeeze(1)
            out_states = tuple(s.squeeze(1) for s in out_states)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (out_states if self._state_count > 1 else out_states[0])

    def _initial_states(self, hx, B, input, batched):
        shape = (self.num_layers, B, self.hidden_size)
        dtype = self.weight_hh_l0.dtype
        if hx is None:
            return [input.new_zeros(shape, dtype=dtype) for _ in range(self._state_count)]
        hx = hx if isinstance(hx, tuple) else (hx,)
        if len(hx) != self._state_count:
            raise ValueError(f"{type(self).__name__} expects {self._state_count} initial state tensors, "
                             f"got {len(hx)}")
        states = []
        for s in hx:
            s = s if batched else s.unsqueeze(1)
            if tuple(s.shape) != shape:
                raise ValueError(f"initial state must have shape {list(shape)} (num_layers, batch, hidden_size), "
                                 f"got {list(s.shape)}")
            states.append(s)
        return states


class LSTM(_Recurrent, nn.LSTM):
    _state_count = 2

    def _cell_name(self):
        return "lstm"


class GRU(_Recurrent, nn.GRU):
    def _cell_name(self):
        return "gru"


class RNN(_Recurrent, nn.RNN):
    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, backend="fused", device=None, dtype=None):
        nn.RNN.__init__(self, input_size, hidden_size, num_layers, nonlinearity=nonlinearity, bias=bias,
                        batch_first=batch_first, dropout=dropout, device=device, dtype=dtype)
        self.backend = check_backend(backend, "backend")

    def _cell_name(self):
        return f"rnn_{self.nonlinearity}"


class _Cell:
    """Batching, default state and backend choice shared by the three cells."""

    def _prepare(self, input, hx, count):
        ids = _check_input(self, input)
        batched = input.dim() == (1 if ids else 2)
        if not batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else tuple(h.unsqueeze(0) for h in hx)
        if hx is None:
            zeros = input.new_zeros(input.shape[0], self.hidden_size, dtype=self.weight_hh.dtype)
            hx = (zeros,) * count
        return input, hx, batched, ids

    def _weights(self):
        return (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def _run(self, name, input, hx, count, **kwargs):
        input, hx, batched, ids = self._prepare(input, hx, count)
        if self.backend == "torch":
            if ids:
                input = F.one_hot(input, self.input_size).to(self.weight_ih.dtype)
            out = super().forward(input, hx if count > 1 else hx[0])
        else:
            out = getattr(_functions(self.backend), name)(input, *hx, *self._weights(), **kwargs)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


class LSTMCell(_Cell, nn.LSTMCell):
    def __init__(self, input_size, hidden_size, bias=True, backend="fused", device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self.backend = check_backend(backend, "backend")

    def forward(self, input, hx=None):
        return self._run("lstm_cell", input, None if hx is None else tuple(hx), 2)


class GRUCell(_Cell, nn.GRUCell):
    def __init__(self, input_size, hidden_size, bias=True, backend="fused", device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self.backend = check_backend(backend, "backend")

    def forward(self, input, hx=None):
        return self._run("gru_cell", input, None if hx is None else (hx,), 1)


class RNNCell(_Cell, nn.RNNCell):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", backend="fused", device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity, device=device,
                         dtype=dtype)
        self.backend = check_backend(backend, "backend")

    def forward(self, input, hx=None):
        return self._run("rnn_cell", input, None if hx is None else (hx,), 1, nonlinearity=self.nonlinearity)
