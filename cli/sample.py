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

    started = []

    def stream(char):
        # The prime is echoed with the first generated char, so a rejected prime prints nothing.
        if not started:
            started.append(True)
            sys.stdout.write(config.prime)
        sys.stdout.write(char)
        sys.stdout.flush()

    result = run_sample(**asdict(config), on_char=None if json_output else stream)
    if json_output:
        print(json.dumps(result))
    else:
        print(config.prime if not started else "")
