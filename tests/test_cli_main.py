"""The command line as a whole: help without torch, and one error style for every command."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from charlstm_cli.main import app

COMMANDS = ["info", "bench", "train", "speech", "sample", "explain", "calc", "calc study",
            "sweep", "sweep run", "sweep report"]

HELP_WITHOUT_TORCH = """
import sys
from charlstm_cli.main import app
try:
    app(sys.argv[1:], prog_name="charlstm")
except SystemExit as done:
    assert done.code in (0, None), done.code
print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"), file=sys.stderr)
"""


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_imports_no_torch(command):
    done = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, *command.split(), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: charlstm" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args, message", [
    (["trian"], "no such command 'trian'. Did you mean 'train'? See `charlstm --help`"),
    (["train", "--nodez", "2"], "no such option: --nodez"),
    (["train", "--nodes", "two"], "invalid value for '--nodes'"),
    (["train", "--nodes", "0"], "--nodes must be at least 1, got 0"),
    (["speech"], "missing option '--corpus'; see `charlstm speech --help`"),
    (["speech", "--corpus", "speeches/", "--model", "gpt"], "--model must be one of"),
    (["sample", "--temperature", "nan"], "--temperature must be a number"),
    (["explain", "--max-chars", "0"], "--max-chars must be at least 1"),
    (["calc", "--task", "div"], "--task must be one of"),
    (["calc", "study", "--hidden", "x"], "--hidden takes whole numbers"),
    (["sweep", "--nodes", "2,,4"], "--nodes: empty value"),
    (["sweep", "report", "nowhere"], "holds no sweep"),
    (["bench", "--shapes", "64x64"], "is not BATCHxHIDDENxUNROLLINGS"),
])
def test_every_command_reports_bad_usage_in_one_line_and_exits_2(tmp_path, monkeypatch,
                                                                 args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args, prog_name="charlstm")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr
    assert "│" not in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    from helpers import write_model

    write_model(tmp_path, "gru-seq", sorted(set(" .Gdgmnorw")))
    proc = subprocess.Popen([sys.executable, "-m", "charlstm_cli.main", "sample", "--checkpoint",
                             str(tmp_path), "--length", "200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(20).startswith(b"Good mo")
    proc.stdout.close()  # as `charlstm sample | head -c 20` does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and b"Error" not in stderr and b"Traceback" not in stderr
