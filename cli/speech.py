import json
import sys
from typing import Annotated

import typer

from charlstm.config import SpeechConfig
from charlstm_cli.options import config_options


@config_options(SpeechConfig)
def speech(
    config: SpeechConfig,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout: "
                                              "final train/valid loss and bits per char.")]
    = False,
):
    """Train a char model of the fast.ai lesson 6 ladder on a speech corpus."""
    from charlstm.speech import train_speech

    log = (lambda line: print(line, file=sys.stderr)) if json_output else print
    result = train_speech(config, progress=sys.stderr.isatty(), log=log)
    if json_output:
        print(json.dumps(result))
    else:
        saved = (f"checkpoint {result['checkpoint']}" if result["checkpoint"] else
                 "nothing saved (--no-save)")
        print(f"{result['model']}: valid {result['valid_loss']:.4f} nats/char "
              f"({result['valid_bits_per_char']:.4f} bits/char); {saved}")
