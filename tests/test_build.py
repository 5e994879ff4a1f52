import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

import charlstm
from charlstm_cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def test_build_info_describes_this_build():
    info = charlstm.build_info()
    assert info["torch"] == torch.__version__
    assert isinstance(info["cuda_kernels"], bool)
    if torch.version.cuda is None:
        assert info["cuda_kernels"] is False
    assert info["threads"] == torch.get_num_threads()
    assert info["openmp"] is True
    assert Path(info["extension"]).is_file()
    assert info["cuda_available"] == torch.cuda.is_available()


def test_info_json_through_cli_runner():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(charlstm.build_info()))


def test_info_in_a_real_subprocess_prints_one_json_object():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / ".dev")]))
    out = subprocess.run([sys.executable, "-m", "charlstm_cli.main", "info", "--json"], capture_output=True,
                         text=True, env=env, check=True, cwd=ROOT)
    report = json.loads(out.stdout)
    assert report["torch"] == torch.__version__ and "cuda_kernels" in report


def test_info_table():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert "cuda_kernels" in result.stdout and torch.__version__ in result.stdout
