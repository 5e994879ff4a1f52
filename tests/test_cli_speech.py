import json
import math
import random
from pathlib import Path

import pytest
from helpers import charlstm
from typer.testing import CliRunner

from charlstm_cli.main import app

WORDS = "good morning to the people of this great nation and thank you".split()
TINY = ["--embedding", "8", "--hidden", "16", "--batch-size", "16", "--max-steps", "10"]


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "speech.txt"
    path.write_text("President: Someone\n\nGood morning. " +
                    " ".join(rng.choice(WORDS) for _ in range(500)) + ".\n", encoding="utf-8")
    return path


def test_json_prints_one_object_with_the_final_losses(corpus, tmp_path):
    result = CliRunner().invoke(app, ["speech", "--corpus", str(corpus), "--model", "fc3",
                                      "--out", str(tmp_path / "run"), "--json", *TINY])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["epochs"] == 2 and report["model"] == "fc3"
    for split in ("train", "valid"):
        assert report[f"{split}_bits_per_char"] == pytest.approx(
            report[f"{split}_loss"] / math.log(2))
    # Ten batches of a repetitive text are enough to beat guessing uniformly.
    assert report["valid_loss"] < math.log(report["vocab_size"])
    assert report["checkpoint"] == str(tmp_path / "run" / "checkpoint.pt")
    assert "epoch 2/2" in result.stderr


def test_without_json_each_epoch_is_printed(corpus, tmp_path):
    result = CliRunner().invoke(app, ["speech", "--corpus", str(corpus), "--model", "char3",
                                      "--lr", "0.01", "--lr", "0.003", "--lr", "0.001",
                                      "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.stdout.splitlines() if l.startswith("epoch")]
    assert [l.split()[1] for l in lines] == ["1/3", "2/3", "3/3"]
    assert all("nats/char" in l and "bpc" in l for l in lines)


@pytest.mark.parametrize("args, message", [
    (["--corpus", "/no/such/corpus"], "--corpus /no/such/corpus: no such file or folder"),
    (["--model", "transformer"], "--model must be one of"),
    (["--backend", "gpu"], "--backend must be one of"),
])
def test_bad_input_exits_2_with_one_message(corpus, tmp_path, args, message):
    argv = ["speech", "--corpus", str(corpus), "--out", str(tmp_path / "r"), *TINY, *args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"Error: {message}") and len(result.stderr.splitlines()) == 1


def test_end_to_end_train_then_sample_from_the_runs_folder(corpus, tmp_path):
    trained = charlstm("speech", "--corpus", corpus, "--model", "lstm-seq", "--json", *TINY,
                       cwd=tmp_path, timeout=240, OMP_NUM_THREADS="1")
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert Path(report["out"]).parent.name == "runs"
    sampled = charlstm("sample", "--prime", "Good mo", "--length", "40", "--seed", "3",
                       cwd=tmp_path, timeout=240, OMP_NUM_THREADS="1")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("Good mo") and len(sampled.stdout.rstrip("\n")) == 47


@pytest.mark.parametrize("checkpointed", [False, True])
def test_ctrl_c_says_what_was_kept_and_how_to_resume(corpus, tmp_path, checkpointed):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm_cli.main", "speech", "--corpus", str(corpus), "--model",
         "fc3", "--out", str(out), "--epochs", "100000", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    ready = (lambda: (out / "checkpoint.pt").exists()) if checkpointed else (
        lambda: (out / "metrics.jsonl").exists())  # the run has begun: its first epoch runs
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert all(line.startswith("epoch ") for line in stdout.splitlines())
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    if "nothing was saved yet" in last:
        assert not checkpointed
        assert re.fullmatch(r"interrupted in epoch 1; nothing was saved yet \(a checkpoint comes "
                            r"after each epoch\); rerun to start again", last), last
    else:
        assert re.fullmatch(rf"interrupted in epoch (\d+); the checkpoint after epoch \d+ is "
                            rf"{re.escape(str(out / 'checkpoint.pt'))}; rerun the same command "
                            "to resume from it", last), last
