"""charlstm.nn modules as drop-in replacements for torch.nn, on every backend."""

import pytest
import torch
import torch.nn.functional as F

from charlstm import nn as cnn

BACKENDS = ["fused", "reference", "torch"]
PAIRS = {
    "lstm": (cnn.LSTM, torch.nn.LSTM, {}),
    "gru": (cnn.GRU, torch.nn.GRU, {}),
    "rnn_tanh": (cnn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (cnn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}
CELLS = {
    "lstm": (cnn.LSTMCell, torch.nn.LSTMCell, {}),
    "gru": (cnn.GRUCell, torch.nn.GRUCell, {}),
    "rnn_relu": (cnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
}


def assert_tree_close(a, b, **tol):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_tree_close(u, v, **tol)
    else:
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers,bias,batch_first", [(1, True, False), (2, False, True), (3, True, True)])
def test_module_matches_torch_nn_with_loaded_state(kind, backend, layers, bias, batch_first, device):
    ours_cls, theirs_cls, kw = PAIRS[kind]
    theirs = theirs_cls(5, 7, layers, bias=bias, batch_first=batch_first, **kw).double().to(device)
    ours = ours_cls(5, 7, layers, bias=bias, batch_first=batch_first, backend=backend, **kw).double().to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((4, 6, 5) if batch_first else (6, 4, 5), dtype=torch.double, device=device)
    n_states = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(layers, 4, 7, dtype=torch.double, device=device) for _ in range(n_states))
    hx = hx if kind == "lstm" else hx[0]
    for h in (None, hx):
        assert_tree_close(ours(x, h), theirs(x, h), rtol=1e-10, atol=1e-12)
    out, _ = ours(x, hx)
    ref_out, _ = theirs(x, hx)
    g_ours = torch.autograd.grad(out.square().sum(), list(ours.parameters()))
    g_theirs = torch.autograd.grad(ref_out.square().sum(), list(theirs.parameters()))
    assert_tree_close(g_ours, g_theirs, rtol=1e-9, atol=1e-12)
    # And back: torch.nn loads ours.
    fresh = theirs_cls(5, 7, layers, bias=bias, batch_first=batch_first, **kw).double().to(device)
    fresh.load_state_dict(ours.state_dict())
    assert_tree_close(fresh(x), ours(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_token_ids_equal_one_hot_through_layers(kind, backend, device):
    ours_cls, _, kw = PAIRS[kind]
    m = ours_cls(27, 9, 2, batch_first=True, backend=backend, **kw).double().to(device)
    ids = torch.randint(0, 27, (3, 8), device=device)
    assert_tree_close(m(ids), m(F.one_hot(ids, 27).double()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_unbatched_input(kind):
    ours_cls, theirs_cls, kw = PAIRS[kind]
    theirs = theirs_cls(3, 4, **kw).double()
    ours = ours_cls(3, 4, **kw).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 3, dtype=torch.double)
    assert_tree_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)


def test_dropout_between_layers_only_in_training():
    m = cnn.LSTM(4, 6, 2, dropout=0.5).double()
    x = torch.randn(5, 3, 4, dtype=torch.double)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    torch.manual_seed(1)
    a = m(x)[0]
    torch.manual_seed(2)
    b = m(x)[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dropout_draws_as_torch_nn(kind, backend, dtype):
    """Training with dropout between layers: from the same seed, the same masks as torch.nn's CPU
    modules, so the outputs and every gradient agree."""
    ours_cls, theirs_cls, kw = PAIRS[kind]
    theirs = theirs_cls(5, 7, 3, dropout=0.4, **kw).to(dtype)
    ours = ours_cls(5, 7, 3, dropout=0.4, backend=backend, **kw).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 4, 5, dtype=dtype, requires_grad=True)
    h = torch.randn(3, 4, 7, dtype=dtype, requires_grad=True)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    results = []
    for m in (ours, theirs):
        torch.manual_seed(3)
        y, _ = m(x, (h, h * 0.5) if kind == "lstm" else h)
        results.append((y, torch.autograd.grad(y.square().sum(), [x, h, *m.parameters()])))
    assert_tree_close(results[0], results[1], **tol)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_cells_match_torch_cells(kind, backend, device):
    ours_cls, theirs_cls, kw = CELLS[kind]
    theirs = theirs_cls(27, 5, **kw).double().to(device)
    ours = ours_cls(27, 5, backend=backend, **kw).double().to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 27, dtype=torch.double, device=device)
    assert_tree_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)
    h = torch.randn(3, 5, dtype=torch.double, device=device)
    hx = (h, h * 0.5) if kind == "lstm" else h
    assert_tree_close(ours(x, hx), theirs(x, hx), rtol=1e-10, atol=1e-12)
    assert_tree_close(ours(x[0]), theirs(x[0]), rtol=1e-10, atol=1e-12)
    ids = torch.randint(0, 27, (3,), device=device)
    assert_tree_close(ours(ids), theirs(F.one_hot(ids, 27).double()), rtol=1e-10, atol=1e-12)


def test_repr_names_backend():
    assert "backend='reference'" in repr(cnn.GRU(3, 4, backend="reference"))


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of fused, reference, torch; got 'cudnn'"):
        cnn.LSTM(3, 4, backend="cudnn")


def test_packed_sequence_rejected_with_advice():
    m = cnn.GRU(3, 4)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(TypeError, match="use backend='torch'"):
        m(packed)


def test_wrong_initial_state_shape():
    m = cnn.LSTM(3, 4, 2)
    with pytest.raises(ValueError, match=r"initial state must have shape \[2, 5, 4\]"):
        m(torch.randn(7, 5, 3), (torch.zeros(1, 5, 4), torch.zeros(1, 5, 4)))
    with pytest.raises(ValueError, match="expects 2 initial state tensors, got 1"):
        m(torch.randn(7, 5, 3), (torch.zeros(2, 5, 4),))


def test_integer_input_other_than_int64_rejected():
    with pytest.raises(TypeError, match="float tensor or int64 token ids"):
        cnn.RNN(3, 4)(torch.zeros(2, 2, dtype=torch.int32))


# (T, B, vocabulary): enough ids per embedding row for the fused backend to fold the embedding into
# the first layer, and too few.
EMBEDDING_SHAPES = {"folded": (12, 3, 9), "embedded": (3, 2, 9)}


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(EMBEDDING_SHAPES))
@pytest.mark.parametrize("batch_first", [False, True])
def test_embedding_argument_equals_embedding_then_module(kind, backend, shape, batch_first, device,
                                                        first_layer_widths):
    ours_cls, _, kw = PAIRS[kind]
    T, B, V = EMBEDDING_SHAPES[shape]
    # In training mode with dropout between the layers: both calls draw the same masks.
    m = ours_cls(5, 7, 2, batch_first=batch_first, dropout=0.3, backend=backend, **kw).double().to(device)
    emb = torch.nn.Embedding(V, 5).double().to(device)
    ids = torch.randint(0, V, (B, T) if batch_first else (T, B), device=device)
    hx = tuple(torch.randn(2, B, 7, dtype=torch.double, device=device) for _ in range(2 if kind == "lstm" else 1))
    hx = hx if kind == "lstm" else hx[0]

    params = [emb.weight, *m.parameters()]
    torch.manual_seed(0)
    y, h = m(ids, hx, embedding=emb.weight)
    grads = torch.autograd.grad(y.square().sum() + sum(s.sum() for s in (h if kind == "lstm" else (h,))), params)
    if backend == "fused":
        assert first_layer_widths == [V if shape == "folded" else 5]

    torch.manual_seed(0)
    y_ref, h_ref = m(emb(ids), hx)
    ref = torch.autograd.grad(y_ref.square().sum() + sum(s.sum() for s in (h_ref if kind == "lstm" else (h_ref,))),
                              params)
    assert_tree_close((y, h), (y_ref, h_ref), rtol=1e-10, atol=1e-12)
    assert_tree_close(grads, ref, rtol=1e-9, atol=1e-11)


def test_embedding_argument_unbatched():
    m = cnn.GRU(4, 6).double()
    emb = torch.nn.Embedding(3, 4).double()
    ids = torch.randint(0, 3, (20,))
    assert_tree_close(m(ids, embedding=emb.weight), m(emb(ids)), rtol=1e-10, atol=1e-12)


def test_embedding_argument_bad_input():
    m = cnn.LSTM(4, 6)
    emb = torch.nn.Embedding(10, 4)
    with pytest.raises(TypeError, match="with an embedding reads int64 token ids"):
        m(torch.randn(3, 2, 4), embedding=emb.weight)
    with pytest.raises(ValueError, match=r"embedding must have shape \[vocabulary, 4\]"):
        m(torch.zeros(3, 2, dtype=torch.long), embedding=torch.zeros(10, 5))
    with pytest.raises(TypeError, match="embedding is torch.float64 .* weights are torch.float32"):
        m(torch.zeros(3, 2, dtype=torch.long), embedding=emb.weight.double())
    for bad in (10, -1):
        ids = torch.zeros(40, 2, dtype=torch.long)
        ids[5, 1] = bad
        with pytest.raises(IndexError, match=r"token ids must be in \[0, 10\) .* 10 rows"):
            m(ids, embedding=emb.weight)
