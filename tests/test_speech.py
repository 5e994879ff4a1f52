import json
import math
import random

import pytest
import torch

from charlstm.checkpoint import load_checkpoint
from charlstm.speech import SpeechConfig, bits, evaluate, train_speech
from charlstm.data.speeches import Vocab, load_corpus
from charlstm.models import build_model

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
                  max_steps_per_epoch=25)
    values.update(overrides)
    return SpeechConfig(**values)


@pytest.mark.parametrize("model", ["fc3", "lstm-seq"])
def test_training_writes_a_run_folder_and_learns(corpus, tmp_path, model):
    out = tmp_path / "run"
    lines = []
    result = train_speech(tiny(corpus, model=model), out=out, progress=False, log=lines.append)
    saved = load_checkpoint(out / "checkpoint.pt")
    uniform = math.log(len(saved["vocab"]))
    assert result["valid_loss"] < 0.8 * uniform
    assert result["valid_bits_per_char"] == pytest.approx(bits(result["valid_loss"]))
    assert len(lines) == 2 and "nats/char" in lines[0] and "bpc" in lines[0]
    assert saved["model"]["name"] == model and saved["vocab"] == sorted(saved["vocab"])
    assert "P" not in saved["vocab"] and ":" not in saved["vocab"]
    metrics = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [m["lr"] for m in metrics] == [1e-2, 1e-3]
    assert json.loads((out / "config.json").read_text())["model"] == model


def test_the_checkpoint_rebuilds_the_model_that_was_trained(corpus, tmp_path):
    config = tiny(corpus, model="gru-seq", layers=2, dropout=0.2)
    train_speech(config, out=tmp_path / "r", progress=False, log=lambda _: None)
    saved = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    model = build_model(saved["model"]["name"], len(saved["vocab"]), **saved["model"]["config"])
    model.load_state_dict(saved["state_dict"])
    assert saved["model"]["config"]["layers"] == 2
    _, valid = load_corpus(corpus).split(0.1)
    ids = torch.tensor(Vocab(saved["vocab"]).encode(valid))
    assert evaluate(model, ids, 16) == pytest.approx(saved["run"]["metrics"][-1]["valid_loss"])


def test_an_interrupted_run_resumes_where_it_stopped(corpus, tmp_path):
    config = tiny(corpus, model="char3", seed=3)
    whole = train_speech(config, out=tmp_path / "whole", progress=False, log=lambda _: None)

    def stop_after_first_epoch(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_speech(config, out=tmp_path / "cut", progress=False, log=stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["run"]["epochs_done"] == 1
    lines = []
    resumed = train_speech(config, out=tmp_path / "cut", progress=False, log=lines.append)
    assert lines[0].startswith("resuming") and len(lines) == 2
    assert resumed["valid_loss"] == pytest.approx(whole["valid_loss"], rel=1e-6)
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)


def test_a_folder_holding_another_run_is_not_overwritten(corpus, tmp_path):
    train_speech(tiny(corpus, model="fc3"), out=tmp_path / "r", progress=False, log=lambda _: None)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="different run"):
        train_speech(tiny(corpus, model="fc3", hidden=12), out=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("overrides, message", [
    (dict(model="mlp"), "unknown model"),
    (dict(bptt=0), "bptt must be at least 1"),
    (dict(lrs=[]), "learning rates"),
    (dict(dropout=1.0), "dropout"),
    (dict(model="lstm-seq", batch_size=5000), "too small for 5000 streams"),
])
def test_bad_settings_are_named(corpus, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_speech(tiny(corpus, **overrides), out=tmp_path / "r", progress=False)
