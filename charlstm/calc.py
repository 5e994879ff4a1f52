"""The calculator: tiny recurrent networks that learn arithmetic and counting from strings.

A run trains `restarts` seeds (seed, seed+1, ...) of one model on one task and keeps the best.
Tiny networks often stall in a local minimum, so a run reports how many restarts succeeded:
a restart SUCCEEDS when its exact-match accuracy on the validation split is 1.0, i.e. every
validation prediction rounds to its exact integer target. The best restart is the one with the
highest validation exact-match accuracy, ties broken by the lower validation MSE.

Targets are standardised with the training split's mean and standard deviation while training
(so one learning rate serves "2+3" and "99*99"); MSE and accuracy are reported in target units.
"""

import csv
import io
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from charlstm import checkpoint, loop
from charlstm.checkpoint import atomic_write_bytes
from charlstm.config import CALCULATORS, CalcConfig, check_output_file, check_output_folder
from charlstm.data.arith import DIGITS, ArithData, make_dataset
from charlstm.models import make_calculator

SUCCESS = "validation exact-match accuracy 1.0 (every validation prediction rounds to its target)"
# A restart stops early once every training prediction is this close to its target: rounding is
# then exact with room to spare, and more epochs only cost time.
CONVERGED_ERROR = 0.1
# Weights with at most this many numbers are printed after training: small enough to read.
READABLE_WEIGHTS = 64


def evaluate(model, ids: torch.Tensor, targets: torch.Tensor, mean: float, std: float) -> dict:
    """MSE, exact-match accuracy after rounding, and the largest error, all in target units."""
    with torch.no_grad():
        predictions = model(ids) * std + mean
    errors = predictions - targets
    if not torch.isfinite(errors).all():
        return {"mse": math.inf, "accuracy": 0.0, "max_error": math.inf}
    return {"mse": errors.pow(2).mean().item(),
            "accuracy": (predictions.round() == targets).float().mean().item(),
            "max_error": errors.abs().max().item()}


def train_restart(data: ArithData, config: CalcConfig, seed: int):
    """Train one seed; return (model, record). A diverging run stops at its first non-finite loss."""
    train_ids, train_y = data.tensors("train")
    valid_ids, valid_y = data.tensors("valid")
    mean = train_y.mean().item()
    std = train_y.std().item() if len(train_y) > 1 and train_y.std() > 0 else 1.0
    train_z = (train_y - mean) / std
    torch.manual_seed(seed)
    model = make_calculator(config.model, len(data.symbols), config.n_fac, config.hidden, config.backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    epochs_run, diverged = 0, False
    for epoch in range(config.epochs):
        model.train()
        try:
            for batch in torch.randperm(len(train_ids), generator=order).split(config.batch_size):
                loss = torch.nn.functional.mse_loss(model(train_ids[batch]), train_z[batch])
                # A diverging restart is a failed restart: the others go on.
                loop.check_finite(f"epoch {epoch + 1}", "lower --lr", loss=loss.item())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        except loop.Diverged:
            diverged = True
        epochs_run = epoch + 1
        model.eval()
        if diverged or evaluate(model, train_ids, train_y, mean, std)["max_error"] < CONVERGED_ERROR:
            break
    train = evaluate(model, train_ids, train_y, mean, std)
    valid = evaluate(model, valid_ids, valid_y, mean, std)
    record = {"seed": seed, "epochs_run": epochs_run, "diverged": diverged,
              "train_seconds": time.perf_counter() - start,
              "train_mse": train["mse"], "train_accuracy": train["accuracy"],
              "valid_mse": valid["mse"], "valid_accuracy": valid["accuracy"],
              "success": valid["accuracy"] == 1.0, "target_mean": mean, "target_std": std}
    return model, record


@contextmanager
def single_thread():
    """Run tiny models on one thread: at these sizes intra-op threads only add synchronisation
    (a torch.nn.LSTM forward and backward at hidden 4, batch 16, took 0.65 ms on one thread and
    3.4 ms on two, on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


MEMORY_FIX = "lower --hidden or --n-fac"


def _check_memory(config: CalcConfig) -> None:
    """Refuse a calculator that cannot fit, before training it."""
    parameters = loop.parameter_count(lambda: make_calculator(
        config.model, len(DIGITS) + 2, config.n_fac, config.hidden, config.backend))
    # Weights, gradients and Adam's two moments, plus the activations of a batch, which holds at
    # most every example there is.
    examples = max(config.samples, 10 ** (2 * min(config.digits, 2)), 2 ** min(config.length, 9))
    needed = 4 * 4 * parameters + 3 * 4 * 4 * min(config.batch_size, examples) * config.hidden * (
        config.length + 2 * config.digits + 1)
    loop.check_memory(needed, loop.device("cpu"),
                      f"--model {config.model} with --hidden {config.hidden} "
                      f"({parameters:,} weights)", MEMORY_FIX)


def train(config: CalcConfig, log=None, plot=None):
    """Train config.restarts seeds and keep the best; return (best model, summary dict).

    `log`, if given, is called with one line per restart (the CLI sends them to stderr). The
    run is saved in config.out, by default runs/calc-TASK-TIMESTAMP (none with save False), and
    with `plot` a PNG of the embeddings is written there; both are checked before training.
    """
    config = replace(config)
    config.check()
    if plot is not None:
        check_output_file(plot, "--plot", "embeddings.png")
    run = loop.RunFolder.choose(config.out, config.save, f"calc-{config.task}")
    if run.checkpoint is not None:
        raise ValueError(f"{config.out} already holds a run ({run.checkpoint.name}); pass "
                         "another --out")
    _check_memory(config)
    with single_thread(), loop.memory_errors(MEMORY_FIX):
        model, summary = _train(config, log)
    summary["plot"] = plot_embeddings(summary, plot) if plot is not None else None
    if run.path is not None:
        run.start()
        config.out = str(run.path)
        summary["config"]["out"] = config.out
        model_config = {"kind": config.model, "n_fac": config.n_fac, "hidden": config.hidden,
                        "backend": config.backend}
        run.save(checkpoint.describe("calc", "calculator", model_config,
                                     "".join(summary["embedding"]), asdict(config)),
                 model.state_dict(), {})
        run.finish(json.loads(summary_json(summary)))
    summary["out"] = str(run.path) if run.path is not None else None
    return model, summary


def _train(config: CalcConfig, log):
    data = make_dataset(config.task, config.digits, config.length, config.samples,
                        config.valid_fraction, config.seed)
    best_model, best, runs = None, None, []
    for k in range(config.restarts):
        model, record = train_restart(data, config, config.seed + k)
        runs.append(record)
        if log:
            log(f"restart {k + 1}/{config.restarts} seed {record['seed']}: "
                f"valid accuracy {record['valid_accuracy']:.3f} mse {record['valid_mse']:.4g} "
                f"after {record['epochs_run']} epochs ({record['train_seconds']:.1f} s)")
        if best is None or _rank(record) > _rank(best):
            best_model, best = model, record
    successes = sum(r["success"] for r in runs)
    embedding = embeddings(best_model, data.symbols)
    summary = {
        "config": asdict(config),
        "success_rule": SUCCESS,
        "successes": successes,
        "restarts": config.restarts,
        "success_rate": successes / config.restarts,
        "best_seed": best["seed"],
        "valid_mse": best["valid_mse"],
        "valid_accuracy": best["valid_accuracy"],
        "train_mse": best["train_mse"],
        "train_accuracy": best["train_accuracy"],
        "n_train": len(data.train_text),
        "n_valid": len(data.valid_text),
        "train_seconds": sum(r["train_seconds"] for r in runs),
        "embedding": embedding,
        "digits_ordered": digits_ordered(embedding),
        "recurrent_weights": {name: w.detach().tolist() for name, w in best_model.recurrent_weights().items()
                              if w.numel() <= READABLE_WEIGHTS},
        "runs": runs,
    }
    return best_model, summary


def _rank(record: dict) -> tuple:
    return record["valid_accuracy"], -record["valid_mse"]


def embeddings(model, symbols: str) -> dict:
    """Each symbol's learned embedding vector, as a list of floats."""
    table = model.embedding.weight.detach()
    return {s: table[i].tolist() for i, s in enumerate(symbols)}


def digits_ordered(embedding: dict):
    """For one-number embeddings of the ten digits: "increasing", "decreasing" or "unordered";
    None when the embeddings are vectors or the task has no digits."""
    if not all(d in embedding for d in DIGITS) or len(embedding["0"]) != 1:
        return None
    values = [embedding[d][0] for d in DIGITS]
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(s > 0 for s in steps):
        return "increasing"
    if all(s < 0 for s in steps):
        return "decreasing"
    return "unordered"


def describe(summary: dict) -> str:
    """The human-readable report of a run: scores, embeddings, readable recurrent weights."""
    c = summary["config"]
    lines = [f"{c['task']} with {c['model']} (n_fac {c['n_fac']}, hidden {c['hidden']}, backend {c['backend']}): "
             f"{summary['successes']}/{summary['restarts']} restarts succeeded",
             f"best seed {summary['best_seed']}: valid MSE {summary['valid_mse']:.4g}, "
             f"valid exact-match accuracy {summary['valid_accuracy']:.3f} "
             f"({summary['n_valid']} examples; {summary['n_train']} trained on)",
             "embeddings:"]
    for symbol, vector in summary["embedding"].items():
        lines.append(f"  {symbol!r}: " + " ".join(f"{v:+.3f}" for v in vector))
    if summary["digits_ordered"] is not None:
        lines.append(f"digit embeddings are {summary['digits_ordered']} in the digit's value")
    for name, weight in summary["recurrent_weights"].items():
        lines.append(f"{name}:")
        lines += ["  " + " ".join(f"{v:+.3f}" for v in row) for row in weight]
    return "\n".join(lines)


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save_figure(fig, path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return str(path)


def plot_embeddings(summary: dict, path) -> str:
    """Save a PNG of the symbol embeddings: values for --n-fac 1, else the first two principal axes."""
    plt = _figure()
    symbols = list(summary["embedding"])
    table = torch.tensor([summary["embedding"][s] for s in symbols])
    fig, ax = plt.subplots(figsize=(6, 4))
    if table.shape[1] == 1:
        ax.scatter(range(len(symbols)), table[:, 0])
        ax.set_xticks(range(len(symbols)), symbols)
        ax.set_xlabel("symbol")
        ax.set_ylabel("embedding")
    else:
        centred = table - table.mean(0)
        points = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
        ax.scatter(points[:, 0], points[:, 1])
        for s, (x, y) in zip(symbols, points.tolist()):
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("principal axis 1")
        ax.set_ylabel("principal axis 2")
    c = summary["config"]
    ax.set_title(f"{c['task']}: {c['model']} embeddings (n_fac {c['n_fac']}, hidden {c['hidden']})")
    saved = _save_figure(fig, path)
    plt.close(fig)
    return saved


def parse_int_list(text: str, name: str) -> list:
    """"1,2,5" -> [1, 2, 5]; a ValueError names the option when the list is empty or holds a value < 1."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{name} needs at least one value, e.g. {name} 1,2,5")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name} takes whole numbers separated by commas, got {text!r}") from None
    if min(values) < 1:
        raise ValueError(f"{name} values must be at least 1, got {text!r}")
    return values


def parse_models(text: str) -> list:
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    if not names:
        raise ValueError(f"--models needs at least one of {','.join(CALCULATORS)}")
    unknown = [n for n in names if n not in CALCULATORS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} in --models: choose from {','.join(CALCULATORS)}")
    return names


RESULT_TYPES = {"successes": int, "success_rate": float, "valid_mse": float, "valid_accuracy": float,
                "best_seed": int, "train_seconds": float}
# A study's rows are keyed by every setting of a run; where a run would be saved is not one.
SETTINGS = [f.name for f in fields(CalcConfig) if f.name not in ("out", "save")]
STUDY_FIELDS = SETTINGS + list(RESULT_TYPES)
STUDY_DEFAULT_HIDDEN = {"count-ones": [5]}
STUDY_DEFAULT_LENGTHS = [8, 16, 32, 64, 128]


def _row_key(row: dict) -> tuple:
    return tuple(str(row[name]) for name in SETTINGS)


def study(base: CalcConfig, models, hidden_sizes=None, lengths=None, out="calc-study", log=None) -> dict:
    """Train every model at every hidden size (and, for count-ones, every length) with
    base.restarts restarts each; write study.csv, study.png and study.md into `out`.

    Defaults: hidden 1,2,5,10,20,40 for arithmetic and 5 for count-ones; lengths 8..128 for
    count-ones. The CSV is rewritten after every cell, and a rerun with the same settings skips
    the cells it already holds, so an interrupted study resumes.
    """
    base = replace(base, out=None, save=False)
    base.check()
    check_output_folder(out, "--out")
    if not models:
        raise ValueError(f"--models needs at least one of {','.join(CALCULATORS)}")
    hidden_sizes = list(hidden_sizes or STUDY_DEFAULT_HIDDEN.get(base.task, [1, 2, 5, 10, 20, 40]))
    if base.task == "count-ones":
        lengths = list(lengths or STUDY_DEFAULT_LENGTHS)
    elif lengths:
        raise ValueError("--length applies to count-ones only; drop it or use --task count-ones")
    else:
        lengths = [base.length]
    configs = [replace(base, model=model, hidden=hidden, length=length)
               for model in models for hidden in hidden_sizes for length in lengths]
    for config in configs:  # every cell is checked before the first one trains
        config.check()
        _check_memory(config)
    out = Path(out)
    csv_path = out / "study.csv"
    done = {}
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            done = {_row_key(r): r for r in csv.DictReader(f) if set(STUDY_FIELDS) <= set(r)}
    rows = []
    for config in configs:
        key = _row_key(asdict(config))
        cell = f"{config.model} hidden {config.hidden}" + (
            f" length {config.length}" if base.task == "count-ones" else "")
        if key in done:
            rows.append(_typed_row(done[key]))
            if log:
                log(f"{cell}: already in {csv_path}")
            continue
        _, summary = train(config)
        rows.append({**{k: getattr(config, k) for k in SETTINGS},
                     **{k: summary[k] for k in STUDY_FIELDS if k in summary}})
        if log:
            log(f"{cell}: {summary['successes']}/{config.restarts} succeeded, best valid accuracy "
                f"{summary['valid_accuracy']:.3f}")
        _write_csv(csv_path, rows, list(done.values()))
    _write_csv(csv_path, rows, list(done.values()))
    sweep = "length" if base.task == "count-ones" and len(lengths) > 1 else "hidden"
    table = study_table(rows, sweep)
    atomic_write_bytes(out / "study.md", table.encode())
    png = plot_study(rows, sweep, out / "study.png")
    learned = [r for r in rows if r["successes"] > 0]
    result = {
        "task": base.task, "success_rule": SUCCESS, "restarts": base.restarts, "sweep": sweep,
        "csv": str(csv_path), "png": png, "table": str(out / "study.md"),
        "smallest_hidden": {m: min((r["hidden"] for r in learned if r["model"] == m), default=None)
                            for m in models},
        "rows": rows,
    }
    if base.task == "count-ones":
        result["longest_length"] = {m: max((r["length"] for r in learned if r["model"] == m), default=None)
                                    for m in models}
    return result


def describe_study(result: dict) -> str:
    """The study's table, which model learned at which size or length, and where the files are."""
    def listing(found):
        return ", ".join(f"{m} {v if v is not None else 'none'}" for m, v in found.items())
    lines = [Path(result["table"]).read_text().rstrip("\n"),
             f"success: {result['success_rule']}",
             f"smallest hidden size with a success: {listing(result['smallest_hidden'])}"]
    if "longest_length" in result:
        lines.append(f"longest string counted: {listing(result['longest_length'])}")
    lines.append(f"wrote {result['csv']}, {result['png']} and {result['table']}")
    return "\n".join(lines)


def _typed_row(row: dict) -> dict:
    """A CSV row (all strings) back in the types train() gives."""
    types = {f.name: f.type for f in fields(CalcConfig) if f.name in SETTINGS} | RESULT_TYPES
    return {k: types[k](row[k]) for k in STUDY_FIELDS}


def _write_csv(path: Path, rows: list, earlier: list) -> None:
    """Write this study's rows, plus earlier rows of other settings, so that no result is lost."""
    keys = {_row_key(r) for r in rows}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STUDY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in [r for r in earlier if _row_key(r) not in keys] + rows:
        writer.writerow(row)
    atomic_write_bytes(path, buffer.getvalue().encode())


def study_table(rows: list, sweep: str) -> str:
    """A markdown table: one line per model (and hidden size when sweeping lengths), one column
    per swept value, cells "successes/restarts"."""
    values = sorted({r[sweep] for r in rows})
    label = "hidden" if sweep == "hidden" else "length"
    lines = ["| model | " + " | ".join(f"{label} {v}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    groups = {}
    for r in rows:
        name = r["model"] if sweep == "hidden" else f"{r['model']} (hidden {r['hidden']})"
        groups.setdefault(name, {})[r[sweep]] = r
    for name, cells in groups.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{cells[v]['successes']}/{cells[v]['restarts']}" if v in cells else "" for v in values) + " |")
    return "\n".join(lines) + "\n"


def plot_study(rows: list, sweep: str, path) -> str:
    """Success rate over restarts against the swept value, one line per model."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = {}
    for r in rows:
        name = r["model"] if sweep == "hidden" else f"{r['model']} h{r['hidden']}"
        groups.setdefault(name, []).append((r[sweep], r["success_rate"]))
    # Lines often coincide at 0 or 1: distinct markers and dashes keep each model visible.
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("v", ":"), ("D", "-")]
    for k, (name, points) in enumerate(groups.items()):
        points.sort()
        marker, dash = styles[k % len(styles)]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, linestyle=dash,
                markersize=8 - k % 4, alpha=0.8, label=name)
    values = sorted({r[sweep] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel("hidden size" if sweep == "hidden" else "string length")
    ax.set_ylabel("success rate over restarts")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{rows[0]['task']}: share of restarts with validation exact-match accuracy 1.0",
                 fontsize=10)
    ax.legend()
    saved = _save_figure(fig, path)
    plt.close(fig)
    return saved


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def summary_json(summary: dict) -> str:
    """One JSON object; infinities (a diverged run) become null so that every parser reads it."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return json.dumps(clean(summary))
