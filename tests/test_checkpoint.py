import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from charlstm.sample import sample
from charlstm.speech import SpeechConfig, train_speech
from charlstm.train import resume_config, train

# Checkpoints that charlstm 0.1.0 wrote (one torch.save file holding the weights and the training
# state), with what that version sampled from them and where it ended when resuming them.
LEGACY = Path(__file__).parent / "fixtures" / "checkpoints-0.1"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which").split()


def words(chars, seed):
    rng = random.Random(seed)
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(WORDS))
    return " ".join(out)


def legacy_corpus(folder: Path, name: str) -> None:
    """The corpus a legacy run trained on, at the relative path its checkpoint names."""
    expected = EXPECTED[name]["corpus"]
    if name.startswith("train"):
        text = words(6000, 0)
    else:
        text = "President: Someone\n\nGood morning. " + words(3000, 1).capitalize() + ".\n"
    (folder / expected["file"]).write_text(text)
    assert hashlib.sha256(text.encode()).hexdigest() == expected["sha256"]


@pytest.mark.parametrize("name, prime", [("train-lstm.pt", "the "), ("speech-lstm-seq.pt", "Good mo")])
def test_legacy_checkpoints_sample_what_they_sampled(name, prime):
    expected = EXPECTED[name]
    assert sample(prime, 40, seed=3, checkpoint=LEGACY / name)["text"] == expected["sample"]
    assert sample(prime, 40, temperature=0, checkpoint=LEGACY / name)["text"] == expected["greedy"]


def test_a_legacy_train_checkpoint_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    legacy_corpus(tmp_path, "train-lstm.pt")
    (tmp_path / "train-run").mkdir()
    shutil.copy(LEGACY / "train-lstm.pt", tmp_path / "train-run" / "checkpoint.pt")
    result = train(resume_config("train-run", steps=200), progress=False)
    assert result["resumed_at_step"] == EXPECTED["train-lstm.pt"]["step"]
    assert result["valid_perplexity"] == pytest.approx(
        EXPECTED["train-lstm.pt"]["resumed_to_200_valid_perplexity"], rel=1e-6)


def test_a_legacy_speech_checkpoint_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    legacy_corpus(tmp_path, "speech-lstm-seq.pt")
    (tmp_path / "speech-run").mkdir()
    shutil.copy(LEGACY / "speech-lstm-seq.pt", tmp_path / "speech-run" / "checkpoint.pt")
    config = SpeechConfig(corpus="speech.txt", model="lstm-seq", embedding=8, hidden=16,
                          backend="reference", batch_size=8, max_steps_per_epoch=60, seed=0)
    lines = []
    result = train_speech(config, out="speech-run", progress=False, log=lines.append)
    assert lines[0] == "resuming speech-run after epoch 1 of 2"
    expected = EXPECTED["speech-lstm-seq.pt"]
    assert result["valid_loss"] == pytest.approx(expected["resumed_valid_loss"], rel=1e-6)
    assert result["train_loss"] == pytest.approx(expected["resumed_train_loss"], rel=1e-6)
