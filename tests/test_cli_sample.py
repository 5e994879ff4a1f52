import json

import pytest
import torch
from typer.testing import CliRunner

from charlstm.checkpoint import save_checkpoint
from charlstm.models import build_model
from charlstm_cli.main import app

VOCAB = sorted(set(" .Gdgmnorw"))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("gru-seq", len(VOCAB), embedding=8, hidden=16)
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"model": {"name": "gru-seq", "config": {"embedding": 8, "hidden": 16}},
                           "state_dict": model.state_dict(), "vocab": VOCAB})
    return path


def test_streams_the_prime_and_the_text_and_json_matches(checkpoint):
    args = ["sample", "--checkpoint", str(checkpoint.parent), "--length", "60", "--seed", "4"]
    streamed = CliRunner().invoke(app, args)
    assert streamed.exit_code == 0, streamed.output
    as_json = CliRunner().invoke(app, args + ["--json"])
    report = json.loads(as_json.stdout)
    assert streamed.stdout == "Good mo" + report["text"] + "\n"
    assert report["prime"] == "Good mo" and report["checkpoint"] == str(checkpoint)


def test_top_k_and_temperature_change_the_text(checkpoint):
    base = ["sample", "--checkpoint", str(checkpoint), "--length", "60", "--json"]
    greedy = json.loads(CliRunner().invoke(app, base + ["--temperature", "0"]).stdout)["text"]
    top1 = json.loads(CliRunner().invoke(app, base + ["--top-k", "1", "--seed", "8"]).stdout)["text"]
    assert greedy == top1


@pytest.mark.parametrize("args, message", [
    (["--prime", "Hello"], "'H', 'e', 'l'"),
    (["--temperature", "-1"], "temperature"),
    (["--checkpoint", "/no/such.pt"], "no checkpoint at"),
])
def test_bad_input_exits_2_and_prints_no_text(checkpoint, args, message):
    argv = ["sample", "--checkpoint", str(checkpoint), *args]
    if args[0] == "--checkpoint":
        argv = ["sample", *args]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split()) and result.stdout == ""


def test_an_empty_runs_folder_says_how_to_get_a_model(tmp_path):
    result = CliRunner().invoke(app, ["sample", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "charlstm speech" in result.output
