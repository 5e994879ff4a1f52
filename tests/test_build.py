import json
from pathlib import Path

import torch
from helpers import charlstm as run_charlstm
from typer.testing import CliRunner

import charlstm
from charlstm_cli.main import app


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
    assert info["charlstm"] == charlstm.__version__


def test_info_json_through_cli_runner():
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(charlstm.build_info()))


def test_info_in_a_real_subprocess_prints_one_json_object():
    out = run_charlstm("info", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["torch"] == torch.__version__ and "cuda_kernels" in report


def test_info_table():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0
    assert "cuda_kernels" in result.stdout and torch.__version__ in result.stdout


def test_a_cpu_simd_the_kernels_have_no_build_of_is_named_with_the_valid_ones():
    out = run_charlstm("info", "--json", CHARLSTM_CPU_SIMD="bogus")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ("Error: CHARLSTM_CPU_SIMD=bogus is not a build of the CPU kernels; set "
                          "it to avx512, avx2 or baseline, or unset it\n")
    for wanted in ("baseline", "avx2", "avx512", ""):
        out = run_charlstm("info", "--json", CHARLSTM_CPU_SIMD=wanted)
        assert out.returncode == 0, out.stderr
        kernels = json.loads(out.stdout)["cpu_kernels"]
        assert kernels.startswith("baseline") if wanted == "baseline" else kernels
