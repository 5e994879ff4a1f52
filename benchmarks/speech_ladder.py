"""Train the whole speech ladder on one corpus and tabulate it: parameters, train and validation
loss (nats and bits per char), training time and a 200-char sample per model.

The prime is "\\nGood mo" (a paragraph that starts "Good mo"): 8 chars, so the window-8 models
(charloop, rnn) can take it too. Runs go to --runs/MODEL, so an interrupted ladder resumes.
Writes the table as markdown and the results as JSON into --runs.

    python benchmarks/speech_ladder.py --corpus cops:obama
    python benchmarks/speech_ladder.py --corpus speeches/     # a folder of .txt files
"""

import argparse
import json
from pathlib import Path

import torch

from charlstm.checkpoint import atomic_write_bytes
from charlstm.config import SPEECH_MODELS, SpeechConfig
from charlstm.sample import sample
from charlstm.speech import train_speech


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True,
                        help="as charlstm speech --corpus: a folder of .txt files, a .zip of them, "
                             "a text file or cops:PRESIDENT")
    parser.add_argument("--models", nargs="+", default=list(SPEECH_MODELS))
    parser.add_argument("--epochs", type=int, default=1, help="epochs per learning rate")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on batches per epoch")
    parser.add_argument("--backend", default="fused")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prime", default="\nGood mo")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--runs", default="runs/ladder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        config = SpeechConfig(corpus=args.corpus, model=name, backend=args.backend,
                              epochs_per_lr=args.epochs, max_steps_per_epoch=args.max_steps,
                              out=str(Path(args.runs) / name))
        result = train_speech(config, progress=False,
                              log=lambda line, name=name: print(f"{name}: {line}", flush=True))
        text = sample(args.prime, args.length, seed=0, checkpoint=result["checkpoint"])["text"]
        rows.append({**result, "prime": args.prime, "sample": text})
        print(f"{name}: {args.prime + text!r}", flush=True)

    lines = ["| model | parameters | train nats/char | valid nats/char | valid bits/char | train s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['parameters']:,} | {r['train_loss']:.3f} | "
                     f"{r['valid_loss']:.3f} | {r['valid_bits_per_char']:.3f} | {r['train_seconds']:.0f} |")
    table = "\n".join(lines)
    samples = "\n\n".join(f"`{r['model']}`:\n\n    " + (r["prime"] + r["sample"]).replace("\n", "\n    ")
                          for r in rows)
    print(table)
    runs = Path(args.runs)
    atomic_write_bytes(runs / "ladder.md", (table + "\n\n" + samples + "\n").encode())
    atomic_write_bytes(runs / "ladder.json", json.dumps(
        {"args": vars(args), "threads": torch.get_num_threads(), "rows": rows}, indent=2).encode())


if __name__ == "__main__":
    main()
