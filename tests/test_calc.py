import csv
import json
from pathlib import Path

import pytest
import torch

from charlstm import checkpoint
from charlstm.calc import (describe, describe_study, digits_ordered, evaluate, parse_int_list,
                           parse_models, plot_embeddings, study, summary_json, train)
from charlstm.config import CALCULATORS, CalcConfig


def quick(**overrides):
    """A budget that teaches every model single-digit addition in a second or two."""
    settings = dict(task="add", model="linear", hidden=8, lr=0.03, epochs=100, restarts=2, seed=0)
    return CalcConfig(**{**settings, **overrides})


@pytest.mark.parametrize("model", CALCULATORS)
def test_every_model_learns_single_digit_addition_exactly_with_restarts(model):
    _, summary = train(quick(model=model))
    assert summary["valid_accuracy"] == 1.0
    assert summary["successes"] >= 1
    assert summary["n_train"] + summary["n_valid"] == 100
    assert [r["seed"] for r in summary["runs"]] == [0, 1]


def test_restarts_report_successes_and_keep_the_best():
    lines = []
    _, summary = train(quick(model="tanh", hidden=1, epochs=3, restarts=3), log=lines.append)
    runs = summary["runs"]
    assert len(lines) == 3 and all(line.startswith(f"restart {k + 1}/3") for k, line in enumerate(lines))
    assert summary["successes"] == sum(r["valid_accuracy"] == 1.0 for r in runs)
    assert all(r["success"] == (r["valid_accuracy"] == 1.0) for r in runs)
    best = max(runs, key=lambda r: (r["valid_accuracy"], -r["valid_mse"]))
    assert (summary["best_seed"], summary["valid_mse"]) == (best["seed"], best["valid_mse"])
    assert summary["success_rate"] == summary["successes"] / 3


def test_training_stops_once_every_training_prediction_is_close():
    _, summary = train(quick(restarts=1, epochs=1000))
    run = summary["runs"][0]
    assert run["epochs_run"] < 1000
    assert run["train_accuracy"] == 1.0


def test_a_diverging_run_is_stopped_and_fails():
    _, summary = train(CalcConfig(task="count-ones", length=32, model="linear", hidden=4, lr=1e8,
                                  epochs=50, restarts=1))
    run = summary["runs"][0]
    assert run["diverged"] and not run["success"]
    assert json.loads(summary_json(summary))["runs"][0]["valid_accuracy"] == 0.0


def test_evaluate_reports_mse_and_exact_match_in_target_units():
    def model(ids):
        return torch.tensor([0.0, 1.0, 0.2])
    targets = torch.tensor([5.0, 6.0, 6.0])
    scores = evaluate(model, None, targets, mean=5.0, std=2.0)
    assert scores["mse"] == pytest.approx((0 + 1 + 0.6 ** 2) / 3)  # predictions 5, 7, 5.4
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["max_error"] == pytest.approx(1.0)
    broken = evaluate(lambda ids: torch.tensor([float("nan"), 0.0, 0.0]), None, targets, 5.0, 2.0)
    assert broken["accuracy"] == 0.0 and broken["mse"] == float("inf")


@pytest.mark.parametrize("values,expected", [
    (range(10), "increasing"), (range(10, 0, -1), "decreasing"), ([0, 2, 1, 3, 4, 5, 6, 7, 8, 9], "unordered")])
def test_digits_ordered_reads_one_number_embeddings(values, expected):
    embedding = {str(d): [float(v)] for d, v in enumerate(values)} | {"+": [0.0]}
    assert digits_ordered(embedding) == expected


def test_digits_ordered_is_none_without_digits_or_for_vectors():
    assert digits_ordered({"0": [0.0], "1": [1.0]}) is None
    assert digits_ordered({str(d): [float(d), 0.0] for d in range(10)}) is None


def test_describe_prints_every_embedding_and_only_readable_weights():
    _, small = train(quick(restarts=1, hidden=2))
    text = describe(small)
    for symbol in "0123456789+":
        assert f"'{symbol}':" in text
    assert "digit embeddings are" in text and "recurrent.weight:" in text
    assert small["recurrent_weights"]["recurrent.weight"] and len(small["recurrent_weights"]["recurrent.weight"]) == 2
    _, big = train(quick(model="lstm", hidden=5, restarts=1, epochs=1))
    assert big["recurrent_weights"] == {}
    assert "weight_hh" not in describe(big)


@pytest.mark.parametrize("n_fac", [1, 3])
def test_plot_embeddings_places_every_symbol(tmp_path, n_fac, monkeypatch):
    import matplotlib.pyplot as plt

    _, summary = train(quick(restarts=1, epochs=2, n_fac=n_fac))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    path = plot_embeddings(summary, tmp_path / "sub" / "embeddings.png")
    assert Path(path).stat().st_size > 0
    (ax,) = figures[0].axes
    if n_fac == 1:  # one value per symbol, the symbols along the x axis
        assert [t.get_text() for t in ax.get_xticklabels()] == list("0123456789+")
        values = ax.collections[0].get_offsets()[:, 1]
        assert list(values) == pytest.approx([summary["embedding"][s][0] for s in "0123456789+"])
    else:  # the first two principal axes, each point labelled with its symbol
        assert sorted(t.get_text() for t in ax.texts) == sorted("0123456789+")


def test_summary_is_one_json_object_with_the_scores():
    _, summary = train(quick(restarts=1, epochs=5))
    parsed = json.loads(summary_json(summary))
    for key in ("valid_mse", "valid_accuracy", "successes", "restarts", "success_rate", "best_seed",
                "embedding", "digits_ordered", "runs", "config", "success_rule"):
        assert key in parsed
    assert parsed["config"]["task"] == "add" and set(parsed["embedding"]) == set("0123456789+")


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, "--epochs must be at least 1"), ("hidden", 0, "--hidden must be at least 1"),
    ("lr", 0.0, "--lr must be a positive number"), ("model", "cnn", "--model must be one of"),
    ("task", "div", "--task must be one of")])
def test_bad_settings_are_rejected_before_training(field, value, message):
    with pytest.raises(ValueError, match=message):
        train(quick(**{field: value}))


def test_the_best_restart_is_saved_as_a_checkpoint_that_predicts_as_it_did(tmp_path):
    out = tmp_path / "run"
    model, summary = train(quick(model="gru", restarts=2, epochs=20, out=str(out)))
    loaded, vocab, saved = checkpoint.load_model(out)
    assert (saved.workload, saved.model_name, saved.vocab) == ("calc", "calculator", "0123456789+")
    assert saved.model_config == {"kind": "gru", "n_fac": 1, "hidden": 8, "backend": "fused"}
    ids = torch.tensor([vocab.encode("2+3"), vocab.encode("9+9")])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model.eval()(ids))
    assert json.loads((out / "result.json").read_text())["best_seed"] == summary["best_seed"]
    with pytest.raises(ValueError, match="already holds a run"):
        train(quick(out=str(out)))


def test_without_out_the_run_is_saved_under_runs_and_a_bad_plot_stops_before_training(
        tmp_path, monkeypatch):
    import charlstm.calc

    _, summary = train(quick(epochs=5, restarts=1))
    folder = Path(summary["out"])
    assert folder.parent == Path("runs") and folder.name.startswith("calc-add-")
    assert checkpoint.read(folder).model_name == "calculator"
    _, unsaved = train(quick(epochs=5, restarts=1, save=False))
    assert unsaved["out"] is None and list(Path("runs").iterdir()) == [folder]
    trained = []
    monkeypatch.setattr(charlstm.calc, "_train", lambda *args: trained.append(args))
    (tmp_path / "afile").write_text("")
    for plot, message in [(tmp_path, "is a folder; pass a file name"),
                          (tmp_path / "afile" / "e.png", "afile is a file, so nothing can be")]:
        with pytest.raises(ValueError, match=f"--plot {plot}.*{message}"):
            train(quick(), plot=plot)
    assert trained == [] and list(Path("runs").iterdir()) == [folder]


def test_parse_lists():
    assert parse_int_list(" 1, 2,5 ", "--hidden") == [1, 2, 5]
    for text, message in [("", "needs at least one value"), (",", "needs at least one value"),
                          ("1,x", "whole numbers"), ("2,0", "at least 1")]:
        with pytest.raises(ValueError, match=message):
            parse_int_list(text, "--hidden")
    assert parse_models("lstm, linear") == ["lstm", "linear"]
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        parse_models("lstm,cnn")
    with pytest.raises(ValueError, match="at least one"):
        parse_models("")


def test_study_over_hidden_sizes_writes_csv_png_table_and_resumes(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    base = CalcConfig(task="add", lr=0.03, epochs=40, restarts=1)
    result = study(base, ["linear", "tanh"], [1, 2], out=tmp_path)
    lines = {l.get_label(): (list(l.get_xdata()), list(l.get_ydata()))
             for l in figures[0].axes[0].get_lines()}
    assert lines == {m: ([1, 2], [r["success_rate"] for r in result["rows"] if r["model"] == m])
                     for m in ("linear", "tanh")}
    assert result["sweep"] == "hidden"
    with open(tmp_path / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], int(r["hidden"])) for r in rows] == [("linear", 1), ("linear", 2), ("tanh", 1), ("tanh", 2)]
    assert all(int(r["successes"]) <= 1 and r["task"] == "add" for r in rows)
    assert "out" not in rows[0]
    table = (tmp_path / "study.md").read_text()
    assert table.splitlines()[0] == "| model | hidden 1 | hidden 2 |"
    assert {line.split(" |")[0] for line in table.splitlines()[2:]} == {"| linear", "| tanh"}
    assert result["png"] == str(tmp_path / "study.png") and (tmp_path / "study.png").is_file()
    learned = {m: [r["hidden"] for r in result["rows"] if r["model"] == m and r["successes"]]
               for m in ("linear", "tanh")}
    assert result["smallest_hidden"] == {m: min(h, default=None) for m, h in learned.items()}
    json.loads(summary_json(result))
    text = describe_study(result)
    assert text.startswith(table.rstrip("\n")) and "smallest hidden size with a success: linear" in text
    assert "longest string counted" not in text

    lines = []
    again = study(base, ["linear", "tanh"], [1, 2], out=tmp_path, log=lines.append)
    assert all("already in" in line for line in lines) and len(lines) == 4
    assert again["rows"] == result["rows"]


def test_study_resumes_an_interrupted_run_and_keeps_other_settings(tmp_path):
    base = CalcConfig(task="add", lr=0.03, epochs=20, restarts=1)
    study(base, ["linear"], [1, 2], out=tmp_path)
    with open(tmp_path / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "study.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(rows[0])
    lines = []
    study(base, ["linear"], [1, 2], out=tmp_path, log=lines.append)
    assert "already in" in lines[0] and "already in" not in lines[1]
    study(CalcConfig(task="add", lr=0.03, epochs=21, restarts=1), ["linear"], [1], out=tmp_path)
    with open(tmp_path / "study.csv", newline="") as f:
        epochs = sorted(int(r["epochs"]) for r in csv.DictReader(f))
    assert epochs == [20, 20, 21]


def test_study_over_count_lengths(tmp_path):
    base = CalcConfig(task="count-ones", lr=0.03, epochs=30, restarts=1)
    result = study(base, ["linear"], [2], [4, 6], out=tmp_path)
    assert result["sweep"] == "length"
    assert [r["length"] for r in result["rows"]] == [4, 6]
    assert (tmp_path / "study.md").read_text().splitlines()[0] == "| model | length 4 | length 6 |"
    learned = [r["length"] for r in result["rows"] if r["successes"]]
    assert result["longest_length"] == {"linear": max(learned, default=None)}
    assert f"longest string counted: linear {max(learned, default='none')}" in describe_study(result)


def test_study_rejects_lengths_for_arithmetic_and_empty_model_lists(tmp_path):
    with pytest.raises(ValueError, match="--length applies to count-ones only"):
        study(CalcConfig(task="add"), ["linear"], [1], [8], out=tmp_path)
    with pytest.raises(ValueError, match="--models needs at least one"):
        study(CalcConfig(task="add"), [], [1], out=tmp_path)
    with pytest.raises(ValueError, match="--hidden must be at least 1"):
        study(CalcConfig(task="add"), ["linear"], [2, 0], out=tmp_path)
    assert not (tmp_path / "study.csv").exists()  # every cell is checked before one trains
