import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import (calls_by_point, complete_trials, fake_perplexity, fake_train, small_grid,
                     write_text)

from charlstm import sweep
from charlstm.config import TrainConfig

HERE = Path(__file__).resolve().parent


@pytest.fixture
def calls(tmp_path, monkeypatch):
    folder = tmp_path / "calls"
    folder.mkdir()
    monkeypatch.setenv("CHARLSTM_TEST_CALLS", str(folder))
    return folder


@pytest.mark.parametrize("args, bad", [
    (["--nodes", ""], "''"),
    (["--nodes", "2,,8"], "'2,,8'"),
    (["--nodez", "2,4"], "--nodez"),
    (["--nodes", "2,x"], "'x'"),
    (["--lr", "1,fast"], "'fast'"),
    (["--batch-size", "2.5,4"], "'2.5'"),
    (["--lr", "1,inf"], "'inf'"),
    (["--nodes", "2,2"], "'2,2'"),
    (["--seed", "1,2"], "--seed"),
    (["--nodes"], "--nodes"),
    (["nodes", "2,4"], "'nodes'"),
])
def test_bad_specs_are_rejected_naming_the_value(args, bad):
    with pytest.raises(ValueError) as err:
        sweep.parse_params(args)
    assert bad in str(err.value)


def test_specs_parse_into_typed_values_and_fixed_parameters():
    params = sweep.parse_params(["--nodes", "2,4,8", "--batch-size=16", "--lr", "1,10",
                                 "--cell", "lstm,gru"])
    assert params == {"nodes": [2, 4, 8], "batch_size": [16], "lr": [1.0, 10.0],
                      "cell": ["lstm", "gru"]}
    grid = sweep.make_grid(params, repeats=3, seed=5)
    assert grid.swept == {"nodes": [2, 4, 8], "lr": [1.0, 10.0], "cell": ["lstm", "gru"]}
    assert grid.fixed == {"batch_size": 16}
    assert grid.seeds == (5, 6, 7)
    assert len(sweep.units(grid)) == 3 * 2 * 2 * 3
    with pytest.raises(ValueError, match="nothing to sweep"):
        sweep.make_grid({"nodes": [4]})
    with pytest.raises(ValueError, match="--repeats 0"):
        sweep.make_grid({"nodes": [2, 4]}, repeats=0)


def test_udacity_preset_is_the_five_studies_and_the_writeups_runs_and_scale_multiplies_steps():
    grids = sweep.preset("udacity")
    assert [g.name for g in grids] == ["udacity.batch_size", "udacity.nodes",
                                       "udacity.unrollings", "udacity.steps",
                                       "udacity.nodes_x_unrollings", "udacity.runs"]
    assert [len(sweep.units(g)) for g in grids] == [8, 8, 11, 1, 88, 6]
    assert grids[0].swept["batch_size"][0] == 2 and grids[0].swept["batch_size"][-1] == 256
    assert grids[3].swept["steps"] == list(range(1001, 10002, 1000))
    assert sweep.units(grids[3])[0].milestones == tuple(range(1001, 10002, 1000))
    assert grids[4].fixed["steps"] == 3001
    runs = [u.params for u in sweep.units(grids[5])]
    assert runs == [{"batch_size": 64, "nodes": 64, "unrollings": 10, "steps": 3001},
                    {"batch_size": 32, "nodes": 64, "unrollings": 10, "steps": 3001},
                    {"batch_size": 64, "nodes": 32, "unrollings": 10, "steps": 3001},
                    {"batch_size": 64, "nodes": 64, "unrollings": 100, "steps": 65},
                    {"batch_size": 64, "nodes": 64, "unrollings": 1, "steps": 65},
                    {"batch_size": 64, "nodes": 12, "unrollings": 15, "steps": 3001}]
    assert all(u.milestones is None for u in sweep.units(grids[5]))
    scaled = sweep.preset("udacity", scale=0.1, repeats=2, fixed={"data": "t.txt", "nodes": 8})
    assert scaled[4].fixed["steps"] == 300
    assert scaled[3].swept["steps"] == [100 * (i + 1) for i in range(10)]
    assert len(sweep.units(scaled[4])) == 176
    assert [u.params["steps"] for u in sweep.units(scaled[5])][::2] == [300, 300, 300, 6, 6, 300]
    assert scaled[5].fixed == {"data": "t.txt"} and scaled[5].seeds == (0, 1)
    with pytest.raises(ValueError, match="unknown preset 'mnist'"):
        sweep.preset("mnist")
    with pytest.raises(ValueError, match="--scale 0"):
        sweep.preset("udacity", scale=0)


def test_a_study_of_listed_points_runs_each_point_with_each_seed(tmp_path, calls):
    points = [{"nodes": 4, "unrollings": 2}, {"nodes": 2, "unrollings": 8}]
    grid = sweep.make_points(points, {"steps": 50, "nodes": 99}, repeats=2, name="pts")
    assert grid.swept == {"nodes": [2, 4], "unrollings": [2, 8]} and grid.fixed == {"steps": 50}
    summary = sweep.run([grid], out=tmp_path / "out", trainer=fake_train, progress=False,
                        poll_seconds=0.1)
    assert summary["complete"] == 4
    assert calls_by_point(calls) == {(4, 2, 0): 1, (4, 2, 1): 1, (2, 8, 0): 1, (2, 8, 1): 1}
    # the study grows by a point, and keeps the points it had
    more = sweep.make_points(points + [{"nodes": 8, "unrollings": 1}], {"steps": 50},
                             repeats=2, name="pts")
    summary = sweep.run([more], out=tmp_path / "out", trainer=fake_train, progress=False,
                        poll_seconds=0.1)
    assert summary["complete"] == 6 and len(calls_by_point(calls)) == 6
    import optuna
    stored = optuna.load_study(study_name="pts", storage=sweep.sqlite_url(tmp_path / "out"))
    assert stored.user_attrs[sweep.STUDY_ATTR]["points"] == [dict(p) for p in more.points]
    product = sweep.make_grid({"nodes": "4,2", "unrollings": "2,8", "steps": "50"}, name="pts")
    with pytest.raises(ValueError, match="already holds a different experiment"):
        sweep.run([product], out=tmp_path / "out", trainer=fake_train, progress=False)


@pytest.mark.parametrize("points, message", [
    ([], "at least one point"),
    ([{"nodes": 2}, {"unrollings": 3}], "the same parameters"),
    ([{"nodes": 2}, {"nodes": 2}], "lists a point twice"),
    ([{"nodes": "x"}], "'x' is not a number"),
    ([{"seed": 1}], "--seed cannot be swept"),
])
def test_bad_point_lists_are_rejected(points, message):
    with pytest.raises(ValueError, match=message):
        sweep.make_points(points)


def run_and_check(tmp_path, calls, url, name, workers):
    grid = small_grid(name)
    out = tmp_path / "out"
    summary = sweep.run([grid], out=out, storage=url, workers=workers, trainer=fake_train,
                        heartbeat_seconds=5, poll_seconds=0.2,
                        progress=False)
    expected = {(u.params["nodes"], u.params["unrollings"], u.seed) for u in sweep.units(grid)}
    assert len(expected) == 12
    assert summary["units"] == 12 and summary["complete"] == 12 and summary["failed"] == []
    assert calls_by_point(calls) == {k: 1 for k in expected}
    trials = complete_trials(url or sweep.sqlite_url(out), name)
    got = sorted((t.params["nodes"], t.params["unrollings"], t.user_attrs["seed"])
                 for t in trials)
    assert got == sorted(expected)
    for t in trials:
        config = TrainConfig(nodes=t.params["nodes"], unrollings=t.params["unrollings"],
                            seed=t.user_attrs["seed"])
        assert t.value == pytest.approx(fake_perplexity(config, 3001))
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["nodes"]), int(r["unrollings"]), int(r["seed"]),
                   float(r["valid_perplexity"])) for r in rows) == \
        sorted((t.params["nodes"], t.params["unrollings"], t.user_attrs["seed"], t.value)
               for t in trials)
    report = (out / "report.md").read_text()
    for png in ("heatmap", "surface"):  # what the figures show is tests/test_sweep_plots.py's
        assert f"]({name}-{png}.png)" in report and (out / f"{name}-{png}.png").is_file()
    return summary


def test_two_workers_on_sqlite_run_every_point_once(tmp_path, calls):
    summary = run_and_check(tmp_path, calls, None, "grid", workers=2)
    assert summary["threads_per_worker"] == max(1, sweep.cores() // 2)
    threads = {json.loads(p.read_text())["threads"] for p in calls.iterdir()}
    assert threads == {summary["threads_per_worker"]}


def test_two_workers_on_postgresql_run_every_point_once(tmp_path, calls):
    url = os.environ.get("CHARLSTM_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CHARLSTM_TEST_POSTGRES_URL is unset: start a server with .ci/postgres.sh "
                    "and export the URL it prints")
    run_and_check(tmp_path, calls, url, f"grid-{uuid.uuid4().hex[:8]}", workers=2)


def test_rerun_of_a_finished_sweep_runs_nothing(tmp_path, calls):
    grid = small_grid(repeats=1)
    kwargs = dict(out=tmp_path / "out", trainer=fake_train,
                  progress=False, report=False, poll_seconds=0.1)
    assert sweep.run([grid], **kwargs)["complete"] == 6
    assert sum(calls_by_point(calls).values()) == 6
    more = small_grid(repeats=2)
    assert sweep.run([more], **kwargs)["complete"] == 12
    assert calls_by_point(calls) == {k: 1 for k in calls_by_point(calls)}
    assert sum(calls_by_point(calls).values()) == 12


def test_a_study_keeps_its_experiment(tmp_path, calls):
    kwargs = dict(out=tmp_path / "out", trainer=fake_train,
                  progress=False, report=False, poll_seconds=0.1)
    sweep.run([sweep.make_grid({"nodes": "2,4"})], **kwargs)
    other = sweep.make_grid({"nodes": "2,4", "lr": "1"})
    with pytest.raises(ValueError, match="already holds a different experiment"):
        sweep.run([other], **kwargs)


def test_steps_sweep_trains_once_per_seed_and_reports_every_milestone(tmp_path, calls):
    grid = sweep.make_grid({"steps": "10,20,40", "nodes": "2,4"}, repeats=2)
    out = tmp_path / "out"
    summary = sweep.run([grid], out=out, trainer=fake_train,
                        progress=False, poll_seconds=0.1)
    assert summary["units"] == 4
    runs = [json.loads(p.read_text()) for p in calls.iterdir()]
    assert len(runs) == 4 and {r["steps"] for r in runs} == {40}
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for r in rows:
        config = TrainConfig(nodes=int(r["nodes"]), seed=int(r["seed"]))
        assert float(r["valid_perplexity"]) == pytest.approx(
            fake_perplexity(config, int(r["steps"])))
    assert (out / "sweep-heatmap.png").is_file()


def test_a_failing_trial_is_reported_and_retried_by_the_next_run(tmp_path, calls, monkeypatch):
    kwargs = dict(out=tmp_path / "out", trainer=fake_train,
                  progress=False, poll_seconds=0.1)
    grid = sweep.make_grid({"nodes": "2,4,8"})
    monkeypatch.setenv("CHARLSTM_TEST_FAIL", "4")
    summary = sweep.run([grid], **kwargs)
    assert summary["complete"] == 2
    assert len(summary["failed"]) == 1 and "NaN at nodes 4" in summary["failed"][0]["error"]
    monkeypatch.delenv("CHARLSTM_TEST_FAIL")
    summary = sweep.run([grid], **kwargs)
    assert summary["complete"] == 3 and summary["failed"] == []
    assert calls_by_point(calls)[(4, 10, 0)] == 2


KILLED_WORKER = """
import sys
import helpers
from charlstm import sweep
sweep.run([helpers.small_grid(repeats=1)], out=sys.argv[1], trainer=helpers.fake_train,
          heartbeat_seconds=1, poll_seconds=0.1, progress=False)
"""


@pytest.mark.parametrize("how", ["dead pid on this machine", "stale heartbeat"])
def test_killed_worker_mid_trial_resumes_with_nothing_lost_or_doubled(tmp_path, calls,
                                                                      monkeypatch, how):
    import optuna
    from optuna.trial import TrialState
    out = tmp_path / "out"
    env = {**os.environ, "CHARLSTM_TEST_BLOCK": "4", "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(out)], env=env)
    try:
        deadline = time.time() + 120
        while not (calls / "blocked").exists():
            assert proc.poll() is None and time.time() < deadline, "worker never reached 4"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    url = sweep.sqlite_url(out)
    study = optuna.load_study(study_name="sweep", storage=url)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert [t.params.get("nodes") for t in running] == [4]
    done_before = len(study.get_trials(states=(TrialState.COMPLETE,)))
    if how == "stale heartbeat":
        # As if the dead worker ran on another machine: only its silence can tell.
        storage = sweep.open_storage(url, 1)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name("sweep"), running[0].number)
        storage.set_trial_user_attr(trial_id, "worker", "elsewhere/0:1")
    summary = sweep.run([small_grid(repeats=1)], out=out, trainer=fake_train,
                        heartbeat_seconds=1, poll_seconds=0.2,
                        progress=False)
    assert summary["complete"] == 6
    counts = calls_by_point(calls)
    assert counts.pop((4, 1, 0)) == 2  # the killed run and its rerun
    assert counts == {k: 1 for k in counts} and len(counts) == 5
    trials = complete_trials(url, "sweep")
    assert sorted((t.params["nodes"], t.params["unrollings"]) for t in trials) == \
        sorted((n, u) for n in (2, 4, 8) for u in (1, 2))
    assert len(trials) == 6 and done_before < 6
    killed = optuna.load_study(study_name="sweep", storage=url).trials[running[0].number]
    assert killed.state == TrialState.FAIL


def test_real_steps_sweep_equals_separate_runs_with_the_same_seed(tmp_path):
    from charlstm.train import train
    corpus = write_text(tmp_path / "corpus.txt", chars=4000)
    fixed = {"data": [str(corpus)], "nodes": [8], "batch_size": [4], "unrollings": [3],
             "valid_size": [50], "summary_frequency": [7], "backend": ["fused"]}
    grid = sweep.make_grid({**fixed, "steps": [5, 12, 20]}, repeats=2, seed=3)
    out = tmp_path / "out"
    summary = sweep.run([grid], out=out, progress=False, poll_seconds=0.1)
    assert summary["units"] == 2 and summary["complete"] == 2
    with open(out / "trials.csv") as f:
        rows = {(int(r["seed"]), int(r["steps"])): float(r["valid_perplexity"])
                for r in csv.DictReader(f)}
    assert len(rows) == 6
    threads = summary["threads_per_worker"]
    for seed in (3, 4):
        for steps in (5, 12, 20):
            alone = train(TrainConfig(**{k: v[0] for k, v in fixed.items()}, steps=steps,
                                      seed=seed, threads=threads), progress=False)
            assert rows[(seed, steps)] == pytest.approx(alone["valid_perplexity"], rel=1e-6)
    assert rows[(3, 20)] != rows[(4, 20)]


@pytest.mark.parametrize("params, message", [
    ({"nodes": "2,4", "cell": "lstm,transformer"}, "--cell must be one of .*'transformer'"),
    ({"nodes": "4,0"}, "--nodes must be at least 1, got 0"),
    ({"unrollings": "0,1"}, "--unrollings must be at least 1, got 0"),
    ({"nodes": "2,4", "lr": "-1"}, "--lr must be a positive number"),
])
def test_train_checks_every_point_before_anything_runs(tmp_path, params, message):
    grid = sweep.make_grid(params)
    with pytest.raises(ValueError, match=message):
        sweep.run([grid], out=tmp_path / "out", trainer=fake_train, progress=False)
    assert not (tmp_path / "out").exists()


def test_claims_are_first_come_and_compare_and_swap(tmp_path):
    claims = sweep.Claims(sweep.sqlite_url(tmp_path))
    assert claims.claim_new(1, "u", trial_id=10, number=0)
    assert not claims.claim_new(1, "u", trial_id=11, number=1)
    assert claims.claim_new(2, "u", trial_id=12, number=0)
    assert not claims.take_over(1, "u", old_trial_id=11, trial_id=13, number=2)
    assert claims.take_over(1, "u", old_trial_id=10, trial_id=13, number=2)
    assert not claims.take_over(1, "u", old_trial_id=10, trial_id=14, number=3)
    assert claims.owners(1) == {"u": (13, 2)}
    claims.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_racing_workers_still_run_each_unit_once(tmp_path, calls, backend):
    import threading
    name = f"race-{uuid.uuid4().hex[:8]}"
    grid = sweep.make_grid({"nodes": "1,2,3,4,5", "unrollings": "1,2"}, repeats=2, name=name)
    url = sweep.sqlite_url(tmp_path)
    if backend == "postgresql":
        url = os.environ.get("CHARLSTM_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("CHARLSTM_TEST_POSTGRES_URL is unset: start a server with "
                        ".ci/postgres.sh and export the URL it prints")
    sweep.prepare_study(sweep.open_storage(url), grid)
    plan = sweep.Plan(url, [grid], "race", threads=1, heartbeat_seconds=30, poll_seconds=0.05,
                      trainer=fake_train)
    errors = []

    def worker():
        try:
            sweep.work(plan)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {(n, u, 0) for n in range(1, 6) for u in (1, 2)} | \
        {(n, u, 1) for n in range(1, 6) for u in (1, 2)}
    assert calls_by_point(calls) == {k: 1 for k in expected}
    trials = complete_trials(url, name)
    assert len(trials) == 20
    assert len({t.user_attrs["unit"] for t in trials}) == 20


def test_string_parameters_sweep_and_the_grid_can_grow(tmp_path, calls):
    def by_cell(config, milestones=None, progress=True):
        return {"valid_perplexity": {"lstm": 5.0, "gru": 6.0, "rnn": 7.0}[config.cell]
                + config.nodes / 100}

    kwargs = dict(out=tmp_path, trainer=by_cell, progress=False,
                  poll_seconds=0.1)
    sweep.run([sweep.make_grid({"cell": "lstm,gru", "nodes": "2"})],
              **kwargs)
    summary = sweep.run([sweep.make_grid({"cell": "lstm,gru,rnn", "nodes": "2"})], **kwargs)
    assert summary["complete"] == 3
    with open(tmp_path / "trials.csv") as f:
        rows = {r["cell"]: float(r["valid_perplexity"]) for r in csv.DictReader(f)}
    assert rows == {"lstm": 5.02, "gru": 6.02, "rnn": 7.02}
    assert "![sweep](sweep.png)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "sweep.png").is_file()


def test_a_worker_killed_mid_trial_is_replaced_by_the_other_worker(tmp_path, calls,
                                                                     monkeypatch):
    import threading
    monkeypatch.setenv("CHARLSTM_TEST_BLOCK", "4")
    killed = []

    def kill_the_blocked_worker():
        deadline = time.time() + 120
        while time.time() < deadline:
            text = (calls / "blocked").read_text() if (calls / "blocked").exists() else ""
            if text:
                os.kill(int(text), signal.SIGKILL)
                killed.append(int(text))
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_blocked_worker)
    killer.start()
    summary = sweep.run([small_grid(repeats=1)], out=tmp_path / "out", workers=2,
                        trainer=fake_train, heartbeat_seconds=5,
                        poll_seconds=0.2, progress=False)
    killer.join()
    counts = calls_by_point(calls)
    assert killed and summary["complete"] == 6 and summary["failed"] == [], (summary, counts)
    # Which 4-node point blocked depends on which worker started first: the killed one's record.
    records = [json.loads(p.read_text()) for p in calls.iterdir() if p.name != "blocked"]
    [blocked] = [(r["nodes"], r["unrollings"], r["seed"]) for r in records
                 if r["pid"] == killed[0] and r["nodes"] == 4]
    assert counts.pop(blocked) == 2, (blocked, counts)
    assert counts == {k: 1 for k in counts} and len(counts) == 5
    assert len(complete_trials(sweep.sqlite_url(tmp_path / "out"), "sweep")) == 6
