import csv
import json
import math

import pytest
from helpers import charlstm, write_text
from typer.testing import CliRunner

from charlstm_cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--nodes", "2,,4"], "'2,,4'"),
    (["--nodes", "2,four"], "'four'"),
    (["--unrollings", "0,5"], "--unrollings must be at least 1, got 0"),
    (["--depth", "1,2"], "--depth"),
    (["--nodes", "64"], "nothing to sweep"),
    (["--preset", "udacity", "--nodes", "2,4"], "--preset fixes what it sweeps"),
    (["--preset", "imagenet"], "unknown preset"),
    (["--nodes", "2,4", "--workers", "0"], "--workers 0"),
])
def test_bad_specs_exit_2_with_one_line_before_anything_runs(tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr and result.stdout == ""
    assert not out.exists()


def test_report_of_a_folder_without_a_sweep(tmp_path):
    result = runner.invoke(app, ["sweep", "report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "no sweep.json" in result.stderr


def test_sweep_end_to_end_with_two_workers_then_report(tmp_path):
    corpus = write_text(tmp_path / "corpus.txt", chars=4000)
    out = tmp_path / "out"
    command = ["sweep", "--data", corpus, "--nodes", "4,8", "--unrollings", "2,3",
               "--batch-size", "4", "--steps", "15", "--valid-size", "50",
               "--summary-frequency", "5", "--out", out, "--json"]
    done = charlstm(*command, "--workers", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["units"] == 4 and summary["complete"] == 4 and summary["failed"] == []
    assert "valid perplexity" in done.stderr
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["nodes"]), int(r["unrollings"])) for r in rows) == \
        [(4, 2), (4, 3), (8, 2), (8, 3)]
    for r in rows:
        assert float(r["valid_bpc"]) == pytest.approx(math.log2(float(r["valid_perplexity"])))
    assert (out / "sweep-heatmap.png").is_file()

    (out / "report.md").unlink()
    again = charlstm("sweep", "report", out, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"report": str(out / "report.md")}
    resumed = charlstm(*command)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["complete"] == 4
    assert "valid perplexity" not in resumed.stderr
