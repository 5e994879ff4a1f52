"""Time the assignment's nodes x unrollings grid (88 points, one seed) as one sweep.

Runs the whole grid with the fused backend and `--workers` processes, then a subset of the grid
with the fused and the torch backends (same workers, same data) and prints their ratio. Writes
JSON to benchmarks/results/sweep_bench.json. Run it on an otherwise idle machine:

    python benchmarks/sweep_bench.py --data speeches/ --workers 2   # a folder of .txt files
    python benchmarks/sweep_bench.py --data cops:obama --scale 0.1  # 300 steps per run
"""

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from charlstm import sweep
from charlstm.checkpoint import atomic_write_bytes

SUBSET_NODES = [16, 64, 256]
SUBSET_UNROLLINGS = [5, 10, 30]


def timed(params: dict, workers: int, out: Path) -> dict:
    grid = sweep.make_grid(params)
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    summary = sweep.run([grid], out=out, workers=workers, progress=True)
    wall = time.perf_counter() - started
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    return {"points": summary["units"], "complete": summary["complete"], "wall_seconds": wall,
            "train_seconds": sum(float(r["train_seconds"]) for r in rows if r["train_seconds"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="corpus for charlstm train --data: a folder of .txt files, a .zip, "
                             "a text file or cops:PRESIDENT")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the 3001 steps")
    parser.add_argument("--skip-full", action="store_true", help="only the backend subset")
    parser.add_argument("--json", default="benchmarks/results/sweep_bench.json")
    args = parser.parse_args()
    steps = max(1, round(3001 * args.scale))
    base = {"data": [args.data], "steps": [steps]}
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    results = {"workers": args.workers, "steps": steps, "data": args.data}
    try:
        if not args.skip_full:
            results["full_fused"] = timed({**base, "nodes": sweep.POWERS_2_TO_256,
                                           "unrollings": sweep.UNROLLINGS_1_TO_50},
                                          args.workers, work / "full")
        subset = {**base, "nodes": SUBSET_NODES, "unrollings": SUBSET_UNROLLINGS}
        for backend in ("fused", "torch"):
            results[f"subset_{backend}"] = timed({**subset, "backend": [backend]}, args.workers,
                                                 work / backend)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fused, torch_ = results["subset_fused"], results["subset_torch"]
    results["subset_wall_ratio_torch_over_fused"] = torch_["wall_seconds"] / fused["wall_seconds"]
    results["subset_train_ratio_torch_over_fused"] = (torch_["train_seconds"]
                                                      / fused["train_seconds"])
    print(f"{'run':<14}{'points':>7}{'wall s':>10}{'train s':>10}")
    for name in ("full_fused", "subset_fused", "subset_torch"):
        if name in results:
            r = results[name]
            print(f"{name:<14}{r['points']:>7}{r['wall_seconds']:>10.1f}{r['train_seconds']:>10.1f}")
    print(f"torch / fused on the subset: wall {results['subset_wall_ratio_torch_over_fused']:.2f}x, "
          f"training {results['subset_train_ratio_torch_over_fused']:.2f}x")
    atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
