import json
from typing import Annotated

import typer


def info(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Show how charlstm was built: torch version, CUDA kernels, OpenMP, threads, devices."""
    from charlstm import build_info

    report = build_info()
    if json_output:
        print(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="charlstm build", show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    Console().print(table)
