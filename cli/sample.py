import json
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from charlstm.config import SampleConfig
from charlstm_cli.options import config_options


@config_options(SampleConfig)
def sample(
    config: SampleConfig,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout "
                                              "instead of streaming the text.")] = False,
):
    """Generate text from a trained charlstm model, streaming it to stdout."""
    from charlstm.sample import sample as run_sample

    def stream(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    result = run_sample(**asdict(config), on_prime=None if json_output else stream,
                        on_char=None if json_output else stream,
                        log=lambda note: print(note, file=sys.stderr, flush=True))
    if json_output:
        print(json.dumps(result))
    else:
        print()
