"""The `charlstm` command line: one typer app, one module per command.

Each command parses its options (made from charlstm.config where a workload has a config),
calls one library function and prints; errors take the one style of charlstm_cli.errors.
Nothing here imports torch: the commands import the library when they run, so `--help` is quick.
"""

import typer

from charlstm_cli.bench import bench
from charlstm_cli.calc import app as calc_app
from charlstm_cli.errors import Group
from charlstm_cli.explain import explain
from charlstm_cli.info import info
from charlstm_cli.sample import sample
from charlstm_cli.speech import speech
from charlstm_cli.sweep import app as sweep_app
from charlstm_cli.train import train

app = typer.Typer(cls=Group, no_args_is_help=True, add_completion=False,
                  help="Character-level recurrent language models: fused kernels and classic "
                       "experiments.")
app.command()(info)
app.command()(bench)
app.command()(train)
app.add_typer(calc_app, name="calc")
app.add_typer(sweep_app, name="sweep")
app.command()(speech)
app.command()(sample)
app.command()(explain)

if __name__ == "__main__":
    app()
