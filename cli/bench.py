import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def bench(
    shapes: Annotated[str, typer.Option(
        help="Comma-separated BATCHxHIDDENxUNROLLINGS shapes to time.")]
    = "64x64x10,64x128x15,64x256x10,64x64x50",
    backends: Annotated[str, typer.Option(
        help="Comma-separated backends: fused, fused_step (the whole step as one op), reference, "
             "torch.")]
    = "fused,fused_step,reference,torch",
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds; the median is reported.")]
    = 15,
    steps_per_round: Annotated[int, typer.Option(help="Training steps timed per round.")] = 10,
    device: Annotated[str, typer.Option(help="Device to time on: cpu or cuda.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help="torch threads (default: torch's).")]
    = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the JSON result to this file.")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
    = False,
    suite: Annotated[Optional[str], typer.Option(
        help="'general': a char-rnn step (embedding or ids, Adam) on charlstm.nn against torch.nn "
             "over a grid of batch, hidden, steps and layers, with the product floor; ignores "
             "--shapes and --backends.")]
    = None,
    cells: Annotated[str, typer.Option(
        help="With --suite general: comma-separated cells, lstm,gru,rnn.")]
    = "lstm,gru,rnn",
    budget: Annotated[float, typer.Option(
        help="With --suite general: seconds of timing per grid cell.")]
    = 0.6,
    hidden: Annotated[Optional[str], typer.Option(
        help="With --suite general: only these comma-separated hidden sizes of the grid, e.g. "
             "64,128 (time a long grid in several runs).")]
    = None,
    batch: Annotated[Optional[str], typer.Option(
        help="With --suite general: only these comma-separated batch sizes of the grid, e.g. 1.")]
    = None,
    inputs: Annotated[Optional[str], typer.Option(
        help="With --suite general: comma-separated input kinds instead of the grid's float,ids; "
             "'embedding' hands the embedding to charlstm.nn (embedding=), summarised apart.")]
    = None,
):
    """Time one training step (forward, softmax cross-entropy, backward, clip, SGD) per backend."""
    import torch

    from charlstm.bench import bench_training_step, parse_backends, parse_shapes, table
    from charlstm.checkpoint import atomic_write_json
    from charlstm.config import check_output_file, check_threads

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    check_threads(threads)
    if out is not None:
        check_output_file(out, "--out", "bench.json")
    chosen, sizes = parse_backends(backends), parse_shapes(shapes)
    if threads:
        torch.set_num_threads(threads)
    if suite is not None:
        from charlstm.bench_suite import general_suite
        if suite != "general":
            raise ValueError(f"unknown suite {suite!r}: the one suite is 'general'")
        if budget < 0:
            raise ValueError(f"--budget must be at least 0, got {budget}")
        general_suite(cells, device, budget, out, json_output, hidden, batch, inputs)
        return
    result = bench_training_step(sizes, chosen, rounds, steps_per_round, device=device,
                                 log=lambda row: typer.echo(json.dumps(row), err=True))
    if out:
        atomic_write_json(out, result)
    if json_output:
        print(json.dumps(result))
        return
    from rich.console import Console

    Console().print(table(result))
