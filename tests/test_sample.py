import os
import random
import string
import time

import pytest
import torch

from charlstm.checkpoint import save_checkpoint
from charlstm.data.speeches import Vocab
from charlstm.models import build_model
from charlstm.sample import find_checkpoint, generate, load_model, sample



def write_model(path, name, vocab, **config):
    torch.manual_seed(len(str(path)))
    model = build_model(name, len(vocab), embedding=8, hidden=16, **config)
    save_checkpoint(path, {"model": {"name": name, "config": {"embedding": 8, "hidden": 16, **config}},
                           "state_dict": model.state_dict(), "vocab": vocab})
    return model


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    write_model(path, "lstm-seq", sorted(set(" .Gdgmnorw")))
    return path


def test_the_same_seed_gives_the_same_text_and_another_seed_another(checkpoint):
    first = sample("Good mo", 80, seed=5, checkpoint=checkpoint)["text"]
    assert len(first) == 80
    assert sample("Good mo", 80, seed=5, checkpoint=checkpoint)["text"] == first
    assert sample("Good mo", 80, seed=6, checkpoint=checkpoint)["text"] != first


def test_streamed_chars_are_the_returned_text(checkpoint):
    seen = []
    result = sample("Good mo", 30, checkpoint=checkpoint, on_char=seen.append)
    assert "".join(seen) == result["text"] and all(len(c) == 1 for c in seen)


@pytest.mark.parametrize("name", ["fc3", "rnn", "gru-seq"])
def test_temperature_zero_and_top_k_one_are_greedy(tmp_path, name):
    vocab = sorted(set(" .Gdgmnorw"))
    model = write_model(tmp_path / "m.pt", name, vocab).eval()
    loaded, v, _ = load_model(tmp_path / "m.pt")
    greedy = "".join(generate(loaded, v, "Good mor", 20, temperature=0))
    assert "".join(generate(loaded, v, "Good mor", 20, top_k=1, seed=9)) == greedy
    text = "Good mor"
    for expected in greedy:
        ids = torch.tensor([Vocab(vocab).encode(text)])
        with torch.no_grad():
            logits = model(ids.t())[0][-1, 0] if model.context is None else model(ids[:, -model.context:])[0]
        assert vocab[int(logits.argmax())] == expected
        text += expected


def test_a_prime_outside_the_vocabulary_names_the_characters(checkpoint):
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'x', 'Z'"):
        sample("Good xZx", checkpoint=checkpoint)


def test_a_prime_shorter_than_the_window_is_refused(tmp_path):
    write_model(tmp_path / "m.pt", "charloop", sorted(set(" .Gdgmnorw")))
    with pytest.raises(ValueError, match="has 7 chars but this model reads a window of 8"):
        sample("Good mo", checkpoint=tmp_path / "m.pt")
    with pytest.raises(ValueError, match="the prime is empty"):
        write_model(tmp_path / "s.pt", "rnn-seq", sorted(set(" .Gdgmnorw")))
        sample("", checkpoint=tmp_path / "s.pt")


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"), (dict(length=-2), "length")])
def test_bad_sampling_settings_are_named(checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample("Good mo", checkpoint=checkpoint, **kwargs)


def test_a_text8_checkpoint_with_a_string_vocabulary_samples(tmp_path):
    vocab = " " + string.ascii_lowercase
    write_model(tmp_path / "text8.pt", "lstm-seq", vocab)
    text = sample("good mo", 50, checkpoint=tmp_path / "text8.pt")["text"]
    assert len(text) == 50 and set(text) <= set(vocab)
    with pytest.raises(ValueError, match="'G'"):
        sample("Good mo", checkpoint=tmp_path / "text8.pt")


def test_the_newest_checkpoint_under_runs_is_the_default(tmp_path):
    old = tmp_path / "runs" / "a" / "checkpoint.pt"
    new = tmp_path / "runs" / "b" / "checkpoint.pt"
    write_model(old, "fc3", sorted(set(" .Gdgmnorw")))
    write_model(new, "gru-seq", sorted(set(" .Gdgmnorw")))
    os.utime(old, (time.time() + 60, time.time() + 60))
    assert find_checkpoint(None, tmp_path / "runs") == old
    assert find_checkpoint(tmp_path / "runs" / "b") == new
    assert sample("Good mo", 5, runs=tmp_path / "runs")["model"] == "fc3"


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "runs", "no trained model under"),
    (lambda p: p / "absent.pt", "no checkpoint at"),
])
def test_missing_checkpoints_are_explained(tmp_path, setup, message):
    target = setup(tmp_path)
    with pytest.raises(ValueError, match=message):
        if target.name == "runs":
            find_checkpoint(None, target)
        else:
            find_checkpoint(target)


def test_a_checkpoint_without_a_model_is_refused(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"state_dict": {}, "vocab": ["a"]})
    with pytest.raises(ValueError, match="not a charlstm model checkpoint .missing model"):
        load_model(tmp_path / "x.pt")


def test_a_checkpoint_written_by_charlstm_train_samples(tmp_path):
    from charlstm.train import TrainConfig, train

    rng = random.Random(0)
    text = tmp_path / "words.txt"
    text.write_text(" ".join(rng.choice(["good", "morning", "nation", "people"]) for _ in range(400)))
    train(TrainConfig(data=str(text), nodes=8, batch_size=4, unrollings=5, steps=3, valid_size=50,
                      summary_frequency=1, out=str(tmp_path / "t8")), progress=False)
    result = sample("good mo", 40, seed=2, checkpoint=tmp_path / "t8")
    assert result["model"] == "udacity" and len(result["text"]) == 40
    assert set(result["text"]) <= set(" " + string.ascii_lowercase)
    assert sample("good mo", 40, seed=2, checkpoint=tmp_path / "t8")["text"] == result["text"]
    with pytest.raises(ValueError, match="'G'"):
        sample("Good mo", checkpoint=tmp_path / "t8")
