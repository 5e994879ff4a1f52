"""Hyperparameter studies: exact grids over TrainConfig options, run once per point and seed.

    grid.py     the grid: parsing parameters, presets, units (a point and a seed)
    claims.py   where the studies live (Optuna storage) and which trial owns which unit
    worker.py   a worker: claim a unit, train it, record the result
    run.py      checking, starting the workers, progress, and the report at the end
    writeup.py  the write-up the udacity preset reproduces: its statements and single runs
    noise.py    seed-to-seed spread and the validation text's bootstrap, as intervals
    verdicts.py this run's verdict on each of the write-up's statements
    report.py   trials.csv, the plots and report.md, computed from the trials
    plots.py    the figures

    from charlstm import sweep
    grid = sweep.make_grid({"nodes": [2, 4, 8], "unrollings": [5, 10]}, repeats=3)
    summary = sweep.run([grid], out="runs/grid", workers=2)
"""

from charlstm.sweep.claims import (STUDY_ATTR, Claims, open_storage, prepare_study, sqlite_url,
                                   unit_status)
from charlstm.sweep.grid import (POWERS_2_TO_256, STEPS_1001_TO_10001, UNROLLINGS_1_TO_50, Grid,
                                 Unit, grids_from, make_grid, make_points, parse_params,
                                 parse_values, preset, unit_config, units)
from charlstm.sweep.run import cores, format_result, run
from charlstm.sweep.worker import Plan, work

__all__ = ["STUDY_ATTR", "Claims", "open_storage", "prepare_study", "sqlite_url", "unit_status",
           "POWERS_2_TO_256", "STEPS_1001_TO_10001", "UNROLLINGS_1_TO_50", "Grid", "Unit",
           "grids_from", "make_grid", "make_points", "parse_params", "parse_values", "preset",
           "unit_config", "units", "cores", "format_result", "run", "Plan", "work"]
