"""The `charlstm` command line: one typer app, one module per command."""

import typer

from charlstm_cli.bench import bench
from charlstm_cli.calc import app as calc_app
from charlstm_cli.info import info
from charlstm_cli.sample import sample
from charlstm_cli.speech import speech
from charlstm_cli.sweep import app as sweep_app
from charlstm_cli.train import train

app = typer.Typer(help="Character-level recurrent language models: fused kernels and classic experiments.",
                  no_args_is_help=True, add_completion=False)
app.command()(info)
app.command()(bench)
app.command()(train)
app.add_typer(calc_app, name="calc")
app.add_typer(sweep_app, name="sweep")
app.command()(speech)
app.command()(sample)

if __name__ == "__main__":
    app()
