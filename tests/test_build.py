import json
from pathlib import Path

import pytest
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


def test_float_products_follow_the_vector_kernels_torch_picked():
    out = run_charlstm("info", "--json")
    assert out.returncode == 0, out.stderr
    wide = torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert json.loads(out.stdout)["cpu_products"] == ("stored" if wide else "panels")
    # Below AVX-512, chosen by ATEN_CPU_CAPABILITY as by the processor.
    out = run_charlstm("info", "--json", ATEN_CPU_CAPABILITY="avx2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cpu_products"] == "panels"


# ---- which GPUs the compiled CUDA code runs on ----

BUILT = (["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], ["compute_120"])


def test_info_lists_the_embedded_code():
    info = charlstm.build_info()
    assert set(info) >= {"cuda_archs", "cuda_machine_code", "cuda_ptx", "cuda_devices"}
    if info["cuda_kernels"]:
        assert info["cuda_machine_code"] and all(c.startswith("sm_") for c in info["cuda_machine_code"])
        assert all(c.startswith("compute_") for c in info["cuda_ptx"])
    else:
        assert info["cuda_machine_code"] == info["cuda_ptx"] == []
    for device in info["cuda_devices"]:
        assert {"index", "name", "capability", "kernels"} <= set(device)


@pytest.mark.parametrize("capability, built, expected", [
    ((8, 0), BUILT, "machine code (sm_80)"),
    ((8, 9), BUILT, "machine code (sm_86)"),     # an L4 runs the 8.6 code: same major, newer minor
    ((9, 0), BUILT, "machine code (sm_90)"),
    ((12, 1), BUILT, "machine code (sm_120)"),
    ((10, 3), (["sm_80", "sm_90"], ["compute_90"]), "JIT from compute_90 PTX"),
    ((12, 0), (["sm_80", "sm_90"], ["compute_80", "compute_90"]), "JIT from compute_90 PTX"),
    ((9, 0), (["sm_90a"], []), "machine code (sm_90a)"),
    ((9, 2), (["sm_90a"], []), "no kernel image for sm_92"),   # an `a` variant runs on 9.0 only
    ((7, 5), (["sm_80", "sm_90"], ["compute_90"]), "no kernel image for sm_75: reinstall charlstm with "
                                                   "TORCH_CUDA_ARCH_LIST=7.5"),
    ((8, 6), ([], []), "no kernel image for sm_86"),
])
def test_kernel_image_for_a_gpu(capability, built, expected):
    from charlstm.build import kernel_image

    assert kernel_image(capability, *built).startswith(expected)
