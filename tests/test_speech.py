import json
import math
import random
from dataclasses import replace

import pytest
import torch

from charlstm import checkpoint
from charlstm.config import SpeechConfig
from charlstm.data.corpus import read_corpus
from charlstm.data.vocab import Vocab
from charlstm.loop import Diverged, Interrupted
from charlstm.speech import bits, evaluate, train_speech
from helpers import press_ctrl_c_as_the_run_folder_starts

WORDS = "we the people will build a nation of hope and work together".split()


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "speeches"
    root.mkdir()
    for i in range(3):
        body = " ".join(rng.choice(WORDS) for _ in range(400))
        (root / f"{i}.txt").write_text(f"President: Test {i}\n\n{body}.\n", encoding="utf-8")
    return root


def tiny(corpus, **overrides):
    values = dict(corpus=str(corpus), embedding=8, hidden=24, batch_size=16, bptt=10,
                  max_steps_per_epoch=25, out=str(corpus.parent / "run"))
    values.update(overrides)
    return SpeechConfig(**values)


@pytest.mark.parametrize("model", ["fc3", "lstm-seq"])
def test_training_writes_a_run_folder_and_learns(corpus, tmp_path, model):
    out = tmp_path / "run"
    lines = []
    result = train_speech(tiny(corpus, model=model), progress=False, log=lines.append)
    saved = checkpoint.read(out)
    uniform = math.log(len(saved.vocab))
    assert result["valid_loss"] < 0.8 * uniform
    assert result["valid_bits_per_char"] == pytest.approx(bits(result["valid_loss"]))
    assert len(lines) == 2 and "nats/char" in lines[0] and "bpc" in lines[0]
    assert saved.model_name == model and list(saved.vocab) == sorted(saved.vocab)
    assert "P" not in saved.vocab and ":" not in saved.vocab
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == [1e-2, 1e-3] and saved.training["metrics"] == metrics
    assert json.loads((out / "result.json").read_text()) == result
    assert saved.config == result["config"] and result["out"] == str(out)


def test_the_checkpoint_rebuilds_the_model_that_was_trained(corpus, tmp_path):
    config = tiny(corpus, model="gru-seq", layers=2, dropout=0.2, out=str(tmp_path / "r"))
    train_speech(config, progress=False, log=lambda _: None)
    model, vocab, saved = checkpoint.load_model(tmp_path / "r")
    assert saved.model_config["layers"] == 2 and vocab == Vocab(saved.vocab)
    _, valid = read_corpus(corpus).split(0.1)
    ids = torch.tensor(vocab.encode(valid))
    assert evaluate(model, ids, 16) == pytest.approx(saved.training["metrics"][-1]["valid_loss"])


def test_an_interrupted_run_resumes_where_it_stopped(corpus, tmp_path):
    config = tiny(corpus, model="char3", seed=3, out=str(tmp_path / "cut"))
    whole = train_speech(replace(config, out=str(tmp_path / "whole")), progress=False,
                         log=lambda _: None)

    def stop_after_first_epoch(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_speech(config, progress=False, log=stop_after_first_epoch)
    assert checkpoint.read(tmp_path / "cut").training["epochs_done"] == 1
    lines = []
    resumed = train_speech(config, progress=False, log=lines.append)
    assert lines[0].startswith("resuming") and len(lines) == 2
    assert resumed["valid_loss"] == pytest.approx(whole["valid_loss"], rel=1e-6)
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)


def test_a_folder_holding_another_run_is_not_overwritten(corpus, tmp_path):
    out = str(tmp_path / "r")
    train_speech(tiny(corpus, model="fc3", out=out), progress=False, log=lambda _: None)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="different run"):
        train_speech(tiny(corpus, model="fc3", hidden=12, out=out), progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("overrides, message", [
    (dict(model="mlp"), "--model must be one of"),
    (dict(bptt=0), "--bptt must be at least 1"),
    (dict(lrs=[]), "--lr: learning rates"),
    (dict(dropout=1.0), "--dropout"),
    (dict(model="lstm-seq", batch_size=5000), "too small for 5000 streams"),
])
def test_bad_settings_are_named(corpus, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_speech(tiny(corpus, **overrides), progress=False)


def test_a_diverging_run_stops_and_names_the_fix(corpus):
    with pytest.raises(Diverged, match=r"loss became nan at epoch 1 batch \d+; lower --lr"):
        train_speech(tiny(corpus, model="fc3", lrs=[1e30]), progress=False,
                     log=lambda _: None)


def test_ctrl_c_as_the_run_folder_starts_says_nothing_was_saved_yet(corpus, monkeypatch):
    """Ctrl-C the moment metrics.jsonl appears (how a script knows the run began) is answered like
    any other: after the step under way, with what was kept."""
    press_ctrl_c_as_the_run_folder_starts(monkeypatch)
    config = tiny(corpus, model="fc3")
    with pytest.raises(KeyboardInterrupt) as info:  # not Interrupted: a bare one ends the test too
        train_speech(config, progress=False, log=lambda _: None)
    assert isinstance(info.value, Interrupted) and str(info.value) == (
        "interrupted in epoch 1; nothing was saved yet (a checkpoint comes after each epoch); rerun "
        "to start again")


def test_ctrl_c_stops_between_batches_and_says_how_to_resume(corpus, monkeypatch):
    import os
    import signal

    from charlstm import loop

    steps = []

    class PressCtrlC(loop.Progress):
        def advance(self, steps_done=1, **fields):
            steps.append(1)
            if len(steps) == 30:  # in the second epoch, after the first checkpoint
                os.kill(os.getpid(), signal.SIGINT)
            super().advance(steps_done, **fields)

    monkeypatch.setattr(loop, "Progress", PressCtrlC)
    config = tiny(corpus, model="fc3")
    with pytest.raises(Interrupted, match="interrupted in epoch 2; the checkpoint after epoch 1 "
                                          "is .*; rerun the same command to resume from it"):
        train_speech(config, progress=False, log=lambda _: None)
    assert len(steps) == 30 and checkpoint.read(config.out).training["epochs_done"] == 1
    steps.clear()
    with pytest.raises(Interrupted) as info:  # a run in its default folder: --out is named
        train_speech(replace(config, out=None), progress=False, log=lambda _: None)
    folder = info.value.checkpoint.parent
    assert folder.parent.name == "runs" and folder.name.startswith("speech-fc3-")
    assert str(info.value).endswith(f"rerun the same command with --out {folder} to resume "
                                    "from it")
