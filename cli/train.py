import json
from typing import Annotated

import typer

from charlstm.config import TrainConfig
from charlstm_cli.options import config_options, given


@config_options(TrainConfig, exclude=("resume",))
def train(
    ctx: typer.Context,
    config: TrainConfig,
    resume: Annotated[str | None, typer.Option(
        help="Continue the run saved in this folder (or its checkpoint.pt), writing into it; "
             "only --steps, --summary-frequency, --threads and --device may change.")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar and summaries on stderr.")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
    = False,
):
    """Train the character LSTM of the Udacity assignment 6_lstm; report validation perplexity.

    Defaults are the assignment's: text8, 64 nodes, batch 64, 10 unrollings, 3001 steps of SGD
    at 10 decayed x0.1 every 5000, clipping at norm 1.25. The run is saved in
    runs/train-TIMESTAMP unless --out or --no-save says otherwise; `charlstm sample` samples the
    newest."""
    from charlstm.train import resume_config
    from charlstm.train import train as run

    if resume is not None:
        config = resume_config(resume, **given(ctx, TrainConfig, exclude=("resume",)))
    result = run(config, progress=progress)
    if json_output:
        print(json.dumps(result))
        return
    print(f"validation perplexity {result['valid_perplexity']:.3f}, {result['valid_bpc']:.4f} "
          f"bits per character after {result['steps']} steps; {result['seconds']:.1f} s in all, "
          f"{result['train_seconds']:.1f} s training, {result['tokens_per_second']:,.0f} tokens/s"
          + (f"; saved in {result['out']}" if result["out"] else ""))
