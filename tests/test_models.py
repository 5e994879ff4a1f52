import pytest
import torch
import torch.nn.functional as F

from charlstm.models import SPEECH_MODELS, build_model, count_parameters

VOCAB = 11
TINY = dict(embedding=6, hidden=16)


def periodic_ids(n=400):
    # A text whose next char follows from the previous few: every model can learn it.
    return torch.tensor([(i * 7 + (i // 3)) % VOCAB for i in range(n)])


def batch_for(model, ids, batch=32):
    if model.context is None:
        streams = ids[: len(ids) // 8 * 8].view(8, -1).t()
        return streams[:-1], streams[1:]
    starts = torch.arange(batch)
    x = ids[starts[:, None] + torch.arange(model.context)]
    return x, ids[starts + model.context]


def loss_of(model, x, y):
    if model.context is None:
        logits, _ = model(x)
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())
    return F.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", list(SPEECH_MODELS))
def test_every_model_learns_a_few_steps(name):
    torch.manual_seed(0)
    model = build_model(name, VOCAB, **TINY, layers=2, dropout=0.0)
    x, y = batch_for(model, periodic_ids())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_of(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name, context", [("fc3", 3), ("char3", 3), ("charloop", 8), ("rnn", 8)])
def test_window_models_read_the_notebook_windows(name, context):
    model = build_model(name, VOCAB, **TINY)
    assert model.context == context
    assert model(torch.zeros(5, context, dtype=torch.long)).shape == (5, VOCAB)


@pytest.mark.parametrize("name", ["rnn-seq", "gru-seq", "lstm-seq"])
def test_sequence_models_carry_state_across_windows(name):
    torch.manual_seed(1)
    model = build_model(name, VOCAB, **TINY, layers=2).eval()
    x = torch.randint(0, VOCAB, (13, 3))
    whole, _ = model(x)
    first, state = model(x[:5])
    second, _ = model(x[5:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_the_notebook_sizes_are_the_defaults():
    model = build_model("fc3", 50)
    assert model.embed.embedding_dim == 42 and model.hidden.out_features == 256
    assert count_parameters(model) == 50 * 42 + (3 * 42 + 1) * 256 + (256 + 1) * 50


def test_config_keys_a_model_does_not_take_are_ignored():
    model = build_model("fc3", VOCAB, **TINY, layers=3, bptt=5, backend="torch")
    assert model.context == 3


def test_unknown_model_and_backend_are_named():
    with pytest.raises(ValueError, match="unknown model 'transformer'.*lstm-seq"):
        build_model("transformer", VOCAB)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        build_model("lstm-seq", VOCAB, backend="cuda")


@pytest.mark.parametrize("name", ["rnn", "rnn-seq", "gru-seq", "lstm-seq"])
def test_backends_train_alike(name):
    """Same weights, ten Adam steps: fused, reference and torch.nn give the same losses."""
    torch.manual_seed(2)
    start = build_model(name, VOCAB, **TINY, layers=2, backend="torch").state_dict()
    x, y = batch_for(build_model(name, VOCAB, **TINY), periodic_ids())
    losses = {}
    for backend in ("fused", "reference", "torch"):
        model = build_model(name, VOCAB, **TINY, layers=2, backend=backend)
        model.load_state_dict(start)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses[backend] = []
        for _ in range(10):
            loss = loss_of(model, x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[backend].append(loss.item())
    torch.testing.assert_close(losses["fused"], losses["torch"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["reference"], losses["torch"], rtol=1e-4, atol=1e-5)
