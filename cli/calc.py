from typing import Annotated, Optional

import typer

from charlstm.config import CALCULATORS, CalcConfig
from charlstm_cli.options import config_options

app = typer.Typer(add_completion=False)
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; progress "
                                                   "goes to stderr.")]


@app.callback(invoke_without_command=True)
@config_options(CalcConfig)
def calc(
    ctx: typer.Context,
    config: CalcConfig,
    plot: Annotated[Optional[str], typer.Option(help="Save a PNG of the learned embeddings here.")]
    = None,
    json_output: Json = False,
):
    """Train a tiny recurrent calculator with restarts; print its scores, embeddings and weights.

    `charlstm calc study --help` compares hidden sizes and string lengths.
    """
    if ctx.invoked_subcommand is not None:
        return
    from charlstm.calc import describe, stderr_log, summary_json, train

    _, summary = train(config, log=stderr_log, plot=plot)
    print(summary_json(summary) if json_output else describe(summary))


@app.command()
@config_options(CalcConfig, exclude=("model", "hidden", "length", "out", "save"))
def study(
    config: CalcConfig,
    models: Annotated[str, typer.Option(help="Models to compare, comma-separated.")]
    = ",".join(CALCULATORS),
    hidden: Annotated[Optional[str], typer.Option(
        help="Hidden sizes, comma-separated (default 1,2,5,10,20,40; 5 for count-ones).")] = None,
    length: Annotated[Optional[str], typer.Option(
        help="count-ones string lengths, comma-separated (default 8,16,32,64,128).")] = None,
    out: Annotated[Optional[str], typer.Option(
        help="Folder for study.csv, study.png and study.md (default runs/calc-study-TASK); "
             "a rerun with the same settings resumes from its study.csv.")] = None,
    json_output: Json = False,
):
    """Success rate over restarts of each model per hidden size (add/sub/mul) or string length
    (count-ones)."""
    from charlstm.calc import (describe_study, parse_int_list, parse_models, stderr_log,
                               summary_json)
    from charlstm.calc import study as run_study
    from charlstm.config import RUNS_DIR

    result = run_study(config, parse_models(models),
                       parse_int_list(hidden, "--hidden") if hidden is not None else None,
                       parse_int_list(length, "--length") if length is not None else None,
                       out if out is not None else f"{RUNS_DIR}/calc-study-{config.task}",
                       log=stderr_log)
    print(summary_json(result) if json_output else describe_study(result))
