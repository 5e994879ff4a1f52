import os
import random
import string
import time

import pytest
import torch
from helpers import write_model

from charlstm.checkpoint import find, load_model
from charlstm.data.vocab import Vocab
from charlstm.sample import generate, sample

VOCAB = sorted(set(" .Gdgmnorw"))


@pytest.fixture
def checkpoint(tmp_path):
    write_model(tmp_path / "run", "lstm-seq", VOCAB)
    return tmp_path / "run" / "checkpoint.pt"


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
    model = write_model(tmp_path, name, VOCAB).eval()
    loaded, v, _ = load_model(tmp_path)
    greedy = "".join(generate(loaded, v, "Good mor", 20, temperature=0))
    assert "".join(generate(loaded, v, "Good mor", 20, top_k=1, seed=9)) == greedy
    text = "Good mor"
    for expected in greedy:
        ids = torch.tensor([Vocab(VOCAB).encode(text)])
        with torch.no_grad():
            logits = (model(ids.t())[0][-1, 0] if model.context is None
                      else model(ids[:, -model.context:])[0])
        assert VOCAB[int(logits.argmax())] == expected
        text += expected


def test_generate_leaves_a_training_model_in_training_mode(checkpoint):
    model, vocab, _ = load_model(checkpoint)
    model.train()
    assert len("".join(generate(model, vocab, "Good mo", 5))) == 5
    assert model.training


def test_a_prime_outside_the_vocabulary_names_the_characters(checkpoint):
    with pytest.raises(ValueError, match=r"outside the model's vocabulary: 'x', 'Z'"):
        sample("Good xZx", checkpoint=checkpoint)


def test_a_prime_shorter_than_the_window_is_refused(tmp_path):
    write_model(tmp_path / "w", "charloop", VOCAB)
    with pytest.raises(ValueError, match="has 7 chars but this model reads a window of 8"):
        sample("Good mo", checkpoint=tmp_path / "w")
    write_model(tmp_path / "s", "rnn-seq", VOCAB)
    with pytest.raises(ValueError, match="the prime is empty"):
        sample("", checkpoint=tmp_path / "s")


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "--temperature"), (dict(temperature=float("nan")), "--temperature"),
    (dict(top_k=0), "--top-k"), (dict(length=-2), "--length"), (dict(backend="tf"), "--backend")])
def test_bad_sampling_settings_are_named(checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample("Good mo", checkpoint=checkpoint, **kwargs)


def test_a_text8_model_reads_its_prime_in_text8_form_and_says_so(tmp_path):
    vocab = " " + string.ascii_lowercase
    write_model(tmp_path, "lstm-seq", vocab)
    notes = []
    given = sample("Good mo", 50, checkpoint=tmp_path, log=notes.append)
    assert given["prime"] == "good mo" and given["prime_given"] == "Good mo"
    assert notes == ["prime normalised to text8 form: 'good mo'"]
    assert given["text"] == sample("good mo", 50, checkpoint=tmp_path)["text"]
    assert sample("Room 101!", 5, checkpoint=tmp_path)["prime"] == "room one zero one "
    notes.clear()
    assert sample("good mo", 5, checkpoint=tmp_path, log=notes.append)["prime"] == "good mo"
    assert notes == []  # a prime already in text8 form is not reported


def test_a_model_with_its_own_vocabulary_refuses_other_characters_by_name(checkpoint):
    notes = []
    with pytest.raises(ValueError, match="outside the model's vocabulary: 'H', 'e', 'l'"):
        sample("Hello", checkpoint=checkpoint, log=notes.append)
    assert notes == []


def test_the_prime_is_streamed_before_the_text(checkpoint):
    pieces = []
    result = sample("Good mo", 10, checkpoint=checkpoint, on_prime=pieces.append,
                    on_char=pieces.append)
    assert pieces[0] == "Good mo" and "".join(pieces[1:]) == result["text"]


def test_without_a_checkpoint_the_newest_model_that_writes_text_is_sampled(tmp_path):
    from charlstm.calc import train
    from charlstm.config import CalcConfig

    write_model(tmp_path / "runs" / "speech", "fc3", VOCAB)
    train(CalcConfig(hidden=2, epochs=1, restarts=1, out=str(tmp_path / "runs" / "calc")))
    assert sample("Good mo", 5, runs=tmp_path / "runs")["checkpoint"] == str(
        tmp_path / "runs" / "speech" / "checkpoint.pt")
    (tmp_path / "runs" / "speech" / "checkpoint.pt").unlink()
    (tmp_path / "runs" / "speech" / "checkpoint.json").unlink()
    with pytest.raises(FileNotFoundError, match="no trained model under"):
        sample("Good mo", 5, runs=tmp_path / "runs")


def test_the_newest_checkpoint_under_runs_is_the_default(tmp_path):
    write_model(tmp_path / "runs" / "a", "fc3", VOCAB)
    write_model(tmp_path / "runs" / "b", "gru-seq", VOCAB)
    old = tmp_path / "runs" / "a" / "checkpoint.pt"
    os.utime(old, (time.time() + 60, time.time() + 60))
    assert find(None, tmp_path / "runs") == old
    assert find(tmp_path / "runs" / "b") == tmp_path / "runs" / "b" / "checkpoint.pt"
    assert sample("Good mo", 5, runs=tmp_path / "runs")["model"] == "fc3"


@pytest.mark.parametrize("target, message", [("runs", "no trained model under"),
                                             ("absent.pt", "no checkpoint at")])
def test_missing_checkpoints_are_explained(tmp_path, target, message):
    with pytest.raises(FileNotFoundError, match=message):
        if target == "runs":
            find(None, tmp_path / target)
        else:
            find(tmp_path / target)


def test_the_backend_can_change_and_gives_the_same_text(checkpoint):
    texts = {b: sample("Good mo", 40, seed=1, checkpoint=checkpoint, backend=b)["text"]
             for b in ("fused", "reference", "torch")}
    assert texts["fused"] == texts["reference"] == texts["torch"]


def test_a_calculator_checkpoint_is_refused_with_the_reason(tmp_path):
    from charlstm.calc import train
    from charlstm.config import CalcConfig

    train(CalcConfig(hidden=2, epochs=1, restarts=1, out=str(tmp_path / "calc")))
    with pytest.raises(ValueError, match="calculator .* writes no text"):
        sample("1+1", checkpoint=tmp_path / "calc")


def test_a_checkpoint_written_by_charlstm_train_samples(tmp_path):
    from charlstm.config import TrainConfig
    from charlstm.train import train

    rng = random.Random(0)
    text = tmp_path / "words.txt"
    text.write_text(" ".join(rng.choice(["good", "morning", "nation", "people"]) for _ in range(400)))
    train(TrainConfig(data=str(text), nodes=8, batch_size=4, unrollings=5, steps=3, valid_size=50,
                      summary_frequency=1, out=str(tmp_path / "t8")), progress=False)
    result = sample("good mo", 40, seed=2, checkpoint=tmp_path / "t8")
    assert result["model"] == "udacity" and len(result["text"]) == 40
    assert set(result["text"]) <= set(" " + string.ascii_lowercase)
    assert sample("good mo", 40, seed=2, checkpoint=tmp_path / "t8")["text"] == result["text"]
    assert sample("Good mo", 40, seed=2, checkpoint=tmp_path / "t8")["text"] == result["text"]
