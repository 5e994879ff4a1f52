import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option(
        help="A .zip (first member, as text8.zip), a text file or a folder of .txt files; normalised "
             "to text8 form. Default: text8, downloaded once into $CHARLSTM_HOME (~/.cache/charlstm).")] = None,
    url: Annotated[Optional[str], typer.Option(
        help="Where to download text8 from. Default: $CHARLSTM_TEXT8_URL, else "
             "http://mattmahoney.net/dc/text8.zip.")] = None,
    nodes: Annotated[int, typer.Option(help="Hidden units (assignment: 64).")] = 64,
    batch_size: Annotated[int, typer.Option(help="Rows per batch (assignment: 64).")] = 64,
    unrollings: Annotated[int, typer.Option(help="Characters per window (assignment: 10).")] = 10,
    steps: Annotated[int, typer.Option(help="Training steps (assignment: 3001).")] = 3001,
    lr: Annotated[float, typer.Option(help="Initial learning rate of plain SGD (assignment: 10).")] = 10.0,
    decay_steps: Annotated[int, typer.Option(
        help="Multiply the learning rate by --decay-rate every this many steps (assignment: 5000).")] = 5000,
    decay_rate: Annotated[float, typer.Option(help="Staircase learning-rate decay (assignment: 0.1).")] = 0.1,
    clip: Annotated[float, typer.Option(help="Clip gradients to this global norm (assignment: 1.25).")] = 1.25,
    init: Annotated[str, typer.Option(
        help="Weight init: truncated_normal:MEAN,STD (cut at 2 std), normal:MEAN,STD or uniform:LOW,HIGH; "
             "biases start at zero (assignment: truncated_normal:-0.1,0.1).")] = "truncated_normal:-0.1,0.1",
    valid_size: Annotated[int, typer.Option(
        help="Validation characters, taken from the start of the text (assignment: 1000).")] = 1000,
    summary_frequency: Annotated[int, typer.Option(
        help="Print loss, perplexities and a sample every this many steps (assignment: 100).")] = 100,
    cell: Annotated[str, typer.Option(help="Recurrent cell: lstm (assignment), gru or rnn (tanh).")] = "lstm",
    backend: Annotated[str, typer.Option(
        help="fused (charlstm's kernels), reference (plain PyTorch cells) or torch (torch.nn's "
             "kernels on one-hot inputs).")] = "fused",
    seed: Annotated[int, typer.Option(help="Random seed (the assignment sets none).")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch. Default: torch's.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 (assignment) or float64.")] = "float32",
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for config.json, metrics.jsonl, checkpoint.pt and result.json.")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run saved in this folder (by --out); only --steps, --summary-frequency, "
             "--threads, --device and --out may change.")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar and summaries on stderr.")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Train the character LSTM of the Udacity deep-learning assignment 6_lstm and report
    validation perplexity. Defaults are the assignment's: text8, 64 nodes, batch 64, 10
    unrollings, 3001 steps of SGD at 10 decayed x0.1 every 5000, clipping at norm 1.25."""
    from charlstm.train import TrainConfig, TrainingDiverged, TrainingInterrupted, resume_config
    from charlstm.train import train as run

    options = {name: value for name, value in ctx.params.items()
               if name not in ("resume", "progress", "json_output")}
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    try:
        if resume is not None:
            given = {k: v for k, v in options.items()
                     if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}
            config = resume_config(resume, **given)
        else:
            config = TrainConfig(**options)
        result = run(config, progress=progress)
    except (ValueError, OSError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    except TrainingDiverged as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except TrainingInterrupted as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(130) from None
    if json_output:
        print(json.dumps(result))
        return
    print(f"validation perplexity {result['valid_perplexity']:.3f}, {result['valid_bpc']:.4f} bits per "
          f"character after {result['steps']} steps; {result['seconds']:.1f} s in all, "
          f"{result['train_seconds']:.1f} s training, {result['tokens_per_second']:,.0f} tokens/s")

