"""Time one training step, fused (module and whole-step op) vs reference vs torch.nn.LSTM, as JSON.

    python benchmarks/train_step.py            # the issue's four shapes, 2 threads
Writes benchmarks/results/train_step.json; run it on an idle machine.
"""

import json
import sys
from pathlib import Path

import torch

from charlstm.bench import bench_training_step
from charlstm.checkpoint import atomic_write_bytes


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    result = bench_training_step(log=lambda row: print(json.dumps(row), file=sys.stderr))
    print(f"{'batch':>5} {'hidden':>6} {'T':>3} {'fused ms':>9} {'step ms':>8} {'ref ms':>8} {'torch ms':>9} "
          f"{'torch/fused':>11} {'torch/step':>10} {'ref/fused':>9}")
    med = {(t["batch"], t["hidden"], t["unrollings"], t["backend"]): t["median_ms"] for t in result["timings"]}
    for r in result["ratios"]:
        k = (r["batch"], r["hidden"], r["unrollings"])
        print(f"{k[0]:>5} {k[1]:>6} {k[2]:>3} {med[k + ('fused',)]:>9.2f} {med[k + ('fused_step',)]:>8.2f} "
              f"{med[k + ('reference',)]:>8.2f} {med[k + ('torch',)]:>9.2f} {r['fused_vs_torch']:>10.2f}x "
              f"{r['fused_step_vs_torch']:>9.2f}x {r['fused_vs_reference']:>8.2f}x")
    out = Path(__file__).parent / "results" / "train_step.json"
    atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
