import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def parse_shapes(spec: str):
    shapes = []
    for part in spec.split(","):
        try:
            b, h, t = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not BATCHxHIDDENxUNROLLINGS, e.g. 64x64x10")
        if min(b, h, t) < 1:
            raise typer.BadParameter(f"{part!r}: batch, hidden and unrollings must be at least 1")
        shapes.append((b, h, t))
    return shapes


def bench(
    shapes: Annotated[str, typer.Option(help="Comma-separated BATCHxHIDDENxUNROLLINGS shapes to time.")]
    = "64x64x10,64x128x15,64x256x10,64x64x50",
    backends: Annotated[str, typer.Option(
        help="Comma-separated backends: fused, fused_step (the whole step as one op), reference, torch.")]
    = "fused,fused_step,reference,torch",
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved timing rounds; the median is reported.")] = 15,
    steps_per_round: Annotated[int, typer.Option(min=1, help="Training steps timed per round.")] = 10,
    device: Annotated[str, typer.Option(help="Device to time on: cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads (default: torch's).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON result to this file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    suite: Annotated[Optional[str], typer.Option(
        help="'general': a char-rnn step (embedding or ids, Adam) on charlstm.nn against torch.nn over a grid "
             "of batch, hidden, steps and layers, with the product floor; ignores --shapes and --backends.")]
    = None,
    cells: Annotated[str, typer.Option(help="With --suite general: comma-separated cells, lstm,gru,rnn.")]
    = "lstm,gru,rnn",
    budget: Annotated[float, typer.Option(min=0.0, help="With --suite general: seconds of timing per grid cell.")]
    = 0.6,
    hidden: Annotated[Optional[str], typer.Option(
        help="With --suite general: only these comma-separated hidden sizes of the grid, e.g. 64,128"
             " (time a long grid in several runs).")]
    = None,
):
    """Time one training step (forward, softmax cross-entropy, backward, clip, SGD) per backend."""
    import torch

    from charlstm.bench import BACKENDS, bench_training_step
    from charlstm.checkpoint import atomic_write_bytes

    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown backend(s) {unknown}: choose from {', '.join(BACKENDS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda: no CUDA device is visible (see `charlstm info`)")
    if threads:
        torch.set_num_threads(threads)
    if suite is not None:
        from charlstm.bench_suite import general_suite
        if suite != "general":
            raise typer.BadParameter(f"unknown suite {suite!r}: the one suite is 'general'")
        try:
            general_suite(cells, device, budget, out, json_output, hidden)
        except ValueError as e:
            raise typer.BadParameter(str(e))
        return
    log = (lambda row: typer.echo(json.dumps(row), err=True))
    result = bench_training_step(parse_shapes(shapes), chosen, rounds, steps_per_round, device=device, log=log)
    if out:
        atomic_write_bytes(out, json.dumps(result, indent=2).encode())
    if json_output:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ms per training step (median of {rounds} rounds), {result['threads']} threads, {device}")
    ratio_keys = [k for k in ("fused_vs_torch", "fused_step_vs_torch", "fused_vs_reference")
                  if any(k in r for r in result["ratios"])]
    names = {"fused_vs_torch": "torch / fused", "fused_step_vs_torch": "torch / fused_step",
             "fused_vs_reference": "reference / fused"}
    for col in ["batch", "hidden", "unrollings", *chosen, *(names[k] for k in ratio_keys)]:
        table.add_column(col, justify="right")
    medians = {(t["batch"], t["hidden"], t["unrollings"], t["backend"]): t["median_ms"] for t in result["timings"]}
    for r in result["ratios"]:
        key = (r["batch"], r["hidden"], r["unrollings"])
        cells = [f"{medians[key + (b,)]:.2f}" for b in chosen]
        ratios = [f"{r[k]:.2f}x" if k in r else "-" for k in ratio_keys]
        table.add_row(*map(str, key), *cells, *ratios)
    Console().print(table)
