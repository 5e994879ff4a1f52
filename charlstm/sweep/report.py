"""The results of a sweep: a CSV of every run, plots, and report.md, all computed from the trials.

The report answers the assignment's questions only as far as the trials do: every statement is a
number with its 95% interval over seeds (Student t), and where the trials cannot answer, it says
which study is missing.
"""

import csv
import io
import json
import math
import statistics
from pathlib import Path

from charlstm.checkpoint import atomic_write_bytes
from charlstm.sweep import plots
from charlstm.sweep.claims import MANIFEST, STUDY_ATTR, sqlite_url

CSV_NAME = "trials.csv"
REPORT_NAME = "report.md"
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# Within this fraction of the best mean counts as levelled off when a single seed gives no interval.
LEVEL_TOLERANCE = 0.01


def t95(df: float) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= 30:
        return T95[int(df) - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df)  # Cornish-Fisher: the t quantile's first correction


def summarize(runs: list) -> dict:
    """Mean, standard error and 95% t interval of per-seed values (no interval for one value)."""
    n = len(runs)
    mean = statistics.fmean(runs)
    if n < 2:
        return {"n": n, "mean": mean, "se": None, "low": None, "high": None, "runs": list(runs)}
    se = statistics.stdev(runs) / math.sqrt(n)
    half = t95(n - 1) * se
    return {"n": n, "mean": mean, "se": se, "low": mean - half, "high": mean + half,
            "runs": list(runs)}


def difference(a: dict, b: dict) -> dict:
    """a.mean - b.mean with a Welch 95% interval (None when either side has a single run)."""
    diff = a["mean"] - b["mean"]
    if a["se"] is None or b["se"] is None:
        return {"diff": diff, "low": None, "high": None}
    var = a["se"] ** 2 + b["se"] ** 2
    if var == 0:
        return {"diff": diff, "low": diff, "high": diff}
    df = var ** 2 / ((a["se"] ** 4) / (a["n"] - 1) + (b["se"] ** 4) / (b["n"] - 1))
    half = t95(max(1.0, df)) * math.sqrt(var)
    return {"diff": diff, "low": diff - half, "high": diff + half}


def load_rows(storage: str, studies: list) -> tuple[list, dict]:
    """One row per finished run (per milestone for steps sweeps) and each study's grid."""
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, grids = [], {}
    known = {s.study_name for s in optuna.study.get_all_study_summaries(storage)}
    for name in studies:
        if name not in known:
            raise ValueError(f"no study {name!r} in the storage: run the sweep first, or pass "
                             "the --storage and --study it used")
        study = optuna.load_study(study_name=name, storage=storage)
        grid = study.user_attrs.get(STUDY_ATTR)
        if grid is None:
            raise ValueError(f"study {name!r} was not made by charlstm sweep")
        grids[name] = grid
        seen = set()
        for trial in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                            key=lambda t: t.number):
            attrs = trial.user_attrs
            if "unit" not in attrs or attrs["unit"] in seen:
                continue
            seen.add(attrs["unit"])
            result = attrs.get("result", {})
            base = {"study": name, "trial": trial.number, "seed": attrs["seed"]}
            params = {k: attrs["params"][k] for k in grid["swept"] if k != "steps"}
            if "milestones" in result:
                last = max(int(s) for s in result["milestones"])
                for step, ppl in sorted(result["milestones"].items(), key=lambda kv: int(kv[0])):
                    final = int(step) == last
                    rows.append({**base, **params, "steps": int(step), "valid_perplexity": ppl,
                                 "valid_bpc": math.log2(ppl),
                                 "train_seconds": result.get("train_seconds") if final else None,
                                 "tokens_per_second": result.get("tokens_per_second")
                                 if final else None})
            else:
                rows.append({**base, **params,
                             "steps": result.get("steps", grid["fixed"].get("steps")),
                             "valid_perplexity": trial.value,
                             "valid_bpc": result.get("valid_bpc", math.log2(trial.value)),
                             "train_seconds": result.get("train_seconds"),
                             "tokens_per_second": result.get("tokens_per_second")})
    return rows, grids


def csv_columns(grids: dict) -> list:
    swept = []
    for grid in grids.values():
        swept += [k for k in grid["swept"] if k != "steps" and k not in swept]
    return ["study", "trial", "seed", *swept, "steps", "valid_perplexity", "valid_bpc",
            "train_seconds", "tokens_per_second"]


def write_csv(path, rows: list, columns: list) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_bytes(path, buffer.getvalue().encode())


def curve(rows: list, study: str, param: str) -> list:
    """Per-value summaries of `param` in `study`, averaged over the study's other parameters."""
    by_value = {}
    for row in rows:
        if row["study"] == study:
            by_value.setdefault(row[param], []).append(row["valid_perplexity"])
    return [{"value": v, **summarize(by_value[v])} for v in sorted(by_value)]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(s) -> str:
    if s.get("low") is None:
        return "no interval (one seed)"
    return f"[{s['low']:.3f}, {s['high']:.3f}]"


def _source(grids: dict, param: str):
    """The study that shows `param` best: one sweeping it alone, else a grid that includes it."""
    alone = [n for n, g in grids.items() if list(g["swept"]) == [param]]
    if alone:
        return alone[0], None
    shared = [n for n, g in grids.items() if param in g["swept"]]
    if shared:
        others = [k for k in grids[shared[0]]["swept"] if k != param]
        return shared[0], others
    return None, None


def _effect(rows, grids, param, study=None):
    """Improvement from the smallest value of `param` to its best, with an interval."""
    if study is None:
        study, others = _source(grids, param)
    else:
        others = [k for k in grids[study]["swept"] if k != param]
    if study is None:
        return None
    points = curve(rows, study, param)
    if len(points) < 2:
        return None
    best = min(points, key=lambda p: p["mean"])
    first = points[0]
    if others:
        change = _paired(rows, study, param, others, first["value"], best["value"])
    else:
        change = difference(first, best)
    return {"study": study, "others": others, "points": points, "best": best, "first": first,
            **change}


def _paired(rows, study, param, others, first, best) -> dict:
    """In a grid, the improvement first -> best measured at each setting of the other parameters
    and seed, then summarized: each pair shares everything but `param`."""
    cells = {}
    for row in rows:
        if row["study"] == study:
            key = tuple(row[o] for o in others) + (row["seed"],)
            cells.setdefault(key, {})[row[param]] = row["valid_perplexity"]
    diffs = [c[first] - c[best] for c in cells.values() if first in c and best in c]
    if not diffs:
        return {"diff": 0.0, "low": None, "high": None}
    s = summarize(diffs)
    return {"diff": s["mean"], "low": s["low"], "high": s["high"]}


def _describe_effect(param, e) -> str:
    where = f"study `{e['study']}`" + (
        f", paired at each value of {', '.join(e['others'])} and seed (the interval is over "
        f"those pairs)"
        if e["others"] else "")
    ci = "" if e["low"] is None else f" (95% interval [{e['low']:.3f}, {e['high']:.3f}])"
    if e["best"] is e["first"]:
        return (f"{param}: the smallest value, {e['first']['value']}, has the lowest mean "
                f"perplexity ({e['first']['mean']:.3f}); larger values gain nothing; {where}.")
    return (f"{param} {e['first']['value']} -> {e['best']['value']} (the best value) lowers mean "
            f"perplexity from {e['first']['mean']:.3f} to {e['best']['mean']:.3f}, by "
            f"{e['diff']:.3f}{ci}; {where}.")


def _compare(name_a, a, name_b, b) -> str:
    if a is None or b is None:
        missing = [n for n, e in ((name_a, a), (name_b, b)) if e is None]
        return (f"Not answered: no trials sweep {' or '.join(missing)} "
                f"(run `charlstm sweep --preset udacity`, or sweep {' and '.join(missing)}).")
    lines = ["- " + _describe_effect(name_a, a), "- " + _describe_effect(name_b, b)]
    bigger = name_a if a["diff"] > b["diff"] else name_b
    if a["low"] is None or b["low"] is None:
        verdict = (f"The point estimates favour {bigger}, but with one seed per point there is "
                   "no interval, so seed noise is not ruled out (rerun with --repeats 3 or more).")
    elif max(a["low"], b["low"]) > min(a["high"], b["high"]):
        verdict = (f"The intervals do not overlap: the data shows {bigger} giving the larger "
                   f"improvement over these ranges.")
    else:
        verdict = ("The intervals overlap: at this number of seeds the data does not separate "
                   f"the two effects (the means favour {bigger}).")
    return "\n".join(lines + ["", verdict])


def _within_grid(rows, grids, a, b) -> list:
    """The same comparison inside each study that sweeps both, where the other settings match."""
    lines = []
    for name, grid in grids.items():
        if set(grid["swept"]) == {a, b}:
            lines += [f"Within the grid `{name}`:", "",
                      _compare(a, _effect(rows, grids, a, name), b,
                               _effect(rows, grids, b, name)), ""]
    return lines


def _monotonic(param, e) -> str:
    if e is None:
        return f"- {param}: not answered, no trials sweep it."
    points = e["points"]
    ups = []
    for a, b in zip(points, points[1:]):
        d = difference(b, a)
        if d["diff"] > 0:
            if d["low"] is None:
                tail = "one seed, no interval"
            else:
                kind = "significant" if d["low"] > 0 else "within noise"
                tail = f"{kind}, [{d['low']:.3f}, {d['high']:.3f}]"
            ups.append(f"{a['value']} -> {b['value']}: +{d['diff']:.3f} ({tail})")
    if not ups:
        return (f"- {param}: mean perplexity falls at every step over "
                f"{points[0]['value']}..{points[-1]['value']} ({len(points)} values).")
    if all(p["low"] is None for p in points):
        judged = "no intervals with one seed"
    else:
        judged = f"{sum(1 for u in ups if '(significant' in u)} significant"
    return (f"- {param}: mean perplexity rises {len(ups)} time(s) over {len(points)} values"
            f" ({judged}): " + "; ".join(ups) + ".")


def _level_off(param, e) -> str:
    if e is None:
        return (f"Not answered: no trials sweep {param} "
                f"(run `charlstm sweep --preset udacity`, or sweep --{param.replace('_', '-')}).")
    best = e["best"]
    for p in e["points"]:
        d = difference(p, best)
        if d["low"] is not None:
            if d["low"] <= 0:
                return (f"Gains level off at {param} = {p['value']}: its mean perplexity is "
                        f"{p['mean']:.3f} {_ci(p)}, the best ({param} = {best['value']}) has "
                        f"{best['mean']:.3f} {_ci(best)}, and their difference {d['diff']:.3f} "
                        f"has the interval [{d['low']:.3f}, {d['high']:.3f}], which includes 0. "
                        f"Rule: the smallest value not significantly worse than the best.")
        elif p["mean"] <= best["mean"] * (1 + LEVEL_TOLERANCE):
            return (f"Gains level off at {param} = {p['value']}: mean {p['mean']:.3f} is within "
                    f"{LEVEL_TOLERANCE:.0%} of the best ({param} = {best['value']}, "
                    f"{best['mean']:.3f}). One seed per point: no interval, so this rule "
                    "replaces a test; rerun with --repeats 3 or more.")
    return f"No level-off found for {param}."


def _study_section(out: Path, name: str, grid: dict, rows: list) -> list:
    swept = list(grid["swept"])
    n_runs = len([r for r in rows if r["study"] == name])
    described = ", ".join(f"{k} {grid['swept'][k]}" for k in swept)
    lines = [f"### Study `{name}`", "",
             f"Swept: {described}; fixed: "
             f"{json.dumps(grid['fixed'])}; seeds {grid['seeds']}; {n_runs} results.", ""]
    if not n_runs:
        return lines + ["No finished trials yet.", ""]
    safe = name.replace("/", "_")
    if len(swept) == 1:
        points = curve(rows, name, swept[0])
        png = f"{safe}.png"
        plots.line(out / png, swept[0], points, title=f"{name}: validation perplexity")
        lines += [f"![{name}]({png})", "", f"| {swept[0]} | runs | mean perplexity | 95% interval |",
                  "|---|---|---|---|"]
        lines += [f"| {p['value']} | {p['n']} | {p['mean']:.3f} | {_ci(p)} |" for p in points]
    elif len(swept) == 2:
        x, y = swept
        cells = {}
        for r in rows:
            if r["study"] == name:
                cells.setdefault((r[x], r[y]), []).append(r["valid_perplexity"])
        xs = sorted({k[0] for k in cells})
        ys = sorted({k[1] for k in cells})
        means = [[statistics.fmean(cells[(a, b)]) if (a, b) in cells else None for a in xs]
                 for b in ys]
        plots.heatmap(out / f"{safe}-heatmap.png", x, y, xs, ys, means, title=name)
        plots.surface(out / f"{safe}-surface.png", x, y, xs, ys, means, title=name)
        lines += [f"![{name} heatmap]({safe}-heatmap.png)", "",
                  f"![{name} surface]({safe}-surface.png)", "",
                  f"Mean perplexity ({y} rows, {x} columns):", "",
                  f"| {y} \\ {x} | " + " | ".join(str(a) for a in xs) + " |",
                  "|---" * (len(xs) + 1) + "|"]
        lines += [f"| {b} | " + " | ".join(_fmt(m) for m in row) + " |"
                  for b, row in zip(ys, means)]
    else:
        lines += [f"{len(swept)} swept parameters: no plot (plots show one or two); see the CSV."]
    return lines + [""]


def write_report(out, storage: str | None = None, studies: list | None = None) -> str:
    """Write trials.csv, the plots and report.md into `out`; return the report's path."""
    out = Path(out)
    manifest = out / MANIFEST
    if studies is None or storage is None:
        if not manifest.is_file():
            raise ValueError(f"{out} holds no sweep (no sweep.json): pass the output folder of "
                             "a sweep, or --storage and --study")
        saved = json.loads(manifest.read_text())
        studies = studies or saved["studies"]
        if storage is None and saved["storage"] is None:
            storage = sqlite_url(out)
        elif storage is None:
            if "***" in saved["storage"]:
                raise ValueError("the sweep's storage URL has a password that is not saved: "
                                 "pass it again with --storage")
            storage = saved["storage"]
    rows, grids = load_rows(storage, studies)
    write_csv(out / CSV_NAME, rows, csv_columns(grids))
    lines = ["# Sweep report", "",
             f"{len(rows)} results from {len(studies)} studies ({', '.join(studies)}), read from "
             f"the trials; every interval is a 95% Student t interval over seeds. All results: "
             f"[{CSV_NAME}]({CSV_NAME}).", "", "## Studies", ""]
    for name in studies:
        lines += _study_section(out, name, grids[name], rows)
    effects = {p: _effect(rows, grids, p) for p in ("nodes", "batch_size", "unrollings", "steps")}
    lines += ["## Hypotheses", "",
              "### 1. More nodes help more than a bigger batch", "",
              _compare("nodes", effects["nodes"], "batch_size", effects["batch_size"]), "",
              "### 2. More unrollings help more than more nodes", "",
              _compare("unrollings", effects["unrollings"], "nodes", effects["nodes"]), "",
              *_within_grid(rows, grids, "unrollings", "nodes"),
              "### 3. More unrollings help more than more training steps", "",
              _compare("unrollings", effects["unrollings"], "steps", effects["steps"]), "",
              "### 4. Perplexity falls monotonically as each parameter grows", ""]
    lines += [_monotonic(p, e) for p, e in effects.items()]
    lines += ["", "## Questions", ""]
    for i, p in enumerate(("nodes", "unrollings", "steps"), 1):
        lines += [f"### {i}. Where do the gains from {p} level off?", "",
                  _level_off(p, effects[p]), ""]
    path = out / REPORT_NAME
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return str(path)
