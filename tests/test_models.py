import pytest
import torch

from charlstm.models import (CALCULATOR_BACKENDS, CALCULATORS, LinearCalculator, RecurrentCalculator,
                             TanhCalculator, make_calculator)


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a busy machine, intra-op threads only add waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_linear_calculator_with_digit_embeddings_adds_exactly():
    calculator = LinearCalculator(vocab_size=11, n_fac=1, hidden=1)
    hand_set(calculator, [float(d) for d in range(10)] + [0.0])
    ids = torch.tensor([[a, 10, b] for a in range(10) for b in range(10)])
    expected = torch.tensor([float(a + b) for a in range(10) for b in range(10)])
    assert torch.equal(calculator(ids).detach(), expected)


def test_tanh_calculator_squashes_every_step():
    calculator = TanhCalculator(vocab_size=3, n_fac=1, hidden=1)
    hand_set(calculator, [0.5, -1.0, 2.0])
    h = 0.0
    for x in (0.5, 2.0, -1.0):
        h = torch.tanh(torch.tensor(x + h)).item()
    assert calculator(torch.tensor([[0, 2, 1]])).item() == pytest.approx(h, abs=1e-6)


@pytest.mark.parametrize("model", ["linear", "tanh"])
def test_hand_written_recurrences_start_from_the_identity(model):
    calculator = make_calculator(model, 11, 1, 5)
    assert torch.equal(calculator.recurrent.weight, torch.eye(5))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_calculator_backends_train_alike(kind):
    """Same seed, ten Adam steps: fused and reference give torch.nn's losses."""
    ids = torch.randint(0, 11, (8, 3), generator=torch.Generator().manual_seed(1))
    targets = torch.randn(8, generator=torch.Generator().manual_seed(2))
    losses = {}
    for backend in CALCULATOR_BACKENDS:
        torch.manual_seed(0)
        calculator = RecurrentCalculator(kind, 11, 2, 3, backend=backend)
        optimizer = torch.optim.Adam(calculator.parameters(), lr=0.05)
        losses[backend] = []
        for _ in range(10):
            loss = torch.nn.functional.mse_loss(calculator(ids), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[backend].append(loss.item())
    assert losses["torch"][-1] < losses["torch"][0]
    for backend in ("fused", "reference"):
        assert losses[backend] == pytest.approx(losses["torch"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("args,message", [
    (("div", 11, 1, 4), "unknown model 'div'"),
    (("lstm", 11, 1, 4, "cuda"), "unknown backend 'cuda'"),
    (("tanh", 11, 1, 0), "--hidden 0"),
    (("linear", 11, 0, 4), "--n-fac"),
])
def test_make_calculator_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        make_calculator(*args)

