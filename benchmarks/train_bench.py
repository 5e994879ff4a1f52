"""Time whole `charlstm train` processes, fused backend against torch's kernels, in one run.

Each configuration runs as a fresh process (`python -m charlstm_cli.main train ... --json`), so
start-up, data loading, training, validation and sampling all count. Backends alternate within
each repeat so that a noisy machine hurts them alike. Prints medians and ratios and writes JSON
to benchmarks/results/.

    python benchmarks/train_bench.py --data speeches/ --threads 2   # a folder of .txt files
    python benchmarks/train_bench.py --threads 2                    # text8
"""

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from charlstm.checkpoint import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]


def run_once(args, batch, nodes, unrollings, steps, backend):
    command = [sys.executable, "-m", "charlstm_cli.main", "train", "--batch-size", str(batch),
               "--nodes", str(nodes), "--unrollings", str(unrollings), "--steps", str(steps),
               "--backend", backend, "--seed", "0", "--json", "--no-progress"]
    if args.data:
        command += ["--data", args.data]
    if args.threads:
        command += ["--threads", str(args.threads)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stderr}")
    result = json.loads(proc.stdout)
    return {"process_seconds": seconds, "train_seconds": result["train_seconds"],
            "tokens_per_second": result["tokens_per_second"], "valid_perplexity": result["valid_perplexity"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="corpus for charlstm train --data: a folder of .txt files, "
                                       "a .zip, a text file or cops:PRESIDENT (default: text8)")
    parser.add_argument("--threads", type=int, help="--threads for every run (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="fused,torch")
    parser.add_argument("--configs", default="64,64,10,3001;64,256,10,3001",
                        help="batch,nodes,unrollings,steps;... (default: the assignment's "
                             "defaults, and the same at 256 nodes)")
    args = parser.parse_args()
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
    backends = args.backends.split(",")

    runs = {(c, b): [] for c in configs for b in backends}
    for config in configs:
        for repeat in range(args.repeats):
            for backend in backends:
                runs[config, backend].append(run_once(args, *config, backend))
                last = runs[config, backend][-1]
                print(f"  batch,nodes,unrollings,steps={config} {backend:9s} repeat {repeat + 1}: "
                      f"{last['process_seconds']:.2f} s process, {last['train_seconds']:.2f} s training",
                      file=sys.stderr)

    rows = []
    print(f"\n{'batch,nodes,unroll,steps':26s} {'backend':9s} {'process s':>9s} {'train s':>8s} "
          f"{'tokens/s':>10s} {'valid ppl':>9s}")
    for config in configs:
        medians = {}
        for backend in backends:
            samples = runs[config, backend]
            median = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
            medians[backend] = median
            rows.append({"batch_size": config[0], "nodes": config[1], "unrollings": config[2],
                         "steps": config[3], "backend": backend, "median": median, "runs": samples})
            print(f"{str(config):26s} {backend:9s} {median['process_seconds']:9.2f} "
                  f"{median['train_seconds']:8.2f} {median['tokens_per_second']:10,.0f} "
                  f"{median['valid_perplexity']:9.3f}")
        if "fused" in medians and "torch" in medians:
            fused, torch_ = medians["fused"], medians["torch"]
            print(f"{'':26s} torch/fused: process "
                  f"x{torch_['process_seconds'] / fused['process_seconds']:.2f}, training "
                  f"x{torch_['train_seconds'] / fused['train_seconds']:.2f} (above 1: fused is "
                  "faster)")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = ROOT / "benchmarks" / "results" / f"train_bench-{stamp}.json"
    report = {"command": sys.argv, "data": args.data, "threads": args.threads,
              "repeats": args.repeats, "rows": rows}
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
