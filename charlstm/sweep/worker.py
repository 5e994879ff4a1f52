"""A sweep worker: claim a unit, train it, record the result; until every unit is done.

Workers run in local processes (`run`), on other machines with the same storage, or in threads
(tests). The trainer is charlstm.train.train unless the Plan names another with its signature,
`trainer(config, milestones=..., progress=False) -> dict`.
"""

import os
import signal
import sys
import threading
import time
import typing
from dataclasses import dataclass

from charlstm import loop
from charlstm.sweep.claims import (Claims, fail_dead_trials, id_of, machine_id, open_storage,
                                   unit_status)
from charlstm.sweep.grid import Unit, unit_config, units
from charlstm.sweep.noise import pack_losses


@dataclass
class Plan:
    """Everything a worker process needs; plain data so that it pickles."""

    url: str
    grids: list
    run_id: str
    threads: int
    heartbeat_seconds: int = 30
    poll_seconds: float = 2.0
    trainer: typing.Any = None


def default_trainer():
    from charlstm.train import train
    return train


class _Heartbeat:
    def __init__(self, storage, seconds: int):
        self.storage, self.seconds = storage, seconds
        self.trial_id = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(self.seconds):
            trial_id = self.trial_id
            if trial_id is not None:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a lost beat only risks a rerun; keep the worker alive
                    print(f"warning: a sweep heartbeat failed ({exc}); the worker goes on",
                          file=sys.stderr)

    def close(self):
        self.stop.set()
        self.thread.join()


def _record_params(storage, trial_id: int, unit: Unit) -> None:
    """Numbers become Optuna params (single-value distributions, so any grid fits); every value,
    strings included, is kept in the `params` user attribute, which the report reads."""
    import optuna.distributions as d
    for name, value in unit.params.items():
        if isinstance(value, bool):
            dist, internal = d.CategoricalDistribution([False, True]), float(value)
        elif isinstance(value, int):
            dist, internal = d.IntDistribution(value, value), float(value)
        elif isinstance(value, float):
            dist, internal = d.FloatDistribution(value, value), value
        else:
            # A categorical's choices may not change within a study, and a grid can grow.
            continue
        storage.set_trial_param(trial_id, name, internal, dist)
    storage.set_trial_user_attr(trial_id, "params", unit.params)
    storage.set_trial_user_attr(trial_id, "unit", unit.key)
    storage.set_trial_user_attr(trial_id, "seed", unit.seed)


def _result_attrs(result: dict, unit: Unit) -> dict:
    # data (the corpus's size and checksum) and the per-character validation losses are what the
    # report's comparison with the write-up and its noise estimate read.
    keep = ("valid_perplexity", "valid_bpc", "steps", "train_seconds", "seconds",
            "tokens_per_second", "data")
    attrs = {k: result[k] for k in keep if k in result}
    if result.get("valid_char_nll") is not None:
        attrs["valid_char_nll"] = pack_losses(result["valid_char_nll"])
    if unit.milestones:
        got = {int(k): float(v) for k, v in (result.get("milestones") or {}).items()}
        missing = [m for m in unit.milestones if m not in got]
        if missing:
            raise RuntimeError(f"the trainer returned no validation perplexity for steps "
                               f"{missing}: it must evaluate every milestone it is given")
        attrs["milestones"] = {str(m): got[m] for m in unit.milestones}
        losses = {int(k): v for k, v in (result.get("milestone_char_nll") or {}).items()}
        if losses:
            attrs["milestone_char_nll"] = {str(m): pack_losses(losses[m])
                                           for m in unit.milestones if m in losses}
    return attrs


def work(plan: Plan, on_result=None) -> dict:
    """One worker: claim units until every unit of every grid is done (or failed in this run)."""
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer = plan.trainer or default_trainer()
    storage = open_storage(plan.url, plan.heartbeat_seconds)
    claims = Claims(plan.url)
    machine = machine_id()
    worker = f"{machine}:{os.getpid()}"
    beat = _Heartbeat(storage, plan.heartbeat_seconds)
    ran = 0
    held = None  # (study, trial_id, number): a trial made for a claim that another worker won
    try:
        studies = {g.name: optuna.load_study(study_name=g.name, storage=storage)
                   for g in plan.grids}
        grid_units = {g.name: units(g) for g in plan.grids}
        finished = set()  # grids whose every unit is done: no need to look at them again
        while True:
            waiting = False
            claimed = None
            for grid in plan.grids:
                if grid.name in finished:
                    continue
                study = studies[grid.name]
                study_id = id_of(storage, study)
                fail_dead_trials(storage, study, machine)
                status = unit_status(storage, claims, study, grid_units[grid.name], plan.run_id)
                if status.running:
                    waiting = True
                if not status.claimable:
                    if not status.running:
                        finished.add(grid.name)
                    continue
                if held is not None and (held[0] != grid.name or
                                         storage.get_trial(held[1]).state != TrialState.RUNNING):
                    # Another study's, or failed as stale by another worker: start a new one.
                    _fail_quietly(storage, held[1], {})
                    held = None
                if held is None:
                    trial_id = storage.create_new_trial(study_id)
                    number = storage.get_trial_number_from_id(trial_id)
                    storage.set_trial_user_attr(trial_id, "worker", worker)
                    storage.record_heartbeat(trial_id)
                    beat.trial_id = trial_id
                    held = (grid.name, trial_id, number)
                _, trial_id, number = held
                for unit, old in status.claimable:
                    won = (claims.claim_new(study_id, unit.key, trial_id, number)
                           if old is None else
                           claims.take_over(study_id, unit.key, old, trial_id, number))
                    if won:
                        claimed = (grid, study, unit, trial_id)
                        break
                if claimed:
                    held = None
                    break
                waiting = True  # others won every claim we tried; look again
            if claimed is None:
                if not waiting:
                    break
                time.sleep(plan.poll_seconds)
                continue
            grid, study, unit, trial_id = claimed
            _run_unit(storage, claims, study, grid, unit, trial_id, plan, trainer, on_result)
            beat.trial_id = None
            ran += 1
    except BaseException:
        if held is not None:
            _fail_quietly(storage, held[1], {"interrupted": True})
        raise
    finally:
        beat.close()
        if held is not None:
            _fail_quietly(storage, held[1], {})
        claims.close()
    return {"ran": ran}


def _fail_quietly(storage, trial_id, attrs):
    import optuna
    from optuna.trial import TrialState
    try:
        for k, v in attrs.items():
            storage.set_trial_user_attr(trial_id, k, v)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
        pass


def _run_unit(storage, claims, study, grid, unit, trial_id, plan, trainer, on_result):
    import optuna
    from optuna.trial import TrialState
    _record_params(storage, trial_id, unit)
    storage.set_trial_user_attr(trial_id, "run_id", plan.run_id)
    try:
        config = unit_config(unit, grid, plan.threads)
        result = trainer(config, milestones=list(unit.milestones) if unit.milestones else None,
                         progress=False)
        attrs = _result_attrs(result, unit)
        value = float(result["valid_perplexity"])
    except Exception as exc:
        _fail_quietly(storage, trial_id, {"error": f"{type(exc).__name__}: {exc}"[:2000]})
        if on_result:
            on_result(unit, None, f"{type(exc).__name__}: {exc}")
        return
    except BaseException:
        _fail_quietly(storage, trial_id, {"interrupted": True})
        raise
    storage.set_trial_user_attr(trial_id, "result", attrs)
    # A worker declared dead (e.g. stopped for longer than the grace period) may wake up after
    # its unit went to another trial: its result must not become a second one.
    owner = claims.owners(id_of(storage, study)).get(unit.key)
    if owner is None or owner[0] != trial_id:
        _fail_quietly(storage, trial_id, {"superseded": True})
        return
    try:
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    if on_result:
        on_result(unit, attrs, None)


def _stop(signum, frame):
    # Only the first request counts: the worker is already recording its unit as interrupted.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def worker_main(plan: Plan):
    """A worker process. Ctrl-C in a terminal reaches the whole process group; a worker ignores
    it and stops when its parent ends it (one SIGTERM), so each worker gets exactly one request
    to stop, never a second one in the middle of recording the first. It records its unit as
    interrupted and exits with 130 without a traceback; the parent says how to go on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    try:
        with loop.interrupts_not_lost(signal.SIGTERM):
            work(plan)
    except KeyboardInterrupt:
        sys.exit(130)
