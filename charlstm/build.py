"""What this installation of charlstm was built with, and what it can use now."""

import json

import torch

from charlstm import __version__


def build_info() -> dict:
    """Torch version, whether CUDA kernels were compiled, OpenMP and SIMD, threads, devices."""
    from charlstm import ops  # loads the extension

    compiled = json.loads(torch.ops.charlstm.build_info())
    return {
        "charlstm": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_kernels": compiled["cuda"],
        "cuda_archs": compiled["cuda_archs"],
        "openmp": compiled["openmp"],
        "cpu_kernels": compiled["cpu_simd"],
        "threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "extension": ops.extension_path(),
    }
