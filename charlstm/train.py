"""Train the assignment's character model and measure validation perplexity (Udacity 6_lstm).

One loop, top to bottom, with the assignment's semantics by default: validation is the first
`valid_size` characters and training the rest; the BatchGenerator's windows; state carried
across windows; mean softmax cross-entropy; SGD with a staircase-decayed learning rate and
gradients clipped to a global norm; every `summary_frequency` steps the average loss, minibatch
and validation perplexity and a sampled string. Validation resets the state, runs the whole
validation text as one sequence with batch 1, and scores each character's prediction of the
next, the last one predicting the first (the assignment's generator wraps).
"""

import json
import math
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from charlstm.data.batches import BatchGenerator, decode, encode
from charlstm.data.text8 import load_text8
from charlstm.models import BACKENDS, DEFAULT_INIT, GATES, UdacityLM, parse_init

CHECKPOINT = "checkpoint.pt"
# The assignment's logprob() clips predicted probabilities at 1e-10 before taking the log.
MAX_NLL = -math.log(1e-10)
SAMPLE_LENGTH = 80
# What may change when a run is resumed; everything else must stay as the run was started.
RESUME_OVERRIDES = ("steps", "summary_frequency", "threads", "device", "out")


@dataclass
class TrainConfig:
    """Every option of `charlstm train`; the defaults are the assignment's."""

    data: str | None = None  # None: text8, downloaded once into $CHARLSTM_HOME
    url: str | None = None  # where text8 is downloaded from (default: $CHARLSTM_TEXT8_URL or mattmahoney.net)
    nodes: int = 64
    batch_size: int = 64
    unrollings: int = 10
    steps: int = 3001
    lr: float = 10.0
    decay_steps: int = 5000
    decay_rate: float = 0.1
    clip: float = 1.25
    init: str = DEFAULT_INIT
    valid_size: int = 1000
    summary_frequency: int = 100
    cell: str = "lstm"
    backend: str = "fused"
    seed: int = 0  # the assignment does not seed; 0 makes runs repeatable
    threads: int | None = None  # None: torch's default
    device: str = "cpu"
    dtype: str = "float32"
    out: str | None = None  # folder for config.json, metrics.jsonl, checkpoint.pt, result.json
    resume: str | None = None  # a folder written by `out` to continue from

    def check(self) -> None:
        """Raise ValueError naming the first option that cannot work."""
        for name in ("nodes", "batch_size", "unrollings", "steps", "decay_steps", "valid_size",
                     "summary_frequency"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "decay_rate", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.cell not in GATES:
            raise ValueError(f"--cell must be one of {', '.join(GATES)}, got {self.cell!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        parse_init(self.init)
        try:
            device = torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"--device {self.device!r} is not a device: use cpu or cuda") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: no CUDA device is available here; use --device cpu")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run after a whole step; `checkpoint` is where it was saved, if anywhere."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        where = (f"saved to {checkpoint}; continue with `charlstm train --resume {checkpoint.parent}`"
                 if checkpoint else "nothing saved (pass --out DIR to be able to resume)")
        super().__init__(f"interrupted after {step} steps; {where}")


def resume_config(run_dir, **overrides) -> TrainConfig:
    """The configuration saved in `run_dir`, set to resume there, with some options changed.

    Only options in RESUME_OVERRIDES may change (more steps, another device...); the others
    define the run and a ValueError names any that differs.
    """
    path = Path(run_dir) / CHECKPOINT
    saved = load_checkpoint(path)["config"]
    for name, value in overrides.items():
        if name not in RESUME_OVERRIDES and value != saved.get(name):
            raise ValueError(f"--{name.replace('_', '-')} cannot change when resuming (the run in "
                             f"{run_dir} has {saved.get(name)!r}); only "
                             f"{', '.join('--' + o.replace('_', '-') for o in RESUME_OVERRIDES)} can")
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    for name, value in overrides.items():
        if name in RESUME_OVERRIDES:
            setattr(config, name, value)
    config.resume = str(run_dir)
    if config.out is None:
        config.out = str(run_dir)
    return config


def learning_rate(config: TrainConfig, step: int) -> float:
    """tf.train.exponential_decay(lr, step, decay_steps, decay_rate, staircase=True)."""
    return config.lr * config.decay_rate ** (step // config.decay_steps)


def clip_global_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Scale gradients by max_norm / max(norm, max_norm), as tf.clip_by_global_norm; returns the norm.

    torch's clip_grad_norm_ divides by norm + 1e-6 instead, which is not quite the assignment's.
    """
    grads = [p.grad for p in parameters]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = max_norm / torch.clamp(norm, min=max_norm)
    for g in grads:
        g.mul_(scale)
    return norm


@torch.no_grad()
def sgd_step_(parameters, lr: float) -> None:
    """Plain gradient descent, tf.train.GradientDescentOptimizer: it has no state to keep.

    Written out rather than torch.optim.SGD, whose construction imports torch._dynamo: seconds
    of start-up for a whole `charlstm train` process that takes a few.
    """
    for p in parameters:
        p.add_(p.grad, alpha=-lr)
        p.grad = None


FUSED_CELLS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}


def fused_step(model: UdacityLM, window: torch.Tensor, state, lr: float, clip: float):
    """One training step as charlstm.ops.lm_sgd_step: forward, loss, backward, clip_global_norm_
    and sgd_step_ in one call -> (loss, norm, logits [T * B, 27], state after the window)."""
    from charlstm import ops

    return ops.lm_sgd_step(window, state, model.weight_ih, model.weight_hh, model.bias_ih, None, model.w, model.b,
                           cell=FUSED_CELLS[model.cell], lr=lr, clip=clip)


@torch.no_grad()
def validation_nll(model: UdacityLM, valid_ids: torch.Tensor) -> float:
    """Mean negative log-likelihood (nats) of each validation character given the ones before it.

    One sequence from a zero state with batch 1; character i predicts i + 1 and the last one
    predicts the first, as the assignment's BatchGenerator(valid_text, 1, 1) wraps around.
    """
    logits, _ = model(valid_ids.unsqueeze(1), model.initial_state(1))
    return _mean_nll(logits.squeeze(1), torch.roll(valid_ids, -1))


def _mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    nll = -torch.log_softmax(logits.double(), dim=-1).gather(-1, targets.unsqueeze(-1))
    return nll.clamp(max=MAX_NLL).mean().item()


@torch.no_grad()
def sample(model: UdacityLM, length: int, generator: torch.Generator) -> str:
    """A string drawn from the model, starting from a random character and a zero state."""
    device = model.w.device
    char = torch.randint(model.vocab_size, (1, 1), generator=generator).to(device)
    state = model.initial_state(1)
    chars = [char.item()]
    for _ in range(length - 1):
        logits, state = model(char, state)
        probs = torch.softmax(logits.reshape(-1).double(), dim=0).cpu()
        chars.append(torch.multinomial(probs, 1, generator=generator).item())
        char = torch.tensor([[chars[-1]]], device=device)
    return decode(chars)


def train(config: TrainConfig, milestones: list[int] | None = None, on_milestone=None,
          progress: bool = True) -> dict:
    """Train as `config` says and return the result (see docs/train.md).

    `milestones`: step counts k at which to evaluate validation perplexity as a run with
    `steps=k` would report it (k <= config.steps), returned as result["milestones"] {k: ppl};
    `on_milestone(k, ppl)` is called at each, and may raise to stop the run. `progress`: a
    progress bar and the summaries on stderr.
    """
    started = time.perf_counter()
    config.check()
    milestones = sorted(set(milestones or []))
    milestone_set = set(milestones)
    if milestones and not (1 <= milestones[0] and milestones[-1] <= config.steps):
        raise ValueError(f"milestones must lie between 1 and --steps ({config.steps}), got {milestones}")
    _check_run_folder(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint = load_checkpoint(Path(config.resume) / CHECKPOINT) if config.resume else None
    log = _Log(progress)

    corpus = load_text8(config.data, url=config.url, progress=progress)
    if corpus.normalization is not None:
        log.print(corpus.normalization.describe())
    ids = encode(corpus.text)
    needed = config.valid_size + config.batch_size * (config.unrollings + 1)
    if len(ids) < needed:
        raise ValueError(f"{corpus.source} has {len(ids):,} characters in text8 form; it needs at least "
                         f"--valid-size + --batch-size * (--unrollings + 1) = {needed:,}: pass more "
                         "text or lower those options")
    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    valid_ids = torch.from_numpy(ids[:config.valid_size].astype(np.int64)).to(device)
    batches = BatchGenerator(ids[config.valid_size:], config.batch_size, config.unrollings)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = UdacityLM(config.nodes, config.cell, config.backend, config.init).to(device, dtype)
    parameters = list(model.parameters())
    state = model.initial_state(config.batch_size)
    step, mean_loss, reached = 0, 0.0, {}
    if checkpoint is not None:
        step, mean_loss, reached, state = _restore(checkpoint, config, model, batches, device)
        log.print(f"resuming {config.resume} at step {step}")
    first_step = step
    out = Path(config.out) if config.out else None
    if out is not None:
        _start_run_folder(out, config, first_step)

    def save():
        if out is not None:
            save_checkpoint(out / CHECKPOINT, _checkpoint(config, model, batches, state, step,
                                                         mean_loss, reached))
            return out / CHECKPOINT
        return None

    def valid_perplexity() -> tuple[float, float]:
        nll = validation_nll(model, valid_ids)
        return math.exp(nll), nll / math.log(2)

    loop_started = time.perf_counter()
    with log.bar(config.steps, first_step) as bar, _sigint_deferred() as interrupted:
        while step < config.steps:
            lr = learning_rate(config, step)
            window = batches.next().to(device, non_blocking=True)
            if config.backend == "fused":
                # The whole step in one op; it changes no weight when the loss or norm is not finite.
                loss, norm, logits, next_state = fused_step(model, window, state, lr, config.clip)
            else:
                logits, next_state = model(window[:-1], state)
                loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), window[1:].reshape(-1))
                loss.backward()
                norm = clip_global_norm_(parameters, config.clip)
            loss_value = loss.item()
            if not (math.isfinite(loss_value) and torch.isfinite(norm).item()):
                what = (f"loss became {loss_value}" if not math.isfinite(loss_value)
                        else f"gradient norm became {norm.item()}")
                kept = (f"; the last good checkpoint is {out / CHECKPOINT}"
                        if out is not None and (out / CHECKPOINT).exists() else "")
                raise TrainingDiverged(f"the {what} at step {step}: lower --lr (now {config.lr}) or "
                                       f"--clip (now {config.clip}){kept}")
            if config.backend != "fused":
                sgd_step_(parameters, lr)
            state = tuple(s.detach() for s in next_state)
            mean_loss += loss_value
            bar.advance(loss_value, lr)

            record = None
            if step % config.summary_frequency == 0:
                if step > 0:
                    mean_loss /= config.summary_frequency
                ppl, bpc = valid_perplexity()
                minibatch = math.exp(_mean_nll(logits.detach().reshape(-1, model.vocab_size),
                                               window[1:].reshape(-1)))
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
                record = {"step": step, "lr": lr, "loss": mean_loss, "minibatch_perplexity": minibatch,
                          "valid_perplexity": ppl, "valid_bpc": bpc,
                          "sample": sample(model, SAMPLE_LENGTH, generator),
                          "seconds": time.perf_counter() - started}
                log.summary(record)
                mean_loss = 0.0
            step += 1
            if record is not None and out is not None:
                _append_line(out / "metrics.jsonl", record)
                save()
            if step in milestone_set:
                reached[step] = valid_perplexity()[0]
                if on_milestone is not None:
                    on_milestone(step, reached[step])
            if interrupted():
                raise TrainingInterrupted(step, save())
        train_seconds = time.perf_counter() - loop_started
        bar.close()
        save()

    ppl, bpc = valid_perplexity()
    trained = config.steps - first_step
    result = {
        "valid_perplexity": ppl,
        "valid_bpc": bpc,
        "steps": config.steps,
        "resumed_at_step": first_step if checkpoint is not None else None,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "tokens_per_second": trained * config.batch_size * config.unrollings / train_seconds if trained else 0.0,
        "milestones": {k: reached[k] for k in milestones if k in reached},
        "parameters": sum(p.numel() for p in parameters),
        "data": {"source": corpus.source, "characters": len(ids),
                 "normalization": corpus.normalization.to_dict() if corpus.normalization else None},
        "config": asdict(config),
    }
    if out is not None:
        atomic_write_bytes(out / "result.json", json.dumps(result, indent=2).encode())
    return result


def _checkpoint(config, model, batches, state, step, mean_loss, reached) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "config": asdict(config),
        "step": step,
        "model": model.state_dict(),
        "batches": batches.state_dict(),
        "state": [s.cpu() for s in state],
        "mean_loss": mean_loss,
        "milestones": dict(reached),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        },
    }


def _restore(checkpoint, config, model, batches, device):
    saved = checkpoint["config"]
    for name in ("nodes", "cell", "batch_size", "unrollings", "valid_size", "dtype"):
        if saved.get(name) != getattr(config, name):
            raise ValueError(f"the checkpoint in {config.resume} was made with {name}={saved.get(name)!r}, "
                             f"not {getattr(config, name)!r}; resume with the run's own options")
    model.load_state_dict(checkpoint["model"])
    batches.load_state_dict(checkpoint["batches"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    np_rng = rng["numpy"]
    np.random.set_state(("MT19937", np_rng["keys"].numpy().astype(np.uint32), np_rng["pos"],
                         np_rng["has_gauss"], np_rng["cached_gaussian"]))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    state = tuple(s.to(device, model.w.dtype) for s in checkpoint["state"])
    return checkpoint["step"], checkpoint["mean_loss"], dict(checkpoint["milestones"]), state


def _check_run_folder(config: TrainConfig) -> None:
    """Refuse to start a new run over a folder that holds one: its checkpoint would be lost."""
    if config.out is None or not (Path(config.out) / CHECKPOINT).exists():
        return
    if config.resume is None or Path(config.resume).resolve() != Path(config.out).resolve():
        raise ValueError(f"{config.out} already holds a run ({CHECKPOINT}); continue it with "
                         f"--resume {config.out}, or pass another --out")


def _start_run_folder(out: Path, config: TrainConfig, first_step: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "config.json", json.dumps(asdict(config), indent=2).encode())
    # The resumed run's summaries up to its checkpoint; later ones will be written again.
    kept = []
    previous = Path(config.resume) / "metrics.jsonl" if config.resume else None
    if previous is not None and previous.exists():
        for line in previous.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the process was killed
                continue
            if record["step"] < first_step:
                kept.append(line)
    atomic_write_bytes(out / "metrics.jsonl", "".join(line + "\n" for line in kept).encode())


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


@contextmanager
def _sigint_deferred():
    """Turn the first Ctrl-C into a flag read between steps, so the checkpoint is of a whole step.

    A second Ctrl-C interrupts at once. Signal handlers can only be set from the main thread;
    elsewhere Ctrl-C keeps its usual effect.
    """
    pressed = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


class _Log:
    """The progress bar and the summaries, on stderr; silent when `enabled` is False."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = None
        if enabled:
            from rich.console import Console
            self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def print(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, markup=False)

    def summary(self, record: dict) -> None:
        self.print(f"step {record['step']}: average loss {record['loss']:.6f}, learning rate "
                   f"{record['lr']:g}, minibatch perplexity {record['minibatch_perplexity']:.2f}, "
                   f"validation perplexity {record['valid_perplexity']:.2f}\n  {record['sample']!r}")

    @contextmanager
    def bar(self, total: int, completed: int):
        if self.console is None:
            yield _NoBar()
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]:,.0f} steps/s"),
                            TextColumn("loss {task.fields[loss]:.3f}  lr {task.fields[lr]:g}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
        with progress:
            task = progress.add_task("training", total=total, completed=completed,
                                     loss=float("nan"), lr=0.0, rate=0.0)
            yield _Bar(progress, task)


class _Bar:
    """Advances the bar, redrawing its fields at most ten times a second: cheap at 1000 steps/s."""

    def __init__(self, progress, task):
        self.progress, self.task = progress, task
        self.started = self.last = time.perf_counter()
        self.steps = self.pending = 0

    def advance(self, loss: float, lr: float) -> None:
        self.steps += 1
        self.pending += 1
        now = time.perf_counter()
        if now - self.last >= 0.1:
            self.progress.update(self.task, advance=self.pending, loss=loss, lr=lr,
                                 rate=self.steps / (now - self.started))
            self.last, self.pending = now, 0

    def close(self) -> None:
        self.progress.update(self.task, advance=self.pending)
        self.pending = 0


class _NoBar:
    def advance(self, loss: float, lr: float) -> None:
        pass

    def close(self) -> None:
        pass
