"""Hyperparameter studies: exact grids over TrainConfig fields, run once per point and seed.

A grid point x seed is a *unit*. Units live in an Optuna study (SQLite in the output folder by
default, any RDB URL for many machines). Optuna's GridSampler can hand the same point to two
workers, so the claim is ours: a table `charlstm_sweep_claims` in the same database maps each
unit to the one trial that owns it. A worker owns a unit when its INSERT of the unit's row
succeeds, or when its compare-and-swap UPDATE replaces a trial that has failed (a worker that
died: Optuna's heartbeat, or a dead pid on this machine). A failed trial never completes again,
so at most one trial per unit completes, and a unit whose trial failed is always taken up again.

A sweep over `steps` trains once per seed to the largest value and evaluates at every value
(the trainer's milestones), so one unit stands for all of its steps values.
"""

import dataclasses
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import types
import typing
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

STUDY_ATTR = "charlstm_sweep"
CLAIMS_TABLE = "charlstm_sweep_claims"
# Fields that describe how a run is executed, not what it computes: never part of a grid.
NOT_SWEPT = {"seed": "use --repeats and --seed", "out": "the sweep writes no run folders",
             "resume": "rerun the sweep command to resume it",
             "threads": "threads per worker are cores / --workers"}
POSITIVE = ("nodes", "batch_size", "unrollings", "steps", "valid_size", "summary_frequency",
            "decay_steps")
POWERS_2_TO_256 = [2, 4, 8, 16, 32, 64, 128, 256]
UNROLLINGS_1_TO_50 = [1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 50]
STEPS_1001_TO_10001 = [1001 + 1000 * i for i in range(10)]


@dataclass(frozen=True)
class Grid:
    """One study: the product of `swept` values, each run with every seed in `seeds`."""

    name: str
    swept: dict
    fixed: dict
    seeds: tuple


@dataclass(frozen=True)
class Unit:
    """One training: a grid point and a seed (all steps values at once when steps is swept)."""

    study: str
    key: str
    params: dict
    seed: int
    milestones: tuple | None


def default_config_class():
    from charlstm.train import TrainConfig
    return TrainConfig


def default_trainer():
    from charlstm.train import train
    return train


def _field_types(config_class) -> dict:
    hints = typing.get_type_hints(config_class)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(config_class)}


def _scalar_type(hint):
    """The type a command line value converts to: int, float, bool or str (Optional unwrapped)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    return hint if hint in (int, float, bool) else str


def _convert(name: str, text: str, kind):
    option = "--" + name.replace("_", "-")
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise ValueError(f"{option}: {text!r} is not a boolean: use true or false")
    if kind is int:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{option}: {text!r} is not a number: give integers like "
                             f"{option} 2,4,8") from None
        if not value.is_integer():
            raise ValueError(f"{option}: {text!r} is not an integer: give integers like "
                             f"{option} 2,4,8")
        value = int(value)
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{option}: {text!r} is not a number: give numbers like "
                             f"{option} 0.1,1,10") from None
        if not math.isfinite(value):
            raise ValueError(f"{option}: {text!r} is not a finite number")
    else:
        value = text
    if name in POSITIVE and value < 1:
        raise ValueError(f"{option}: {text!r} must be at least 1")
    if name in ("lr", "clip") and value <= 0:
        raise ValueError(f"{option}: {text!r} must be greater than 0")
    return value


def parse_values(name: str, text, config_class=None) -> list:
    """Convert `text` ('2,4,8' or a list of strings/values) into the field's typed values."""
    config_class = config_class or default_config_class()
    types_ = _field_types(config_class)
    name = name.replace("-", "_")
    option = "--" + name.replace("_", "-")
    if name in NOT_SWEPT:
        raise ValueError(f"{option} cannot be swept: {NOT_SWEPT[name]}")
    if name not in types_:
        known = ", ".join("--" + n.replace("_", "-") for n in types_ if n not in NOT_SWEPT)
        raise ValueError(f"unknown parameter {option}: sweepable parameters are {known}")
    parts = text.split(",") if isinstance(text, str) else list(text)
    if not parts or any(isinstance(p, str) and not p.strip() for p in parts):
        raise ValueError(f"{option}: empty value in {text!r}: give a comma-separated list "
                         f"like {option} 2,4,8")
    kind = _scalar_type(types_[name])
    values = [_convert(name, p.strip() if isinstance(p, str) else str(p), kind) for p in parts]
    if len(set(values)) != len(values):
        raise ValueError(f"{option}: repeated value in {text!r}: use --repeats for more seeds")
    return values


def parse_params(args: list[str], config_class=None) -> dict:
    """Parse `--name v1,v2 --other v` command-line pairs into {field: [values]}."""
    out = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected argument {arg!r}: parameters are given as "
                             "--name value[,value...], e.g. --nodes 2,4,8")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                raise ValueError(f"--{name}: missing value: give a comma-separated list like "
                                 f"--{name} 2,4,8")
            value = args[i + 1]
            i += 1
        i += 1
        key = name.replace("-", "_")
        if key in out:
            raise ValueError(f"--{name} given twice: put all its values in one list")
        out[key] = parse_values(key, value, config_class)
    return out


def make_grid(params: dict, repeats: int = 1, seed: int = 0, name: str = "sweep",
              config_class=None) -> Grid:
    """A study from {field: [values]}: lists of two or more values are swept, single ones fixed."""
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: must be at least 1")
    checked = {k: parse_values(k, v, config_class) for k, v in params.items()}
    swept = {k: v for k, v in checked.items() if len(v) > 1}
    fixed = {k: v[0] for k, v in checked.items() if len(v) == 1}
    if not swept:
        raise ValueError("nothing to sweep: give at least one parameter with two or more "
                         "values, e.g. --nodes 2,4,8, or --preset udacity")
    return Grid(name, swept, fixed, tuple(range(seed, seed + repeats)))


def preset(name: str, scale: float = 1.0, repeats: int = 1, seed: int = 0, fixed=None,
           study: str = "udacity", config_class=None) -> list[Grid]:
    """The assignment's five studies, each around train's defaults; `scale` multiplies steps."""
    if name != "udacity":
        raise ValueError(f"unknown preset {name!r}: the one preset is udacity")
    if not scale > 0:
        raise ValueError(f"--scale {scale}: must be greater than 0")
    config_class = config_class or default_config_class()
    fixed = dict(fixed or {})
    default_steps = fixed.pop("steps", None) or _defaults(config_class)["steps"]
    steps = lambda s: max(1, round(s * scale))  # noqa: E731
    studies = {
        "batch_size": {"batch_size": POWERS_2_TO_256},
        "nodes": {"nodes": POWERS_2_TO_256},
        "unrollings": {"unrollings": UNROLLINGS_1_TO_50},
        "steps": {"steps": sorted({steps(s) for s in STEPS_1001_TO_10001})},
        "nodes_x_unrollings": {"nodes": POWERS_2_TO_256, "unrollings": UNROLLINGS_1_TO_50},
    }
    grids = []
    for suffix, swept in studies.items():
        clash = set(swept) & set(fixed)
        base = {k: v for k, v in fixed.items() if k not in clash}
        if "steps" not in swept:
            base["steps"] = steps(default_steps)
        grid = make_grid({**{k: [v] for k, v in base.items()}, **swept}, repeats, seed,
                         f"{study}.{suffix}", config_class)
        grids.append(grid)
    return grids


def _defaults(config_class) -> dict:
    values = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def units(grid: Grid) -> list[Unit]:
    """Every training the grid needs, in a stable order."""
    names = [n for n in grid.swept if n != "steps"]
    milestones = tuple(sorted(grid.swept["steps"])) if "steps" in grid.swept else None
    out = []
    for combo in itertools.product(*(grid.swept[n] for n in names)):
        params = dict(zip(names, combo))
        for seed in grid.seeds:
            key = json.dumps({**params, "seed": seed}, sort_keys=True)
            out.append(Unit(grid.name, key, params, seed, milestones))
    return out


def unit_config(unit: Unit, grid: Grid, threads: int, config_class):
    kwargs = {**grid.fixed, **unit.params, "seed": unit.seed, "threads": threads}
    if unit.milestones:
        kwargs["steps"] = max(unit.milestones)
    return config_class(**kwargs)


def sqlite_url(out) -> str:
    return f"sqlite:///{Path(out).resolve() / 'sweep.db'}"


def open_storage(url: str, heartbeat_seconds: int = 30):
    """Optuna RDB storage with heartbeats, tolerant of several processes writing one SQLite file."""
    import optuna
    kwargs = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                              heartbeat_interval=heartbeat_seconds,
                                              grace_period=4 * heartbeat_seconds)
        except (ImportError, ModuleNotFoundError) as exc:
            raise ValueError(f"cannot open storage {_masked(url)}: {exc}; for PostgreSQL "
                             "install its driver (pip install 'charlstm[postgres]')") from exc
        except Exception as exc:
            raise ValueError(f"cannot open storage {_masked(url)}: {exc}") from exc


def _masked(url: str) -> str:
    try:
        import sqlalchemy
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def _claims_table():
    import sqlalchemy as sa
    meta = sa.MetaData()
    table = sa.Table(CLAIMS_TABLE, meta,
                     sa.Column("study_id", sa.Integer, primary_key=True),
                     sa.Column("unit", sa.String(512), primary_key=True),
                     sa.Column("trial_id", sa.Integer, nullable=False),
                     sa.Column("trial_number", sa.Integer, nullable=False))
    return meta, table


class Claims:
    """The unit -> owning trial table, with atomic first claim and compare-and-swap takeover."""

    def __init__(self, url: str):
        import sqlalchemy as sa
        self.sa = sa
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, **kwargs)
        meta, self.table = _claims_table()
        if url.startswith("sqlite"):
            # WAL lets the workers' readers and the writer proceed at once; the mode is stored in
            # the file, so Optuna's own connections use it too.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.DatabaseError:
            # Another process created it between our check and our CREATE TABLE.
            meta.create_all(self.engine, checkfirst=True)

    def owners(self, study_id: int) -> dict:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(self.sa.select(t.c.unit, t.c.trial_id, t.c.trial_number)
                                .where(t.c.study_id == study_id)).all()
        return {r.unit: (r.trial_id, r.trial_number) for r in rows}

    def claim_new(self, study_id: int, unit: str, trial_id: int, number: int) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(self.table.insert().values(study_id=study_id, unit=unit,
                                                        trial_id=trial_id, trial_number=number))
            return True
        except self.sa.exc.IntegrityError:
            return False

    def take_over(self, study_id: int, unit: str, old_trial_id: int, trial_id: int,
                  number: int) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            result = conn.execute(t.update().where(t.c.study_id == study_id, t.c.unit == unit,
                                                   t.c.trial_id == old_trial_id)
                                  .values(trial_id=trial_id, trial_number=number))
        return result.rowcount == 1

    def close(self):
        self.engine.dispose()


def _machine_id() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed worker that its parent has not reaped yet still answers kill(pid, 0).
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def grid_attr(grid: Grid) -> dict:
    return {"swept": {k: list(v) for k, v in grid.swept.items()}, "fixed": grid.fixed,
            "seeds": list(grid.seeds)}


def prepare_study(storage, grid: Grid):
    """Create the grid's study, or check that an existing one was made for the same experiment."""
    import optuna
    study = optuna.create_study(storage=storage, study_name=grid.name, direction="minimize",
                                load_if_exists=True)
    attr = grid_attr(grid)
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_ATTR, attr)
        return study
    if sorted(stored["swept"]) != sorted(attr["swept"]) or stored["fixed"] != attr["fixed"]:
        raise ValueError(
            f"study {grid.name!r} already holds a different experiment (swept "
            f"{sorted(stored['swept'])}, fixed {stored['fixed']}; now swept "
            f"{sorted(attr['swept'])}, fixed {attr['fixed']}): use another --study or --out")
    merged = {"swept": {k: sorted(set(stored["swept"][k]) | set(attr["swept"][k]),
                                  key=lambda v: (str(type(v)), v)) for k in attr["swept"]},
              "fixed": attr["fixed"], "seeds": sorted(set(stored["seeds"]) | set(attr["seeds"]))}
    if merged != stored:
        study.set_user_attr(STUDY_ATTR, merged)
    return study


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
    config_class: typing.Any = None


@dataclass
class Status:
    done: dict = field(default_factory=dict)       # unit key -> FrozenTrial
    failed: dict = field(default_factory=dict)     # errors of this run: unit key -> FrozenTrial
    claimable: list = field(default_factory=list)  # (unit, old trial id or None)
    running: int = 0


def unit_status(storage, claims: Claims, study, grid_units: list, run_id: str) -> Status:
    from optuna.trial import TrialState
    # Claims first, trials second: a claim names a trial created before it, so every owner is in
    # the trial list read after it. Read the other way round, a trial created and claimed in
    # between looked ownerless, and a second worker took its unit over while it ran.
    owners = claims.owners(_study_id(storage, study))
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    status = Status()
    for unit in grid_units:
        owner = owners.get(unit.key)
        if owner is None:
            status.claimable.append((unit, None))
            continue
        trial = trials.get(owner[1])
        if trial is None:
            status.running += 1
        elif trial.state == TrialState.COMPLETE:
            status.done[unit.key] = trial
        elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
            status.running += 1
        elif trial.user_attrs.get("run_id") == run_id and "error" in trial.user_attrs:
            status.failed[unit.key] = trial
        else:
            status.claimable.append((unit, owner[0]))
    return status


def _study_id(storage, study) -> int:
    return storage.get_study_id_from_name(study.study_name)


def fail_dead_trials(storage, study, machine: str) -> None:
    """Fail RUNNING trials whose worker is gone: a dead pid here, or a stale heartbeat anywhere."""
    import optuna
    from optuna.trial import TrialState
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        where, _, pid = worker.rpartition(":")
        if where == machine and pid.isdigit() and not _pid_alive(int(pid)):
            try:
                trial_id = storage.get_trial_id_from_study_id_trial_number(
                    _study_id(storage, study), trial.number)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


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
                    print(f"charlstm sweep: heartbeat failed: {exc}", file=sys.stderr)

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
    keep = ("valid_perplexity", "valid_bpc", "steps", "train_seconds", "seconds",
            "tokens_per_second")
    attrs = {k: result[k] for k in keep if k in result}
    if unit.milestones:
        got = {int(k): float(v) for k, v in (result.get("milestones") or {}).items()}
        missing = [m for m in unit.milestones if m not in got]
        if missing:
            raise RuntimeError(f"the trainer returned no validation perplexity for steps "
                               f"{missing}: it must evaluate every milestone it is given")
        attrs["milestones"] = {str(m): got[m] for m in unit.milestones}
    return attrs


def work(plan: Plan, on_result=None) -> dict:
    """One worker: claim units until every unit of every grid is done (or failed in this run)."""
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer = plan.trainer or default_trainer()
    config_class = plan.config_class or default_config_class()
    storage = open_storage(plan.url, plan.heartbeat_seconds)
    claims = Claims(plan.url)
    machine = _machine_id()
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
                study_id = _study_id(storage, study)
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
            _run_unit(storage, claims, study, grid, unit, trial_id, plan, trainer,
                      config_class, on_result)
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


def _run_unit(storage, claims, study, grid, unit, trial_id, plan, trainer, config_class,
              on_result):
    import optuna
    from optuna.trial import TrialState
    _record_params(storage, trial_id, unit)
    storage.set_trial_user_attr(trial_id, "run_id", plan.run_id)
    try:
        config = unit_config(unit, grid, plan.threads, config_class)
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
    owner = claims.owners(_study_id(storage, study)).get(unit.key)
    if owner is None or owner[0] != trial_id:
        _fail_quietly(storage, trial_id, {"superseded": True})
        return
    try:
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    if on_result:
        on_result(unit, attrs, None)


def _worker_main(plan: Plan):
    work(plan)


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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(grids: list, out="runs/sweep", storage: str | None = None, workers: int = 1,
        trainer=None, config_class=None, heartbeat_seconds: int = 30, report: bool = True,
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
    threads = max(1, _cores() // workers)
    config_class = config_class or default_config_class()
    for grid in grids:
        for unit in units(grid):
            config = unit_config(unit, grid, threads, config_class)
            if hasattr(config, "check"):
                config.check()
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
                trainer, config_class)
    all_units = [u for g in grids for u in units(g)]
    started = time.perf_counter()
    exit_codes = [0]
    monitor = _Monitor(store, url, studies, grids, plan.run_id, len(all_units), progress)
    try:
        if workers == 1:
            monitor.start_thread()
            work(plan)
        else:
            import multiprocessing
            import multiprocessing.connection
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker_main, args=(plan,), daemon=False)
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
    summary = {"out": str(out), "storage": _masked(url), "studies": names,
               "units": len(all_units), "complete": done, "failed": failed,
               "seconds": time.perf_counter() - started, "workers": workers,
               "workers_lost": sum(1 for code in exit_codes if code != 0),
               "threads_per_worker": threads}
    if report and done:
        from charlstm.report import write_report
        summary["report"] = write_report(out, storage=url, studies=names)
    return summary


def _write_manifest(out: Path, url: str | None, names: list) -> None:
    """Record the studies and where they live; None is the folder's own sweep.db, wherever the
    folder is moved to."""
    from charlstm.checkpoint import atomic_write_bytes
    path = out / "sweep.json"
    known = []
    if path.is_file():
        try:
            known = json.loads(path.read_text()).get("studies", [])
        except (OSError, ValueError):
            known = []
    manifest = {"storage": None if url is None else _masked(url),
                "studies": known + [n for n in names if n not in known]}
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())


class _Monitor:
    """One progress bar over all units (stderr) and one line per finished unit, from the storage,
    so that it shows the work of every process and machine on these studies."""

    def __init__(self, storage, url, studies, grids, run_id, total, enabled):
        self.storage, self.url, self.studies, self.grids = storage, url, studies, grids
        self.run_id, self.total, self.enabled = run_id, total, enabled
        self.stop = threading.Event()
        self.thread = None
        self.seen = set()
        self.claims = None

    def start_thread(self):
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.claims = Claims(self.url)
        self.progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.units = {g.name: units(g) for g in self.grids}
        done = self._poll(first=True)
        self.progress.start()
        self.task = self.progress.add_task("sweep", total=self.total, completed=done)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _poll(self, first=False) -> int:
        lines = []
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
                    lines.append(format_result(by_key[key], attrs.get("result"),
                                               attrs.get("error")))
        for line in lines:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(self.seen)

    def _run(self):
        while not self.stop.wait(1.0):
            try:
                self.progress.update(self.task, completed=self._poll())
            except Exception as exc:  # the bar is best effort; the work goes on without it
                self.progress.console.print(f"progress: {exc}", markup=False)

    def close(self):
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        self.progress.update(self.task, completed=self._poll())
        self.progress.stop()
        self.claims.close()
