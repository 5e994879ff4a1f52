"""One op for every layer of charlstm.nn.LSTM against one module per layer, forward + backward.

A two-layer `charlstm.nn.LSTM` runs both layers in one op call (and one backward). The baseline
is the same network built from two one-layer modules holding the same weights. Calls of the two
alternate, so machine noise hits both alike; prints medians and the ratio (per-layer time over
one-op time), and writes JSON to benchmarks/results/stacked_layers.json.

    python benchmarks/stacked_layers.py              # 2 threads, the shapes below
    python benchmarks/stacked_layers.py --threads 1
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from charlstm import nn as cnn
from charlstm.bench_suite import round_order
from charlstm.checkpoint import atomic_write_bytes

# (batch, hidden, steps), input size 64, float input.
SHAPES = [(1, 128, 50), (16, 128, 100), (64, 64, 50), (64, 128, 50), (64, 256, 50), (64, 512, 100),
          (128, 256, 100)]
INPUT = 64


def per_layer_copy(stacked: cnn.LSTM) -> list:
    """One-layer modules holding the stacked module's weights, layer by layer."""
    modules = []
    for layer in range(stacked.num_layers):
        size = stacked.input_size if layer == 0 else stacked.hidden_size
        m = cnn.LSTM(size, stacked.hidden_size, 1)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(m, f"{name}_l0").copy_(getattr(stacked, f"{name}_l{layer}"))
        modules.append(m)
    return modules


def step(forward, params, x):
    began = time.perf_counter()
    y = forward(x)
    y.sum().backward()
    for p in params:
        p.grad = None
    return time.perf_counter() - began


def time_shape(batch, hidden, steps, layers, rounds):
    torch.manual_seed(0)
    stacked = cnn.LSTM(INPUT, hidden, layers)
    modules = per_layer_copy(stacked)
    x = torch.randn(steps, batch, INPUT, requires_grad=True)

    def one_op(x):
        return stacked(x)[0]

    def per_layer(x):
        for m in modules:
            x = m(x)[0]
        return x

    with torch.no_grad():
        assert torch.allclose(one_op(x), per_layer(x), rtol=1e-4, atol=1e-5), "the two networks differ"
    runs = {"one_op": (one_op, list(stacked.parameters()) + [x]),
            "per_layer": (per_layer, [p for m in modules for p in m.parameters()] + [x])}
    times = {name: [] for name in runs}
    for r in range(rounds + 3):
        for name in round_order(runs, r):
            seconds = step(*runs[name], x)
            if r >= 3:
                times[name].append(seconds)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {"batch": batch, "hidden": hidden, "steps": steps, "layers": layers,
            "one_op_ms": med["one_op"], "per_layer_ms": med["per_layer"],
            "ratio": med["per_layer"] / med["one_op"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "stacked_layers.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"charlstm.nn.LSTM, {args.layers} layers, float input {INPUT}, forward + backward, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'hidden':>6} {'T':>4} {'one op ms':>10} {'per layer ms':>13} {'ratio':>6}")
    rows = []
    for batch, hidden, steps in SHAPES:
        row = time_shape(batch, hidden, steps, args.layers, args.rounds)
        rows.append(row)
        print(f"{batch:>5} {hidden:>6} {steps:>4} {row['one_op_ms']:>10.2f} {row['per_layer_ms']:>13.2f} "
              f"{row['ratio']:>5.2f}x", flush=True)
    result = {"args": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "rows": rows}
    atomic_write_bytes(Path(args.out), json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
