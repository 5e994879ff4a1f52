"""Build the charlstm extension against the torch that is installed in this environment.

Install with `pip install --no-build-isolation -e .` (or without -e): build isolation would put a
different torch into a temporary build environment, and the extension would then fail to load
against the torch that runs it.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:
    sys.exit("charlstm builds against the installed torch, and none is installed: "
             "run `pip install torch numpy setuptools ninja` first, then "
             "`pip install --no-build-isolation -e .`")

HERE = os.path.dirname(os.path.abspath(__file__))


def cuda_toolkit():
    """The CUDA toolkit root holding nvcc, or None when torch has no CUDA or nvcc is missing.

    A GPU need not be visible: a GPU-less build machine still builds the CUDA kernels.
    """
    if torch.version.cuda is None or os.environ.get("CHARLSTM_FORCE_CPU") == "1":
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return None
    return home or os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def cuda_library_includes():
    """Header folders of the CUDA libraries (cuBLAS, cuSPARSE...) that pip's nvidia wheels ship."""
    found = []
    for entry in sys.path:
        found += glob.glob(os.path.join(entry, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(entry, "nvidia", "*", "include"))
    return sorted(set(p for p in found if os.path.isdir(p)))


def extension():
    cxx = ["-O3", "-fopenmp"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(HERE, "csrc")]
    toolkit = cuda_toolkit()
    if toolkit is None:
        why = "the installed torch has no CUDA" if torch.version.cuda is None else "nvcc was not found"
        print(f"charlstm: building the CPU extension ({why}); torch {torch.__version__}", flush=True)
        return cpp_extension.CppExtension(
            "charlstm._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], py_limited_api=True)

    os.environ["CUDA_HOME"] = toolkit
    cpp_extension.CUDA_HOME = toolkit
    include_dirs += cuda_library_includes()
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    werror = ["-Werror"] if os.environ.get("CHARLSTM_WERROR") == "1" else []
    print(f"charlstm: building the CUDA extension for sm {archs} with {toolkit}; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda})", flush=True)
    return cpp_extension.CUDAExtension(
        "charlstm._C", sources + sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp")),
        include_dirs=include_dirs, define_macros=[("CHARLSTM_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx + ["-Wall"] + werror,
                            "nvcc": ["-O3", "--expt-relaxed-constexpr"]
                            + (["-Werror", "all-warnings"] if werror else [])},
        extra_link_args=["-fopenmp"], py_limited_api=True)


setup(
    name="charlstm",
    version="0.1.0",
    description="Fused LSTM/GRU/RNN kernels and character-level language model studies",
    packages=find_packages(include=["charlstm", "charlstm.*"]) + ["charlstm_cli"],
    package_dir={"charlstm_cli": "cli"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "typer>=0.12", "rich", "optuna>=3.6", "matplotlib"],
    # SQLAlchemy 2.1 reaches postgresql:// through psycopg 3, earlier versions through psycopg2.
    extras_require={"test": ["pytest"], "postgres": ["psycopg[binary]", "psycopg2-binary"]},
    entry_points={"console_scripts": ["charlstm = charlstm_cli.main:app"]},
)
