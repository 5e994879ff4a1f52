import json
import sys
from typing import Annotated, Optional

import typer


def sample(
    prime: Annotated[str, typer.Option(help="Text the generation continues (the notebook's "
                                       "\"Good mo\").")] = "Good mo",
    length: Annotated[int, typer.Option(help="Characters to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 picks the likeliest "
                                               "char.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k likeliest chars only "
                                                 "(default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same text.")] = 0,
    checkpoint: Annotated[Optional[str], typer.Option(help="A run folder written by --out or a "
                                                      "checkpoint file (default: the newest under "
                                                      "--runs).")] = None,
    runs: Annotated[str, typer.Option(help="Runs folder searched when no --checkpoint is given.")]
    = "runs",
    backend: Annotated[Optional[str], typer.Option(help="Recurrent implementation to sample with: "
                                                   "fused, reference or torch (default: as "
                                                   "trained).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout "
                                              "instead of streaming the text.")] = False,
):
    """Generate text from a trained charlstm model, streaming it to stdout."""
    from charlstm.sample import sample as run_sample

    started = []

    def stream(char):
        # The prime is echoed with the first generated char, so a rejected prime prints nothing.
        if not started:
            started.append(True)
            sys.stdout.write(prime)
        sys.stdout.write(char)
        sys.stdout.flush()

    try:
        result = run_sample(prime, length, temperature, top_k, seed, checkpoint, runs, backend,
                            on_char=None if json_output else stream)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_output:
        print(json.dumps(result))
    else:
        print(prime if not started else "")
