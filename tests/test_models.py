import pytest
import torch
import torch.nn.functional as F

from charlstm.config import CALCULATORS, MODELS, SPEECH_MODELS
from charlstm.models import (GATES, LinearCalculator, RecurrentCalculator, TanhCalculator,
                             UdacityLM, build_model, count_parameters, init_weight_,
                             make_calculator, model_config_keys)


def test_parameters_have_torch_layout_and_one_bias_per_gate():
    model = UdacityLM(nodes=7, cell="lstm", backend="torch")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"weight_ih": (28, 27), "weight_hh": (28, 7), "bias_ih": (28,), "w": (7, 27), "b": (27,)}
    for cell, gates in GATES.items():
        assert UdacityLM(5, cell, "torch").weight_hh.shape == (gates * 5, 5)


def test_init_is_the_assignments_truncated_normal():
    torch.manual_seed(0)
    model = UdacityLM(nodes=256, backend="torch")
    for weight in (model.weight_ih, model.weight_hh, model.w):
        assert weight.min() >= -0.3 and weight.max() <= 0.1
    values = model.weight_hh.detach().flatten()
    # A normal(-0.1, 0.1) cut at two std keeps mean -0.1 and has std 0.088.
    assert values.mean().item() == pytest.approx(-0.1, abs=0.002)
    assert values.std().item() == pytest.approx(0.088, abs=0.002)
    assert not model.bias_ih.any() and not model.b.any()


@pytest.mark.parametrize("spec, low, high", [("uniform:-0.5,0.25", -0.5, 0.25), ("truncated_normal:1,0.5", 0.0, 2.0)])
def test_init_specs(spec, low, high):
    weight = init_weight_(torch.empty(1000), spec)
    assert weight.min() >= low and weight.max() <= high
    assert weight.max() - weight.min() > (high - low) / 2


@pytest.mark.parametrize("kwargs, message", [
    ({"cell": "transformer"}, "cell must be one of lstm, gru, rnn; got 'transformer'"),
    ({"backend": "jax"}, "backend must be one of fused, reference, torch; got 'jax'"),
])
def test_bad_model_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UdacityLM(**kwargs)


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("nodes, T, B", [(8, 5, 3), (1, 1, 1), (33, 7, 2)])
def test_backends_agree_in_float64(cell, nodes, T, B):
    torch.manual_seed(1)
    ids = torch.randint(0, 27, (T + 1, B))
    results = {}
    for backend in ("fused", "reference", "torch"):
        torch.manual_seed(2)
        model = UdacityLM(nodes, cell, backend).double()
        with torch.no_grad():  # nonzero biases, so that bias gradients and b_hh=None matter
            model.bias_ih.uniform_(-0.5, 0.5)
        state = tuple(s.uniform_(-1, 1) for s in model.initial_state(B))
        logits, new_state = model(ids[:-1], state)
        loss = F.cross_entropy(logits.reshape(-1, 27), ids[1:].reshape(-1)) + sum(s.sum() for s in new_state)
        loss.backward()
        results[backend] = [logits, *new_state] + [p.grad for p in model.parameters()]
    for backend in ("fused", "torch"):
        for ours, ref in zip(results[backend], results["reference"]):
            torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_reference_matches_the_assignments_cell():
    torch.manual_seed(3)
    model = UdacityLM(6, "lstm", "reference").double()
    ids = torch.randint(0, 27, (4, 2))
    h, c = (s.clone() for s in model.initial_state(2))
    W = model.weight_ih.T  # the assignment's ix|fx|cx|ox, [27, 4 * nodes]
    U = model.weight_hh.T
    logits = []
    for t in range(4):
        x = F.one_hot(ids[t], 27).double()
        i, f, g, o = (x @ W + h @ U + model.bias_ih).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits.append(h @ model.w + model.b)
    ours, _ = model(ids, model.initial_state(2))
    torch.testing.assert_close(ours, torch.stack(logits))


def adam_losses(model, loss_fn, steps: int, lr: float) -> torch.Tensor:
    """The loss before each of `steps` Adam steps on `loss_fn(model)`, in float64."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.fixture
def one_thread():
    """The calculators are tiny: on a busy machine, intra-op threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", CALCULATORS)
@pytest.mark.parametrize("batch,steps,hidden", [(1, 1, 1), (3, 5, 7), (2, 33, 2)])
def test_calculators_map_token_ids_to_one_prediction_per_string(model, batch, steps, hidden):
    torch.manual_seed(0)
    calculator = make_calculator(model, vocab_size=11, n_fac=2, hidden=hidden)
    ids = torch.randint(0, 11, (batch, steps))
    out = calculator(ids)
    assert out.shape == (batch,) and out.dtype == torch.float32
    out.sum().backward()
    assert calculator.embedding.weight.grad is not None
    (name, weight), = calculator.recurrent_weights().items()
    gates = {"linear": 1, "tanh": 1, "rnn": 1, "gru": 3, "lstm": 4}[model]
    assert weight.shape == (gates * hidden, hidden)


def hand_set(calculator, digit_values):
    with torch.no_grad():
        calculator.embedding.weight.copy_(torch.tensor(digit_values).unsqueeze(1))
        calculator.input.weight.fill_(1.0)
        calculator.input.bias.zero_()
        calculator.recurrent.weight.fill_(1.0)
        calculator.output.weight.fill_(1.0)
        calculator.output.bias.zero_()


@pytest.mark.usefixtures("one_thread")
def test_linear_calculator_with_digit_embeddings_adds_exactly():
    calculator = LinearCalculator(vocab_size=11, n_fac=1, hidden=1)
    hand_set(calculator, [float(d) for d in range(10)] + [0.0])
    ids = torch.tensor([[a, 10, b] for a in range(10) for b in range(10)])
    expected = torch.tensor([float(a + b) for a in range(10) for b in range(10)])
    assert torch.equal(calculator(ids).detach(), expected)


@pytest.mark.usefixtures("one_thread")
def test_tanh_calculator_squashes_every_step():
    calculator = TanhCalculator(vocab_size=3, n_fac=1, hidden=1)
    hand_set(calculator, [0.5, -1.0, 2.0])
    h = 0.0
    for x in (0.5, 2.0, -1.0):
        h = torch.tanh(torch.tensor(x + h)).item()
    assert calculator(torch.tensor([[0, 2, 1]])).item() == pytest.approx(h, abs=1e-6)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model", ["linear", "tanh"])
def test_hand_written_recurrences_start_from_the_identity(model):
    calculator = make_calculator(model, 11, 1, 5)
    assert torch.equal(calculator.recurrent.weight, torch.eye(5))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_calculator_backends_train_alike(kind):
    """Same seed, ten Adam steps: fused and torch.nn are each off the float64 reference by at
    most twice what the reference itself is off in float32 (plus 1e-6)."""
    ids = torch.randint(0, 11, (8, 3), generator=torch.Generator().manual_seed(1))
    targets = torch.randn(8, generator=torch.Generator().manual_seed(2))

    def losses(backend, dtype):
        torch.manual_seed(0)
        calculator = RecurrentCalculator(kind, 11, 2, 3, backend=backend).to(dtype)
        return adam_losses(calculator, lambda m: F.mse_loss(m(ids), targets.to(dtype)), 10, 0.05)

    exact = losses("reference", torch.float64)
    assert exact[-1] < exact[0]
    allowed = 2 * (losses("reference", torch.float32) - exact).abs().max() + 1e-6 * exact.max()
    for backend in ("fused", "torch"):
        assert (losses(backend, torch.float32) - exact).abs().max() <= allowed, backend


@pytest.mark.parametrize("args,message", [
    (("div", 11, 1, 4), "model must be one of linear, tanh, rnn, gru, lstm; got 'div'"),
    (("lstm", 11, 1, 4, "cuda"), "backend must be one of fused, reference, torch; got 'cuda'"),
])
def test_make_calculator_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        make_calculator(*args)


SPEECH_VOCAB = 11
SPEECH_TINY = dict(embedding=6, hidden=16)


def periodic_ids(n=400):
    # A text whose next char follows from the previous few: every model can learn it.
    return torch.tensor([(i * 7 + (i // 3)) % SPEECH_VOCAB for i in range(n)])


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
    model = build_model(name, SPEECH_VOCAB, **SPEECH_TINY, layers=2, dropout=0.0)
    x, y = batch_for(model, periodic_ids())
    losses = adam_losses(model, lambda m: loss_of(m, x, y), 15, 1e-2)
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("name, context", [("fc3", 3), ("char3", 3), ("charloop", 8), ("rnn", 8)])
def test_window_models_read_the_notebook_windows(name, context):
    model = build_model(name, SPEECH_VOCAB, **SPEECH_TINY)
    assert model.context == context
    assert model(torch.zeros(5, context, dtype=torch.long)).shape == (5, SPEECH_VOCAB)


@pytest.mark.parametrize("name", ["rnn-seq", "gru-seq", "lstm-seq"])
def test_sequence_models_carry_state_across_windows(name):
    torch.manual_seed(1)
    model = build_model(name, SPEECH_VOCAB, **SPEECH_TINY, layers=2).eval()
    x = torch.randint(0, SPEECH_VOCAB, (13, 3))
    whole, _ = model(x)
    first, state = model(x[:5])
    second, _ = model(x[5:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_the_notebook_sizes_are_the_defaults():
    model = build_model("fc3", 50)
    assert model.embed.embedding_dim == 42 and model.hidden.out_features == 256
    assert count_parameters(model) == 50 * 42 + (3 * 42 + 1) * 256 + (256 + 1) * 50


def test_config_keys_a_model_does_not_take_are_ignored():
    model = build_model("fc3", SPEECH_VOCAB, **SPEECH_TINY, layers=3, bptt=5, backend="torch")
    assert model.context == 3


def test_unknown_model_and_backend_are_named():
    with pytest.raises(ValueError, match="model must be one of .*lstm-seq.*; got 'transformer'"):
        build_model("transformer", SPEECH_VOCAB)
    with pytest.raises(ValueError, match="backend must be one of .*; got 'cuda'"):
        build_model("lstm-seq", SPEECH_VOCAB, backend="cuda")


@pytest.mark.parametrize("name", MODELS)
def test_every_model_a_checkpoint_can_name_builds_from_its_config_keys(name):
    config = {"embedding": 6, "hidden": 5, "nodes": 5, "kind": "gru", "n_fac": 2, "layers": 1}
    model = build_model(name, 11, **{k: v for k, v in config.items()
                                     if k in model_config_keys(name)})
    assert any(11 in p.shape for p in model.parameters())  # built for this vocabulary


@pytest.mark.parametrize("name", ["rnn", "rnn-seq", "gru-seq", "lstm-seq"])
def test_backends_train_alike(name):
    """Same weights, ten Adam steps: fused and torch.nn are each off the float64 reference by at
    most twice what the reference itself is off in float32 (plus 1e-6)."""
    torch.manual_seed(2)
    start = build_model(name, SPEECH_VOCAB, **SPEECH_TINY, layers=2, backend="torch").state_dict()
    x, y = batch_for(build_model(name, SPEECH_VOCAB, **SPEECH_TINY), periodic_ids())

    def losses(backend, dtype):
        model = build_model(name, SPEECH_VOCAB, **SPEECH_TINY, layers=2, backend=backend)
        model.load_state_dict(start)
        return adam_losses(model.to(dtype), lambda m: loss_of(m, x, y), 10, 1e-2)

    exact = losses("reference", torch.float64)
    allowed = 2 * (losses("reference", torch.float32) - exact).abs().max() + 1e-6 * exact.max()
    for backend in ("fused", "torch"):
        assert (losses(backend, torch.float32) - exact).abs().max() <= allowed, backend
