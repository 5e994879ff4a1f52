"""Generate text from a trained char model, one character at a time from a prime.

A checkpoint is any dict with "model" ({"name", "config"}), "state_dict" and "vocab" (a list of
single characters, or a string): what `charlstm speech` and `charlstm train` write. With no
checkpoint given, the most recently written `*.pt` under the runs folder (./runs) is used.
"""

from pathlib import Path
from typing import Iterator

import torch

from charlstm.checkpoint import load_checkpoint
from charlstm.data.speeches import Vocab, _show
from charlstm.models import BACKENDS, build_model, model_config_keys
from charlstm.speech import CHECKPOINT_FILE, RUNS_DIR


def find_checkpoint(path=None, runs=RUNS_DIR) -> Path:
    """`path` itself if a file, its checkpoint.pt if a run folder, else the newest *.pt in `runs`."""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            if (path / CHECKPOINT_FILE).is_file():
                return path / CHECKPOINT_FILE
            found = sorted(path.glob("*.pt"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise ValueError(f"no checkpoint in {path}: pass a run folder written by --out "
                                 "or a checkpoint file")
            return found[-1]
        if not path.is_file():
            raise ValueError(f"no checkpoint at {path}: pass a run folder written by --out "
                             "or a checkpoint file")
        return path
    runs = Path(runs)
    found = sorted(runs.rglob("*.pt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise ValueError(f"no trained model under {runs}/: train one with `charlstm speech` "
                         "or pass --checkpoint PATH")
    return found[-1]


def load_model(path, backend: str | None = None):
    """The model, its vocabulary and the checkpoint's model description, ready for sampling.

    `backend` swaps the recurrent implementation of a model that has one (the weights are the
    same for all of them)."""
    path = Path(path)
    saved = load_checkpoint(path)
    missing = [k for k in ("model", "state_dict", "vocab") if not isinstance(saved, dict) or k not in saved]
    if missing or not isinstance(saved["model"], dict) or "name" not in saved["model"]:
        raise ValueError(f"{path} is not a charlstm model checkpoint (missing "
                         f"{', '.join(missing) or 'model.name'}): pass one written by "
                         "`charlstm speech` or `charlstm train`")
    name = saved["model"]["name"]
    config = dict(saved["model"].get("config") or {})
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if "backend" in model_config_keys(name):
            config["backend"] = backend
    vocab = Vocab(saved["vocab"])
    model = build_model(name, len(vocab), **config)
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, vocab, {"name": name, "config": config}


def _context(model):
    # A model without `context` is a sequence model: forward(x [T, B], state) -> (logits, state).
    return getattr(model, "context", None)


def check_prime(model, vocab: Vocab, prime: str) -> list[int]:
    missing = vocab.missing(prime)
    if missing:
        raise ValueError(f"the prime has characters outside the model's vocabulary: {_show(missing)}; "
                         f"the model knows {''.join(vocab.chars)!r}")
    context = _context(model)
    if context is None and not prime:
        raise ValueError("the prime is empty: give at least one character to start from")
    if context is not None and len(prime) < context:
        raise ValueError(f"the prime {prime!r} has {len(prime)} chars but this model reads a window "
                         f"of {context}: give a prime of at least {context} chars")
    return vocab.encode(prime)


def _pick(logits, temperature, top_k, generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


@torch.no_grad()
def generate(model, vocab: Vocab, prime: str, length: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> Iterator[str]:
    """Yield `length` characters that follow `prime`, one at a time. Temperature 0 is greedy;
    the same seed gives the same text."""
    if length < 0:
        raise ValueError(f"length must be at least 0, got {length}")
    if temperature < 0:
        raise ValueError(f"temperature must be at least 0 (0 picks the likeliest char), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    ids = check_prime(model, vocab, prime)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    context = _context(model)
    if context is None:
        logits, state = model(torch.tensor(ids).view(-1, 1))
        for _ in range(length):
            nxt = _pick(logits[-1, 0].float(), temperature, top_k, generator)
            yield vocab.chars[nxt]
            logits, state = model(torch.tensor([[nxt]]), state)
    else:
        window = list(ids[-context:])
        for _ in range(length):
            logits = model(torch.tensor([window]))
            nxt = _pick(logits[0].float(), temperature, top_k, generator)
            yield vocab.chars[nxt]
            window = window[1:] + [nxt]


def sample(prime: str = "Good mo", length: int = 200, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, checkpoint=None, runs=RUNS_DIR,
           backend: str | None = None, on_char=None) -> dict:
    """Generate from a checkpoint (default: the newest under `runs`), calling `on_char` with each
    character as it comes; return the prime, the generated text and where the model came from."""
    path = find_checkpoint(checkpoint, runs)
    model, vocab, described = load_model(path, backend)
    chars = []
    for char in generate(model, vocab, prime, length, temperature, top_k, seed):
        chars.append(char)
        if on_char is not None:
            on_char(char)
    return {"checkpoint": str(path), "model": described["name"], "prime": prime,
            "text": "".join(chars), "length": length, "temperature": temperature,
            "top_k": top_k, "seed": seed}
