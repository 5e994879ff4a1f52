import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import text8_server, words
from typer.testing import CliRunner

from charlstm_cli.main import app

SMALL = ["--nodes", "8", "--batch-size", "4", "--unrollings", "5", "--steps", "20", "--valid-size", "50",
         "--summary-frequency", "10", "--threads", "1"]
runner = CliRunner()


def text8_like(chars=6000, seed=0):
    return (" " + words(chars, seed))[:chars]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("President: Someone\n\n" + text8_like().upper())
    return path


def run_cli(*args):
    return runner.invoke(app, ["train", *args])


def test_json_prints_one_object_and_nothing_else(corpus):
    result = run_cli("--data", str(corpus), *SMALL, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"valid_perplexity", "valid_bpc", "steps", "train_seconds", "seconds", "tokens_per_second",
            "config", "milestones"} <= report.keys()
    assert report["config"]["nodes"] == 8 and report["steps"] == 20
    assert report["data"]["normalization"]["changed_chars"] > 0
    assert "normalised to text8 form" in result.stderr
    assert "validation perplexity" in result.stderr  # the summaries


def test_plain_output(corpus):
    result = run_cli("--data", str(corpus), *SMALL, "--no-progress")
    assert result.exit_code == 0
    assert result.stdout.startswith("validation perplexity ") and "tokens/s" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("args, message", [
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--cell", "lstmx"], "--cell must be one of lstm, gru, rnn"),
    (["--backend", "tf"], "--backend must be one of"),
    (["--init", "ones"], "unknown init"),
    (["--valid-size", "6100"], "it needs at least"),
])
def test_bad_options_exit_2_with_one_line(corpus, args, message):
    result = run_cli("--data", str(corpus), *SMALL, *args)
    assert result.exit_code == 2
    last = result.stderr.splitlines()[-1]
    assert last.startswith("Error: ") and message in last
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_data(tmp_path):
    result = run_cli("--data", str(tmp_path / "missing.txt"))
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    result = run_cli("--data", str(tmp_path / "latin1.txt"))
    assert result.exit_code == 2 and "latin1.txt is not UTF-8 text" in result.stderr
    (tmp_path / "utf16.txt").write_bytes("text".encode("utf-16"))
    result = run_cli("--data", str(tmp_path / "utf16.txt"))
    assert result.exit_code == 2 and "utf16.txt is not text: it holds a NUL byte" in result.stderr


def test_offline(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    result = run_cli("--url", f"http://127.0.0.1:{port}/text8.zip")
    assert result.exit_code == 2 and "cannot download" in result.stderr and "--data" in result.stderr


def test_resume_from_the_cli(corpus, tmp_path):
    out = tmp_path / "run"
    assert run_cli("--data", str(corpus), *SMALL, "--out", str(out), "--json").exit_code == 0
    result = run_cli("--resume", str(out), "--steps", "25", "--json", "--no-progress")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resumed_at_step"] == 20 and report["steps"] == 25 and report["config"]["nodes"] == 8
    result = run_cli("--resume", str(out), "--nodes", "16")
    assert result.exit_code == 2 and "--nodes cannot change when resuming" in result.stderr


def test_divergence_exits_1(corpus):
    result = run_cli("--data", str(corpus), *SMALL, "--lr", "1e38", "--clip", "1e38", "--no-progress")
    assert result.exit_code == 1 and "lower --lr" in result.stderr


def subprocess_env(**extra):
    return dict(os.environ, **extra)


def test_end_to_end_downloads_text8_from_a_local_server(tmp_path):
    with text8_server(tmp_path / "srv", text8_like()) as (url, archive):
        env = subprocess_env(CHARLSTM_HOME=str(tmp_path / "home"), CHARLSTM_TEXT8_URL=url)
        proc = subprocess.run([sys.executable, "-m", "charlstm_cli.main", "train", *SMALL, "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["data"]["source"] == str(tmp_path / "home" / "text8.zip")
    assert report["data"]["normalization"] is None and report["data"]["characters"] == 6000
    assert (tmp_path / "home" / "text8.zip").read_bytes() == archive


def test_end_to_end_ctrl_c_then_resume(corpus, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "charlstm_cli.main", "train", "--data", str(corpus), *SMALL,
            "--steps", "1000000", "--out", str(out)]
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert stdout == ""
    from charlstm import checkpoint
    step = checkpoint.read(out).training["step"]
    assert step >= 1 and f"interrupted after {step} steps" in stderr
    resumed = subprocess.run([sys.executable, "-m", "charlstm_cli.main", "train", "--resume", str(out),
                              "--steps", str(step + 3), "--json"],
                             env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_at_step"] == step
