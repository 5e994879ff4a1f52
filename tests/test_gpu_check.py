"""benchmarks/gpu_check.sh in the modes a machine without a GPU can run: its JSON says why the GPU
phases did not run. nvidia-smi is replaced by a stand-in on the PATH, and the script uses this
interpreter's charlstm as it is (no venv, no build), so the test takes seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import charlstm

ROOT = Path(__file__).resolve().parents[1]


def run_check(tmp_path, nvidia_smi_output):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + (f"echo '{nvidia_smi_output}'\n" if nvidia_smi_output else "exit 9\n"))
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               CHARLSTM_GPU_CHECK_PYTHON=sys.executable, CHARLSTM_GPU_CHECK_BUILD="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=300)
    read = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    return result, read


def test_without_a_gpu_it_says_so_in_json_and_exits_3(tmp_path):
    result, read = run_check(tmp_path, None)
    assert result.returncode == 3, result.stderr
    assert read["gpu.json"] == {"gpu": False, "reason": "no NVIDIA GPU visible: nvidia-smi lists no GPU"}
    assert read["build.json"]["torch"] == torch.__version__
    assert read["build.json"]["charlstm_info"]["cuda_kernels"] == charlstm.build_info()["cuda_kernels"]
    for name in ("tests.json", "bench.json"):
        assert read[name]["skipped"] is True and "no NVIDIA GPU visible" in read[name]["reason"]
    summary = read["summary.json"]
    assert summary["result"] == "no GPU" and summary["gpu"]["gpu"] is False
    assert summary["phases"]["info"]["exit_code"] == 0
    assert json.loads(result.stdout) == summary


def test_a_gpu_with_a_build_that_has_no_cuda_kernels_fails_clearly(tmp_path):
    """nvidia-smi reports a GPU, but this interpreter's charlstm has no CUDA kernels (the CPU
    wheel): the script names the cause instead of running the GPU tests."""
    if charlstm.build_info()["cuda_kernels"]:
        import pytest
        pytest.skip("this build has CUDA kernels: the case needs a CPU-only build")
    result, read = run_check(tmp_path, "NVIDIA H200, 9.0, 580.1, 143771 MiB")
    assert result.returncode == 1
    assert read["gpu.json"]["devices"] == [{"name": "NVIDIA H200", "capability": "9.0", "driver": "580.1",
                                            "memory": "143771 MiB"}]
    assert read["build.json"]["torch_cuda_arch_list"] == "9.0"
    assert read["tests.json"] == {"skipped": True, "reason": "charlstm was built without CUDA kernels"}
    assert read["summary.json"]["result"] == "failed"
    assert "built without CUDA kernels" in result.stderr
