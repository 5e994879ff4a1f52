import json
import sys
from typing import Annotated

import typer

from charlstm.config import ExplainConfig
from charlstm_cli.options import config_options


@config_options(ExplainConfig)
def explain(
    config: ExplainConfig,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout: "
                                              "the page's path, the mean bits per char and the "
                                              "unit ranking.")] = False,
):
    """Write one self-contained web page showing what a trained model sees in a text: surprise
    per char, the top-5 next chars on hover, units coloured red/blue, the units that track
    quotes, parentheses, line position..., and LSTM gate saturation. Calculators get their
    hidden state over a string such as "2+3" and their symbol embeddings."""
    from charlstm.explain import explain as run

    result = run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    if json_output:
        print(json.dumps(result))
        return
    if result["model"] == "calculator":
        print(f"{result['page']}: reads {result['string']!r} and predicts "
              f"{result['prediction']:.3f}" + ("" if result["target"] is None else
                                               f" (exact: {result['target']})"))
        return
    print(f"{result['page']}: {result['chars']:,} chars, {result['bits_per_char']:.4f} bits per "
          "char")
    for r in result["ranking"]:
        if r["rank"] == 1:
            print(f"  {r['feature']:<21} unit {r['unit']} (layer {r['layer']} {r['state']}), "
                  f"r = {r['correlation']:+.3f}")
