"""`charlstm explain`: the ranking finds units, the surprise is the model's loss, the page holds
its data, and bad input gets one clear line."""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import (QUOTE_UNIT, page_data, page_data_from, quote_text, write_model,
                     write_quote_model, words)
from typer.testing import CliRunner

from charlstm import checkpoint
from charlstm.config import ExplainConfig
from charlstm.explain import FEATURES, correlations, explain, features, render, saturation
from charlstm_cli.main import app


def run(*args):
    return CliRunner().invoke(app, ["explain", *map(str, args)])


@pytest.fixture
def quotes(tmp_path):
    write_quote_model(tmp_path / "run")
    (tmp_path / "quotes.txt").write_text(quote_text())
    return tmp_path


def test_the_hand_wired_quote_unit_is_ranked_first_for_inside_quotes(quotes):
    result = run("--checkpoint", quotes / "run", "--text", quotes / "quotes.txt", "--out",
                 quotes / "page.html", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    best = next(r for r in report["ranking"] if r["feature"] == "inside quotes" and r["rank"] == 1)
    assert best["unit"] == QUOTE_UNIT and best["correlation"] > 0.9
    # No other unit comes close: the rest of the network has random weights.
    others = [r for r in report["ranking"] if r["feature"] == "inside quotes"
              and r["unit"] != QUOTE_UNIT]
    assert all(abs(r["correlation"]) < 0.5 for r in others)
    assert report["page"] == str(quotes / "page.html")


def test_a_unit_of_noise_is_ranked_for_nothing(quotes):
    """The same text through a model whose unit 3 was not wired: no unit tracks quotes."""
    write_model(quotes / "plain", "lstm-seq", sorted(set(quote_text())))
    report = explain(ExplainConfig(checkpoint=str(quotes / "plain"),
                                   text=str(quotes / "quotes.txt"), out=str(quotes / "p.html")))
    best = next(r for r in report["ranking"] if r["feature"] == "inside quotes" and r["rank"] == 1)
    assert abs(best["correlation"]) < 0.9


def speech_bits(model, ids):
    from charlstm.speech import bits, evaluate
    return bits(evaluate(model, ids, 1))


@pytest.mark.parametrize("name, config", [
    ("lstm-seq", {"layers": 2}), ("gru-seq", {}), ("rnn-seq", {}), ("fc3", {}), ("char3", {}),
    ("charloop", {}), ("rnn", {})])
def test_the_pages_bits_per_char_is_the_models_loss_on_the_text(tmp_path, name, config):
    text = words(1500, seed=2).replace(" a ", " A. ") + "\n"
    vocab = sorted(set(text))
    model = write_model(tmp_path, name, vocab, **config).eval()
    (tmp_path / "t.txt").write_text(text)
    report = explain(ExplainConfig(checkpoint=str(tmp_path), text=str(tmp_path / "t.txt"),
                                   out=str(tmp_path / "page.html")))
    ids = torch.tensor([vocab.index(c) for c in text])
    assert report["bits_per_char"] == pytest.approx(speech_bits(model, ids), rel=1e-6)
    data = page_data(tmp_path / "page.html")
    assert data["text"] == text and len(data["bits"]) == len(text)
    paid = [b for b in data["bits"] if b is not None]
    context = getattr(model, "context", None) or 1
    assert len(paid) == len(text) - context == data["predicted_chars"]
    assert sum(paid) / len(paid) == pytest.approx(report["bits_per_char"], abs=1e-4)


def test_a_train_model_reads_its_text_in_text8_form_and_its_loss_matches(tmp_path):
    from charlstm.data.batches import encode
    from charlstm.models import UdacityLM

    torch.manual_seed(0)
    model = UdacityLM(nodes=12).eval()
    alphabet = " abcdefghijklmnopqrstuvwxyz"
    checkpoint.save(tmp_path / "run", checkpoint.describe(
        "train", "udacity", {"nodes": 12, "cell": "lstm"}, alphabet, {}), model.state_dict())
    (tmp_path / "t.txt").write_text("The 2 Cats, sat.\n" * 20)
    result = run("--checkpoint", tmp_path / "run", "--text", tmp_path / "t.txt", "--json")
    assert result.exit_code == 0, result.output
    assert "normalised to text8 form" in result.stderr
    report = json.loads(result.stdout)
    data = page_data(report["page"])
    assert data["text"].startswith("the two cats sat the two cats")
    ids = torch.from_numpy(encode(data["text"].encode()).astype("int64"))
    logits, _ = model(ids.unsqueeze(1), model.initial_state(1))
    loss = F.cross_entropy(logits[:-1, 0], ids[1:]).item() / math.log(2)
    assert report["bits_per_char"] == pytest.approx(loss, rel=1e-6)
    assert report["page"] == str(tmp_path / "run" / "explain.html")


def test_features_mark_what_they_name():
    text = 'Ab "cd" (e)\nF. 9x'
    got = features(text)
    assert list(got) == list(FEATURES)
    def ones(name):
        return "".join(c if v else "_" for c, v in zip(text, got[name]))
    assert ones("inside quotes") == '___"cd' + "_" * 11
    assert ones("inside parentheses") == "_" * 8 + "(e" + "_" * 7
    assert got["position in line"][:3] == [0, 1, 2] and got["position in line"][12:14] == [0, 1]
    assert got["position in sentence"][13:16] == [1, 0, 1]
    assert ones("start of word") == "A___c____e__F__9_"
    assert ones("after full stop") == "_____________. __"
    assert ones("digit") == "_______________9_"
    assert ones("upper case") == "A___________F____"


def test_curly_quotes_open_and_close():
    assert features("a“b”c")["inside quotes"] == [0, 1, 1, 0, 0]


def test_correlations_are_pearsons_and_nan_where_nothing_varies():
    torch.manual_seed(0)
    values, marks = torch.randn(200, 3), torch.randn(200, 2)
    marks[:, 1] = 1.0
    got = correlations(values, marks)
    for u in range(3):
        expected = torch.corrcoef(torch.stack([values[:, u], marks[:, 0]]))[0, 1].item()
        assert got[u, 0].item() == pytest.approx(expected, abs=1e-6)
    assert torch.isnan(got[:, 1]).all()


def test_saturation_counts_steps_beyond_the_thresholds():
    gate = torch.tensor([[0.05, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.91]])
    assert saturation(gate) == {"left": [0.5, 0.0], "right": [0.25, 0.5]}


def test_the_page_loads_nothing_and_its_data_survives_any_text():
    data = {"kind": "text", "text": "</script><script>alert(1)</script> & \u2028"}
    html = render(data)
    assert page_data_from(html) == data
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "@import" not in html and "url(" not in html


def test_a_sample_is_the_prime_and_what_sample_generates(quotes):
    from charlstm.sample import generate

    report = explain(ExplainConfig(checkpoint=str(quotes / "run"), prime='he "', length=300,
                                   seed=5, temperature=0.7, out=str(quotes / "s.html")))
    model, vocab, _ = checkpoint.load_model(quotes / "run")
    expected = 'he "' + "".join(generate(model, vocab, 'he "', 300, 0.7, None, 5))
    assert page_data(quotes / "s.html")["text"] == expected and report["chars"] == 304
    assert "sample" in report["source"]


def test_long_texts_are_cut_with_a_message(quotes):
    result = run("--checkpoint", quotes / "run", "--text", quotes / "quotes.txt", "--max-chars",
                 "500", "--out", quotes / "p.html", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chars"] == 500 and report["cut_from"] == len(quote_text()) + 1
    assert f"the text has {report['cut_from']:,} chars; explaining the first 500" in result.stderr
    assert len(page_data(quotes / "p.html")["text"]) == 500


def test_without_a_text_the_page_explains_the_runs_validation_text(tmp_path):
    from charlstm.data.corpus import read_corpus

    (tmp_path / "speeches").mkdir()
    for k in range(3):
        (tmp_path / "speeches" / f"{k}.txt").write_text(words(800, seed=k))
    vocab = sorted(set(read_corpus(str(tmp_path / "speeches")).text))
    model = write_model(tmp_path / "tmp", "gru-seq", vocab)
    run_config = {"corpus": str(tmp_path / "speeches"), "valid_fraction": 0.25}
    checkpoint.save(tmp_path / "run", checkpoint.describe(
        "speech", "gru-seq", {"embedding": 8, "hidden": 16}, "".join(vocab), run_config),
        model.state_dict())
    result = run("--checkpoint", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = read_corpus(str(tmp_path / "speeches")).split(0.25)[1]
    assert page_data(report["page"])["text"] == expected
    assert "validation text" in report["source"] and "validation text" in result.stderr


def test_unknown_chars_are_named_or_skipped(quotes):
    (quotes / "odd.txt").write_text('ab "Zq" ab\t')
    result = run("--checkpoint", quotes / "run", "--text", quotes / "odd.txt")
    assert result.exit_code == 2 and result.stdout == ""
    assert "'Z', 'q', '\\t'" in result.stderr and "--skip-unknown" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run("--checkpoint", quotes / "run", "--text", quotes / "odd.txt", "--skip-unknown",
                 "--out", quotes / "p.html", "--json")
    assert result.exit_code == 0, result.output
    assert page_data(quotes / "p.html")["text"] == 'ab "" ab\n'
    assert "dropped 3 chars" in result.stderr and json.loads(result.stdout)["cut_from"] is None


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: (d / "t.txt").write_text("\n\n"), ["--text", "{d}/t.txt"], "holds no text"),
    (lambda d: None, ["--prime", "a", "--length", "0"], "needs at least 2"),
    (lambda d: (d / "t.txt").write_text("Q"), ["--text", "{d}/t.txt", "--skip-unknown"],
     "the text has 1 chars; this model needs at least 2"),
    (lambda d: (d / "file").write_text("x"), ["--prime", "ab", "--out", "{d}/file/page.html"],
     "cannot write --out"),
    (lambda d: None, ["--prime", "ab", "--out", "{d}"], "is a folder; give a file name"),
    (lambda d: None, ["--prime", "ab", "--text", "x"], "not both"),
    (lambda d: None, ["--prime", "ab", "--length", "20000"], "more than --max-chars"),
    (lambda d: None, ["--prime", "Q"], "outside the model's vocabulary: 'Q'"),
    (lambda d: None, ["--max-chars", "0"], "--max-chars must be at least 1"),
    (lambda d: None, ["--checkpoint", "{d}/nothing"], "no checkpoint at"),
    (lambda d: (d / "bad.pt").write_bytes(b"not a checkpoint"), ["--checkpoint", "{d}/bad.pt"],
     "is not a charlstm checkpoint"),
    (lambda d: None, [], "does not say what it was trained on"),
])
def test_bad_input_gets_one_line_and_exit_2(quotes, setup, args, message):
    setup(quotes)
    args = [a.format(d=quotes) for a in args]
    if "--checkpoint" not in args:
        args = ["--checkpoint", str(quotes / "run"), *args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    *notes, error = result.stderr.splitlines()
    assert result.stdout == "" and all(n.startswith("explain: ") for n in notes)
    assert error.startswith("Error: ") and message in error
    assert not (quotes / "run" / "explain.html").exists()


@pytest.fixture
def calculator(tmp_path):
    from charlstm.calc import train
    from charlstm.config import CalcConfig

    config = CalcConfig(task="add", model="lstm", hidden=3, n_fac=3, epochs=2, restarts=1,
                        out=str(tmp_path / "calc"))
    model, _ = train(config)
    return tmp_path, config, model.eval()


def test_a_calculator_page_shows_its_state_over_2_plus_3_and_its_embeddings(calculator):
    from charlstm.data.arith import make_dataset

    tmp_path, config, model = calculator
    result = run("--checkpoint", tmp_path / "calc", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["string"] == "2+3" and report["target"] == 5
    h = torch.tensor(report["trajectory"]["h"])
    assert h.shape == (3, 3) and len(report["trajectory"]["c"]) == 3
    # The last state, read out and un-standardised, is the prediction.
    _, train_y = make_dataset("add", 1, 8, 1000, 0.2, 0).tensors("train")
    raw = model.output(h[-1].float()).item()
    assert report["prediction"] == pytest.approx(raw * train_y.std().item() + train_y.mean().item(),
                                                 rel=1e-5)
    assert report["embedding"]["7"] == pytest.approx(model.embedding.weight[7].tolist())
    data = page_data(report["page"])
    assert data["kind"] == "calculator" and data["tokens"] == ["2", "+", "3"]
    assert len(data["embedding"]["points"]) == 11 and len(data["embedding"]["points"][0]) == 2


@pytest.mark.parametrize("args, message", [
    (["--text", "x.txt"], "a calculator reads one short string"),
    (["--prime", "2/3"], "'/' are not among them"),
])
def test_a_calculator_refuses_what_it_cannot_read(calculator, args, message):
    tmp_path = calculator[0]
    result = run("--checkpoint", tmp_path / "calc", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_a_train_runs_validation_text_is_its_first_valid_size_chars_in_text8_form(tmp_path):
    from charlstm.data.corpus import read_corpus
    from charlstm.data.normalize import text8_form
    from charlstm.models import UdacityLM

    (tmp_path / "corpus.txt").write_text("Some Text, with 3 digits and CAPITALS.\n" * 40)
    run_config = {"data": str(tmp_path / "corpus.txt"), "url": None, "valid_size": 300}
    checkpoint.save(tmp_path / "run", checkpoint.describe(
        "train", "udacity", {"nodes": 8, "cell": "gru"}, " abcdefghijklmnopqrstuvwxyz",
        run_config), UdacityLM(nodes=8, cell="gru").state_dict())
    report = explain(ExplainConfig(checkpoint=str(tmp_path / "run")))
    text = text8_form(read_corpus(str(tmp_path / "corpus.txt")).documents)[0].decode()
    assert page_data(report["page"])["text"] == text[:300] and report["chars"] == 300
    assert "the first 300 chars" in report["source"]
