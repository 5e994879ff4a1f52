"""Build the charlstm extension against the torch that is installed in this environment.

Install with `pip install --no-build-isolation -e .` (or without -e): build isolation would put a
different torch into a temporary build environment, and the extension would then fail to load
against the torch that runs it.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
except ImportError:
    sys.exit("charlstm builds against the installed torch, and none is installed: "
             "run `pip install torch numpy setuptools ninja` first, then "
             "`pip install --no-build-isolation -e .`")

HERE = os.path.dirname(os.path.abspath(__file__))
# The version is written once, in the package; reading it as text needs no built extension.
with open(os.path.join(HERE, "charlstm", "__init__.py")) as init:
    VERSION = re.search(r'^__version__ = "([^"]+)"', init.read(), re.MULTILINE).group(1)


def cuda_toolkit():
    """The CUDA toolkit root holding nvcc, or None when torch has no CUDA or nvcc is missing.

    A GPU need not be visible: a GPU-less build machine still builds the CUDA kernels.
    """
    if torch.version.cuda is None or os.environ.get("CHARLSTM_FORCE_CPU") == "1":
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home if os.path.exists(os.path.join(home, "bin", "nvcc")) else None
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    # nvcc on PATH may be a wrapper script (here /usr/local/bin/nvcc), so the folder above it is
    # not the toolkit; nvcc names its own root in the TOP line of a dry run.
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        for line in (dry.stdout + dry.stderr).splitlines():
            if line.startswith("#$ TOP="):
                return os.path.realpath(line.split("=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def cuda_library_includes(toolkit):
    """Header folders of the CUDA libraries (cuBLAS, cuSPARSE...) that pip's nvidia wheels ship.

    The toolkit may be minimal (nvcc and cudart only), while ATen's CUDA headers include
    cublas_v2.h and cusparse.h. The cu<major> folder (CUDA 13 wheels) or the per-library folders
    (CUDA 12 wheels) of this interpreter's site-packages hold them; nothing is added when the
    toolkit has them itself, so its own headers are never shadowed.
    """
    if os.path.exists(os.path.join(toolkit, "include", "cublas_v2.h")):
        return []
    major = torch.version.cuda.split(".")[0]
    found = []
    for entry in sys.path:
        root = os.path.join(entry, "nvidia")
        found += glob.glob(os.path.join(root, f"cu{major}", "include"))
        for library in ("cublas", "cusparse", "cusolver", "curand", "cufft"):
            found += glob.glob(os.path.join(root, library, "include"))
    return sorted(set(p for p in found if os.path.isdir(p)))


def default_cuda_archs(toolkit):
    """The architectures the installed torch runs on that this nvcc can compile, the newest with
    PTX too, so that a GPU newer than all of them JIT-compiles that PTX instead of finding no kernel.
    With torch 2.14.1 (CUDA 13.0): 7.5;8.0;8.6;9.0;10.0;12.0+PTX.
    """
    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: "")() or ""
    wanted = [a[3:] for a in flags.split() if a.startswith("sm_") and a[3:].isdigit()]
    try:
        listed = subprocess.run([os.path.join(toolkit, "bin", "nvcc"), "--list-gpu-code"], capture_output=True,
                                text=True, timeout=60).stdout.split()
        known = {a[3:] for a in listed if a.startswith("sm_")}
    except (OSError, subprocess.SubprocessError):
        known = set(wanted)
    archs = sorted({a for a in wanted if a in known} or {"80", "90"}, key=int)
    return ";".join(f"{a[:-1]}.{a[-1]}" for a in archs) + "+PTX"


def embedded_cuda_code(archs):
    """What TORCH_CUDA_ARCH_LIST `archs` puts into the module, in the words of the nvcc flags that
    torch's build makes of it: sm_XY machine code and compute_XY PTX."""
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    codes = {flag.split("code=")[-1] for flag in cpp_extension._get_cuda_arch_flags() if "code=" in flag}
    number = lambda code: int("".join(filter(str.isdigit, code)))  # noqa: E731
    return " ".join(sorted(codes, key=lambda code: (code.startswith("compute"), number(code))))


TOOLKIT = cuda_toolkit()
if TOOLKIT is not None:
    # Before cpp_extension is imported: it fixes its own guess of CUDA_HOME at import time.
    os.environ["CUDA_HOME"] = TOOLKIT
from torch.utils import cpp_extension  # noqa: E402


def extension():
    # -fno-trapping-math lets GCC turn the clamps and selects of the cell math into vector blends;
    # without it the float pointwise loops stay scalar. Nothing here relies on FP exceptions.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [os.path.join(HERE, "csrc")]
    toolkit = TOOLKIT
    if toolkit is None:
        if torch.version.cuda is None:
            why = "the installed torch has no CUDA"
        elif os.environ.get("CHARLSTM_FORCE_CPU") == "1":
            why = "CHARLSTM_FORCE_CPU=1"
        else:
            why = "nvcc was not found"
        print(f"charlstm: building the CPU extension ({why}); torch {torch.__version__}", flush=True)
        return cpp_extension.CppExtension(
            "charlstm._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"], py_limited_api=True)

    cpp_extension.CUDA_HOME = toolkit
    include_dirs += cuda_library_includes(toolkit)
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or default_cuda_archs(toolkit)
    code = embedded_cuda_code(archs)
    werror = ["-Werror"] if os.environ.get("CHARLSTM_WERROR") == "1" else []
    print(f"charlstm: building the CUDA extension for {archs} ({code}) with {toolkit}; "
          f"torch {torch.__version__} (CUDA {torch.version.cuda})", flush=True)
    return cpp_extension.CUDAExtension(
        "charlstm._C", sources + sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp")),
        include_dirs=include_dirs,
        define_macros=[("CHARLSTM_WITH_CUDA", "1"), ("CHARLSTM_CUDA_ARCHS", f'"{archs}"'),
                       ("CHARLSTM_CUDA_CODE", f'"{code}"')],
        extra_compile_args={"cxx": cxx + ["-Wall"] + werror,
                            "nvcc": ["-O3", "--expt-relaxed-constexpr", "-Xcompiler=-Wall"]
                            + (["-Werror", "all-warnings", "-Xcompiler=-Werror"] if werror else [])},
        extra_link_args=["-fopenmp"], py_limited_api=True)


setup(
    name="charlstm",
    version=VERSION,
    description="Fused LSTM/GRU/RNN kernels and character-level language model studies",
    packages=find_packages(include=["charlstm", "charlstm.*"]) + ["charlstm_cli"],
    package_dir={"charlstm_cli": "cli"},
    package_data={"charlstm": ["explain.html"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "typer>=0.12", "rich", "optuna>=3.6", "matplotlib"],
    # SQLAlchemy 2.1 reaches postgresql:// through psycopg 3, earlier versions through psycopg2.
    # Playwright drives the system's Chromium in the test of `charlstm explain`'s page.
    extras_require={"test": ["pytest", "playwright"],
                    "postgres": ["psycopg[binary]", "psycopg2-binary"]},
    entry_points={"console_scripts": ["charlstm = charlstm_cli.main:app"]},
)
