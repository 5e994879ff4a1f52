#!/usr/bin/env bash
# CUDA build job: a fresh venv with the CUDA 13.0 build of torch, a full build of the extension
# for the default architectures (those torch 2.14.1 runs on, PTX of the newest) with warnings as
# errors, then an import that must report CUDA kernels, machine code and PTX.
# No GPU is needed. It builds in a copy of the source tree, so the in-place CPU build of the
# checkout (charlstm/_C*.so) is left alone.
#
#   .ci/cuda-build.sh [SOURCE_DIR]      (default: the repository holding this script)
#
# Environment: CHARLSTM_CI_WORK (scratch folder, default a new temporary one, removed at the end
# unless CHARLSTM_CI_KEEP=1), CHARLSTM_CI_PYTHON (interpreter for the venv, default python3),
# PIP_CACHE_DIR (pip's download cache, reused when present), TORCH_CUDA_ARCH_LIST (default: setup.py's).
set -euo pipefail

source_dir=$(cd "${1:-$(dirname "$0")/..}" && pwd)
python=${CHARLSTM_CI_PYTHON:-python3}
torch_spec="torch==2.14.1"
export CHARLSTM_WERROR=1

if [[ -n "${CHARLSTM_CI_WORK:-}" ]]; then
    work=$CHARLSTM_CI_WORK
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/charlstm-cuda-build.XXXXXX")
fi
# The venv is 5.5 GB: removing it takes a minute or more, so that is timed too.
cleanup() {
    if [[ "${CHARLSTM_CI_KEEP:-0}" != 1 ]]; then
        local removal_start=$SECONDS
        rm -rf "$work"
        echo "cuda-build: removing $work took $((SECONDS - removal_start)) s" >&2
    fi
}
trap cleanup EXIT

start=$SECONDS
phase_start=$SECONDS
phase() {
    echo "cuda-build: $1 took $((SECONDS - phase_start)) s" >&2
    phase_start=$SECONDS
}

if ! command -v nvcc >/dev/null && [[ -z "${CUDA_HOME:-}" ]]; then
    echo "cuda-build: nvcc is not on the PATH and CUDA_HOME is unset: install the CUDA 13 toolkit" >&2
    exit 1
fi

# The tracked files as they are in the working tree, without build outputs or venvs.
rm -rf "$work/src"
mkdir -p "$work/src"
git -C "$source_dir" ls-files -z | (cd "$source_dir" && tar --null -T - -cf -) | tar -xf - -C "$work/src"
phase "copying the source tree"

rm -rf "$work/venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$torch_spec" numpy setuptools ninja
phase "creating the venv ($torch_spec)"

cd "$work/src"
log="$work/build.log"
if ! "$work/venv/bin/python" setup.py build_ext --inplace >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "cuda-build: the build failed (log above)" >&2
    exit 1
fi
grep '^charlstm:' "$log" >&2 || true
phase "building the extension"

"$work/venv/bin/python" - <<'EOF'
import json
import os
import sys

import charlstm

info = charlstm.build_info()
print(json.dumps(info))
if not info["cuda_kernels"]:
    sys.exit("cuda-build: the extension was built without CUDA kernels")
if not info["cuda_machine_code"] or not (info["cuda_ptx"] or os.environ.get("TORCH_CUDA_ARCH_LIST")):
    sys.exit("cuda-build: the default build must embed machine code and PTX, got " + info["cuda_archs"])
EOF
phase "importing charlstm"
echo "cuda-build: passed in $((SECONDS - start)) s" >&2
