"""Per-step states from a model's weights: checked against the model's own outputs and torch.nn."""

import pytest
import torch

from charlstm.config import BACKENDS
from charlstm.models import FC3, build_model, make_calculator
from charlstm.states import model_states, recurrent_states


def sequence_model(cell, hidden, layers, backend, V=11):
    torch.manual_seed(3)
    model = build_model(f"{cell}-seq", V, embedding=5, hidden=hidden, layers=layers,
                        backend=backend).double().eval()
    with torch.no_grad():  # larger weights than the init, so gates saturate and states move
        for p in model.rnn.parameters():
            p.uniform_(-1.5, 1.5)
    return model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("hidden, layers, T", [(7, 1, 33), (1, 2, 5), (33, 2, 1)])
def test_top_layer_states_give_the_models_own_logits(cell, hidden, layers, T, backend):
    model = sequence_model(cell, hidden, layers, backend)
    ids = torch.randint(0, 11, (T,))
    found = model_states(model, ids)
    assert len(found) == layers and all(s.h.shape == (T, hidden) for s in found)
    logits, _ = model(ids.unsqueeze(1))
    torch.testing.assert_close(model.out(found[-1].h), logits[:, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_cell_states_and_gates_are_torch_nn_s(backend):
    """c at every step equals torch.nn.LSTM's run one step at a time, and the gates rebuild both
    c (c = f c' + i g) and h (h = o tanh c)."""
    model = sequence_model("lstm", 7, 2, backend)
    ids = torch.randint(0, 11, (40,))
    found = model_states(model, ids)
    reference = torch.nn.LSTM(5, 7, num_layers=2).double()
    reference.load_state_dict({k: v for k, v in model.rnn.state_dict().items()})
    x, state = model.embed(ids).unsqueeze(1), None
    cs = []
    for t in range(len(ids)):
        _, state = reference(x[t:t + 1], state)
        cs.append(state[1][:, 0])
    cs = torch.stack(cs, 1)  # [layers, T, H]
    for k, layer in enumerate(found):
        torch.testing.assert_close(layer.c, cs[k], rtol=1e-10, atol=1e-10)
        i, f, g, o = (layer.gates[n] for n in ("input", "forget", "cell", "output"))
        previous = torch.cat([torch.zeros(1, 7, dtype=torch.float64), layer.c[:-1]])
        torch.testing.assert_close(f * previous + i * g, layer.c, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(o * torch.tanh(layer.c), layer.h, rtol=1e-10, atol=1e-10)
        assert ((i > 0) & (i < 1) & (g.abs() < 1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gru_gates_rebuild_its_outputs(backend):
    model = sequence_model("gru", 6, 1, backend)
    ids = torch.randint(0, 11, (30,))
    layer = model_states(model, ids)[0]
    rnn = model.rnn
    r, z = layer.gates["reset"], layer.gates["update"]
    x = model.embed(ids)
    previous = torch.cat([torch.zeros(1, 6, dtype=torch.float64), layer.h[:-1]])
    xn = (x @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0)[:, 12:]
    hn = (previous @ rnn.weight_hh_l0.t() + rnn.bias_hh_l0)[:, 12:]
    n = torch.tanh(xn + r * hn)
    torch.testing.assert_close((1 - z) * n + z * previous, layer.h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_udacity_states_from_token_ids_end_in_the_forwards_state(cell):
    torch.manual_seed(0)
    model = build_model("udacity", 27, nodes=9, cell=cell).double().eval()
    ids = torch.randint(0, 27, (25,))
    layer = model_states(model, ids)[0]
    _, final = model(ids.unsqueeze(1), model.initial_state(1))
    torch.testing.assert_close(layer.h[-1], final[0][0], rtol=1e-10, atol=1e-10)
    if cell == "lstm":
        torch.testing.assert_close(layer.c[-1], final[1][0], rtol=1e-10, atol=1e-10)


def test_fused_and_reference_states_agree():
    ids = torch.randint(0, 11, (50,))
    fused = model_states(sequence_model("lstm", 8, 2, "fused"), ids)
    reference = model_states(sequence_model("lstm", 8, 2, "reference"), ids)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a.c, b.c, rtol=1e-10, atol=1e-10)
        for name in a.gates:
            torch.testing.assert_close(a.gates[name], b.gates[name], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, context", [("fc3", 3), ("char3", 3), ("charloop", 8), ("rnn", 8)])
def test_window_states_are_what_the_output_layer_reads(name, context):
    torch.manual_seed(1)
    model = build_model(name, 13, embedding=4, hidden=6).double().eval()
    ids = torch.randint(0, 13, (20,))
    layer = model_states(model, ids)[0]
    assert layer.first == context - 1 and layer.h.shape == (20 - context + 1, 6)
    assert layer.kind == ("relu" if isinstance(model, FC3) else "rnn")
    every_window = model(ids.unfold(0, context, 1))
    torch.testing.assert_close(model.out(layer.h), every_window)
    last = model(ids[-context:].unsqueeze(0))
    torch.testing.assert_close(model.out(layer.h[-1:]), last)


@pytest.mark.parametrize("kind", ["linear", "tanh", "rnn", "gru", "lstm"])
def test_calculator_states_end_in_its_prediction(kind):
    torch.manual_seed(2)
    model = make_calculator(kind, 11, 2, 4).double().eval()
    ids = torch.tensor([2, 10, 3])
    layer = model_states(model, ids)[0]
    assert layer.h.shape == (3, 4) and (layer.c is not None) == (kind == "lstm")
    torch.testing.assert_close(model.output(layer.h[-1]), model(ids.unsqueeze(0)))


def test_recurrent_states_take_a_batch():
    torch.manual_seed(4)
    w_ih, w_hh, b = torch.randn(12, 5), torch.randn(12, 3), torch.randn(12)
    x, h0, c0 = torch.randn(6, 2, 5), torch.randn(2, 3), torch.randn(2, 3)
    both = recurrent_states("lstm", x, (h0, c0), w_ih, w_hh, b, None)
    for row in range(2):
        one = recurrent_states("lstm", x[:, row:row + 1], (h0[row:row + 1], c0[row:row + 1]),
                               w_ih, w_hh, b, None)
        torch.testing.assert_close(both.c[:, row:row + 1], one.c)
