import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm_cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--nodes", "2,,4"], "'2,,4'"),
    (["--nodes", "2,four"], "'four'"),
    (["--unrollings", "0,5"], "'0'"),
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
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_report_of_a_folder_without_a_sweep(tmp_path):
    result = runner.invoke(app, ["sweep", "report", str(tmp_path)])
    assert result.exit_code == 2
    assert "no sweep.json" in result.output


def test_sweep_end_to_end_with_two_workers_then_report(tmp_path):
    from test_sweep import write_corpus
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / ".dev")])}
    command = [sys.executable, "-m", "charlstm_cli.main", "sweep", "--data", str(corpus),
               "--nodes", "4,8", "--unrollings", "2,3", "--batch-size", "4", "--steps", "15",
               "--valid-size", "50", "--summary-frequency", "5", "--out", str(out), "--json"]
    done = subprocess.run(command + ["--workers", "2"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["units"] == 4 and summary["complete"] == 4 and summary["failed"] == []
    assert "valid perplexity" in done.stderr
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["nodes"]), int(r["unrollings"])) for r in rows) == \
        [(4, 2), (4, 3), (8, 2), (8, 3)]
    assert all(float(r["valid_perplexity"]) > 1 for r in rows)
    assert (out / "sweep-heatmap.png").read_bytes()[:4] == b"\x89PNG"

    (out / "report.md").unlink()
    again = subprocess.run([sys.executable, "-m", "charlstm_cli.main", "sweep", "report",
                            str(out), "--json"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"report": str(out / "report.md")}
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["complete"] == 4
    assert "valid perplexity" not in resumed.stderr
