"""Where a sweep lives and who owns which unit.

Units live in an Optuna study (SQLite in the output folder by default, any RDB URL for many
machines). Optuna's GridSampler can hand the same point to two workers, so the claim is ours: a
table `charlstm_sweep_claims` in the same database maps each unit to the one trial that owns it.
A worker owns a unit when its INSERT of the unit's row succeeds, or when its compare-and-swap
UPDATE replaces a trial that has failed (a worker that died: Optuna's heartbeat, or a dead pid on
this machine). A failed trial never completes again, so at most one trial per unit completes,
and a unit whose trial failed is always taken up again.
"""

import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from charlstm.sweep.grid import Grid, grid_attr, merge_attrs

STUDY_ATTR = "charlstm_sweep"
CLAIMS_TABLE = "charlstm_sweep_claims"
DATABASE = "sweep.db"
MANIFEST = "sweep.json"


def sqlite_url(out) -> str:
    """The storage of a sweep folder that names no other: its own SQLite file."""
    return f"sqlite:///{Path(out).resolve() / DATABASE}"


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
            raise ValueError(f"cannot open storage {masked(url)}: {exc}; for PostgreSQL "
                             "install its driver (pip install 'charlstm[postgres]')") from exc
        except Exception as exc:
            raise ValueError(f"cannot open storage {masked(url)}: {exc}") from exc


def masked(url: str) -> str:
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


def machine_id() -> str:
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
    if (sorted(stored["swept"]) != sorted(attr["swept"]) or stored["fixed"] != attr["fixed"]
            or ("points" in stored) != ("points" in attr)):
        raise ValueError(
            f"study {grid.name!r} already holds a different experiment (swept "
            f"{sorted(stored['swept'])}, fixed {stored['fixed']}; now swept "
            f"{sorted(attr['swept'])}, fixed {attr['fixed']}): use another --study or --out")
    merged = merge_attrs(stored, attr)
    if merged != stored:
        study.set_user_attr(STUDY_ATTR, merged)
    return study


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
    owners = claims.owners(id_of(storage, study))
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


def id_of(storage, study) -> int:
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
                    id_of(storage, study), trial.number)
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


