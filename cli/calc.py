import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

# The library's TASKS, CALCULATORS and CALCULATOR_BACKENDS (a test keeps them equal), spelled out
# so that `charlstm --help` does not wait for torch to import.
TaskName = StrEnum("TaskName", {t: t for t in ("add", "sub", "mul", "count-ones")})
ModelName = StrEnum("ModelName", {m: m for m in ("linear", "tanh", "rnn", "gru", "lstm")})
BackendName = StrEnum("BackendName", {b: b for b in ("fused", "reference", "torch")})

app = typer.Typer(add_completion=False)

Task = Annotated[TaskName, typer.Option(
                                   help="add / sub / mul: \"2+3\" -> 5 over every operand pair; "
                                        "count-ones: a binary string -> its number of ones.")]
Digits = Annotated[int, typer.Option(min=1, help="Digits per operand (zero-padded) for add/sub/mul; "
                                                 "above 2, --samples random pairs are drawn.")]
Samples = Annotated[int, typer.Option(min=2, help="Examples to draw when there are too many to enumerate "
                                                  "(count-ones longer than 9 bits, add/sub/mul over 2 digits).")]
ValidFraction = Annotated[float, typer.Option(help="Fraction of the examples held out for validation, "
                                                   "drawn at random with --seed.")]
NFac = Annotated[int, typer.Option("--n-fac", min=1, help="Embedding size per symbol.")]
Epochs = Annotated[int, typer.Option(min=1, help="Epochs per restart at most; a restart stops early once "
                                                 "every training prediction is within 0.1 of its target.")]
Lr = Annotated[float, typer.Option(help="Adam learning rate (above 0).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Examples per Adam step.")]
Restarts = Annotated[int, typer.Option(min=1, help="Seeds to train (seed, seed+1, ...); the best is kept and "
                                                   "a restart succeeds when its validation exact-match "
                                                   "accuracy is 1.0.")]
Seed = Annotated[int, typer.Option(help="Seed of the validation split and of the first restart.")]
Backend = Annotated[BackendName, typer.Option(
                                      help="charlstm.nn backend of rnn / gru / lstm.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; progress goes to stderr.")]


@contextmanager
def _one_line_errors():
    """A ValueError from the library is a bad option: one line on stderr and exit code 2."""
    try:
        yield
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.callback(invoke_without_command=True)
def calc(
    ctx: typer.Context,
    task: Task = TaskName.add,
    model: Annotated[ModelName, typer.Option(
        help="linear: embedding and a linear recurrence; tanh: embedding, input layer, tanh recurrence; "
             "rnn / gru / lstm: charlstm.nn.")] = ModelName.linear,
    digits: Digits = 1,
    length: Annotated[Optional[int], typer.Option(
        min=1, help="Bits per string for count-ones [default: 8].")] = None,
    samples: Samples = 1000,
    valid_fraction: ValidFraction = 0.2,
    n_fac: NFac = 1,
    hidden: Annotated[int, typer.Option(min=1, help="Hidden state size.")] = 4,
    epochs: Epochs = 300,
    lr: Lr = 0.01,
    batch_size: BatchSize = 16,
    restarts: Restarts = 5,
    seed: Seed = 0,
    backend: Backend = BackendName.fused,
    plot: Annotated[Optional[Path], typer.Option(help="Save a PNG of the learned embeddings here.")] = None,
    json_output: Json = False,
):
    """Train a tiny recurrent calculator with restarts; print its scores, embeddings and weights.

    `charlstm calc study --help` compares hidden sizes and string lengths.
    """
    if ctx.invoked_subcommand is not None:
        return
    from charlstm.calc import CalcConfig, describe, plot_embeddings, stderr_log, summary_json, train

    with _one_line_errors():
        if length is not None and task != TaskName["count-ones"]:
            raise ValueError("--length applies to count-ones only; drop it or use --task count-ones")
        config = CalcConfig(task=task.value, model=model.value, digits=digits, length=length or 8,
                            samples=samples, valid_fraction=valid_fraction, n_fac=n_fac, hidden=hidden,
                            epochs=epochs, lr=lr, batch_size=batch_size, restarts=restarts, seed=seed,
                            backend=backend.value)
        _, summary = train(config, log=stderr_log)
    summary["plot"] = plot_embeddings(summary, plot) if plot else None
    print(summary_json(summary) if json_output else describe(summary))


@app.command()
def study(
    task: Task = TaskName.add,
    models: Annotated[str, typer.Option(help="Models to compare, comma-separated.")] = ",".join(ModelName),
    hidden: Annotated[Optional[str], typer.Option(
        help="Hidden sizes, comma-separated (default 1,2,5,10,20,40; 5 for count-ones).")] = None,
    length: Annotated[Optional[str], typer.Option(
        help="count-ones string lengths, comma-separated (default 8,16,32,64,128).")] = None,
    digits: Digits = 1,
    samples: Samples = 1000,
    valid_fraction: ValidFraction = 0.2,
    n_fac: NFac = 1,
    epochs: Epochs = 300,
    lr: Lr = 0.01,
    batch_size: BatchSize = 16,
    restarts: Restarts = 5,
    seed: Seed = 0,
    backend: Backend = BackendName.fused,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for study.csv, study.png and study.md (default runs/calc-study-TASK); "
             "a rerun with the same settings resumes from its study.csv.")] = None,
    json_output: Json = False,
):
    """Success rate over restarts of each model per hidden size (add/sub/mul) or string length (count-ones)."""
    from charlstm.calc import (CalcConfig, describe_study, parse_int_list, parse_models, stderr_log,
                               study as run_study, summary_json)

    with _one_line_errors():
        base = CalcConfig(task=task.value, digits=digits, samples=samples, valid_fraction=valid_fraction,
                          n_fac=n_fac, epochs=epochs, lr=lr, batch_size=batch_size, restarts=restarts,
                          seed=seed, backend=backend.value)
        result = run_study(base, parse_models(models),
                           parse_int_list(hidden, "--hidden") if hidden is not None else None,
                           parse_int_list(length, "--length") if length is not None else None,
                           out or Path("runs") / f"calc-study-{task.value}", log=stderr_log)
    print(summary_json(result) if json_output else describe_study(result))
