"""Training speed of the speech LSTM (lstm-seq) on the fused backend against torch.nn.LSTM.

Both models start from the same weights and train on the same random char batches; steps of the
backends are interleaved, in an order that rotates every step, so machine noise hits them alike.
Adam is fused, as in `charlstm speech`. Besides the fused, torch and reference backends, `embedded`
is the fused model with its embedding applied before the LSTM (float input), rather than handed to
it and folded into the input weight as the model does. Prints median seconds per step and the
ratio, and writes JSON to benchmarks/results/speech_lstm.json.

    python benchmarks/speech_lstm.py            # the notebook's sizes: batch 64, bptt 8, 42/256
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from charlstm.bench_suite import round_order
from charlstm.checkpoint import atomic_write_bytes
from charlstm.models import build_model

BACKENDS = ("fused", "embedded", "torch", "reference")


def embedded_forward(model):
    """The sequence model's forward with the embedding applied first: float input to the LSTM."""
    def forward(x, state=None):
        y, state = model.rnn(model.embed(x), state)
        return model.out(model.drop(y)), state
    return forward


def step_seconds(model, optimizer, x, y):
    began = time.perf_counter()
    logits, _ = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=8)
    parser.add_argument("--embedding", type=int, default=42)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=91, help="91: the vocabulary of a folder of 50 speeches")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/speech_lstm.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = dict(embedding=args.embedding, hidden=args.hidden, layers=args.layers)
    start = build_model("lstm-seq", args.vocab, **config, backend="torch").state_dict()
    runs = {}
    for backend in BACKENDS:
        model = build_model("lstm-seq", args.vocab, **config, backend="fused" if backend == "embedded" else backend)
        model.load_state_dict(start)
        if backend == "embedded":
            model.forward = embedded_forward(model)
        runs[backend] = (model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True), [])
    data = torch.randint(0, args.vocab, (args.warmup + args.steps, args.bptt + 1, args.batch))
    for i, batch in enumerate(data):
        for backend in round_order(runs, i):
            model, optimizer, times = runs[backend]
            seconds = step_seconds(model, optimizer, batch[:-1], batch[1:])
            if i >= args.warmup:
                times.append(seconds)

    medians = {b: statistics.median(t) for b, (_, _, t) in runs.items()}
    chars = args.batch * args.bptt
    print(f"lstm-seq training step, batch {args.batch}, bptt {args.bptt}, embedding {args.embedding}, "
          f"hidden {args.hidden}, layers {args.layers}, {torch.get_num_threads()} threads")
    print(f"{'backend':<10} {'ms/step':>9} {'chars/s':>10} {'vs torch':>9}")
    for backend, median in medians.items():
        print(f"{backend:<10} {median * 1e3:9.2f} {chars / median:10.0f} "
              f"{medians['torch'] / median:8.2f}x")
    result = {"args": vars(args), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "median_step_seconds": medians,
              "chars_per_second": {b: chars / m for b, m in medians.items()},
              "fused_speedup_over_torch": medians["torch"] / medians["fused"],
              "fused_speedup_over_embedded": medians["embedded"] / medians["fused"]}
    atomic_write_bytes(Path(args.out), json.dumps(result, indent=2).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
