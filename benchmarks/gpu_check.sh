#!/usr/bin/env bash
# One call on a machine with an NVIDIA GPU, from a fresh clone: install the CUDA build of torch,
# build charlstm for that GPU's architecture, run every CUDA parity test and time the training
# step on the GPU against torch.nn (cuDNN). Everything it finds is written as JSON under one folder:
#
#   gpu.json      the GPU (nvidia-smi), or why there is none
#   build.json    torch, the build's arch list and `charlstm info` after the build
#   tests.json    pytest's counts, every failure and every skip reason (tests.xml: the JUnit report)
#   bench.json    `charlstm bench` on cuda (`--suite general` where this checkout has it)
#   summary.json  each phase's exit code and seconds, and the overall result
#   *.log         each phase's output
#
#   benchmarks/gpu_check.sh [OUT_DIR]      (default: benchmarks/results/gpu-check)
#
# Environment:
#   CHARLSTM_GPU_CHECK_PYTHON  use this interpreter and its torch as they are (machines that cannot
#                              download: their image's python3), instead of a new venv in OUT_DIR
#                              with torch 2.14.1 (CUDA 13.0) from pip
#   CHARLSTM_GPU_CHECK_BUILD=0 use the charlstm that interpreter already imports; build nothing
#   TORCH_CUDA_ARCH_LIST       architectures to build (default: the GPU's own, e.g. 9.0)
#   CHARLSTM_GPU_CHECK_SECONDS the whole check's time budget (default 580); each phase's limit
#                              scales with it, for machines slower than a GPU server
#
# It is sized to finish within 10 minutes on one GPU: each phase has its own time limit. Without
# a visible GPU it still installs and builds, records why the GPU phases were skipped, and exits 3.
# Exit codes: 0 all passed, 1 a phase failed, 3 no GPU.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/benchmarks/results/gpu-check}" && cd "${1:-$root/benchmarks/results/gpu-check}" && pwd)
cd "$root"
start=$SECONDS
phases="{}"
failed=0

log() { echo "gpu-check: $*" >&2; }

budget=${CHARLSTM_GPU_CHECK_SECONDS:-580}

# phase NAME LIMIT_SECONDS CMD...: runs CMD with its output in NAME.log, records exit code and time.
# The limits are for the default budget; no phase runs past the budget's end.
phase() {
    local name=$1 limit=$(($2 * budget / 580))
    shift 2
    local t0=$SECONDS rc left=$((budget - (SECONDS - start)))
    ((limit > left)) && limit=$left
    ((limit < 1)) && limit=1
    log "$name (limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    phases=$(python3 -c 'import json, sys; p = json.loads(sys.argv[1]); p[sys.argv[2]] = {"exit_code": int(sys.argv[3]), "seconds": int(sys.argv[4]), "timed_out": sys.argv[3] in ("124", "137")}; print(json.dumps(p))' \
        "$phases" "$name" "$rc" "$((SECONDS - t0))")
    if [[ $rc -ne 0 ]]; then
        log "$name failed (exit $rc): see $out/$name.log"
        tail -n 20 "$out/$name.log" >&2
        failed=1
    fi
    return $rc
}

skipped() {  # skipped FILE REASON: a JSON file saying why a phase did not run
    python3 -c 'import json, sys; print(json.dumps({"skipped": True, "reason": sys.argv[1]}))' "$2" >"$out/$1"
}

finish() {
    local result=$1
    python3 - "$out" "$result" "$((SECONDS - start))" "$phases" <<'EOF'
import json, sys
from pathlib import Path
out, result, seconds, phases = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
gpu = json.loads((out / "gpu.json").read_text())
summary = {"result": result, "gpu": gpu, "seconds": seconds, "phases": phases,
           "files": sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".xml", ".log"))}
for name in ("tests.json",):
    if (out / name).exists():
        summary["tests"] = {k: v for k, v in json.loads((out / name).read_text()).items() if k != "skip_reasons"}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary))
EOF
    log "$result in $((SECONDS - start)) s; results in $out"
}

# ---- the GPU ----
gpu=false
if command -v nvidia-smi >/dev/null && query=$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
        --format=csv,noheader 2>/dev/null) && [[ -n "$query" ]]; then
    gpu=true
    python3 - "$query" >"$out/gpu.json" <<'EOF'
import json, sys
rows = [[f.strip() for f in line.split(",")] for line in sys.argv[1].strip().splitlines()]
print(json.dumps({"gpu": True, "count": len(rows), "devices": [
    {"name": r[0], "capability": r[1], "driver": r[2], "memory": r[3]} for r in rows]}))
EOF
    log "GPU: $query"
else
    why=$(command -v nvidia-smi >/dev/null && echo "nvidia-smi lists no GPU" || echo "nvidia-smi is not installed")
    python3 -c 'import json, sys; print(json.dumps({"gpu": False, "reason": sys.argv[1]}))' \
        "no NVIDIA GPU visible: $why" >"$out/gpu.json"
    log "no GPU ($why): the build runs, the GPU phases are skipped"
fi

# ---- torch ----
if [[ -n "${CHARLSTM_GPU_CHECK_PYTHON:-}" ]]; then
    py=$CHARLSTM_GPU_CHECK_PYTHON
    pip_deps=(--no-deps)
else
    phase venv 180 bash -c "python3 -m venv '$out/venv' && '$out/venv/bin/pip' install --disable-pip-version-check \
        torch==2.14.1 numpy setuptools wheel ninja pytest typer rich 'optuna>=3.6' matplotlib" \
        || { finish "failed"; exit 1; }
    py=$out/venv/bin/python
    pip_deps=()
fi

# ---- the build, for this GPU's architecture ----
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" && $gpu == true ]]; then
    TORCH_CUDA_ARCH_LIST=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["devices"][0]["capability"])' \
        "$out/gpu.json")
    # Drivers too old for the compute_cap field: ask torch.
    [[ $TORCH_CUDA_ARCH_LIST =~ ^[0-9]+\.[0-9]+$ ]] || TORCH_CUDA_ARCH_LIST=$("$py" -c \
        'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')
    export TORCH_CUDA_ARCH_LIST
fi
if [[ "${CHARLSTM_GPU_CHECK_BUILD:-1}" != 0 ]]; then
    phase build 180 "$py" -m pip install --disable-pip-version-check --no-build-isolation "${pip_deps[@]}" -e . \
        || { finish "failed"; exit 1; }
fi
phase info 60 "$py" -c '
import json, os, torch, charlstm
info = charlstm.build_info()
print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"), "charlstm_info": info}))
' || { finish "failed"; exit 1; }
tail -n 1 "$out/info.log" >"$out/build.json"

if [[ $gpu != true ]]; then
    skipped tests.json "no NVIDIA GPU visible: the CUDA parity tests need one"
    skipped bench.json "no NVIDIA GPU visible: charlstm bench --device cuda needs one"
    finish "no GPU"
    exit 3
fi
if ! "$py" -c 'import sys, charlstm; sys.exit(not charlstm.build_info()["cuda_kernels"])'; then
    log "charlstm was built without CUDA kernels (see $out/build.log): is nvcc on the PATH?"
    skipped tests.json "charlstm was built without CUDA kernels"
    skipped bench.json "charlstm was built without CUDA kernels"
    failed=1
    finish "failed"
    exit 1
fi

# ---- every CUDA parity test: fp32, fp64, fp16, bf16, and the GPU-only tests ----
# The test files with tests that take the `device` fixture or use CUDA (this script's own aside).
mapfile -t test_files < <(grep -l -E 'def test_\w*\(.*\bdevice\b|torch\.cuda|"cuda"' tests/test_*.py |
                          grep -v test_gpu_check)
log "test files: ${test_files[*]}"
phase tests 240 "$py" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/tests.xml" "${test_files[@]}"
"$py" - "$out/tests.xml" >"$out/tests.json" <<'EOF'
import collections, json, sys
import xml.etree.ElementTree as ET
try:
    suite = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as exc:
    print(json.dumps({"error": f"no JUnit report: {exc}"}))
    sys.exit()
counts = collections.Counter()
failures, reasons = [], collections.Counter()
for case in suite.iter("testcase"):
    name = f'{case.get("classname")}::{case.get("name")}'
    on_cuda = "cuda" in name or "test_cuda" in name or "16bit" in name
    outcome = "passed"
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            outcome = {"failure": "failed", "error": "errors"}.get(tag, "skipped")
            if tag == "skipped":
                reasons[node.get("message", "")] += 1
            else:
                failures.append({"test": name, "message": (node.get("message") or "")[:500]})
    counts[outcome] += 1
    counts[f"cuda_{outcome}"] += on_cuda
print(json.dumps({**dict(counts), "failures": failures, "skip_reasons": dict(reasons)}))
EOF

# ---- the training step on the GPU against torch.nn (cuDNN) ----
if "$py" -m charlstm_cli.main bench --help 2>/dev/null | grep -q -- "--suite"; then
    bench_args=(bench --suite general --device cuda --json)
else
    bench_args=(bench --device cuda --json)
fi
phase bench 180 bash -c '"$0" -m charlstm_cli.main "$@" >"'"$out"'/bench.json"' "$py" "${bench_args[@]}" \
    || skipped bench.json "charlstm ${bench_args[*]} failed or ran out of time: see bench.log"

if [[ $failed -ne 0 ]]; then
    finish "failed"
    exit 1
fi
finish "passed"
exit 0
