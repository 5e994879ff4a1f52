import json

import pytest
from helpers import charlstm
from typer.testing import CliRunner

from charlstm_cli.main import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--hidden", "8", "--lr", "0.03", "--epochs", "60", "--restarts", "1"]
runner = CliRunner()


def test_default_command_trains_and_prints_embeddings_and_weights(tmp_path):
    result = runner.invoke(app, ["calc", "--task", "add", *QUICK, "--plot", str(tmp_path / "emb.png")])
    assert result.exit_code == 0, result.output
    assert "restarts succeeded" in result.stdout
    assert "'9':" in result.stdout and "recurrent.weight:" in result.stdout
    assert "restart 1/1" in result.stderr
    assert (tmp_path / "emb.png").read_bytes()[:8] == PNG_MAGIC


def test_json_prints_one_object_with_the_scores():
    result = runner.invoke(app, ["calc", "--task", "count-ones", "--length", "5", *QUICK, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) >= {"valid_mse", "valid_accuracy", "successes", "restarts", "success_rate",
                            "embedding", "runs", "config", "plot"}
    assert summary["config"]["task"] == "count-ones" and summary["config"]["backend"] == "fused"
    (run,) = summary["runs"]  # one restart: its scores are the run's
    assert summary["valid_accuracy"] == run["valid_accuracy"] and summary["plot"] is None
    assert summary["successes"] == int(run["valid_accuracy"] == 1.0)


def test_study_subcommand_writes_its_files(tmp_path):
    result = runner.invoke(app, ["calc", "study", "--task", "add", "--models", "linear", "--hidden", "1,3",
                                 "--epochs", "20", "--restarts", "1", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    study = json.loads(result.stdout)
    assert [r["hidden"] for r in study["rows"]] == [1, 3]
    for name in ("study.csv", "study.md", "study.png"):
        assert (tmp_path / name).is_file()
    plain = runner.invoke(app, ["calc", "study", "--task", "add", "--models", "linear", "--hidden", "1,3",
                                "--epochs", "20", "--restarts", "1", "--out", str(tmp_path)])
    assert plain.exit_code == 0 and plain.stdout.startswith("| model | hidden 1 | hidden 3 |")
    assert "already in" in plain.stderr


@pytest.mark.parametrize("args,message", [
    (["calc", "--task", "count-ones", "--length", "0"], "--length must be at least 1"),
    (["calc", "--hidden", "0"], "--hidden must be at least 1"),
    (["calc", "--hidden", "two"], "invalid value for '--hidden'"),
    (["calc", "--task", "div"], "--task must be one of add, sub, mul, count-ones"),
    (["calc", "--model", "cnn"], "--model must be one of"),
    (["calc", "--lr", "0"], "--lr must be a positive number"),
    (["calc", "--task", "count-ones", "--length", "1"], "lower --valid-fraction"),
    (["calc", "study", "--hidden", ""], "--hidden needs at least one value"),
    (["calc", "study", "--hidden", "2,0"], "--hidden values must be at least 1"),
    (["calc", "study", "--task", "count-ones", "--length", ""], "--length needs at least one value"),
    (["calc", "study", "--models", ""], "--models needs at least one"),
    (["calc", "study", "--models", "linear,cnn"], "unknown model 'cnn'"),
    (["calc", "study", "--task", "add", "--length", "8"], "--length applies to count-ones only"),
    (["calc", "--task", "add", "--length", "12"], "--length applies to count-ones only"),
    (["calc", "--task", "count-ones", "--digits", "3"], "--digits applies to add/sub/mul only"),
    (["calc", "study", "--task", "count-ones", "--digits", "2"], "--digits applies to add/sub/mul only"),
])
def test_bad_options_exit_2_with_a_clear_message(args, message, tmp_path):
    result = runner.invoke(app, [*args, *(["--out", str(tmp_path)] if "study" in args else [])])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def run_cli(*args, cwd):
    return charlstm(*args, cwd=cwd)


def test_end_to_end_train_and_study_in_a_subprocess(tmp_path):
    trained = run_cli("calc", "--model", "lstm", *QUICK, "--json", "--plot", "emb.png", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["config"]["model"] == "lstm" and summary["valid_accuracy"] == 1.0
    assert (tmp_path / "emb.png").read_bytes()[:8] == PNG_MAGIC
    studied = run_cli("calc", "study", "--task", "count-ones", "--models", "linear", "--length", "4,5",
                      "--epochs", "10", "--restarts", "1", cwd=tmp_path)
    assert studied.returncode == 0, studied.stderr
    assert (tmp_path / "runs" / "calc-study-count-ones" / "study.csv").is_file()
    bad = run_cli("calc", "--hidden", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
