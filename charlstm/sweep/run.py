"""Run (or resume) a sweep: check every unit, start the workers, show progress, report.

Several processes, here (`workers`) or on other machines (same `storage`), may run the same
grids at once: each unit runs once (charlstm.sweep.claims).
"""

import json
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
import uuid
from pathlib import Path

from charlstm import loop
from charlstm.checkpoint import atomic_write_json
from charlstm.config import RUNS_DIR
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


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(grids: list, out=f"{RUNS_DIR}/sweep", storage: str | None = None, workers: int = 1,
        trainer=None, heartbeat_seconds: int = 30, report: bool = True,
        progress: bool = True, poll_seconds: float = 2.0) -> dict:
    """Run (or resume) the studies in `grids` and, when every unit is done, write the report.

    `trainer(config, milestones=..., progress=False) -> dict` defaults to charlstm.train.train.
    Several processes, here (`workers`) or on other machines (same `storage`), may run the same
    grids at once: each unit runs once.
    """
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    if heartbeat_seconds < 1:
        raise ValueError(f"heartbeat of {heartbeat_seconds} s: must be at least 1")
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise ValueError(f"two grids share a study name: {names}")
    threads = max(1, cores() // workers)
    for grid in grids:
        for unit in units(grid):
            unit_config(unit, grid, threads).check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or sqlite_url(out)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(url, heartbeat_seconds)
    Claims(url).close()
    studies = [prepare_study(store, g) for g in grids]
    _write_manifest(out, storage, names)
    plan = Plan(url, list(grids), uuid.uuid4().hex, threads, heartbeat_seconds, poll_seconds,
                trainer)
    all_units = [u for g in grids for u in units(g)]
    started = time.perf_counter()
    exit_codes = [0]
    monitor = _Monitor(store, url, studies, grids, plan.run_id, len(all_units), progress)
    try:
        if workers == 1:
            monitor.start_thread()
            work(plan)
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=worker_main, args=(plan,), daemon=False)
                     for _ in range(workers)]
            for p in procs:
                p.start()
            try:
                monitor.start_thread()
                running = list(procs)
                while running:
                    # Reap each worker as it ends, so that a killed one is seen dead at once.
                    multiprocessing.connection.wait([p.sentinel for p in running])
                    for p in [p for p in running if not p.is_alive()]:
                        p.join()
                        running.remove(p)
                exit_codes = [p.exitcode for p in procs]
            except BaseException:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.join()
                raise
    finally:
        monitor.close()
    claims = Claims(url)
    statuses = {g.name: unit_status(store, claims, s, units(g), plan.run_id)
                for g, s in zip(grids, studies)}
    claims.close()
    done = sum(len(s.done) for s in statuses.values())
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
