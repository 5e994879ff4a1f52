import json
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from charlstm.config import RUNS_DIR


class _RunByDefault(TyperGroup):
    """`charlstm sweep --nodes 2,4` means `charlstm sweep run --nodes 2,4`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                  help="Hyperparameter studies: grids of `charlstm train` runs, resumable, on "
                       "many processes and machines, ending in plots and a report.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    preset: Annotated[Optional[str], typer.Option(
        help="Run a named set of studies: `udacity` is the assignment's five (batch size, nodes, "
             "unrollings, steps, nodes x unrollings) and the six single runs of the write-up it "
             "reproduces.")] = None,
    scale: Annotated[float, typer.Option(
        help="Multiply the preset's training steps (0.1 for a quick look).")] = 1.0,
    repeats: Annotated[int, typer.Option(help="Seeds per grid point.")] = 1,
    seed: Annotated[int, typer.Option(help="First seed; repeats use seed, seed+1, ...")] = 0,
    out: Annotated[str, typer.Option(
        help="Output folder: the SQLite study (unless --storage), CSV, plots, report.md.")]
        = f"{RUNS_DIR}/sweep",
    storage: Annotated[Optional[str], typer.Option(
        help="Optuna RDB URL shared by every process and machine, e.g. "
             "postgresql://user:pw@host/db. Default: sqlite in --out.")] = None,
    study: Annotated[str, typer.Option(
        help="Study name in the storage (a preset adds .<study> per study).")] = "sweep",
    workers: Annotated[int, typer.Option(
        help="Local worker processes; each trains with cores / workers threads.")] = 1,
    heartbeat: Annotated[int, typer.Option(
        help="Seconds between a worker's heartbeats; a trial silent for 4 of them is rerun.")]
        = 30,
    report: Annotated[bool, typer.Option(help="Write the report when the sweep ends.")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
        = False,
):
    """Run (or resume) a grid of trainings: `--nodes 2,4,8 --unrollings 1,2,3` sweeps the product.

    Any `charlstm train` option is a parameter: a comma-separated list sweeps it, one value fixes
    it, the rest keep train's defaults. Running the same command again resumes: finished trials
    are kept, trials of dead workers rerun. Progress goes to stderr.
    """
    from charlstm import sweep
    from charlstm_cli.errors import FAILED

    grids = sweep.grids_from(ctx.args, preset, scale=scale, repeats=repeats, seed=seed,
                             study=study)
    summary = sweep.run(grids, out=out, storage=storage, workers=workers,
                        heartbeat_seconds=heartbeat, report=report)
    unfinished = summary["complete"] < summary["units"]
    if json_output:
        print(json.dumps(summary))
    else:
        print(f"{summary['complete']}/{summary['units']} trainings done in "
              f"{summary['seconds']:.1f} s"
              + (f"; report: {summary['report']}" if summary.get("report") else ""))
        if summary["workers_lost"] and unfinished:
            print(f"{summary['workers_lost']} worker(s) ended with an error (see stderr); run the "
                  "same command again to finish the grid")
    if summary["failed"]:
        # One line per distinct error, however many trainings it stopped.
        errors = {}
        for failure in summary["failed"]:
            errors.setdefault(failure["error"], []).append(failure)
        for error, failures in errors.items():
            first = failures[0]
            more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
            print(f"Error: {len(failures)} of {summary['units']} trainings failed "
                  f"({first['study']} {first['unit']}{more}): {error}; fix that and run the "
                  "same command again to retry them", file=sys.stderr)
        raise typer.Exit(FAILED)
    if unfinished:
        print(f"Error: {summary['units'] - summary['complete']} of {summary['units']} trainings "
              "are not done (a worker was lost); run the same command again to finish the grid",
              file=sys.stderr)
        raise typer.Exit(FAILED)


@app.command("report")
def report_command(
    folder: Annotated[str, typer.Argument(help="The sweep's output folder (its --out).")],
    storage: Annotated[Optional[str], typer.Option(
        help="The storage URL the sweep used, when it was not the folder's SQLite file.")] = None,
    study: Annotated[Optional[list[str]], typer.Option(
        help="Study names to report (repeatable). Default: those the sweep recorded.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
        = False,
):
    """Write trials.csv, the plots and report.md for a sweep's folder, from its trials."""
    from charlstm.sweep.report import write_report

    path = write_report(folder, storage=storage, studies=study or None)
    if json_output:
        print(json.dumps({"report": path}))
    else:
        print(path)
