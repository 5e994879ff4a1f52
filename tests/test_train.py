import hashlib
import json
import math
import os
import signal
import stat
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import press_ctrl_c_as_the_run_folder_starts, write_text

from charlstm import checkpoint
from charlstm.config import TrainConfig
from charlstm.data.batches import encode
from charlstm.loop import Diverged, Interrupted
from charlstm.models import UdacityLM
from charlstm.train import (clip_global_norm_, learning_rate, resume_config, train,
                            validation_losses)


@pytest.fixture
def small(tmp_path):
    data = write_text(tmp_path / "corpus.txt")
    return TrainConfig(data=str(data), nodes=8, batch_size=4, unrollings=5, steps=30, valid_size=50,
                       summary_frequency=10, backend="fused", threads=1)


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def saved_step(folder):
    return checkpoint.read(folder).training["step"]


def test_learning_rate_is_a_staircase():
    config = TrainConfig(lr=10.0, decay_steps=5000, decay_rate=0.1)
    assert [learning_rate(config, s) for s in (0, 4999, 5000, 10000)] == pytest.approx([10, 10, 1, 0.1])


@pytest.mark.parametrize("scale, clipped", [(10.0, True), (0.01, False)])
def test_clip_is_tf_clip_by_global_norm(scale, clipped):
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad = torch.tensor([1.0, 2.0, 2.0]) * scale
    params[1].grad = torch.tensor([[4.0, 0.0], [0.0, 0.0]]) * scale
    before = [p.grad.clone() for p in params]
    norm = clip_global_norm_(params, 1.25)
    assert norm.item() == pytest.approx(5.0 * scale)
    factor = 1.25 / max(5.0 * scale, 1.25)
    for p, g in zip(params, before):
        torch.testing.assert_close(p.grad, g * factor)
    assert clipped == (factor < 1)


def test_validation_is_the_assignments_step_by_step_loop():
    torch.manual_seed(0)
    model = UdacityLM(12, "lstm", "fused").double()
    valid = torch.from_numpy(encode(b" anarchism originated as a term of abuse").astype(np.int64))
    state = model.initial_state(1)
    each = []
    for i in range(len(valid)):  # batch 1, one character at a time, the last predicting the first
        logits, state = model(valid[i].view(1, 1), state)
        probs = torch.softmax(logits.view(-1), 0).clamp(min=1e-10)
        each.append(-math.log(probs[valid[(i + 1) % len(valid)]].item()))
    losses = validation_losses(model, valid)
    assert losses.dtype == torch.float64 and losses.shape == (len(valid),)
    assert losses.tolist() == pytest.approx(each, rel=1e-12)


def test_result_and_run_folder(small, tmp_path):
    out = tmp_path / "run"
    result = train(replace(small, out=str(out)), progress=False)
    for key in ("valid_perplexity", "valid_bpc", "steps", "train_seconds", "seconds", "tokens_per_second",
                "config", "milestones"):
        assert key in result
    assert result["valid_bpc"] == pytest.approx(math.log2(result["valid_perplexity"]))
    assert 1 < result["valid_perplexity"] < 27 and result["steps"] == 30
    assert result["config"] == asdict(replace(small, out=str(out)))
    saved = checkpoint.read(out)
    assert (saved.workload, saved.model_name, saved.vocab) == ("train", "udacity",
                                                               " abcdefghijklmnopqrstuvwxyz")
    assert saved.config == result["config"]
    assert saved.model_config == {"nodes": 8, "cell": "lstm", "backend": "fused",
                                  "init": small.init}
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    records = metrics(out)
    assert [r["step"] for r in records] == [0, 10, 20]
    assert saved.training["metrics"] == records
    assert all(len(r["sample"]) == 80 and set(r["sample"]) <= set(" abcdefghijklmnopqrstuvwxyz")
               for r in records)
    assert saved.training["step"] == 30


def test_same_seed_same_result_other_seed_other_result(small):
    a = train(small, progress=False)["valid_perplexity"]
    assert train(small, progress=False)["valid_perplexity"] == a
    assert train(replace(small, seed=1), progress=False)["valid_perplexity"] != a


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_ends_where_the_uninterrupted_run_does(small, tmp_path, dtype):
    config = replace(small, dtype=dtype)
    whole = train(replace(config, out=str(tmp_path / "whole")), progress=False)
    train(replace(config, steps=17, out=str(tmp_path / "part")), progress=False)
    resumed = train(resume_config(tmp_path / "part", steps=30), progress=False)
    assert resumed["resumed_at_step"] == 17
    if dtype == "float64":
        assert resumed["valid_perplexity"] == whole["valid_perplexity"]
    else:
        assert resumed["valid_perplexity"] == pytest.approx(whole["valid_perplexity"], rel=1e-6)
    assert metrics(tmp_path / "part") == [dict(r, seconds=p["seconds"]) for r, p in
                                          zip(metrics(tmp_path / "whole"), metrics(tmp_path / "part"))]


def test_ctrl_c_saves_a_whole_step_and_resumes(small, tmp_path):
    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)

    def press_ctrl_c(step, ppl):
        if step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as info:
        train(replace(small, out=str(out)), milestones=[12], on_milestone=press_ctrl_c,
              progress=False)
    assert "after 12 steps" in str(info.value) and f"--resume {out}" in str(info.value)
    assert info.value.checkpoint == out / "checkpoint.pt" and saved_step(out) == 12
    assert signal.getsignal(signal.SIGINT) is handler
    resumed = train(resume_config(out), progress=False)
    assert resumed["valid_perplexity"] == pytest.approx(train(small, progress=False)["valid_perplexity"], rel=1e-6)
    assert [r["step"] for r in metrics(out)] == [0, 10, 20]


def test_ctrl_c_as_the_run_folder_starts_is_answered_after_the_first_step(small, tmp_path,
                                                                           monkeypatch):
    """Ctrl-C the moment metrics.jsonl appears is answered after the step under way, with the
    checkpoint of that step, not as a bare interruption."""
    press_ctrl_c_as_the_run_folder_starts(monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as info:  # not Interrupted: a bare one ends the test too
        train(replace(small, out=str(out)), progress=False)
    assert isinstance(info.value, Interrupted)
    assert str(info.value).startswith("interrupted after 1 steps; saved to")
    assert info.value.checkpoint == out / "checkpoint.pt" and saved_step(out) == 1


def test_a_process_that_ignores_ctrl_c_trains_through_it(small, tmp_path):
    # A sweep's workers ignore Ctrl-C (their parent stops them); training must not undo that.
    def press_ctrl_c(step, ppl):
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = train(replace(small, out=str(tmp_path / "run")), milestones=[12],
                       on_milestone=press_ctrl_c, progress=False)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert saved_step(tmp_path / "run") == small.steps and result["valid_perplexity"] > 0


def test_milestones_are_what_shorter_runs_report(small):
    seen = []
    result = train(small, milestones=[10, 25, 30], on_milestone=lambda k, p: seen.append(k), progress=False)
    assert seen == [10, 25, 30] and list(result["milestones"]) == [10, 25, 30]
    assert result["milestones"][30] == result["valid_perplexity"]
    shorter = train(replace(small, steps=10), progress=False)
    assert result["milestones"][10] == shorter["valid_perplexity"]
    assert list(result["milestone_char_nll"]) == [10, 25, 30]
    assert result["milestone_char_nll"][10] == shorter["valid_char_nll"]
    assert result["milestone_char_nll"][30] == result["valid_char_nll"]


def test_the_result_keeps_each_validation_characters_loss_and_the_corpus_checksum(small):
    result = train(small, progress=False)
    losses = result["valid_char_nll"]
    assert len(losses) == small.valid_size
    assert all(round(x, 5) == x and 0 <= x <= -math.log(1e-10) for x in losses)
    # rounded to 1e-5 nats, their mean is still the log of the reported perplexity
    assert math.exp(sum(losses) / len(losses)) == pytest.approx(result["valid_perplexity"],
                                                                rel=1e-5)
    text = " ".join(Path(small.data).read_text().split()).encode()  # already in text8 form
    assert result["data"]["characters"] == len(text)
    assert result["data"]["sha1"] == hashlib.sha1(text).hexdigest()


def test_a_resumed_run_keeps_the_losses_of_milestones_before_the_interruption(small, tmp_path):
    whole = train(small, milestones=[10, 30], progress=False)
    train(replace(small, steps=17, out=str(tmp_path / "part")), milestones=[10], progress=False)
    resumed = train(resume_config(tmp_path / "part", steps=30), milestones=[10, 30],
                    progress=False)
    assert resumed["milestone_char_nll"][10] == whole["milestone_char_nll"][10]
    assert resumed["milestone_char_nll"][30] == pytest.approx(whole["milestone_char_nll"][30],
                                                              abs=1e-4)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_backends_train_to_the_same_losses_within_float32_rounding(small, tmp_path, cell):
    """Ten steps from the same weights. The fused backend runs each step as one
    charlstm.ops.lm_sgd_step, the others through autograd; in float32 each may be off the float64
    reference by at most twice what the reference itself is off in float32 (plus 1e-6)."""
    def losses(backend, dtype):
        out = tmp_path / f"{backend}-{dtype}"
        config = replace(small, cell=cell, lr=small.lr if cell == "lstm" else 1.0,
                         backend=backend, dtype=dtype, steps=10, summary_frequency=1,
                         out=str(out))
        train(config, progress=False)
        return np.array([r["loss"] for r in metrics(out)])

    exact = losses("reference", "float64")
    assert len(exact) == 10
    allowed = 2 * np.abs(losses("reference", "float32") - exact).max() + 1e-6 * exact.max()
    for backend in ("fused", "torch"):
        assert np.abs(losses(backend, "float32") - exact).max() <= allowed, backend


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_learn(small, cell):
    # The assignment's learning rate of 10 is too high for these cells at 8 nodes.
    result = train(replace(small, cell=cell, steps=40, lr=1.0), milestones=[1], progress=False)
    assert result["valid_perplexity"] < result["milestones"][1] / 1.5


def test_divergence_stops_with_advice_and_keeps_the_last_good_checkpoint(small, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Diverged, match=r"at step \d+; lower --lr .* or --clip") as info:
        train(replace(small, lr=1e38, clip=1e38, summary_frequency=1, out=str(out)),
              progress=False)
    assert "last good checkpoint" in str(info.value)
    assert all(torch.isfinite(t).all() for t in checkpoint.read(out).state_dict.values())


def test_too_short_text(small, tmp_path):
    short = write_text(tmp_path / "short.txt", chars=60)
    with pytest.raises(ValueError, match=r"it needs at least --valid-size \+ --batch-size \* \(--unrollings \+ 1\) = 74"):
        train(replace(small, data=str(short)), progress=False)


@pytest.mark.parametrize("change, message", [
    ({"nodes": 0}, "--nodes must be at least 1"), ({"lr": -1.0}, "--lr must be a positive"),
    ({"clip": float("nan")}, "--clip"), ({"cell": "lstm2"}, "--cell must be one of"),
    ({"backend": "tf"}, "--backend must be one of"), ({"dtype": "float16"}, "--dtype"),
    ({"device": "abacus"}, "not a device"), ({"init": "zeros"}, "unknown init"), ({"threads": 0}, "--threads"),
])
def test_bad_options(small, change, message):
    with pytest.raises(ValueError, match=message):
        train(replace(small, **change), progress=False)


def test_milestones_beyond_steps(small):
    with pytest.raises(ValueError, match="milestones must lie between 1 and --steps"):
        train(small, milestones=[31], progress=False)


def test_resume_keeps_the_run_definition(small, tmp_path):
    train(replace(small, steps=5, out=str(tmp_path / "run")), progress=False)
    with pytest.raises(ValueError, match="--nodes cannot change when resuming"):
        resume_config(tmp_path / "run", nodes=16)
    config = resume_config(tmp_path / "run", steps=9, nodes=8)
    assert (config.steps, config.resume, config.out) == (9, str(tmp_path / "run"), str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_config(tmp_path / "elsewhere")


def test_a_speech_run_does_not_resume_as_a_train_run(small, tmp_path):
    from helpers import write_model
    write_model(tmp_path / "speech", "lstm-seq", " abc")
    with pytest.raises(ValueError, match="holds a `charlstm speech` run"):
        train(replace(small, resume=str(tmp_path / "speech"), out=str(tmp_path / "speech")),
              progress=False)


def test_a_new_run_never_overwrites_a_saved_one(small, tmp_path):
    out = tmp_path / "run"
    train(replace(small, steps=5, out=str(out)), progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run .*--resume"):
        train(replace(small, steps=7, out=str(out)), progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_resumed_run_keeps_the_summaries_up_to_its_checkpoint(small, tmp_path):
    train(replace(small, steps=15, out=str(tmp_path / "a")), progress=False)
    with open(tmp_path / "a" / "metrics.jsonl", "a") as f:
        f.write('{"step": 2')  # a line cut short by a kill
    train(resume_config(tmp_path / "a", steps=25), progress=False)
    assert [r["step"] for r in metrics(tmp_path / "a")] == [0, 10, 20]
    assert saved_step(tmp_path / "a") == 25


def test_a_resumed_run_writes_into_its_folder_wherever_it_was_moved_or_run_from(
        small, tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    train(replace(small, steps=10, out="runs/a"), progress=False)
    (tmp_path / "first" / "runs" / "a").rename(tmp_path / "first" / "runs" / "b")
    train(resume_config("runs/b", steps=20), progress=False)
    assert not (tmp_path / "first" / "runs" / "a").exists()
    assert saved_step(tmp_path / "first" / "runs" / "b") == 20
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = train(resume_config("../first/runs/b/checkpoint.pt", steps=30), progress=False)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert saved_step(tmp_path / "first" / "runs" / "b") == 30
    assert result["out"] == "../first/runs/b" and result["resumed_at_step"] == 20
    with pytest.raises(ValueError, match="--out .*other cannot be given with --resume: a resumed "
                                         "run writes into its own folder"):
        resume_config("../first/runs/b", steps=40, out=str(tmp_path / "other"))


def test_a_resume_that_would_train_nothing_is_refused_and_changes_nothing(small, tmp_path):
    train(replace(small, steps=30, out=str(tmp_path / "run")), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    for steps in (10, 30):
        with pytest.raises(ValueError, match=f"the run in .*run has already trained 30 steps, so "
                                             f"--steps {steps} leaves nothing to train; pass "
                                             "--steps above 30"):
            train(resume_config(tmp_path / "run", steps=steps), progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_without_out_a_run_is_saved_in_a_new_folder_under_runs(small, tmp_path):
    first = train(small, progress=False)
    second = train(small, progress=False)  # the same second: a folder of its own
    assert Path(first["out"]).parent == Path("runs") and first["out"] != second["out"]
    assert Path(first["out"]).name.startswith("train-")
    assert checkpoint.read(first["out"]).training["step"] == small.steps
    assert json.loads((Path(second["out"]) / "result.json").read_text())["out"] == second["out"]
    assert small.out is None  # the caller's config is left as it was
    nothing = train(replace(small, save=False), progress=False)
    assert nothing["out"] is None and sorted(Path("runs").iterdir()) == sorted(
        [Path(first["out"]), Path(second["out"])])


def test_the_run_records_its_data_so_that_it_resumes_from_another_folder(small, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(replace(small, data="corpus.txt", steps=10, out="run"), progress=False)
    assert result["config"]["data"] == str(tmp_path / "corpus.txt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert train(resume_config("../run", steps=20), progress=False)["resumed_at_step"] == 10


def test_run_files_follow_the_umask_and_temp_files_of_a_killed_write_are_removed(small, tmp_path):
    run = tmp_path / "run"
    old = os.umask(0o027)
    try:
        train(replace(small, steps=10, out=str(run)), progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert modes == dict.fromkeys(["checkpoint.json", "checkpoint.pt", "metrics.jsonl",
                                   "result.json"], 0o640)
    # What a SIGKILL in the middle of checkpoint.atomic_write_bytes leaves behind.
    for name in (".checkpoint.pt.k2x8_1.tmp", ".checkpoint.json.a9b.tmp", ".result.json.q.tmp"):
        (run / name).write_bytes(b"cut short")
    (run / "notes.tmp").write_text("the user's own")
    train(resume_config(run, steps=20), progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.json", "checkpoint.pt",
                                                      "metrics.jsonl", "notes.tmp", "result.json"]
