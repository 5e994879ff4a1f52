"""The general benchmark suite: its grid, its FLOP count, a tiny run, and the CLI's errors.

Timings are never asserted; these check that a run times both backends on the same model and
reports what it measured consistently.
"""

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from charlstm import bench_suite as suite
from charlstm_cli.main import app


def test_the_grids_are_the_documented_ones():
    lstm = suite.grid_cells(["lstm"])
    assert len(lstm) == 4 * 5 * 4 * 2 * 2
    assert {c.batch for c in lstm} == {1, 16, 64, 128} and {c.hidden for c in lstm} == {64, 128, 256, 512, 1024}
    assert {c.steps for c in lstm} == {10, 50, 100, 200} and {c.input for c in lstm} == {"float", "ids"}
    assert {c.kind for c in suite.grid_cells(["gru", "rnn"])} == {"gru", "rnn"}


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_round_order_puts_every_name_in_every_position_and_none_twice_in_a_row(count):
    names = tuple("abcdefg"[:count])
    rounds = [suite.round_order(names, r) for r in range(4 * count)]
    for order in rounds:
        assert sorted(order) == sorted(names)
    for position in range(count):
        assert {n: [o[position] for o in rounds].count(n) for n in names} == dict.fromkeys(names, 4)
    run = [n for order in rounds for n in order]
    repeats = {n: sum(a == b == n for a, b in zip(run, run[1:])) for n in names}
    if count == 2:
        # alternating: each follows itself as often as the other (one run's two ends aside)
        assert min(repeats.values()) > 0 and abs(repeats["a"] - repeats["b"]) <= 1
    else:
        assert sum(repeats.values()) == 0


def test_product_flops_by_hand():
    # LSTM, one layer, float input: 3 products each of [N, 64] x [64, 4H] and [N, H] x [H, 4H],
    # plus the classifier's three [N, H] x [H, 64].
    N, H = 10 * 2, 8
    cell = suite.Cell("lstm", 2, H, 10, 1, "float")
    assert suite.product_flops(cell) == 6 * N * (64 * 4 * H + H * 4 * H + H * 64)
    # Token ids drop the input products; a second layer reads H inputs.
    ids = suite.Cell("gru", 2, H, 10, 2, "ids")
    assert suite.product_flops(ids) == 6 * N * (H * 3 * H + 2 * H * 3 * H + H * 64)


def test_embedding_input_counts_the_folded_products_where_the_module_folds():
    H = 8
    # 4 * 64 = 256 ids fold; 20 do not, and count as float input does.
    folded, unfolded = suite.Cell("lstm", 16, H, 16, 1, "embedding"), suite.Cell("lstm", 2, H, 10, 1, "embedding")
    assert suite.product_flops(folded) == 6 * (64 * 64 * 4 * H + 256 * (H * 4 * H + H * 64))
    assert suite.product_flops(unfolded) == suite.product_flops(suite.Cell("lstm", 2, H, 10, 1, "float"))


def test_inputs_replace_the_grids_input_kinds():
    cells = suite.grid_cells(["rnn"], ("embedding",))
    assert {c.input for c in cells} == {"embedding"} and len(cells) == len(suite.grid_cells(["rnn"])) // 2


@pytest.mark.parametrize("torch_steps, skipped", [
    ([4.6, 0.3], None),  # a slow first step (one-off costs) alone does not skip a cell
    ([25.0], "torch's first step took 25.0 s"),
    ([4.6, 3.0], "torch's step takes 3.00 s (over 2 s)"),
])
def test_a_cell_is_skipped_by_its_warm_step(monkeypatch, torch_steps, skipped):
    seconds = iter(torch_steps)

    def timed(trainer, device, repeats=1):
        return next(seconds, 0.3) if trainer.backend == "torch" else 0.2

    monkeypatch.setattr(suite, "_timed", timed)
    result = suite.time_cell(suite.Cell("lstm", 1, 8, 2, 1, "ids"), "cpu", budget_s=0.0)
    assert result.get("skipped") == skipped
    if skipped is None:
        assert result["ratio"] == pytest.approx(0.3 / 0.2) and result["rounds"] == 5


def test_both_backends_train_the_same_model():
    cell = suite.Cell("lstm", 3, 8, 4, 2, "float")
    theirs = suite.Trainer(cell, "torch", "cpu")
    ours = suite.Trainer(cell, "charlstm", "cpu", state=theirs.model.state_dict())
    for _ in range(3):
        torch.testing.assert_close(ours(), theirs(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps, folds", [(16, True), (3, False)])
def test_embedding_input_hands_the_embedding_to_charlstm_and_trains_as_float_input(first_layer_widths, steps,
                                                                                  folds):
    cell = suite.Cell("gru", 16, 8, steps, 2, "embedding")
    theirs = suite.Trainer(cell, "torch", "cpu")
    ours = suite.Trainer(cell, "charlstm", "cpu", state=theirs.model.state_dict())
    for _ in range(3):
        torch.testing.assert_close(ours(), theirs(), rtol=1e-5, atol=1e-6)
    assert first_layer_widths == [suite.VOCAB if folds else suite.EMBEDDING] * 3


def test_a_step_marks_its_phases_in_order_and_trains_as_an_unmarked_one():
    cell = suite.Cell("rnn", 2, 4, 3, 1, "ids")
    marked = suite.Trainer(cell, "charlstm", "cpu")
    plain = suite.Trainer(cell, "charlstm", "cpu", state=marked.model.state_dict())
    phases = []
    for _ in range(2):
        torch.testing.assert_close(marked(phases.append), plain(), rtol=0, atol=0)
    assert phases == ["forward", "loss", "backward", "clip", "adam"] * 2


def test_a_tiny_run_reports_every_cell_with_ratio_and_floors():
    cells = [suite.Cell("lstm", 2, 8, 3, 1, "ids"), suite.Cell("gru", 1, 4, 2, 2, "float")]
    logged = []
    result = suite.run_suite(("lstm", "gru"), "cpu", budget_s=0.01, cells=cells, memory=False, log=logged.append)
    assert len(result["rows"]) == len(logged) == 2
    for row in result["rows"]:
        assert row["ratio"] == pytest.approx(row["torch_ms"] / row["charlstm_ms"])
        assert row["rounds"] >= 5
        assert row["floor_mm_ms"] == pytest.approx(row["gflop"] * 1e3 / result["peaks"]["torch_mm_gflops"])
    assert result["summary"]["lstm"]["cells"] == 1 and result["summary"]["gru"]["cells"] == 1
    json.dumps(result)
    table = suite.format_table(result)
    assert "| lstm | ids | 2 | 8 | 3 | 1 |" in table and "| gru | float | 1 | 4 | 2 | 2 |" in table


def test_step_peak_memory_runs_each_backend_in_its_own_process():
    memory = suite.step_peak_memory(suite.Cell("lstm", 4, 8, 5, 1, "float"), threads=1)
    assert set(memory) == {"torch", "charlstm"} and all(kib >= 0 for kib in memory.values())


@pytest.mark.parametrize("args,message", [
    (["--suite", "fast"], "unknown suite 'fast'"),
    (["--suite", "general", "--cells", "lstm,elman"], "unknown cell(s) ['elman']"),
    (["--suite", "general", "--cells", "gru", "--hidden", "128"], "choose comma-separated sizes"),
    (["--suite", "general", "--hidden", "64,x"], "--hidden '64,x'"),
    (["--suite", "general", "--cells", "gru", "--batch", "16"], "--batch '16': choose comma-separated sizes from [1, 64]"),
    (["--suite", "general", "--inputs", "float,onehot"], "--inputs 'float,onehot': choose comma-separated input "
                                                         "kinds from float, ids, embedding"),
])
def test_bench_suite_bad_options(args, message):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_hidden_slices_the_grid(monkeypatch):
    ran = {}

    def fake_run_suite(kinds, device, budget_s, cells=None, memory=True, log=None):
        ran.update(cells=cells, memory=memory)
        return {"rows": [], "summary": {}, "peaks": {}}

    monkeypatch.setattr(suite, "run_suite", fake_run_suite)
    monkeypatch.setattr(suite, "format_table", lambda result: "")
    result = suite.general_suite("lstm,gru", hidden="64,1024")
    assert {c.hidden for c in ran["cells"]} == {64, 1024}
    assert {c.kind for c in ran["cells"]} == {"lstm", "gru"}
    assert len(ran["cells"]) == 2 * 4 * 4 * 2 * 2 + 2 * 2 * 2 * 2 * 2
    assert ran["memory"] is False and result["hidden"] == [64, 1024]
    suite.general_suite("lstm", hidden="512")
    assert ran["memory"] is True
    result = suite.general_suite("lstm,rnn", batch="1", hidden="1024")
    assert {(c.batch, c.hidden) for c in ran["cells"]} == {(1, 1024)}
    assert len(ran["cells"]) == 4 * 2 * 2 + 2 * 2 * 2
    assert ran["memory"] is False and result["batch"] == [1]
    suite.general_suite("lstm", batch="64,128", hidden="512")
    assert ran["memory"] is True and {c.batch for c in ran["cells"]} == {64, 128}
    # The memory comparison is of float input: a run without it leaves it out.
    result = suite.general_suite("lstm", hidden="512", inputs="embedding,ids")
    assert ran["memory"] is False and {c.input for c in ran["cells"]} == {"embedding", "ids"}
    assert result["inputs"] == ["embedding", "ids"]


def test_embedding_input_is_summarised_apart_from_the_grid():
    rows = [{"kind": "lstm", "hidden": 64, "input": input, "ratio": ratio}
            for input, ratio in [("float", 1.2), ("ids", 1.4), ("embedding", 1.6), ("embedding", 0.9)]]
    summary = suite.summarize(rows)
    assert set(summary) == {"lstm", "lstm, embedding input"}
    assert summary["lstm"]["cells"] == 2 and summary["lstm"]["min_ratio"] == 1.2
    assert summary["lstm, embedding input"]["cells"] == 2 and summary["lstm, embedding input"]["below_1"] == 1


def test_combine_joins_slices_and_recomputes_the_summary():
    def run(hidden, ratios, memory=False):
        rows = [{"kind": "lstm", "batch": 1, "hidden": hidden, "steps": 10 * (i + 1), "layers": 1, "input": "float",
                 "ratio": r} for i, r in enumerate(ratios)]
        r = {"suite": "general", "cells": ["lstm"], "peaks": {"torch_mm_gflops": 1.0}, "rows": rows,
             "summary": suite.summarize(rows), "seconds": 2.0, "hidden": [hidden]}
        if memory:
            r["memory"] = {"torch_kib": 1, "charlstm_kib": 2}
        return r

    combined = suite.combine([run(64, [1.0, 2.0]), run(512, [0.5], memory=True)])
    assert [r["hidden"] for r in combined["rows"]] == [64, 64, 512]
    s = combined["summary"]["lstm"]
    assert s["cells"] == 3 and s["min_ratio"] == 0.5 and s["median_ratio"] == 1.0 and s["below_1"] == 1
    assert s["below_1_5_hidden_le_128"] == 1
    assert combined["seconds"] == 4.0 and combined["memory"]["charlstm_kib"] == 2
    assert [r["hidden"] for r in combined["runs"]] == [[64], [512]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the thresholds are glibc's")
def test_the_suite_fixes_the_allocator_thresholds_and_says_so(monkeypatch):
    assert suite.steady_allocator() is True
    format_table = suite.format_table
    monkeypatch.setattr(suite, "run_suite", lambda *a, **k: {"rows": [], "summary": {}, "peaks": {}})
    monkeypatch.setattr(suite, "format_table", lambda result: "")
    assert suite.general_suite("rnn", hidden="64", batch="1")["steady_allocator"] is True
    result = {"device": "cpu", "threads": 2, "torch": "x", "machine": "m", "seconds": 1.0, "rows": [],
              "peaks": {"torch_mm_gflops": 100.0, "onednn_gflops": None}, "summary": {}}
    assert "thresholds fixed" not in format_table(result)
    assert "glibc heap thresholds fixed" in format_table(result | {"steady_allocator": True})


def test_combine_keeps_the_last_run_of_a_cell_timed_again():
    def run(rows, seconds):
        return {"suite": "general", "cells": ["lstm"], "peaks": {}, "rows": rows, "summary": suite.summarize(rows),
                "seconds": seconds}

    def row(batch, ratio):
        return {"kind": "lstm", "batch": batch, "hidden": 512, "steps": 10, "layers": 1, "input": "float",
                "ratio": ratio}

    combined = suite.combine([run([row(1, 0.8), row(64, 1.2)], 5.0), run([row(1, 1.1)], 1.0)])
    assert [(r["batch"], r["ratio"]) for r in combined["rows"]] == [(1, 1.1), (64, 1.2)]
    assert combined["summary"]["lstm"]["cells"] == 2 and combined["summary"]["lstm"]["below_1"] == 0
    assert combined["seconds"] == 6.0


def test_the_table_of_a_slice_without_small_cells_has_its_summary():
    row = {"kind": "lstm", "batch": 1, "hidden": 256, "steps": 10, "layers": 1, "input": "ids",
           "floor_mm_ms": 1.0, "floor_onednn_ms": None, "torch_ms": 2.0, "charlstm_ms": 1.0, "ratio": 2.0}
    result = {"device": "cpu", "threads": 2, "torch": "x", "machine": "m", "seconds": 1.0,
              "peaks": {"torch_mm_gflops": 100.0, "onednn_gflops": None}, "rows": [row],
              "summary": suite.summarize([row])}
    table = suite.format_table(result)
    assert "| lstm | ids | 1 | 256 | 10 | 1 | 2.00 | 1.00 | 2.00x | 1.00 | 50% | 100% |" in table
    assert "lstm: 1 cells (0 skipped), ratio min 2.00x, median 2.00x, 0 below 1.0x\n" in table
