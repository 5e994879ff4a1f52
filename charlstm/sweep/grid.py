"""A study's grid: the TrainConfig options it sweeps and fixes, its seeds, and its units.

A grid point x seed is a *unit*, one training. A study's points are the product of its swept
values, or a list of points given one by one (the `runs` study of the udacity preset: the
write-up's single runs). A product sweep over `steps` trains once per seed to the largest value
and evaluates at every value (the trainer's milestones), so one unit stands for all of its steps
values. Values are parsed with the field types of TrainConfig; what values are allowed is
TrainConfig.check's to say, when the sweep checks every unit before it starts.
"""

import dataclasses
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass

from charlstm.config import TrainConfig
from charlstm.sweep import writeup

# Fields that describe how a run is executed, not what it computes: never part of a grid.
NOT_SWEPT = {"seed": "use --repeats and --seed", "out": "the sweep writes no run folders",
             "save": "the sweep writes no run folders",
             "resume": "rerun the sweep command to resume it",
             "threads": "threads per worker are cores / --workers"}
POWERS_2_TO_256 = [2, 4, 8, 16, 32, 64, 128, 256]
UNROLLINGS_1_TO_50 = [1, 2, 3, 4, 5, 10, 15, 20, 25, 30, 50]
STEPS_1001_TO_10001 = [1001 + 1000 * i for i in range(10)]
PRESETS = ("udacity",)


@dataclass(frozen=True)
class Grid:
    """One study: the product of `swept` values, or the listed `points`, each run with every seed
    in `seeds`. For listed points, `swept` holds each parameter's values across them."""

    name: str
    swept: dict
    fixed: dict
    seeds: tuple
    points: tuple = ()


@dataclass(frozen=True)
class Unit:
    """One training: a grid point and a seed (all steps values at once when steps is swept)."""

    study: str
    key: str
    params: dict
    seed: int
    milestones: tuple | None


def _field_types() -> dict:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(TrainConfig)}


def _scalar_type(hint):
    """The type a command line value converts to: int, float, bool or str (Optional unwrapped)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    return hint if hint in (int, float, bool) else str


def _convert(option: str, text: str, kind):
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise ValueError(f"{option}: {text!r} is not a boolean; use true or false")
    if kind is str:
        return text
    example = "2,4,8" if kind is int else "0.1,1,10"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option}: {text!r} is not a number; give numbers like "
                         f"{option} {example}") from None
    if not math.isfinite(value):
        raise ValueError(f"{option}: {text!r} is not a finite number; give numbers like "
                         f"{option} {example}")
    if kind is int:
        if not value.is_integer():
            raise ValueError(f"{option}: {text!r} is not an integer; give integers like "
                             f"{option} {example}")
        return int(value)
    return value


def parse_values(name: str, text) -> list:
    """Convert `text` ('2,4,8' or a list of strings/values) into the field's typed values."""
    types_ = _field_types()
    name = name.replace("-", "_")
    option = "--" + name.replace("_", "-")
    if name in NOT_SWEPT:
        raise ValueError(f"{option} cannot be swept; {NOT_SWEPT[name]}")
    if name not in types_:
        known = ", ".join("--" + n.replace("_", "-") for n in types_ if n not in NOT_SWEPT)
        raise ValueError(f"unknown parameter {option}; sweepable parameters are {known}")
    parts = text.split(",") if isinstance(text, str) else list(text)
    if not parts or any(isinstance(p, str) and not p.strip() for p in parts):
        raise ValueError(f"{option}: empty value in {text!r}; give a comma-separated list "
                         f"like {option} 2,4,8")
    kind = _scalar_type(types_[name])
    values = [_convert(option, p.strip() if isinstance(p, str) else str(p), kind) for p in parts]
    if len(set(values)) != len(values):
        raise ValueError(f"{option}: repeated value in {text!r}; use --repeats for more seeds")
    return values


def parse_params(args: list[str]) -> dict:
    """Parse `--name v1,v2 --other v` command-line pairs into {field: [values]}."""
    out = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected argument {arg!r}; parameters are given as "
                             "--name value[,value...], e.g. --nodes 2,4,8")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                raise ValueError(f"--{name}: missing value; give a comma-separated list like "
                                 f"--{name} 2,4,8")
            value = args[i + 1]
            i += 1
        i += 1
        key = name.replace("-", "_")
        if key in out:
            raise ValueError(f"--{name} given twice; put all its values in one list")
        out[key] = parse_values(key, value)
    return out


def make_grid(params: dict, repeats: int = 1, seed: int = 0, name: str = "sweep") -> Grid:
    """A study from {field: [values]}: lists of two or more values are swept, single ones fixed."""
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: must be at least 1")
    checked = {k: parse_values(k, v) for k, v in params.items()}
    swept = {k: v for k, v in checked.items() if len(v) > 1}
    fixed = {k: v[0] for k, v in checked.items() if len(v) == 1}
    if not swept:
        raise ValueError("nothing to sweep; give at least one parameter with two or more "
                         "values, e.g. --nodes 2,4,8, or --preset udacity")
    return Grid(name, swept, fixed, tuple(range(seed, seed + repeats)))


def make_points(points: list, fixed: dict | None = None, repeats: int = 1, seed: int = 0,
                name: str = "runs") -> Grid:
    """A study of listed points ({field: value} each, all naming the same fields), each run with
    every seed; `fixed` holds the values they share."""
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: must be at least 1")
    if not points:
        raise ValueError("a study of listed points needs at least one point")
    checked = []
    for point in points:
        if set(point) != set(points[0]):
            raise ValueError(f"every point must name the same parameters: {sorted(point)} vs "
                             f"{sorted(points[0])}")
        checked.append({k: parse_values(k, [v])[0] for k, v in point.items()})
    keys = [json.dumps(p, sort_keys=True) for p in checked]
    if len(set(keys)) != len(keys):
        raise ValueError(f"study {name!r} lists a point twice; use --repeats for more seeds")
    fixed = {k: parse_values(k, [v])[0] for k, v in (fixed or {}).items() if k not in checked[0]}
    swept = {k: sorted({p[k] for p in checked}, key=lambda v: (str(type(v)), v))
             for k in checked[0]}
    return Grid(name, swept, fixed, tuple(range(seed, seed + repeats)), tuple(checked))


def preset(name: str, scale: float = 1.0, repeats: int = 1, seed: int = 0, fixed=None,
           study: str = "udacity") -> list[Grid]:
    """The assignment's five studies, each around train's defaults, and the write-up's six single
    runs (study `runs`, each with its own step count); `scale` multiplies every step count."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the one preset is udacity")
    if not scale > 0:
        raise ValueError(f"--scale {scale}: must be greater than 0")
    fixed = dict(fixed or {})
    default_steps = fixed.pop("steps", None) or TrainConfig.steps
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
        grids.append(make_grid({**{k: [v] for k, v in base.items()}, **swept}, repeats, seed,
                               f"{study}.{suffix}"))
    runs = [{**run.params(), "steps": steps(run.steps)} for run in writeup.RUNS]
    grids.append(make_points(runs, fixed, repeats, seed, f"{study}.runs"))
    return grids


def grids_from(args: list[str], preset_name: str | None = None, scale: float = 1.0,
               repeats: int = 1, seed: int = 0, study: str = "sweep") -> list[Grid]:
    """The studies a `charlstm sweep` command line asks for: the grid its parameters span, or a
    preset with its single-valued parameters fixed (a preset's studies are named
    `udacity.<name>` unless --study names them)."""
    params = parse_params(args)
    if preset_name is None:
        return [make_grid(params, repeats=repeats, seed=seed, name=study)]
    extra = [k for k, v in params.items() if len(v) > 1]
    if extra:
        raise ValueError(f"--preset fixes what it sweeps; give "
                         f"{', '.join('--' + k.replace('_', '-') for k in extra)} one value, or "
                         "drop --preset")
    return preset(preset_name, scale=scale, repeats=repeats, seed=seed,
                  fixed={k: v[0] for k, v in params.items()},
                  study=preset_name if study == "sweep" else study)


def units(grid: Grid) -> list[Unit]:
    """Every training the grid needs, in a stable order."""
    if grid.points:
        return [Unit(grid.name, json.dumps({**point, "seed": seed}, sort_keys=True), dict(point),
                     seed, None) for point in grid.points for seed in grid.seeds]
    names = [n for n in grid.swept if n != "steps"]
    milestones = tuple(sorted(grid.swept["steps"])) if "steps" in grid.swept else None
    out = []
    for combo in itertools.product(*(grid.swept[n] for n in names)):
        params = dict(zip(names, combo))
        for seed in grid.seeds:
            key = json.dumps({**params, "seed": seed}, sort_keys=True)
            out.append(Unit(grid.name, key, params, seed, milestones))
    return out


def unit_config(unit: Unit, grid: Grid, threads: int) -> TrainConfig:
    kwargs = {**grid.fixed, **unit.params, "seed": unit.seed, "threads": threads, "save": False}
    if unit.milestones:
        kwargs["steps"] = max(unit.milestones)
    return TrainConfig(**kwargs)


def grid_attr(grid: Grid) -> dict:
    """How a study records its grid in the storage (the report reads it back)."""
    attr = {"swept": {k: list(v) for k, v in grid.swept.items()}, "fixed": grid.fixed,
            "seeds": list(grid.seeds)}
    if grid.points:
        attr["points"] = [dict(p) for p in grid.points]
    return attr


def merge_attrs(stored: dict, attr: dict) -> dict:
    """The record of a study that grows: the values, points and seeds of both runs of it."""
    order = lambda v: (str(type(v)), v)  # noqa: E731
    merged = {"swept": {k: sorted(set(stored["swept"][k]) | set(attr["swept"][k]), key=order)
                        for k in attr["swept"]},
              "fixed": attr["fixed"], "seeds": sorted(set(stored["seeds"]) | set(attr["seeds"]))}
    if "points" in stored or "points" in attr:
        points = list(stored.get("points", []))
        merged["points"] = points + [p for p in attr.get("points", []) if p not in points]
    return merged
