import json
import sys
from typing import Annotated, Optional

import typer

from charlstm.models import DEFAULT_BACKEND


def speech(
    corpus: Annotated[str, typer.Option(help="A directory of .txt files (recursive), a .zip of them, "
                                        "one text file, or cops:PRESIDENT (e.g. cops:obama) to fetch "
                                        "the Corpus of Presidential Speeches into the cache.")],
    model: Annotated[str, typer.Option(help="fc3, char3, charloop, rnn (window models) or rnn-seq, "
                                       "gru-seq, lstm-seq (stateful sequence models).")] = "lstm-seq",
    embedding: Annotated[int, typer.Option(help="Char embedding size (notebook: 42).")] = 42,
    hidden: Annotated[int, typer.Option(help="Hidden size (notebook: 256).")] = 256,
    layers: Annotated[int, typer.Option(help="Recurrent layers of the sequence models.")] = 1,
    dropout: Annotated[float, typer.Option(help="Dropout of the sequence models (between layers "
                                           "and before the output).")] = 0.0,
    backend: Annotated[str, typer.Option(help="Recurrent implementation: fused, reference or torch.")]
    = DEFAULT_BACKEND,
    bptt: Annotated[int, typer.Option(help="Window length of truncated backprop for the sequence "
                                      "models (notebook: 8).")] = 8,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size; default the notebook's: 512 "
                                                      "windows, or 64 streams for sequence models.")]
    = None,
    lr: Annotated[Optional[list[float]], typer.Option(help="Adam learning rate of each stage, repeat "
                                                      "for a schedule (notebook: 1e-2 then 1e-3).")]
    = None,
    epochs: Annotated[int, typer.Option(help="Epochs at each learning rate (notebook: 1).")] = 1,
    max_steps: Annotated[Optional[int], typer.Option(help="Cap on batches per epoch, for a reduced "
                                                     "budget (default: whole epochs).")] = None,
    valid_fraction: Annotated[float, typer.Option(help="Share of the text, taken from its end as "
                                                  "one block, used for validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed (init, shuffling, dropout).")] = 0,
    out: Annotated[Optional[str], typer.Option(help="Run folder for config.json, metrics.json and "
                                               "checkpoint.pt; an unfinished run there resumes. "
                                               "Default: runs/MODEL-TIMESTAMP.")] = None,
    cops_url: Annotated[Optional[str], typer.Option(help="Where to download the Corpus of Presidential "
                                                    "Speeches zip (default: $CHARLSTM_COPS_URL or "
                                                    "the Grammar Lab link).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout: "
                                              "final train/valid loss and bits per char.")] = False,
):
    """Train a char model of the fast.ai lesson 6 ladder on a speech corpus."""
    from charlstm.speech import SpeechConfig, train_speech

    config = SpeechConfig(corpus=corpus, model=model, embedding=embedding, hidden=hidden,
                          layers=layers, dropout=dropout, backend=backend, bptt=bptt,
                          batch_size=batch_size, lrs=list(lr) if lr else [1e-2, 1e-3],
                          epochs_per_lr=epochs, max_steps_per_epoch=max_steps,
                          valid_fraction=valid_fraction, seed=seed, cops_url=cops_url)
    log = (lambda line: print(line, file=sys.stderr)) if json_output else print
    try:
        result = train_speech(config, out=out, progress=sys.stderr.isatty(), log=log)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_output:
        print(json.dumps(result))
    else:
        print(f"{result['model']}: valid {result['valid_loss']:.4f} nats/char "
              f"({result['valid_bits_per_char']:.4f} bits/char); checkpoint {result['checkpoint']}")
