import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import calls_by_point, charlstm, fake_train, write_text
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


@pytest.mark.parametrize("data, args, message", [
    ("missing.txt", [], "--data missing.txt: no such file or folder"),
    ("binary.bin", [], "binary.bin is not text: it holds a NUL byte"),
    ("corpus.txt", ["--unrollings", "5,2000"],
     "--unrollings 2000: corpus.txt has 4,0"),
])
def test_a_grid_that_cannot_train_is_refused_once_before_any_worker_starts(tmp_path, data, args,
                                                                            message):
    write_text(tmp_path / "corpus.txt", chars=4000)
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", "--data", data, "--nodes", "2,4", *args,
                                 "--batch-size", "4", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr and result.stdout == ""
    assert not out.exists()


# `charlstm sweep` with the stand-in trainer of tests/helpers.py in place of charlstm.train.
SWEEP_CLI = """
import sys
import helpers
from charlstm import sweep
from charlstm_cli.main import app

real_run = sweep.run


def run(*args, **kwargs):
    return real_run(*args, **{**kwargs, "trainer": helpers.fake_train, "poll_seconds": 0.2})


sweep.run = run
app(sys.argv[1:], prog_name="charlstm")
"""
HERE = Path(__file__).resolve().parent


def sweep_cli(calls, *args, **env):
    return subprocess.Popen(
        [sys.executable, "-c", SWEEP_CLI, "sweep", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(HERE), "CHARLSTM_TEST_CALLS": str(calls), **env})


@pytest.fixture
def calls(tmp_path):
    (tmp_path / "calls").mkdir()
    return tmp_path / "calls"


def test_a_sweep_whose_every_training_fails_exits_1_saying_why_once(tmp_path, calls):
    proc = sweep_cli(calls, "--nodes", "4", "--unrollings", "1,2,3", "--out", tmp_path / "out",
                     "--workers", "2", "--heartbeat", "5", CHARLSTM_TEST_FAIL="4")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert errors == [line for line in errors if "3 of 3 trainings failed" in line]
    assert len(errors) == 1 and "RuntimeError: loss became NaN at nodes 4" in errors[0]
    assert "Traceback" not in stderr and stdout.startswith("0/3 trainings done")


def test_a_lost_worker_is_not_reported_as_work_left_when_every_unit_is_done(tmp_path, calls):
    proc = sweep_cli(calls, "--nodes", "2,4", "--unrollings", "1,2", "--out", tmp_path / "out",
                     "--workers", "2", "--heartbeat", "5", CHARLSTM_TEST_EXIT="4")
    stdout, stderr = proc.communicate(timeout=240)
    assert (calls / "exited").exists()  # one worker did end mid-training
    assert proc.returncode == 0, stderr
    assert stdout.startswith("4/4 trainings done") and "run the same command again" not in stdout
    assert "Error" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("to", ["process group", "parent alone"])
def test_ctrl_c_stops_the_sweep_cleanly_and_the_same_command_finishes_it(tmp_path, calls,
                                                                         workers, to):
    args = ["--nodes", "2,4", "--unrollings", "1,2", "--out", tmp_path / "out", "--workers",
            workers, "--heartbeat", "5"]
    proc = sweep_cli(calls, *args, CHARLSTM_TEST_BLOCK="4")
    deadline = time.monotonic() + 120
    while not (calls / "blocked").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    if to == "process group":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr and "nothing saved" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted; \d of 4 trainings are done and kept in .*out; run the "
                        r"same command again to finish the grid", last), last
    again = sweep_cli(calls, *args)
    stdout, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr
    assert stdout.startswith("4/4 trainings done")
    assert calls_by_point(calls) == {(2, 1, 0): 1, (2, 2, 0): 1,
                                     **{k: v for k, v in calls_by_point(calls).items()
                                        if k[0] == 4}}
    assert all(count <= 2 for count in calls_by_point(calls).values())


def test_workers_are_capped_at_the_trainings_left_and_more_than_the_cores_is_warned(
        tmp_path, calls, monkeypatch):
    from charlstm import sweep

    monkeypatch.setenv("CHARLSTM_TEST_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    warnings = []
    grid = sweep.make_grid({"nodes": "2,4,8"})
    summary = sweep.run([grid], out=tmp_path / "out", workers=10000, trainer=fake_train,
                        progress=False, report=False, poll_seconds=0.1, log=warnings.append)
    assert summary["workers"] == 3 and summary["complete"] == 3
    assert warnings[0] == "warning: --workers 10000 but 3 training(s) left to do; starting 3"
    assert len({json.loads(p.read_text())["pid"] for p in calls.iterdir()}) <= 3
    if sweep.cores() < 3:
        assert f"--workers 3 on {sweep.cores()} cores" in warnings[1]
    warnings.clear()
    summary = sweep.run([sweep.make_grid({"nodes": "2,4,8,16"})], out=tmp_path / "out",
                        workers=10000, trainer=fake_train, progress=False, report=False,
                        poll_seconds=0.1, log=warnings.append)
    assert summary["workers"] == 1 and summary["complete"] == 4  # three were done already
