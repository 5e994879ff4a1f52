#!/usr/bin/env bash
# Torch versions job: the oldest torch setup.py admits and the newest pip installs here, each in a
# fresh Python venv (Python 3.11's ships setuptools 65.5, which has no bdist_wheel): README's
# install line with that torch pinned, `charlstm info`, then tests/test_ops.py. Both wheels carry
# CUDA, so the CPU extension is built (CHARLSTM_FORCE_CPU=1); the CUDA build is .ci/cuda-build.sh's.
# It builds in a copy of the tracked files, so the checkout's own build is left alone.
#
#   .ci/torch-versions.sh [SOURCE_DIR]      (default: the repository holding this script)
#
# Environment: CHARLSTM_CI_TORCH_VERSIONS (default "2.4.0 2.14.1"), CHARLSTM_CI_WORK (scratch
# folder, default a new temporary one, removed at the end unless CHARLSTM_CI_KEEP=1),
# CHARLSTM_CI_PYTHON (interpreter for the venvs, default python3).
set -euo pipefail

source_dir=$(cd "${1:-$(dirname "$0")/..}" && pwd)
python=${CHARLSTM_CI_PYTHON:-python3}
versions=${CHARLSTM_CI_TORCH_VERSIONS:-2.4.0 2.14.1}

if [[ -n "${CHARLSTM_CI_WORK:-}" ]]; then
    work=$CHARLSTM_CI_WORK
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/charlstm-torch-versions.XXXXXX")
fi
cleanup() {
    if [[ "${CHARLSTM_CI_KEEP:-0}" != 1 ]]; then
        rm -rf "$work"
    fi
}
trap cleanup EXIT

start=$SECONDS
for version in $versions; do
    t0=$SECONDS
    src=$work/src-$version venv=$work/venv-$version
    rm -rf "$src" "$venv"
    mkdir -p "$src"
    git -C "$source_dir" ls-files -z | (cd "$source_dir" && tar --null -T - -cf -) | tar -xf - -C "$src"
    "$python" -m venv "$venv"
    echo "torch-versions: torch $version, Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])'),"\
         "setuptools $("$venv/bin/python" -c 'import setuptools; print(setuptools.__version__)') in the new venv" >&2
    # README's install line, with the torch pinned and the test extra.
    (
        cd "$src"
        . "$venv/bin/activate"
        export CHARLSTM_FORCE_CPU=1
        pip install -q --disable-pip-version-check "torch==$version" numpy "setuptools>=70.1" ninja \
            && pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]" > "$work/build-$version.log" 2>&1 \
            || { tail -n 40 "$work/build-$version.log" >&2; echo "torch-versions: the install failed with torch $version" >&2; exit 1; }
        charlstm info --json
        python -m pytest -q -p no:cacheprovider tests/test_ops.py
    )
    # A 5 GB venv is not kept past its run.
    rm -rf "$venv" "$src"
    echo "torch-versions: torch $version passed in $((SECONDS - t0)) s" >&2
done
echo "torch-versions: passed in $((SECONDS - start)) s" >&2
