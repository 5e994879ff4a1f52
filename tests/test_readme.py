"""The README's commands, as a new user runs them: read from README.md by the script .ci/run uses
(.ci/readme_commands.py), so that what the README says is what is tested."""

import re
import shlex
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def readme_commands(name: str) -> list[list[str]]:
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py"), name],
                          capture_output=True, text=True, check=True)
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_the_install_line_installs_what_the_test_command_runs():
    [install] = readme_commands("ci: install")
    [test] = readme_commands("ci: test")
    assert install[:3] == ["pip", "install", "--no-build-isolation"]
    extras = re.fullmatch(r"\.\[(.*)\]", install[-1]).group(1).split(",")
    test_extra = [r.split(";")[0].strip() for r in requires("charlstm")
                  if 'extra == "test"' in r]
    assert "test" in extras and test_extra == ["pytest"]
    assert test[:3] == ["python", "-m", "pytest"]

