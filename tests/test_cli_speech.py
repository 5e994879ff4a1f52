import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
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
    for key in ("train_loss", "valid_loss", "train_bits_per_char", "valid_bits_per_char"):
        assert isinstance(report[key], float) and report[key] > 0
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
    (["--corpus", "/no/such/corpus"], "does not exist"),
    (["--model", "transformer"], "unknown model"),
    (["--backend", "gpu"], "unknown backend"),
])
def test_bad_input_exits_2_with_one_message(corpus, tmp_path, args, message):
    argv = ["speech", "--corpus", str(corpus), "--out", str(tmp_path / "r"), *TINY, *args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split()) and "Traceback" not in result.output


def test_end_to_end_train_then_sample_from_the_runs_folder(corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / '.dev'}", OMP_NUM_THREADS="1")
    cli = [sys.executable, "-m", "charlstm_cli.main"]
    trained = subprocess.run(cli + ["speech", "--corpus", str(corpus), "--model", "lstm-seq",
                                    "--json", *TINY], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=240)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert Path(report["out"]).parent.name == "runs"
    sampled = subprocess.run(cli + ["sample", "--prime", "Good mo", "--length", "40", "--seed", "3"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("Good mo") and len(sampled.stdout.rstrip("\n")) == 47
