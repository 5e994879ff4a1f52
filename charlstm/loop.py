"""What every training loop shares, and nothing else: progress on stderr, Ctrl-C taken between
steps, a stop when the loss stops being a number, and the run folder the loop saves into.

Each workload keeps its own loop, readable top to bottom (train.py, speech.py, calc.py), and
calls these pieces where it needs them:

    run = RunFolder.choose(config.out, config.save, "train")
    with Progress("training", total=steps) as bar, deferred_interrupt() as interrupted:
        for step in ...:
            ...
            check_finite(f"step {step}", "lower --lr", run.checkpoint, loss=loss)
            bar.advance(loss=loss)
            run.log(record); run.save(description, model.state_dict(), training)
            if interrupted():
                raise Interrupted(f"interrupted after {step} steps; ...")
    run.finish(result)
"""

import _thread
import itertools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from charlstm import checkpoint
from charlstm.config import check_output_folder, run_folder

METRICS = "metrics.jsonl"
RESULT = "result.json"


class Diverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the message says where and what
    to change."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run between two steps; the message says what was saved and how to go
    on."""

    def __init__(self, message: str, saved: Path | None = None):
        super().__init__(message)
        self.checkpoint = saved


def check_finite(where: str, advice: str, last_checkpoint: Path | None = None, **values) -> None:
    """Raise Diverged when a value (loss=..., gradient_norm=...) is NaN or infinite."""
    for name, value in values.items():
        if not math.isfinite(value):
            kept = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
            raise Diverged(f"the {name.replace('_', ' ')} became {value} at {where}; "
                           f"{advice}{kept}")


@contextmanager
def deferred_interrupt():
    """Turn the first Ctrl-C into a flag read between steps, so a checkpoint is of a whole step.

    Yields a function that says whether Ctrl-C was pressed. A second Ctrl-C interrupts at once.
    Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its effect.
    A process that ignores Ctrl-C (a sweep's worker, stopped by its parent) keeps ignoring it.
    """
    pressed = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
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


@contextmanager
def interrupts_not_lost(signum: int = signal.SIGINT):
    """Keep a signal's KeyboardInterrupt from being dropped.

    Python runs a signal's handler in whatever code the main thread is in when the signal comes,
    and that can be a weakref callback or a __del__ run by the garbage collector, whose exceptions
    Python prints as "Exception ignored" and drops: the process would go on as if it had never
    been interrupted. Inside this block such a KeyboardInterrupt is not printed; the signal's
    handler when the block started (which may since have set the signal to be ignored) is
    installed again and the signal comes again a moment later, when the collector has returned.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signum)
    previous = sys.unraisablehook
    active = [True]

    def again():
        if active[0]:
            _thread.interrupt_main(signum)

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and callable(handler)
                and threading.current_thread() is threading.main_thread()):
            return previous(unraisable)
        signal.signal(signum, handler)
        timer = threading.Timer(0.05, again)
        timer.daemon = True
        timer.start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        active[0] = False
        sys.unraisablehook = previous


def device(name: str):
    """torch.device(name), or a ValueError when no such device is here."""
    import torch

    try:
        found = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return found


def available_memory(device) -> int | None:
    """Bytes that can still be allocated on `device` (a torch.device): the free memory of a GPU,
    the kernel's MemAvailable estimate for the CPU; None when it cannot be told."""
    if device.type == "cuda":
        import torch
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parameter_count(build) -> int:
    """The number of weights of the model `build()` makes, counted on the meta device, where
    nothing is allocated, so that a model too large to fit is measured without trying."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def _gib(size: float) -> str:
    return f"{size / 2 ** 30:,.1f} GiB"


def check_memory(needed: int, device, what: str, fix: str) -> None:
    """Raise ValueError, before any work, when `what` needs more memory than `device` has free;
    `fix` names the options to lower."""
    available = available_memory(device)
    if available is not None and needed > available:
        raise ValueError(f"{what} needs about {_gib(needed)} of memory, more than the "
                         f"{_gib(available)} free on {device}; {fix}")


@contextmanager
def memory_errors(fix: str):
    """Turn a failed allocation into a ValueError that says what to lower: `fix`."""
    try:
        yield
    except MemoryError:
        raise ValueError(f"out of memory; {fix}") from None
    except RuntimeError as exc:
        first = (str(exc).splitlines() or [""])[0]
        if "out of memory" not in first.lower() and "can't allocate memory" not in first:
            raise
        reason = first.split("DefaultCPUAllocator: ")[-1]
        raise ValueError(f"out of memory ({reason[:200]}); {fix}") from None


class Progress:
    """A progress bar on stderr that redraws at most ten times a second, so that it costs
    nothing at a thousand steps a second; with `enabled` False it shows and prints nothing.

    `status` is a format string of the fields passed to advance(), e.g. "loss {loss:.3f}".
    """

    def __init__(self, description: str, total: int | None, completed: int = 0,
                 status: str = "", enabled: bool = True, transient: bool = False,
                 rate: str | None = None):
        self.description, self.total, self.completed = description, total, completed
        self.status, self.enabled, self.transient, self.rate = status, enabled, transient, rate
        self.progress = self.console = None
        self.started = self.last = time.perf_counter()
        self.steps = self.pending = 0

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        columns = [TextColumn(self.description), BarColumn(), MofNCompleteColumn()]
        if self.rate:
            columns.append(TextColumn("{task.fields[rate]:,.0f} " + self.rate))
        columns += [TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                    TimeRemainingColumn()]
        self.progress = Progress(*columns, console=self.console, transient=self.transient)
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=self.total,
                                           completed=self.completed, status="", rate=0.0)
        return self

    def advance(self, steps: int = 1, **fields) -> None:
        self.steps += steps
        self.pending += steps
        now = time.perf_counter()
        if self.progress is not None and now - self.last >= 0.1:
            self._redraw(now, fields)

    def update(self, completed: int) -> None:
        """Set the count, for a monitor that reads progress from elsewhere."""
        if self.progress is not None:
            self.progress.update(self.task, completed=completed)

    def print(self, line: str) -> None:
        """A line on stderr above the bar."""
        if self.console is not None:
            self.console.print(line, markup=False)

    def _redraw(self, now, fields):
        status = self.status.format(**fields) if fields and self.status else ""
        update = {"status": status} if status else {}
        self.progress.update(self.task, advance=self.pending,
                             rate=self.steps / max(now - self.started, 1e-9), **update)
        self.last, self.pending = now, 0

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.update(self.task, advance=self.pending)
            self.progress.stop()
        return False


class RunFolder:
    """A run's folder: checkpoint.json and checkpoint.pt, metrics.jsonl (one JSON object per
    summary, also kept in the checkpoint) and result.json. With no path it saves nothing."""

    # The temporary files of checkpoint.atomic_write_bytes for the files above; a process killed
    # while writing leaves one behind, which the next start in the folder removes.
    _LEFT_BEHIND = re.compile(r"\.(checkpoint\.json|checkpoint\.pt|metrics\.jsonl|result\.json)"
                              r"\..+\.tmp")

    def __init__(self, path, new: bool = False):
        self.path = Path(path) if path is not None else None
        self.new = new  # a default name, made unique when the run starts
        self.records = []

    @classmethod
    def choose(cls, out, save: bool, name: str) -> "RunFolder":
        """The folder `out`; without one, a new runs/NAME-TIMESTAMP, or none with save False.
        A folder that cannot be written is refused now, before the run's work."""
        if out is not None:
            check_output_folder(out, "--out")
            return cls(out)
        if not save:
            return cls(None)
        folder = run_folder(name)
        try:
            check_output_folder(folder, "--out")
        except ValueError as exc:
            raise ValueError(f"cannot save the run in {folder} ({str(exc).split(': ', 1)[-1]}); "
                             "pass --out DIR to save it elsewhere, or --no-save") from None
        return cls(folder, new=True)

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint saved so far, if any (none in a new folder not yet made)."""
        if self.path is None or self.new or not (self.path / f"{checkpoint.NAME}.pt").exists():
            return None
        return self.path / f"{checkpoint.NAME}.pt"

    def start(self, records=()) -> None:
        """Begin (or resume with the metrics the checkpoint holds): metrics.jsonl is rewritten
        to them, so a summary logged after the checkpoint is not listed twice."""
        self.records = list(records)
        if self.path is None:
            return
        if self.new:
            self._make_new()
        self.path.mkdir(parents=True, exist_ok=True)
        for left in self.path.iterdir():
            if self._LEFT_BEHIND.fullmatch(left.name):
                left.unlink(missing_ok=True)
        checkpoint.atomic_write_bytes(self.path / METRICS, "".join(
            json.dumps(r) + "\n" for r in self.records).encode())

    def _make_new(self) -> None:
        """Make the default folder; a second run started in the same second gets NAME-2."""
        base = self.path
        for k in itertools.count(2):
            try:
                self.path.mkdir(parents=True)
                break
            except FileExistsError:
                self.path = base.with_name(f"{base.name}-{k}")
        self.new = False

    def log(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")

    def save(self, description: dict, state_dict: dict, training: dict) -> Path | None:
        """The checkpoint, with the metrics logged so far; its .pt path."""
        if self.path is None:
            return None
        return checkpoint.save(self.path, description, state_dict,
                               {**training, "metrics": list(self.records)})

    def finish(self, result: dict) -> None:
        if self.path is not None:
            checkpoint.atomic_write_json(self.path / RESULT, result)
