"""The results of a sweep: a CSV of every run, plots, and report.md, all computed from the trials.

report.md leads with the write-up that the udacity preset reproduces: each of its hypotheses and
questions quoted, the author's verdict beside this run's (charlstm.sweep.verdicts), and its
single runs beside ours when the data is text8. Then each study's table and figures, the noise,
and comparisons of the report's own. Every number carries its interval (charlstm.sweep.noise);
where the trials cannot answer, the report says which study is missing.
"""

import csv
import io
import json
import math
import statistics
from pathlib import Path

import numpy as np

from charlstm.checkpoint import atomic_write_bytes
from charlstm.sweep import noise, plots, verdicts, writeup
from charlstm.sweep.claims import MANIFEST, STUDY_ATTR, sqlite_url
from charlstm.sweep.verdicts import Trials, describe, fmt, interval

CSV_NAME = "trials.csv"
REPORT_NAME = "report.md"


def load_rows(storage: str, studies: list) -> tuple[list, dict]:
    """One row per finished run (per milestone for steps sweeps) and each study's grid. A row's
    `losses` are its per-character validation losses (None when the trial has none) and `data`
    what it was trained on; neither goes into the CSV."""
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
            base = {"study": name, "trial": trial.number, "seed": attrs["seed"],
                    "data": result.get("data")}
            params = {k: attrs["params"][k] for k in grid["swept"]
                      if k != "steps" or "points" in grid}
            if "milestones" in result:
                last = max(int(s) for s in result["milestones"])
                losses = result.get("milestone_char_nll", {})
                for step, ppl in sorted(result["milestones"].items(), key=lambda kv: int(kv[0])):
                    final = int(step) == last
                    rows.append({**base, **params, "steps": int(step), "valid_perplexity": ppl,
                                 "valid_bpc": math.log2(ppl),
                                 "train_seconds": result.get("train_seconds") if final else None,
                                 "tokens_per_second": result.get("tokens_per_second")
                                 if final else None,
                                 "losses": _losses(losses.get(step))})
            else:
                rows.append({**base, **params,
                             "steps": params.get("steps", result.get(
                                 "steps", grid["fixed"].get("steps"))),
                             "valid_perplexity": trial.value,
                             "valid_bpc": result.get("valid_bpc", math.log2(trial.value)),
                             "train_seconds": result.get("train_seconds"),
                             "tokens_per_second": result.get("tokens_per_second"),
                             "losses": _losses(result.get("valid_char_nll"))})
    return rows, grids


def _losses(stored):
    return None if stored is None else noise.unpack_losses(stored)


def csv_columns(grids: dict) -> list:
    swept = []
    for grid in grids.values():
        swept += [k for k in grid["swept"] if k != "steps" and k not in swept]
    return ["study", "trial", "seed", *swept, "steps", "valid_perplexity", "valid_bpc",
            "text_low", "text_high", "train_seconds", "tokens_per_second"]


def run_interval(losses) -> tuple:
    """A run's own 95% interval from its validation text alone (block bootstrap)."""
    if losses is None:
        return None, None
    resampled = np.exp(noise.replicate_means(losses))
    ppl = math.exp(float(np.mean(losses)))
    half = noise.Z95 * float(np.std(resampled, ddof=1))
    return ppl - half, ppl + half


def write_csv(path, rows: list, columns: list) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        low, high = run_interval(row.get("losses"))
        values = {**row, "text_low": low, "text_high": high}
        writer.writerow({k: ("" if values.get(k) is None else values.get(k)) for k in columns})
    atomic_write_bytes(path, buffer.getvalue().encode())


def _points(trials: Trials, study: str, param: str) -> list:
    """A one-parameter curve as the line plot wants it: the interval is the deciding one."""
    out = []
    for value, key in trials.curve(study, param):
        e = trials.estimate({key: 1.0})
        out.append({"value": value, "mean": e.value, "low": e.low, "high": e.high,
                    "runs": trials.cells.perplexities(key), "estimate": e})
    return out


def _seed_ci(e: noise.Estimate) -> str:
    if e.seed_half is None:
        return "one seed"
    return f"[{fmt(e.value - e.seed_half)}, {fmt(e.value + e.seed_half)}]"


def _text_ci(e: noise.Estimate) -> str:
    if e.text_half is None:
        return "not measured"
    return f"[{fmt(e.value - e.text_half)}, {fmt(e.value + e.text_half)}]"


def _study_section(out: Path, trials: Trials, name: str) -> list:
    grid = trials.grids[name]
    swept = list(grid["swept"])
    n_runs = len([r for r in trials.rows if r["study"] == name])
    described = ", ".join(f"{k} {grid['swept'][k]}" for k in swept)
    lines = [f"### Study `{name}`", "",
             f"{'Points' if 'points' in grid else 'Swept'}: {described}; fixed: "
             f"{json.dumps(grid['fixed'])}; seeds {grid['seeds']}; {n_runs} results.", ""]
    if not n_runs:
        return lines + ["No finished trials yet.", ""]
    safe = name.replace("/", "_")
    head = ("mean perplexity | seed 95% interval | validation-text 95% interval |")
    if "points" in grid:
        lines += [f"| {' | '.join(swept)} | runs | {head}", "|---" * (len(swept) + 4) + "|"]
        for key in trials.points(name):
            e = trials.estimate({key: 1.0})
            params = trials.params(key)
            lines.append(f"| {' | '.join(str(params[k]) for k in swept)} | {e.seeds} | "
                         f"{fmt(e.value)} | {_seed_ci(e)} | {_text_ci(e)} |")
    elif len(swept) == 1:
        param = swept[0]
        points = _points(trials, name, param)
        original = trials.writeup_curve(name, param)
        png = f"{safe}.png"
        plots.line(out / png, param, points, title=f"{name}: validation perplexity",
                   original=original,
                   interval_label="95% interval (the wider: seeds or validation text)")
        lines += [f"![{name}]({png})", ""]
        if original:
            lines += ["The dashed curve is the write-up's: its single runs that lie on this "
                      "curve (its full curves are published as images only).", ""]
        lines += [f"| {param} | runs | {head}", "|---|---|---|---|---|"]
        lines += [f"| {p['value']} | {p['estimate'].seeds} | {fmt(p['mean'])} | "
                  f"{_seed_ci(p['estimate'])} | {_text_ci(p['estimate'])} |" for p in points]
        curve = trials.curve(name, param)
        lines += ["", *(f"- {note}" for note in (verdicts.level_note(trials, param, curve),
                                                 verdicts.rises_note(trials, param, curve))
                        if note)]
    elif len(swept) == 2:
        x, y = swept
        cells = {}
        for key in trials.points(name):
            params = trials.params(key)
            cells[(params[x], params[y])] = trials.estimate({key: 1.0}).value
        xs = sorted({k[0] for k in cells})
        ys = sorted({k[1] for k in cells})
        means = [[cells.get((a, b)) for a in xs] for b in ys]
        plots.heatmap(out / f"{safe}-heatmap.png", x, y, xs, ys, means, title=name)
        plots.surface(out / f"{safe}-surface.png", x, y, xs, ys, means, title=name)
        lines += [f"![{name} heatmap]({safe}-heatmap.png)", "",
                  f"![{name} surface]({safe}-surface.png)", "",
                  f"Mean perplexity ({y} rows, {x} columns):", "",
                  f"| {y} \\ {x} | " + " | ".join(str(a) for a in xs) + " |",
                  "|---" * (len(xs) + 1) + "|"]
        lines += [f"| {b} | " + " | ".join("n/a" if m is None else fmt(m) for m in row) + " |"
                  for b, row in zip(ys, means)]
    else:
        lines += [f"{len(swept)} swept parameters: no plot (plots show one or two); see the CSV."]
    return lines + [""]


def _writeup_section(trials: Trials, answers: list) -> list:
    data = trials.data()
    chars = sorted(trials.valid_chars())
    lines = ["## The write-up's hypotheses and questions", "",
             f"The preset reproduces [{writeup.TITLE}]({writeup.SOURCE}), which trained the "
             "assignment's model on text8 with TensorFlow and scored validation perplexity on "
             f"the first {writeup.VALID_SIZE} characters, one run per setting. Its statements "
             "are quoted below with the author's verdict and this run's, computed from the "
             "trials.", "",
             f"Data: {data.describe()}.", "",
             f"Rule: {verdicts.RULE} With one seed the seed spread is not measured and the "
             "validation text's interval decides alone.", "",
             "| | the write-up | its author's verdict | this run's verdict |", "|---|---|---|---|"]
    for a in answers:
        lines.append(f"| {a.statement.key} | \"{a.statement.quote}\" | {a.statement.author} | "
                     f"**{a.verdict}**: {a.summary} |")
    lines.append("")
    if chars:
        lines += [f"Validation text: {', '.join(f'{c:,}' for c in chars)} characters per run "
                  f"(`--valid-size`), resampled {noise.REPLICATES} times in blocks of "
                  f"{noise.block_chars(chars[0])} characters.", ""]
    for a in answers:
        lines += [f"### {a.statement.key}. \"{a.statement.quote}\"", "",
                  f"The author: {a.statement.author}.", "",
                  f"This run: **{a.verdict}**.", ""]
        for claim in a.claims:
            lines.append(f"- *{claim.text}*: **{claim.verdict}**. {claim.detail}")
        lines += [f"- {note}" for note in a.notes]
        lines.append("")
    return lines


def _runs_section(trials: Trials) -> list:
    lines = ["## The write-up's single runs", "",
             "Its table beside ours. Our interval is where one more run of the point falls "
             "(95%, Student t over seeds: mean ± t·sd·√(1 + 1/seeds)), the interval to hold a "
             "single run from elsewhere against; on text8 with the default `--valid-size` the "
             "validation text is the write-up's own, so only the seeds' spread applies.", "",
             "| batch | nodes | unrollings | steps | the write-up | here: mean | seeds | "
             "one-run 95% interval | inside? |", "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for run, key, why in verdicts.writeup_runs(trials):
        if key is None:
            lines.append(f"| {run.batch_size} | {run.nodes} | {run.unrollings} | {run.steps} | "
                         f"{run.perplexity:.3f} | | | | not run here |")
            continue
        runs = trials.cells.perplexities(key)
        steps = trials.config(key)["steps"]
        span = noise.prediction_interval(runs)
        span_text = "one seed" if span is None else f"[{fmt(span[0])}, {fmt(span[1])}]"
        if why is not None:
            inside = f"not comparable: {why}"
        elif span is None:
            inside = "no interval with one seed"
        else:
            inside = "yes" if span[0] <= run.perplexity <= span[1] else "no"
        lines.append(f"| {run.batch_size} | {run.nodes} | {run.unrollings} | {steps} | "
                     f"{run.perplexity:.3f} | {fmt(statistics.fmean(runs))} | {len(runs)} | "
                     f"{span_text} | {inside} |")
    return lines + [""]


def _noise_section(trials: Trials) -> list:
    seed_halves, text_halves, wins = [], [], 0
    for study in trials.grids:
        for key in trials.points(study):
            e = trials.estimate({key: 1.0})
            if e.seed_half is not None and e.text_half is not None:
                seed_halves.append(e.seed_half)
                text_halves.append(e.text_half)
                wins += e.text_half > e.seed_half
    lines = ["## Noise", ""]
    runs = [r for r in trials.rows if r.get("losses") is not None]
    if runs:
        halves = [(h - l) / 2 for l, h in (run_interval(r["losses"]) for r in runs)]
        rel = [h / r["valid_perplexity"] for h, r in zip(halves, runs)]
        lines.append(f"- Validation text, per run: the block bootstrap's 95% half-width is "
                     f"{statistics.median(halves):.3f} perplexity at the median run "
                     f"({statistics.median(rel):.1%} of its perplexity; from "
                     f"{min(rel):.1%} to {max(rel):.1%}) over {len(runs)} runs; `text_low` and "
                     f"`text_high` in {CSV_NAME}.")
    else:
        lines.append("- Validation text: not measured; the trials store no per-character "
                     "losses.")
    if seed_halves:
        lines.append(f"- Seeds, per point: the 95% half-width of the mean is "
                     f"{statistics.median(seed_halves):.3f} at the median point; the validation "
                     f"text's interval of the same mean is {statistics.median(text_halves):.3f}, "
                     f"and it is the wider at {wins} of {len(seed_halves)} points.")
    else:
        lines.append("- Seeds: one seed per point, so the seed-to-seed spread is not measured; "
                     "rerun with --repeats 3 or more.")
    lines.append("- A difference between two points is resampled as a difference (the same "
                 "text for both), so its validation-text interval is narrower than either "
                 "point's: what is hard to predict is hard for both.")
    return lines + [""]


def _improvement(trials: Trials, param: str):
    study = trials.one_d(param)
    if study is None:
        return None
    curve = trials.curve(study, param)
    return curve[0][0], curve[-1][0], {curve[0][1]: 1.0, curve[-1][1]: -1.0}


def _others_section(trials: Trials) -> list:
    lines = ["## Other comparisons", "",
             "Which parameter's range improves perplexity more (improvement: mean perplexity at "
             "the smallest value minus at the largest, in each parameter's own study, compared "
             "seed by seed).", ""]
    for a, b in (("nodes", "batch_size"), ("unrollings", "nodes"), ("unrollings", "steps")):
        ia, ib = _improvement(trials, a), _improvement(trials, b)
        title = f"- More {a} against more {b}: "
        if ia is None or ib is None:
            missing = " and ".join(p for p, i in ((a, ia), (b, ib)) if i is None)
            lines.append(title + f"not answered, no study sweeps {missing} alone.")
            continue
        weights = dict(ia[2])
        for k, w in ib[2].items():
            weights[k] = weights.get(k, 0.0) - w
        e = trials.estimate(weights)
        ea, eb = trials.estimate(ia[2]), trials.estimate(ib[2])
        if e is None:
            lines.append(title + "the two studies share no seed.")
            continue
        bigger = a if e.value > 0 else b
        verdict = (f"{bigger} improves separably more" if e.sign != 0 else
                   f"not separable from noise (the means favour {bigger})")
        lines.append(title + f"{a} {ia[0]} → {ia[1]} improves by {fmt(ea.value)} "
                     f"{interval(ea)}, {b} {ib[0]} → {ib[1]} by {fmt(eb.value)} "
                     f"{interval(eb)}; their difference {describe(e)}: {verdict}.")
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
    trials = Trials(rows, grids)
    lines = ["# Sweep report", "",
             f"{len(rows)} results from {len(studies)} studies ({', '.join(studies)}), read from "
             f"the trials. All results: [{CSV_NAME}]({CSV_NAME}).", ""]
    if rows:
        lines += _writeup_section(trials, verdicts.answers(trials))
        lines += _runs_section(trials)
    lines += ["## Studies", ""]
    for name in studies:
        lines += _study_section(out, trials, name)
    if rows:
        lines += _noise_section(trials)
        lines += _others_section(trials)
    path = out / REPORT_NAME
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return str(path)
