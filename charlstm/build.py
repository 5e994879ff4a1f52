"""What this installation of charlstm was built with, and what it can use now."""

import json

import torch

from charlstm import __version__


def build_info() -> dict:
    """Torch version, whether CUDA kernels were compiled and for which GPUs, OpenMP and SIMD, how
    float products run on this CPU, threads, and the visible GPUs with how charlstm's kernels run
    on each."""
    from charlstm import ops  # loads the extension

    compiled = json.loads(torch.ops.charlstm.build_info())
    code = compiled.get("cuda_code", "").split()
    machine_code = [c for c in code if c.startswith("sm_")]
    ptx = [c for c in code if c.startswith("compute_")]
    devices = []
    for i in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(i)
        devices.append({
            "index": i,
            "name": torch.cuda.get_device_name(i),
            "capability": f"{capability[0]}.{capability[1]}",
            "kernels": kernel_image(capability, machine_code, ptx) if compiled["cuda"] else "not built",
        })
    return {
        "charlstm": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels": compiled["cuda"],
        "cuda_archs": compiled["cuda_archs"],
        "cuda_machine_code": machine_code,
        "cuda_ptx": ptx,
        "openmp": compiled["openmp"],
        "cpu_kernels": compiled["cpu_simd"],
        "cpu_products": torch.ops.charlstm.cpu_products(),
        "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": devices,
        "extension": ops.extension_path(),
    }


def _arch(code: str) -> tuple[int, int, str]:
    """"sm_86" -> (8, 6, ""), "compute_120" -> (12, 0, ""), "sm_90a" -> (9, 0, "a")."""
    digits = "".join(ch for ch in code.split("_", 1)[1] if ch.isdigit())
    suffix = code.split("_", 1)[1][len(digits):]
    return int(digits[:-1]), int(digits[-1]), suffix


def kernel_image(capability: tuple[int, int], machine_code: list[str], ptx: list[str]) -> str:
    """How a GPU of compute capability `capability` runs kernels built as `machine_code` (sm_XY)
    and `ptx` (compute_XY).

    Machine code for X.y runs on X.z with z >= y (one major version; the `a` and `f` variants
    only on what they name, so only exact matches count for them). PTX for X.y is compiled by the
    driver, at the first launch, for any GPU of capability X.y or newer.
    """
    major, minor = capability

    def runs(code):
        code_major, code_minor, variant = _arch(code)
        return (code_major, code_minor) == (major, minor) or (not variant and code_major == major
                                                               and code_minor <= minor)

    runnable = [c for c in machine_code if runs(c)]
    if runnable:
        best = max(runnable, key=lambda c: (_arch(c)[1], _arch(c)[2] != ""))
        return f"machine code ({best})"
    jit = [c for c in ptx if not _arch(c)[2] and _arch(c)[:2] <= (major, minor)]
    if jit:
        best = max(jit, key=lambda c: _arch(c)[:2])
        return f"JIT from {best} PTX (the driver compiles it at the first launch and caches it)"
    return (f"no kernel image for sm_{major}{minor}: reinstall charlstm with "
            f"TORCH_CUDA_ARCH_LIST={major}.{minor} (see docs/cuda.md)")
