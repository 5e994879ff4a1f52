"""Run (or resume) a sweep: check every unit, start the workers, show progress, report.

Several processes, here (`workers`) or on other machines (same `storage`), may run the same
grids at once: each unit runs once (charlstm.sweep.claims).
"""

import json
import multiprocessing
import multiprocessing.connection
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from charlstm import loop
from charlstm.checkpoint import atomic_write_json
from charlstm.config import RUNS_DIR, check_output_folder, cores
from charlstm.sweep.claims import (MANIFEST, Claims, masked, open_storage, prepare_study,
                                   sqlite_url, unit_status)
from charlstm.sweep.grid import Unit, unit_config, units
from charlstm.sweep.worker import Plan, work, worker_main


def format_result(unit: Unit, attrs, error) -> str:
    point = " ".join(f"{k}={v}" for k, v in unit.params.items())
    head = f"{unit.study} {point} seed={unit.seed}".replace("  ", " ")
    if error:
        return f"{head}: FAILED {error}"
    if unit.milestones:
        marks = " ".join(f"{s}:{v:.3f}" for s, v in attrs["milestones"].items())
        return f"{head}: valid perplexity at steps {marks}"
    seconds = attrs.get("train_seconds")
    return (f"{head}: valid perplexity {attrs['valid_perplexity']:.3f}"
            + (f" ({seconds:.1f} s)" if seconds is not None else ""))


# How long the workers get, after Ctrl-C, to record the interruption and exit.
STOP_SECONDS = 30


def run(grids: list, out=f"{RUNS_DIR}/sweep", storage: str | None = None, workers: int = 1,
        trainer=None, heartbeat_seconds: int = 30, report: bool = True,
        progress: bool = True, poll_seconds: float = 2.0, log=None) -> dict:
    """Run (or resume) the studies in `grids` and, when every unit is done, write the report.

    `trainer(config, milestones=..., progress=False) -> dict` defaults to charlstm.train.train,
    and then the data every unit names is read once, here, and checked against every unit's
    sizes before any worker starts. Several processes, here (`workers`, at most one per unit
    left to do) or on other machines (same `storage`), may run the same grids at once: each unit
    runs once. `log` takes the warnings (default: stderr). Ctrl-C stops the workers after their
    current step and raises charlstm.loop.Interrupted, saying how to go on.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    if heartbeat_seconds < 1:
        raise ValueError(f"heartbeat of {heartbeat_seconds} s: must be at least 1")
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise ValueError(f"two grids share a study name: {names}")
    check_output_folder(out, "--out")
    for grid in grids:
        for unit in units(grid):
            unit_config(unit, grid, 1).check()
    if trainer is None:
        _check_data(grids)
    out = Path(out)
    url = storage or sqlite_url(out)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is not None:  # a storage that cannot be opened leaves no folder behind
        store = open_storage(url, heartbeat_seconds)
    out.mkdir(parents=True, exist_ok=True)
    if storage is None:
        store = open_storage(url, heartbeat_seconds)
    Claims(url).close()
    studies = [prepare_study(store, g) for g in grids]
    _write_manifest(out, storage, names)
    all_units = [u for g in grids for u in units(g)]
    left = len(all_units) - _done(store, url, grids, studies, "")
    if workers > max(1, left):
        log(f"warning: --workers {workers} but {left} training(s) left to do; starting "
            f"{max(1, left)}")
        workers = max(1, left)
    if workers > cores():
        log(f"warning: --workers {workers} on {cores()} cores: the workers share the cores, "
            f"each with 1 thread; --workers {cores()} is usually as fast")
    threads = max(1, cores() // workers)
    plan = Plan(url, list(grids), uuid.uuid4().hex, threads, heartbeat_seconds, poll_seconds,
                trainer)
    started = time.perf_counter()
    exit_codes = [0]
    interrupted = False
    monitor = _Monitor(store, url, studies, grids, plan.run_id, len(all_units), progress)
    try:
        with loop.interrupts_not_lost():
            if workers == 1:
                monitor.start_thread()
                work(plan)
            else:
                exit_codes = _run_workers(plan, workers, monitor)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        monitor.close()
    claims = Claims(url)
    statuses = {g.name: unit_status(store, claims, s, units(g), plan.run_id)
                for g, s in zip(grids, studies)}
    claims.close()
    done = sum(len(s.done) for s in statuses.values())
    if interrupted:
        raise loop.Interrupted(
            f"interrupted; {done} of {len(all_units)} trainings are done and kept in "
            f"{out if storage is None else masked(url)}; run the same command again to finish "
            "the grid")
    failed = [{"study": name, "unit": key, "error": t.user_attrs.get("error")}
              for name, s in statuses.items() for key, t in s.failed.items()]
    summary = {"out": str(out), "storage": masked(url), "studies": names,
               "units": len(all_units), "complete": done, "failed": failed,
               "seconds": time.perf_counter() - started, "workers": workers,
               "workers_lost": sum(1 for code in exit_codes if code != 0),
               "threads_per_worker": threads}
    if report and done:
        from charlstm.sweep.report import write_report
        summary["report"] = write_report(out, storage=url, studies=names)
    return summary


def _run_workers(plan: Plan, workers: int, monitor) -> list:
    """Start `workers` processes and wait for them; their exit codes. On Ctrl-C (to the whole
    process group, or to this process alone) each worker is asked to stop, and killed if it has
    not within STOP_SECONDS."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(plan,), daemon=False)
             for _ in range(workers)]
    # A worker inherits an ignored SIGINT through exec, so a Ctrl-C that lands while it is
    # still starting cannot end it with a traceback before worker_main takes over.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        monitor.start_thread()
        running = list(procs)
        while running:
            # Reap each worker as it ends, so that a killed one is seen dead at once.
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if not p.is_alive()]:
                p.join()
                running.remove(p)
        return [p.exitcode for p in procs]
    except KeyboardInterrupt:
        _stop(procs)
        raise
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        raise


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # one SIGTERM: the worker records its unit as interrupted and exits
    deadline = time.monotonic() + STOP_SECONDS
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: end them now
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join()


def _done(storage, url, grids, studies, run_id) -> int:
    claims = Claims(url)
    try:
        return sum(len(unit_status(storage, claims, s, units(g), run_id).done)
                   for g, s in zip(grids, studies))
    finally:
        claims.close()


def _check_data(grids) -> None:
    """Read each corpus the units name once, and check that it is long enough for every unit,
    and that their devices exist, so that a grid that cannot train fails here, once, and not in
    every worker."""
    from charlstm.data.corpus import read_corpus
    from charlstm.data.normalize import text8_form

    lengths, devices = {}, set()
    for grid in grids:
        for unit in units(grid):
            config = unit_config(unit, grid, 1)
            if config.device != "cpu" and config.device not in devices:
                loop.device(config.device)  # imports torch, which a CPU sweep's parent never does
                devices.add(config.device)
            where = (config.data, config.url)
            if where not in lengths:
                corpus = read_corpus(config.data, text8_url=config.url, option="--data")
                lengths[where] = (len(text8_form(corpus.documents)[0]), corpus.source)
            characters, source = lengths[where]
            try:
                config.check_text(characters, source)
            except ValueError as exc:
                point = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in unit.params.items())
                raise ValueError(f"{point}: {exc}") from None


def _write_manifest(out: Path, url: str | None, names: list) -> None:
    """Record the studies and where they live; None is the folder's own sweep.db, wherever the
    folder is moved to."""
    path = out / MANIFEST
    known = []
    if path.is_file():
        try:
            known = json.loads(path.read_text()).get("studies", [])
        except (OSError, ValueError):
            known = []
    manifest = {"storage": None if url is None else masked(url),
                "studies": known + [n for n in names if n not in known]}
    atomic_write_json(path, manifest)


class _Monitor:
    """One progress bar over all units (stderr) and one line per finished unit, from the storage,
    so that it shows the work of every process and machine on these studies."""

    def __init__(self, storage, url, studies, grids, run_id, total, enabled):
        self.storage, self.url, self.studies, self.grids = storage, url, studies, grids
        self.run_id, self.total, self.enabled = run_id, total, enabled
        self.stop = threading.Event()
        self.thread = None
        self.seen = set()

    def start_thread(self):
        if not self.enabled:
            return
        self.claims = Claims(self.url)
        self.units = {g.name: units(g) for g in self.grids}
        self.bar = loop.Progress("sweep", self.total, self._poll(first=True)).__enter__()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _poll(self, first=False) -> int:
        for grid, study in zip(self.grids, self.studies):
            status = unit_status(self.storage, self.claims, study, self.units[grid.name],
                                 self.run_id)
            by_key = {u.key: u for u in self.units[grid.name]}
            for key, trial in {**status.done, **status.failed}.items():
                if (grid.name, key) in self.seen:
                    continue
                self.seen.add((grid.name, key))
                if not first:
                    attrs = trial.user_attrs
                    self.bar.print(format_result(by_key[key], attrs.get("result"),
                                                 attrs.get("error")))
        return len(self.seen)

    def _run(self):
        while not self.stop.wait(1.0):
            try:
                self.bar.update(self._poll())
            except Exception as exc:  # the bar is best effort; the work goes on without it
                self.bar.print(f"progress: {exc}")

    def close(self):
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        self.bar.update(self._poll())
        self.bar.__exit__(None, None, None)
        self.claims.close()
