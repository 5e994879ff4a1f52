"""benchmarks/step_bound.py: its stub step does the work of the real ones but the recurrent module's."""

import importlib.util
from pathlib import Path

import pytest
import torch

from charlstm.bench_suite import Cell, Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def step_bound():
    spec = importlib.util.spec_from_file_location("step_bound", ROOT / "benchmarks" / "step_bound.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind,input", [("lstm", "float"), ("gru", "ids"), ("rnn", "float")])
def test_the_stub_clips_and_updates_every_parameter_the_real_step_does(step_bound, kind, input):
    cell = Cell(kind, 3, 8, 4, 2, input)
    real = Trainer(cell, "charlstm", "cpu")
    stub, after_backward = step_bound.stub_trainer(cell, real.model.state_dict())
    classifier = stub.model.out.weight.detach().clone()
    for _ in range(2):
        step_bound.timed_step(real)
        step_bound.timed_step(stub, after_backward)

    def with_gradients(trainer):
        return [(n, p.grad.shape) for n, p in trainer.model.named_parameters() if p.grad is not None]

    # FreeRecurrent keeps the module under .module: the same parameters, one level deeper.
    assert [(n.replace("rnn.module.", "rnn."), s) for n, s in with_gradients(stub)] == with_gradients(real)
    assert len(with_gradients(real)) == len(list(real.model.parameters()))
    # Adam keeps state for every parameter of both, and has moved the stub's classifier.
    assert len(stub.opt.state) == len(real.opt.state) == len(list(real.model.parameters()))
    assert not torch.equal(stub.model.out.weight, classifier)


def test_fused_adam_reaches_all_three_steps_and_moves_what_the_default_moves(step_bound):
    cell = Cell("lstm", 2, 8, 3, 1, "float")
    default = Trainer(cell, "torch", "cpu")
    state = {n: t.clone() for n, t in default.model.state_dict().items()}
    fused = Trainer(cell, "torch", "cpu", state=state, fused_adam=True)
    stub, after_backward = step_bound.stub_trainer(cell, state, fused_adam=True)
    assert not default.opt.param_groups[0]["fused"]
    assert fused.opt.param_groups[0]["fused"] and stub.opt.param_groups[0]["fused"]
    for _ in range(3):
        step_bound.timed_step(default)
        step_bound.timed_step(fused)
    # The same windows, weights and update rule: the two differ by rounding alone.
    for a, b in zip(default.model.parameters(), fused.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(p, state[n]) for n, p in fused.model.named_parameters())


def test_the_stub_output_gradient_is_taken_afresh_each_step(step_bound):
    cell = Cell("lstm", 2, 4, 3, 1, "float")
    stub, after_backward = step_bound.stub_trainer(cell, Trainer(cell, "torch", "cpu").model.state_dict())
    for _ in range(3):
        step_bound.timed_step(stub, after_backward)
        assert stub.model.rnn.y.grad is None


def test_a_cell_that_is_not_six_fields_says_what_it_wants(step_bound):
    with pytest.raises(SystemExit, match="is not KIND,B,H,T,LAYERS,INPUT"):
        step_bound.parse_cell("lstm,1,64,10,1,text")
    with pytest.raises(SystemExit, match="e.g. lstm,64,128,50,1,float"):
        step_bound.parse_cell("lstm,64,128")
    assert step_bound.parse_cell("gru,16,128,50,2,ids") == Cell("gru", 16, 128, 50, 2, "ids")


def test_the_targets_subtract_the_classifier_and_scale_by_each_peak(step_bound):
    cell = Cell("lstm", 2, 8, 5, 1, "float")
    N, H, G, I = 10, 8, 4, 64  # T * B, hidden, gates, the embedding's width
    by_hand = 3 * 2 * N * H * G * H + 3 * 2 * N * I * G * H  # recurrent and input products only
    assert step_bound.recurrent_flops(cell) == by_hand
    row = {"torch": {"step": 3.0}, "stub": {"step": 1.5}}
    step_bound.add_targets(row, cell, {"torch_mm_gflops": 100.0, "onednn_gflops": None})
    assert row["recurrent_for_1_5x_ms"] == pytest.approx(0.5)
    assert row["recurrent_products_ms"] == {"torch_mm_gflops": pytest.approx(by_hand / 1e8), "onednn_gflops": None}


def test_the_stub_gradients_are_not_zeros_and_the_clip_leaves_them_alone(step_bound):
    # An all-zero second moment sends Adam's square root down a slower path than real gradients
    # take; and the clip scales gradients in place, which would shrink the reused ones step by step.
    cell = Cell("lstm", 2, 16, 3, 1, "float")
    stub, after_backward = step_bound.stub_trainer(cell, Trainer(cell, "torch", "cpu").model.state_dict())
    step_bound.timed_step(stub, after_backward)
    first = {n: p.grad.clone() for n, p in stub.model.named_parameters() if not n.startswith("out.")}
    for _ in range(3):
        step_bound.timed_step(stub, after_backward)
    for name, p in stub.model.named_parameters():
        if name in first:
            assert bool((p.grad != 0).all()), name
            assert torch.equal(p.grad, first[name]), name
