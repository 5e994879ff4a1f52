"""Timing of one character-LM training step, fused against the reference and torch.nn.LSTM.

A step is the assignment's: forward over T unrollings of a batch of 27-symbol text, a 27-way
softmax cross-entropy over all T*B predictions, backward, gradient clipping to global norm 1.25,
an SGD update; the LSTM state is carried (detached) from one step to the next.

Backends: `fused` and `reference` are charlstm.nn.LSTM with that backend, and `torch` is
torch.nn.LSTM, each in the same Python loop (nn.Linear, F.cross_entropy, autograd,
clip_grad_norm_, torch.optim.SGD); `fused_step` is the whole step as one charlstm.ops.lm_sgd_step
call on the same weights (torch.nn.LSTM's layout, both biases), as `charlstm train` runs it. The backends are
timed in interleaved rounds in one process, their order rotating from round to round, so that a
change in machine load hits them alike, and compared as ratios of medians.
"""

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from charlstm import loop
from charlstm import nn as cnn
from charlstm import ops
from charlstm.bench_suite import round_order

VOCAB = 27
DEFAULT_SHAPES = ((64, 64, 10), (64, 128, 15), (64, 256, 10), (64, 64, 50))
BACKENDS = ("fused", "fused_step", "reference", "torch")


@dataclass
class StepTiming:
    batch: int
    hidden: int
    unrollings: int
    backend: str
    median_ms: float
    min_ms: float
    rounds: int
    steps_per_round: int


class _Step:
    """One model and optimizer; calling it runs one training step on a fresh random window."""

    def __init__(self, backend, batch, hidden, unrollings, device, seed):
        gen = torch.Generator().manual_seed(seed)
        self.windows = torch.randint(0, VOCAB, (8, unrollings + 1, batch), generator=gen).to(device)
        torch.manual_seed(seed)
        self.backend = backend
        if backend == "fused_step":
            # The same weights as torch.nn.LSTM and Linear, stepped by one charlstm.ops.lm_sgd_step.
            self.lstm = cnn.LSTM(VOCAB, hidden).to(device)
            self.w_out = torch.empty(hidden, VOCAB, device=device).uniform_(-hidden ** -0.5, hidden ** -0.5)
            self.b_out = torch.zeros(VOCAB, device=device)
            self.state = tuple(torch.zeros(batch, hidden, device=device) for _ in range(2))
            self.i = 0
            return
        if backend == "torch":
            self.lstm = torch.nn.LSTM(VOCAB, hidden).to(device)
        else:
            self.lstm = cnn.LSTM(VOCAB, hidden, backend=backend).to(device)
        self.out = torch.nn.Linear(hidden, VOCAB).to(device)
        self.params = list(self.lstm.parameters()) + list(self.out.parameters())
        self.opt = torch.optim.SGD(self.params, lr=1.0)
        self.state = tuple(torch.zeros(1, batch, hidden, device=device) for _ in range(2))
        self.i = 0

    def __call__(self):
        window = self.windows[self.i % len(self.windows)]
        self.i += 1
        if self.backend == "fused_step":
            m = self.lstm
            loss, _, _, self.state = ops.lm_sgd_step(window, self.state, m.weight_ih_l0, m.weight_hh_l0,
                                                     m.bias_ih_l0, m.bias_hh_l0, self.w_out, self.b_out,
                                                     lr=1.0, clip=1.25)
            return loss
        inputs, targets = window[:-1], window[1:]
        if self.backend == "torch":
            inputs = torch.nn.functional.one_hot(inputs, VOCAB).float()
        y, state = self.lstm(inputs, self.state)
        self.state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(self.out(y).view(-1, VOCAB), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.25)
        self.opt.step()
        return loss


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_training_step(shapes=DEFAULT_SHAPES, backends=BACKENDS, rounds=15, steps_per_round=10,
                        warmup=5, device="cpu", seed=0, log=None):
    """Median milliseconds per training step for each shape and backend, and the speed-up ratios.

    Returns {"timings": [StepTiming as dict...], "ratios": [{batch, hidden, unrollings,
    "fused_vs_torch": torch/fused, "fused_vs_reference": reference/fused, and the same for
    fused_step}], ...}.
    """
    if rounds < 1 or steps_per_round < 1:
        raise ValueError(f"--rounds and --steps-per-round must be at least 1, got {rounds} and "
                         f"{steps_per_round}")
    device = loop.device(device)
    for shape in shapes:
        _check_memory(shape, len(backends), device)
    timings, ratios = [], []
    for batch, hidden, unrollings in shapes:
        steps = {b: _Step(b, batch, hidden, unrollings, device, seed) for b in backends}
        for step in steps.values():
            for _ in range(warmup):
                step()
        per_step = {b: [] for b in backends}
        for r in range(rounds):
            for b in round_order(backends, r):
                step = steps[b]
                _sync(device)
                start = time.perf_counter()
                for _ in range(steps_per_round):
                    step()
                _sync(device)
                per_step[b].append((time.perf_counter() - start) / steps_per_round * 1e3)
        medians = {}
        for b in backends:
            medians[b] = statistics.median(per_step[b])
            timings.append(asdict(StepTiming(batch, hidden, unrollings, b, medians[b], min(per_step[b]),
                                             rounds, steps_per_round)))
        row = {"batch": batch, "hidden": hidden, "unrollings": unrollings}
        for ours in ("fused", "fused_step"):
            for other in ("torch", "reference"):
                if ours in medians and other in medians:
                    row[f"{ours}_vs_{other}"] = medians[other] / medians[ours]
        ratios.append(row)
        if log:
            log(row | {f"{b}_ms": round(m, 3) for b, m in medians.items()})
    return {
        "timings": timings,
        "ratios": ratios,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _check_memory(shape, backends: int, device) -> None:
    """Refuse a shape whose models cannot all be held at once, before timing anything."""
    batch, hidden, unrollings = shape
    weights = 4 * hidden * (VOCAB + hidden + 2) + (hidden + 1) * VOCAB
    # Each backend's weights and gradients, the windows, and per step the gates, states and
    # logits kept for backward (and their gradients), in float32.
    per_backend = 4 * (2 * weights + 2 * unrollings * batch * (6 * hidden + VOCAB))
    windows = 8 * 8 * (unrollings + 1) * batch
    loop.check_memory(backends * per_backend + windows, device,
                      f"--shapes {batch}x{hidden}x{unrollings}", "use smaller shapes")


def parse_shapes(spec: str) -> list[tuple[int, int, int]]:
    """"64x64x10,64x256x10" -> [(64, 64, 10), (64, 256, 10)]: batch, hidden, unrollings."""
    shapes = []
    for part in spec.split(","):
        try:
            b, h, t = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ValueError(f"--shapes: {part!r} is not BATCHxHIDDENxUNROLLINGS; write shapes "
                             "like 64x64x10") from None
        if min(b, h, t) < 1:
            raise ValueError(f"--shapes: {part!r}: batch, hidden and unrollings must be at "
                             "least 1")
        shapes.append((b, h, t))
    return shapes


def parse_backends(spec: str) -> list[str]:
    """"fused,torch" -> ["fused", "torch"], each one of BACKENDS."""
    chosen = [b.strip() for b in spec.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown or not chosen:
        raise ValueError(f"--backends: unknown backend(s) {unknown}; choose from "
                         f"{', '.join(BACKENDS)}")
    return chosen


RATIO_NAMES = {"fused_vs_torch": "torch / fused", "fused_step_vs_torch": "torch / fused_step",
               "fused_vs_reference": "reference / fused"}


def table(result: dict):
    """The result as a rich Table: ms per step for each backend and shape, and the ratios."""
    from rich.table import Table

    backends = list(dict.fromkeys(t["backend"] for t in result["timings"]))
    rounds = result["timings"][0]["rounds"] if result["timings"] else 0
    title = (f"ms per training step (median of {rounds} rounds), {result['threads']} threads, "
             f"{result['device']}")
    rendered = Table(title=title)
    ratio_keys = [k for k in RATIO_NAMES if any(k in r for r in result["ratios"])]
    for column in ["batch", "hidden", "unrollings", *backends,
                   *(RATIO_NAMES[k] for k in ratio_keys)]:
        rendered.add_column(column, justify="right")
    medians = {(t["batch"], t["hidden"], t["unrollings"], t["backend"]): t["median_ms"]
               for t in result["timings"]}
    for r in result["ratios"]:
        key = (r["batch"], r["hidden"], r["unrollings"])
        cells = [f"{medians[key + (b,)]:.2f}" for b in backends]
        ratios = [f"{r[k]:.2f}x" if k in r else "-" for k in ratio_keys]
        rendered.add_row(*map(str, key), *cells, *ratios)
    return rendered
