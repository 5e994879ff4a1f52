"""Where the general suite's training step spends its time, and the most any recurrent kernel
could gain there.

For each cell (kind, batch, hidden, steps, layers, input) three copies of the suite's step run
(charlstm.bench_suite.Trainer: embedding or token ids, the recurrent module, Linear, cross-entropy,
backward, clip_grad_norm_, Adam): one on torch.nn's module, one on charlstm.nn's, and a stub whose
recurrent module costs nothing. The stub returns a fixed output [T, B, H] and, after the backward,
hands its recurrent weights (and the embedding) fixed gradients made once, so the classifier,
the loss, their backward, the clip and Adam do the same work over the same parameters as in the
other two. The fixed gradients are small random values, not zeros: Adam's square root of an
all-zero second moment takes a slower path in torch (over a 1024-unit LSTM's weights its step
took about twice as long). Steps of the three take turns (bench_suite.round_order); each phase is
timed on its own (forward, loss, backward, clip, Adam) and the medians are printed and written as
JSON.

The bound is torch's step time over the stub's: the ratio charlstm.nn would reach if its
recurrent module, forward and backward, took no time at all. The stub also skips the embedding's
backward, so the bound is a little above what is reachable, never below. Beside it: what the
recurrent module (a step's time minus the stub's) may cost for charlstm's step to reach 1.5x, and
what its matrix products alone take (charlstm.bench_suite.recurrent_flops) at the peaks of
`torch.mm` and oneDNN's matmul measured in the same run (charlstm.bench_suite.measure_peaks).

The suite's Adam is torch's default, which on the CPU loops over the parameters in Python;
`--fused-adam` gives all three steps Adam(fused=True) instead, a user's other choice, which shrinks
what the step spends outside the recurrent module.

    python benchmarks/step_bound.py --cells lstm,1,64,10,1,float lstm,64,128,50,1,ids
    python benchmarks/step_bound.py --fused-adam
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from charlstm.bench_suite import (Cell, Trainer, machine_description, measure_peaks, ms_at_peak, recurrent_flops,
                                  round_order, steady_allocator)
from charlstm.checkpoint import atomic_write_bytes

PHASES = ("forward", "loss", "backward", "clip", "adam")
BACKENDS = ("torch", "charlstm", "stub")
# The scale of the stub's fixed gradients: their norm stays below 0.5 for every cell of the suite's
# grid (16.8M weights at 1024 units and two layers), far below the clip's 5.
FIXED_GRADIENT = 1e-4
DEFAULT_CELLS = ["lstm,1,64,10,1,float", "lstm,1,128,50,1,ids", "lstm,64,64,10,1,float",
                 "lstm,64,128,50,2,float", "lstm,128,128,200,1,float", "rnn,1,64,10,1,float",
                 "rnn,64,64,10,1,float"]


class FreeRecurrent(nn.Module):
    """Stands in for the recurrent module: keeps its parameters, returns a fixed output that
    needs a gradient (so the classifier's backward computes its input gradient, as it does for
    the others)."""

    def __init__(self, module, steps, batch):
        super().__init__()
        self.module = module
        self.y = torch.randn(steps, batch, module.hidden_size, requires_grad=True)

    def forward(self, x):
        return self.y, None


def stub_trainer(cell, state, fused_adam=False):
    """The suite's Trainer with its recurrent module replaced by FreeRecurrent, and what the stub
    does as its backward ends: fixed gradients (made once) for that module's parameters and the
    embedding, and its output's gradient let go, so that the next backward takes a new one rather
    than adding into it. The fixed gradients are random, about 1e-4 each: the clip scales gradients
    in place, and these are reused, so they are kept well below its norm of 5."""
    trainer = Trainer(cell, "charlstm", "cpu", state=state, fused_adam=fused_adam)
    free = trainer.model.rnn = FreeRecurrent(trainer.model.rnn, cell.steps, cell.batch)
    gen = torch.Generator().manual_seed(0)
    fixed_grads = [(p, torch.randn(p.shape, generator=gen) * FIXED_GRADIENT)
                   for name, p in trainer.model.named_parameters() if not name.startswith("out.")]

    def after_backward():
        for p, grad in fixed_grads:
            p.grad = grad
        free.y.grad = None

    return trainer, after_backward


def timed_step(trainer, after_backward=None):
    """One step of the suite's Trainer, each phase timed -> seconds per phase (PHASES)."""
    marks = [time.perf_counter()]

    def mark(phase):
        if phase == "backward" and after_backward:
            after_backward()
        marks.append(time.perf_counter())

    trainer(mark)
    return [b - a for a, b in zip(marks, marks[1:])]


def parse_cell(spec):
    parts = spec.split(",")
    if (len(parts) != 6 or parts[0] not in ("lstm", "gru", "rnn") or parts[5] not in ("float", "ids")
            or not all(p.isdigit() and int(p) > 0 for p in parts[1:5])):
        raise SystemExit(f"--cells: {spec!r} is not KIND,B,H,T,LAYERS,INPUT (KIND lstm, gru or rnn, "
                         "four positive integers, INPUT float or ids), e.g. lstm,64,128,50,1,float")
    return Cell(parts[0], *(int(p) for p in parts[1:5]), parts[5])


def time_cell(cell, rounds, warmup=3, fused_adam=False):
    torch_trainer = Trainer(cell, "torch", "cpu", fused_adam=fused_adam)
    state = torch_trainer.model.state_dict()
    stub, after_backward = stub_trainer(cell, state, fused_adam)
    charlstm_trainer = Trainer(cell, "charlstm", "cpu", state=state, fused_adam=fused_adam)
    runs = {"torch": (torch_trainer, None), "charlstm": (charlstm_trainer, None), "stub": (stub, after_backward)}
    times = {b: [] for b in BACKENDS}
    for r in range(warmup + rounds):
        for b in round_order(BACKENDS, r):
            phases = timed_step(*runs[b])
            if r >= warmup:
                times[b].append(phases)
    row = {"cell": ",".join(str(v) for v in vars(cell).values()), "rounds": rounds}
    for b in BACKENDS:
        row[b] = {p: statistics.median(t[i] for t in times[b]) * 1e3 for i, p in enumerate(PHASES)}
        row[b]["step"] = statistics.median(sum(t) for t in times[b]) * 1e3
    row["ratio"] = row["torch"]["step"] / row["charlstm"]["step"]
    row["bound"] = row["torch"]["step"] / row["stub"]["step"]
    return row


def add_targets(row, cell, peaks):
    """The recurrent module's budget for a 1.5x step, and its products' time at each peak (ms)."""
    row["recurrent_for_1_5x_ms"] = row["torch"]["step"] / 1.5 - row["stub"]["step"]
    flops = recurrent_flops(cell)
    row["recurrent_products_ms"] = {name: ms_at_peak(flops, gflops) for name, gflops in peaks.items()}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, metavar="KIND,B,H,T,LAYERS,INPUT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--fused-adam", action="store_true",
                        help="all three steps use Adam(fused=True) instead of torch's default Adam")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: benchmarks/results/step_bound.json, or "
                             "step_bound_fused_adam.json with --fused-adam)")
    args = parser.parse_args()
    if args.out is None:
        name = "step_bound_fused_adam.json" if args.fused_adam else "step_bound.json"
        args.out = str(Path(__file__).parent / "results" / name)
    cells = [parse_cell(c) for c in args.cells]
    steady_allocator()
    torch.set_num_threads(args.threads)
    print(f"{machine_description()}, {torch.get_num_threads()} threads, "
          f"{'Adam(fused=True)' if args.fused_adam else 'default Adam'}; ms per step (medians), "
          "phases forward/loss/backward/clip/adam")
    peaks = measure_peaks("cpu")
    print("peaks: " + ", ".join(f"{name} {g:.0f}" for name, g in peaks.items() if g) + " GFLOP/s")
    rows = []
    for cell in cells:
        row = add_targets(time_cell(cell, args.rounds, fused_adam=args.fused_adam), cell, peaks)
        rows.append(row)
        parts = "  ".join(f"{b} {row[b]['step']:.2f} (" + "/".join(f"{row[b][p]:.2f}" for p in PHASES) + ")"
                          for b in BACKENDS)
        floors = " / ".join(f"{ms:.2f}" for ms in row["recurrent_products_ms"].values() if ms is not None)
        print(f"{row['cell']:>24}  {parts}  ratio {row['ratio']:.2f}x  bound {row['bound']:.2f}x  "
              f"recurrent for 1.5x {row['recurrent_for_1_5x_ms']:.2f}, its products at the peaks {floors}",
              flush=True)
    result = {"args": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": machine_description(), "platform": platform.machine(), "peaks": peaks, "rows": rows}
    atomic_write_bytes(Path(args.out), json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
