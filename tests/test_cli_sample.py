import io
import json
import os
import pickle

import pytest
import torch
from helpers import write_model
from typer.testing import CliRunner

from charlstm_cli.main import app

VOCAB = sorted(set(" .Gdgmnorw"))


@pytest.fixture
def checkpoint(tmp_path):
    write_model(tmp_path / "run", "gru-seq", VOCAB)
    return tmp_path / "run" / "checkpoint.pt"


def run(*args):
    return CliRunner().invoke(app, ["sample", *map(str, args)])


def test_streams_the_prime_and_the_text_and_json_matches(checkpoint):
    args = ["--checkpoint", checkpoint.parent, "--length", "60", "--seed", "4"]
    streamed = run(*args)
    assert streamed.exit_code == 0, streamed.output
    report = json.loads(run(*args, "--json").stdout)
    assert streamed.stdout == "Good mo" + report["text"] + "\n"
    assert report["prime"] == "Good mo" and report["checkpoint"] == str(checkpoint)


def test_temperature_sharpens_and_flattens_the_distribution(checkpoint):
    def text(*args):
        result = run("--checkpoint", checkpoint, "--length", "300", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["text"]

    greedy = text("--temperature", "0")
    assert text("--top-k", "1", "--seed", "8") == greedy
    # Near 0 the likeliest char always wins: the same text as greedy, whatever the seed.
    assert text("--temperature", "1e-9", "--seed", "3") == greedy
    # Very hot, the choice is close to uniform: about every char of the vocabulary appears.
    hot = text("--temperature", "1000", "--seed", "3")
    assert hot != greedy and len(set(hot)) == len(VOCAB)


@pytest.mark.parametrize("args, message", [
    (["--prime", "Hello"], "'H', 'e', 'l'"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-k", "0"], "--top-k"),
    (["--checkpoint", "/no/such.pt"], "no checkpoint at"),
])
def test_bad_input_exits_2_with_one_line_and_prints_no_text(checkpoint, args, message):
    result = run("--checkpoint", checkpoint, *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_an_empty_runs_folder_says_how_to_get_a_model(tmp_path):
    result = run("--runs", tmp_path / "runs")
    assert result.exit_code == 2 and "charlstm speech" in result.stderr


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"random bytes, not a file of tensors", "not tensors and plain data"),
    (pickle.dumps(Exploit()), "not tensors and plain data"),
    (saved({"weights": [1, 2]}), "no model description"),
])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, monkeypatch, content, reason):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.pt").write_bytes(content)
    result = run("--checkpoint", tmp_path / "bad.pt")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert f"is not a charlstm checkpoint ({reason}" in result.stderr
    assert not (tmp_path / "exploited").exists()
