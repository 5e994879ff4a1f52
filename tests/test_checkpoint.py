import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import words, write_model

from charlstm import __version__, checkpoint
from charlstm.config import SpeechConfig
from charlstm.sample import sample
from charlstm.speech import train_speech
from charlstm.train import resume_config, train

# Checkpoints that charlstm 0.1.0 wrote (one torch.save file holding the weights and the training
# state), with what that version sampled from them and where it ended when resuming them.
LEGACY = Path(__file__).parent / "fixtures" / "checkpoints-0.1"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def legacy_corpus(folder: Path, name: str) -> None:
    """The corpus a legacy run trained on, at the relative path its checkpoint names."""
    expected = EXPECTED[name]["corpus"]
    if name.startswith("train"):
        text = words(6000, 0)
    else:
        text = "President: Someone\n\nGood morning. " + words(3000, 1).capitalize() + ".\n"
    (folder / expected["file"]).write_text(text)
    assert hashlib.sha256(text.encode()).hexdigest() == expected["sha256"]


@pytest.mark.parametrize("name, prime", [("train-lstm.pt", "the "),
                                         ("speech-lstm-seq.pt", "Good mo")])
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


def test_a_single_file_checkpoint_is_resumed_from_a_run_folder_only(tmp_path):
    shutil.copy(LEGACY / "train-lstm.pt", tmp_path / "old.pt")
    with pytest.raises(ValueError, match="--resume .*old.pt: a run continues in its own folder, "
                                         "from the checkpoint.pt there"):
        resume_config(tmp_path / "old.pt", steps=200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]


def test_a_legacy_speech_checkpoint_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    legacy_corpus(tmp_path, "speech-lstm-seq.pt")
    (tmp_path / "speech-run").mkdir()
    shutil.copy(LEGACY / "speech-lstm-seq.pt", tmp_path / "speech-run" / "checkpoint.pt")
    config = SpeechConfig(corpus="speech.txt", model="lstm-seq", embedding=8, hidden=16,
                          backend="reference", batch_size=8, max_steps_per_epoch=60, seed=0,
                          out="speech-run")
    lines = []
    result = train_speech(config, progress=False, log=lines.append)
    assert lines[0] == "resuming speech-run after epoch 1 of 2"
    expected = EXPECTED["speech-lstm-seq.pt"]
    assert result["valid_loss"] == pytest.approx(expected["resumed_valid_loss"], rel=1e-6)
    assert result["train_loss"] == pytest.approx(expected["resumed_train_loss"], rel=1e-6)


def test_a_checkpoint_is_a_description_and_weights_that_rebuild_the_model(tmp_path):
    model = write_model(tmp_path, "gru-seq", "abc ", layers=2)
    description = json.loads((tmp_path / "checkpoint.json").read_text())
    assert description == {"format": "charlstm-checkpoint", "version": 1,
                           "charlstm": __version__, "workload": "speech",
                           "model": {"name": "gru-seq",
                                     "config": {"embedding": 8, "hidden": 16, "layers": 2}},
                           "vocab": "abc ", "config": {}}
    for path in (tmp_path, tmp_path / "checkpoint.pt", tmp_path / "checkpoint.json"):
        loaded, vocab, saved = checkpoint.load_model(path)
        assert vocab.chars == list("abc ") and saved.model_name == "gru-seq"
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor)


def test_reading_needs_both_files_and_says_which_is_missing(tmp_path):
    write_model(tmp_path, "fc3", "ab")
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(checkpoint.NotACheckpoint, match="has no checkpoint.pt beside it"):
        checkpoint.read(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint.read(tmp_path / "elsewhere")


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    ('{"format": "something else"}', "no \"format\": \"charlstm-checkpoint\""),
    ('{"format": "charlstm-checkpoint", "version": 99}', "newer than this charlstm reads"),
])
def test_a_description_that_is_not_ours_is_refused_in_one_line(tmp_path, text, reason):
    write_model(tmp_path, "fc3", "ab")
    (tmp_path / "checkpoint.json").write_text(text)
    with pytest.raises(checkpoint.NotACheckpoint) as error:
        checkpoint.read(tmp_path)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_weights_are_loaded_without_running_code(tmp_path):
    write_model(tmp_path, "fc3", "ab")

    class Exploit:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"state_dict": {}, "training": {"x": Exploit()}}, tmp_path / "checkpoint.pt")
    with pytest.raises(checkpoint.NotACheckpoint, match="not tensors and plain data"):
        checkpoint.read(tmp_path).tensors()


@pytest.mark.parametrize("name", ["train-lstm.pt", "speech-lstm-seq.pt"])
def test_a_legacy_checkpoint_reads_as_the_two_part_format(name):
    saved = checkpoint.read(LEGACY / name)
    assert saved.workload == name.split("-")[0]
    assert saved.model_name == ("udacity" if name.startswith("train") else "lstm-seq")
    checkpoint.load_model(saved)  # a strict load_state_dict: every weight fits the description
    if name.startswith("train"):
        assert saved.vocab == " abcdefghijklmnopqrstuvwxyz"
        assert saved.training["step"] == EXPECTED[name]["step"]
    else:
        assert saved.training["epochs_done"] == EXPECTED[name]["epochs_done"]
        assert len(saved.training["metrics"]) == 1
