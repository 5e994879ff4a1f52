"""The general benchmark: a char-rnn training step on charlstm.nn against torch.nn over a grid.

The step is what a user writes around a recurrent module: token ids [T+1, B] from a vocabulary of
64, then either an embedding of width 64 (``float`` input) or the ids themselves (``ids`` input:
charlstm.nn takes them as the one-hot input they stand for, torch.nn gets ``F.one_hot(...)``),
a recurrent module (64 -> H, L layers), ``nn.Linear(H, 64)``, the mean cross-entropy over all
T*B predictions, backward, ``clip_grad_norm_(5)`` and ``torch.optim.Adam``. The two models start
from the same weights; only the recurrent module differs (charlstm.nn's fused backend against
torch.nn's own, oneDNN's RNN primitive on the CPU for the LSTM).

Timing: per grid cell the two backends run in interleaved rounds (their order alternating, as
``round_order`` gives it), one or a few steps per round, until both have ``min_rounds`` rounds and
the cell's time budget is spent; each backend's figure is its median. A cell whose torch step
takes over 2 s is skipped (it is estimated from the product floor first, then judged by its
second, warm step; only a first step over 20 s skips it at once).

The product floor of a cell is its matrix-product FLOPs divided by a peak measured in the same
run, against two peaks: what ``torch.mm`` reaches (MKL on the CPU) and what oneDNN's matmul
reaches, which is higher on some machines (AMD EPYC among them). Token ids count no input
projection: they are a row lookup, not a product.

Outside the grid, ``embedding`` input (``--inputs``) is the ``float`` model with the embedding's
weight handed to charlstm.nn (``rnn(ids, embedding=embed.weight)``, which folds it into the first
layer where a window has enough ids); torch.nn still gets the embedded floats. Its floor counts
the folded products where charlstm.nn folds, and it is summarised apart from the grid's inputs.
"""

import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from charlstm import nn as cnn
from charlstm.nn import folds_embedding

VOCAB = 64
EMBEDDING = 64
CLIP = 5.0
CELL_KINDS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
BACKENDS = ("torch", "charlstm")
SKIP_TORCH_SECONDS = 2.0
# A first step carries one-off costs (oneDNN's primitives, the allocator's growth, Adam's state), so
# it only decides a skip on its own when it is far beyond what a warm step may take.
SKIP_FIRST_STEP_SECONDS = 10 * SKIP_TORCH_SECONDS
# The cell whose step's peak memory is compared, (batch, hidden, steps, layers) with float input.
MEMORY_CELL = (64, 512, 100, 2)


@dataclass(frozen=True)
class Grid:
    batch: tuple
    hidden: tuple
    steps: tuple
    layers: tuple
    inputs: tuple = ("float", "ids")


# Every input kind a cell can have; the grids' own are Grid.inputs.
INPUT_KINDS = ("float", "ids", "embedding")


GRIDS = {
    "lstm": Grid(batch=(1, 16, 64, 128), hidden=(64, 128, 256, 512, 1024), steps=(10, 50, 100, 200),
                 layers=(1, 2)),
    "gru": Grid(batch=(1, 64), hidden=(64, 256, 1024), steps=(10, 100), layers=(1, 2)),
    "rnn": Grid(batch=(1, 64), hidden=(64, 256, 1024), steps=(10, 100), layers=(1, 2)),
}


@dataclass(frozen=True)
class Cell:
    kind: str
    batch: int
    hidden: int
    steps: int
    layers: int
    input: str


def grid_cells(kinds, inputs=None):
    """Every cell of the grids of `kinds`, smallest work first within a kind; `inputs` replaces
    the grids' input kinds."""
    cells = []
    for kind in kinds:
        g = GRIDS[kind]
        for hidden in g.hidden:
            for layers in g.layers:
                for steps in g.steps:
                    for batch in g.batch:
                        for input in inputs or g.inputs:
                            cells.append(Cell(kind, batch, hidden, steps, layers, input))
    return cells


def product_flops(cell):
    """Matrix-product FLOPs of one training step of `cell` (forward and backward)."""
    # The classifier: forward, dW_out and dy.
    return recurrent_flops(cell) + 3 * 2 * cell.steps * cell.batch * cell.hidden * VOCAB


def recurrent_flops(cell):
    """The part of product_flops that the recurrent module computes, forward and backward."""
    G, H, L, N = GATES[cell.kind], cell.hidden, cell.layers, cell.steps * cell.batch
    flops = 0
    for layer in range(L):
        inputs = EMBEDDING if layer == 0 else H
        # Forward h W_hh^T, backward dh and dW_hh: three products of [N, H] x [H, G*H].
        flops += 3 * 2 * N * H * G * H
        if layer == 0 and cell.input == "ids":
            continue  # a row lookup forward, a scatter-add backward
        if layer == 0 and cell.input == "embedding" and folds_embedding(VOCAB, N):
            # Folded: W_ih embedding^T forward, and the two gradients through it.
            flops += 3 * 2 * VOCAB * inputs * G * H
            continue
        # Forward x W_ih^T and dW_ih, plus dx (which the embedding or the layer below needs).
        flops += 3 * 2 * N * inputs * G * H
    return flops


def round_order(names, round_index):
    """The order in which interleaved timing runs `names` in round `round_index`: rotated by the
    round, so every name runs in every position equally often. With three or more names none runs
    twice in a row; with two the order alternates, and each does so equally. A step timed right
    after another of its own runs faster: with two identical charlstm trainers beside torch.nn's
    in the suite's step, in a mirrored order of three, the one that ran twice in a row came out
    about 3% faster at batch 1, 16 and 64 on the AVX2 machine."""
    names = tuple(names)
    k = round_index % len(names)
    return names[k:] + names[:k]


# ---- the model and one training step ----

class CharModel(nn.Module):
    """ids -> [embedding] -> recurrent module -> Linear; returns logits [T, B, VOCAB]."""

    def __init__(self, kind, backend, hidden, layers, input):
        super().__init__()
        self.input, self.backend = input, backend
        self.embed = nn.Embedding(VOCAB, EMBEDDING) if input in ("float", "embedding") else None
        classes = {"torch": {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN},
                   "charlstm": {"lstm": cnn.LSTM, "gru": cnn.GRU, "rnn": cnn.RNN}}[backend]
        self.rnn = classes[kind](EMBEDDING, hidden, layers)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, ids):
        if self.input == "embedding" and self.backend == "charlstm":
            y, _ = self.rnn(ids, embedding=self.embed.weight)
            return self.out(y)
        if self.embed is not None:
            x = self.embed(ids)
        elif self.backend == "torch":
            x = F.one_hot(ids, VOCAB).to(self.out.weight.dtype)
        else:
            x = ids
        y, _ = self.rnn(x)
        return self.out(y)


class Trainer:
    """A model and its Adam optimizer; calling it runs one training step on the next window.

    The suite's Adam is torch's default, a loop over the parameters on the CPU; `fused_adam` makes
    it ``Adam(fused=True)``, one kernel over all of them, for measuring what that leaves of a step."""

    def __init__(self, cell, backend, device, state=None, seed=0, fused_adam=False):
        torch.manual_seed(seed)
        self.backend = backend
        self.model = CharModel(cell.kind, backend, cell.hidden, cell.layers, cell.input).to(device)
        if state is not None:
            self.model.load_state_dict(state)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True if fused_adam else None)
        gen = torch.Generator().manual_seed(seed + 1)
        self.windows = [torch.randint(0, VOCAB, (cell.steps + 1, cell.batch), generator=gen).to(device)
                        for _ in range(4)]
        self.i = 0

    def __call__(self, mark=None):
        """One step -> its loss. `mark(phase)`, when given, is called as each phase ends: "forward",
        "loss" (with the gradients cleared), "backward", "clip" and "adam"."""
        window = self.windows[self.i % len(self.windows)]
        self.i += 1
        logits = self.model(window[:-1])
        if mark:
            mark("forward")
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), window[1:].reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        if mark:
            mark("loss")
        loss.backward()
        if mark:
            mark("backward")
        nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        if mark:
            mark("clip")
        self.opt.step()
        if mark:
            mark("adam")
        return loss


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device, repeats=1):
    _sync(device)
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - began) / repeats


# ---- peaks ----

def measure_peaks(device, size=2048, repeats=5):
    """GFLOP/s of torch.mm and of oneDNN's matmul (CPU only) on [size]^3, medians."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    flops = 2 * size ** 3

    def gflops(fn):
        fn()
        return flops / statistics.median(_timed(fn, device) for _ in range(repeats)) / 1e9

    peaks = {"torch_mm_gflops": gflops(lambda: torch.mm(a, b)), "onednn_gflops": None}
    if str(device) == "cpu" and torch.backends.mkldnn.is_available():
        # nn.functional.linear on oneDNN tensors runs oneDNN's matmul primitive.
        am, wm = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        peaks["onednn_gflops"] = gflops(lambda: torch._C._nn.mkldnn_linear(am, wm, None))
    return peaks


def ms_at_peak(flops, gflops):
    """Milliseconds that `flops` take at `gflops` GFLOP/s, or None for a peak not measured."""
    return flops / gflops / 1e6 if gflops else None


# ---- timing one cell ----

def time_cell(cell, device, budget_s, min_rounds=5, max_rounds=200):
    """Medians of both backends for one cell, or a record saying why it was skipped."""
    torch_trainer = Trainer(cell, "torch", device)
    ours = Trainer(cell, "charlstm", device, state=torch_trainer.model.state_dict())
    trainers = {"torch": torch_trainer, "charlstm": ours}
    first = {b: _timed(t, device) for b, t in trainers.items()}
    if first["torch"] > SKIP_FIRST_STEP_SECONDS:
        return {"skipped": f"torch's first step took {first['torch']:.1f} s"}
    warm = {b: _timed(t, device) for b, t in trainers.items()}
    if warm["torch"] > SKIP_TORCH_SECONDS:
        return {"skipped": f"torch's step takes {warm['torch']:.2f} s (over {SKIP_TORCH_SECONDS:.0f} s)"}
    # Steps per round: enough for about 5 ms, so the timer's resolution never matters.
    repeats = {b: max(1, math.ceil(0.005 / max(w, 1e-6))) for b, w in warm.items()}
    times = {b: [] for b in trainers}
    began = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - began < budget_s):
        for b in round_order(BACKENDS, rounds):
            times[b].append(_timed(trainers[b], device, repeats[b]))
        rounds += 1
    med = {b: statistics.median(v) * 1e3 for b, v in times.items()}
    return {"torch_ms": med["torch"], "charlstm_ms": med["charlstm"], "ratio": med["torch"] / med["charlstm"],
            "rounds": rounds, "steps_per_round": repeats}


# ---- peak memory of a step, in a fresh process per backend ----

def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(kind, batch, hidden, steps, layers, input, backend, threads):
    """Runs in the child: KiB the process's resident set grows by during two training steps."""
    torch.set_num_threads(threads)
    trainer = Trainer(Cell(kind, batch, hidden, steps, layers, input), backend, "cpu")
    trainer()  # Adam's state, oneDNN's primitive caches
    import gc
    gc.collect()
    base = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set
    trainer()
    trainer()
    return _rss_kib("VmHWM") - base


def step_peak_memory(cell, threads):
    """{backend: KiB} the resident set grows by during a step of `cell`, each backend in its own
    process. glibc's malloc is told to map every block over 64 KiB on its own, so freed memory
    leaves the resident set and the growth is the step's live memory at its peak."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = {}
    for backend in BACKENDS:
        code = ("import sys, charlstm.bench_suite as s; "
                f"print(s._memory_child({cell.kind!r}, {cell.batch}, {cell.hidden}, {cell.steps}, "
                f"{cell.layers}, {cell.input!r}, {backend!r}, {threads}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        out[backend] = int(done.stdout.strip().splitlines()[-1])
    return out


# ---- the suite ----

def run_suite(kinds=CELL_KINDS, device="cpu", budget_s=0.6, cells=None, memory=True, log=None):
    """Times every cell of the grids of `kinds` (or the given `cells`) -> one JSON-ready dict."""
    kinds = tuple(kinds)
    cells = grid_cells(kinds) if cells is None else list(cells)
    began = time.perf_counter()
    peaks = measure_peaks(device)
    rows = []
    for cell in cells:
        flops = product_flops(cell)
        row = asdict(cell) | {"gflop": flops / 1e9}
        for name, key in (("floor_mm_ms", "torch_mm_gflops"), ("floor_onednn_ms", "onednn_gflops")):
            row[name] = ms_at_peak(flops, peaks[key])
        floor = row["floor_onednn_ms"] or row["floor_mm_ms"]
        if floor > SKIP_TORCH_SECONDS * 1e3:
            row["skipped"] = f"the product floor alone is {floor / 1e3:.1f} s"
        else:
            row |= time_cell(cell, device, budget_s)
        rows.append(row)
        if log:
            log(row)
    result = {
        "suite": "general", "cells": list(kinds), "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": machine_description(), "peaks": peaks, "budget_s": budget_s,
        "rows": rows, "summary": summarize(rows),
    }
    if memory and str(device) == "cpu" and "lstm" in kinds:
        cell = Cell("lstm", *MEMORY_CELL, "float")
        result["memory"] = asdict(cell) | {f"{b}_kib": kib for b, kib in
                                           step_peak_memory(cell, torch.get_num_threads()).items()}
    result["seconds"] = time.perf_counter() - began
    return result


CELL_KEY = ("kind", "batch", "hidden", "steps", "layers", "input")


def combine(results):
    """Several runs' results (slices of a grid timed apart) as one: their rows, one summary.

    A cell timed in more than one run keeps the row of the last run that timed it, in the place
    of its first: a slice timed again replaces what it covers. Peaks, machine and settings are
    the first run's; each run's own peaks stay in `runs`."""
    first = results[0]
    combined = {k: v for k, v in first.items() if k not in ("rows", "summary", "memory", "seconds")}
    combined["cells"] = sorted({k for r in results for k in r["cells"]})
    rows = {}
    for r in results:
        for row in r["rows"]:
            rows[tuple(row[k] for k in CELL_KEY)] = row
    combined["rows"] = list(rows.values())
    combined["summary"] = summarize(combined["rows"])
    combined["runs"] = [{"hidden": r.get("hidden"), "batch": r.get("batch"), "cells": r["cells"],
                         "peaks": r["peaks"], "seconds": r["seconds"]} for r in results]
    combined["seconds"] = sum(r["seconds"] for r in results)
    memory = [r["memory"] for r in results if "memory" in r]
    if memory:
        combined["memory"] = memory[-1]
    return combined


def summarize(rows):
    """Per cell kind: how many cells ran, the smallest and median ratio, and the same for H <= 128.
    Cells of the grids' inputs (float, ids) are summarised under the kind ("lstm"), those of
    embedding input apart ("lstm, embedding input")."""
    out = {}
    groups = sorted({(r["kind"], r["input"] == "embedding") for r in rows})
    for kind, handed in groups:
        mine = [r for r in rows if r["kind"] == kind and (r["input"] == "embedding") == handed]
        timed = [r for r in mine if "ratio" in r]
        small = [r["ratio"] for r in timed if r["hidden"] <= 128]
        ratios = [r["ratio"] for r in timed]
        out[f"{kind}, embedding input" if handed else kind] = {
            "cells": len(timed), "skipped": sum(1 for r in mine if "skipped" in r),
            "min_ratio": min(ratios, default=None), "median_ratio": statistics.median(ratios) if ratios else None,
            "below_1": sum(1 for v in ratios if v < 1.0),
            "min_ratio_hidden_le_128": min(small, default=None),
            "below_1_5_hidden_le_128": sum(1 for v in small if v < 1.5),
        }
    return out


def steady_allocator():
    """Fixes glibc's mmap and trim thresholds for this process; returns whether they were set.

    By default glibc raises its mmap threshold as large blocks are freed and trims the top of its
    heap. A training step that frees and allocates blocks of many MiB (a 1024-unit LSTM's W_hh
    gradient is 16 MiB, and so are Adam's temporaries for it) then finds its memory returned to the
    system on some steps and faults it in again: in one process the same cell's step alternated
    between about 17 and 33 ms, for either backend, so a cell's ratio depended on when the run
    met it. Blocks up to 32 MiB (glibc's largest threshold) now stay in the heap, which is never
    trimmed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}"


def format_table(result):
    """The result as a markdown table, one row per cell, and the summary lines."""
    peaks = result["peaks"]
    onednn = f"{peaks['onednn_gflops']:.0f}" if peaks["onednn_gflops"] else "n/a"
    allocator = "; glibc heap thresholds fixed" if result.get("steady_allocator") else ""
    lines = [f"charlstm.nn vs torch.nn, one training step, ms (median); {result['device']}, {result['threads']} "
             f"threads, torch {result['torch']}; {result['machine']}{allocator}",
             f"product floor: matrix-product FLOPs / peak; torch.mm {peaks['torch_mm_gflops']:.0f} GFLOP/s, "
             f"oneDNN {onednn} GFLOP/s; floor / torch and floor / charlstm: the share of each backend's step "
             "that its products would take at the higher peak",
             "",
             "| cell | input | B | H | T | L | torch ms | charlstm ms | torch / charlstm | floor ms (mm / oneDNN) "
             "| floor / torch | floor / charlstm |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        floor = f"{r['floor_mm_ms']:.2f}" + (f" / {r['floor_onednn_ms']:.2f}" if r["floor_onednn_ms"] else "")
        head = f"| {r['kind']} | {r['input']} | {r['batch']} | {r['hidden']} | {r['steps']} | {r['layers']} |"
        if "skipped" in r:
            lines.append(f"{head} skipped | | | {floor} | | |")
        else:
            best = r["floor_onednn_ms"] or r["floor_mm_ms"]
            lines.append(f"{head} {r['torch_ms']:.2f} | {r['charlstm_ms']:.2f} | {r['ratio']:.2f}x | {floor} | "
                         f"{best / r['torch_ms']:.0%} | {best / r['charlstm_ms']:.0%} |")
    lines.append("")
    for kind, s in result["summary"].items():
        if not s["cells"]:
            continue
        small = (f"; H <= 128: min {s['min_ratio_hidden_le_128']:.2f}x, {s['below_1_5_hidden_le_128']} below 1.5x"
                 if s["min_ratio_hidden_le_128"] is not None else "")
        lines.append(f"{kind}: {s['cells']} cells ({s['skipped']} skipped), ratio min {s['min_ratio']:.2f}x, "
                     f"median {s['median_ratio']:.2f}x, {s['below_1']} below 1.0x{small}")
    if "memory" in result:
        m = result["memory"]
        lines.append(f"peak memory of a step at (B, H, T, L) = ({m['batch']}, {m['hidden']}, {m['steps']}, "
                     f"{m['layers']}): torch {m['torch_kib'] / 1024:.1f} MiB, charlstm {m['charlstm_kib'] / 1024:.1f} MiB")
    lines.append(f"({result['seconds']:.0f} s in all)")
    return "\n".join(lines)


def parse_inputs(spec):
    """`--inputs float,embedding` -> ("float", "embedding"); None for the grids' own."""
    if spec is None:
        return None
    values = tuple(v.strip() for v in spec.split(",") if v.strip())
    if not values or any(v not in INPUT_KINDS for v in values):
        raise ValueError(f"--inputs {spec!r}: choose comma-separated input kinds from {', '.join(INPUT_KINDS)}")
    return tuple(dict.fromkeys(values))


def parse_grid_values(spec, kinds, field):
    """`--hidden 64,128` -> (64, 128): values of `field` ("hidden", "batch") offered by the grids
    of `kinds`; None for all."""
    if spec is None:
        return None
    offered = sorted({v for k in kinds for v in getattr(GRIDS[k], field)})
    try:
        values = tuple(int(v) for v in spec.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v not in offered for v in values):
        raise ValueError(f"--{field} {spec!r}: choose comma-separated sizes from {offered}")
    return values


def general_suite(cells="lstm,gru,rnn", device="cpu", budget_s=0.6, out=None, json_output=False,
                  hidden=None, batch=None, inputs=None):
    """The `charlstm bench --suite general` command: run, write `out`, print JSON or the table.

    `hidden` ("64,128") and `batch` ("1") keep only the grid cells of those hidden sizes and
    batch sizes, so that a long grid can be timed in several short runs, or a part of it timed
    again; the peak-memory comparison runs with the slice holding its cell. `inputs`
    ("float,embedding") replaces the grid's input kinds.
    """
    from charlstm.checkpoint import atomic_write_bytes

    kinds = [c.strip() for c in cells.split(",") if c.strip()]
    unknown = [k for k in kinds if k not in CELL_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown cell(s) {unknown}: choose from {', '.join(CELL_KINDS)}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible (see `charlstm info`)")
    steady = steady_allocator()
    sizes, batches = parse_grid_values(hidden, kinds, "hidden"), parse_grid_values(batch, kinds, "batch")
    input_kinds = parse_inputs(inputs)
    chosen = [c for c in grid_cells(kinds, input_kinds)
              if (sizes is None or c.hidden in sizes) and (batches is None or c.batch in batches)]
    memory = ((sizes is None or MEMORY_CELL[1] in sizes) and (batches is None or MEMORY_CELL[0] in batches)
              and (input_kinds is None or "float" in input_kinds))
    result = run_suite(kinds, device, budget_s, cells=chosen, memory=memory,
                       log=lambda row: print(json.dumps(row), file=sys.stderr))
    result["hidden"] = list(sizes) if sizes else None
    result["batch"] = list(batches) if batches else None
    result["inputs"] = list(input_kinds) if input_kinds else None
    result["steady_allocator"] = steady
    if out:
        atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    print(json.dumps(result) if json_output else format_table(result))
    return result
