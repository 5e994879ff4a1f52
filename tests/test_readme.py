"""The README's commands, as a new user runs them: read from README.md by the script .ci/run uses
(.ci/readme_commands.py), so that what the README says is what is tested."""

import re
import shlex
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from helpers import text8_server, words

ROOT = Path(__file__).resolve().parents[1]
TEXT8 = " abcdefghijklmnopqrstuvwxyz"


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
    assert "test" in extras and "pytest" in test_extra
    assert test[:3] == ["python", "-m", "pytest"]


def test_the_first_run_pair_trains_on_text8_then_samples_from_the_run(tmp_path):
    """`charlstm train --nodes 128 --unrollings 15` then `charlstm sample --prime "Good mo"`, in
    an empty folder, with text8 downloaded from 127.0.0.1: a small generated corpus in text8 form
    (words and single spaces) and --steps 60 in place of the assignment's 3001."""
    train, sample = readme_commands("test: first run")
    assert train[:2] == ["charlstm", "train"] and sample[:2] == ["charlstm", "sample"]
    (tmp_path / "work").mkdir()
    env = {"CHARLSTM_HOME": str(tmp_path / "home"),
           "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}

    def charlstm(args):
        return subprocess.run([sys.executable, "-m", "charlstm_cli.main", *args[1:]],
                              capture_output=True, text=True, cwd=tmp_path / "work", env=env,
                              timeout=600)

    with text8_server(tmp_path / "server", " " + words(60_000, 3)) as (url, archive):
        env["CHARLSTM_TEXT8_URL"] = url
        trained = charlstm(train + ["--steps", "60", "--no-progress"])
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "home" / "text8.zip").read_bytes() == archive
    [run] = (tmp_path / "work" / "runs").iterdir()
    assert re.fullmatch(r"train-\d{8}-\d{6}", run.name)
    assert trained.stdout.rstrip().endswith(f"; saved in runs/{run.name}")
    assert (run / "checkpoint.json").is_file() and (run / "result.json").is_file()

    sampled = charlstm(sample)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stderr == "prime normalised to text8 form: 'good mo'\n"
    text = sampled.stdout.rstrip("\n")
    assert text.startswith("good mo") and len(text) == len("good mo") + 200
    assert set(text) <= set(TEXT8)
