"""Generate text from a trained char model, one character at a time from a prime.

A checkpoint is a dict with "model" ({"name", "config"}), "state_dict" and "vocab" (a list of
single characters, or a string), as `charlstm speech` writes, or the "config" and "model" (weights)
that `charlstm train` writes. With no
checkpoint given, the most recently written `*.pt` under the runs folder (./runs) is used.
"""

from pathlib import Path
from typing import Iterator

import torch

from charlstm.checkpoint import load_checkpoint
from charlstm.data.normalize import TEXT8_ALPHABET
from charlstm.data.speeches import Vocab, quote_chars
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


def _describe(saved, path):
    """Model name, config, vocabulary and weights of a `charlstm speech` or `charlstm train` checkpoint."""
    if not isinstance(saved, dict):
        saved = {}
    model = saved.get("model")
    if isinstance(model, dict) and "name" in model and "state_dict" in saved and "vocab" in saved:
        return model["name"], dict(model.get("config") or {}), saved["vocab"], saved["state_dict"]
    train_config = saved.get("config")
    if isinstance(train_config, dict) and "nodes" in train_config and isinstance(model, dict):
        # charlstm train saves its TrainConfig and the UdacityLM weights; the alphabet is text8's.
        config = {k: train_config[k] for k in ("nodes", "cell", "backend", "init") if k in train_config}
        return "udacity", config, TEXT8_ALPHABET.decode("ascii"), model
    missing = [k for k in ("model", "state_dict", "vocab") if k not in saved]
    raise ValueError(f"{path} is not a charlstm model checkpoint (missing {', '.join(missing) or 'model.name'}): "
                     "pass one written by `charlstm speech` or `charlstm train`")


def load_model(path, backend: str | None = None):
    """The model, its vocabulary and the checkpoint's model description, ready for sampling.

    `backend` swaps the recurrent implementation of a model that has one (the weights are the
    same for all of them)."""
    path = Path(path)
    name, config, chars, state_dict = _describe(load_checkpoint(path), path)
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if "backend" in model_config_keys(name):
            config["backend"] = backend
    vocab = Vocab(chars)
    model = build_model(name, len(vocab), **config)
    model.load_state_dict(state_dict)
    model.eval()
    return model, vocab, {"name": name, "config": config}


def _context(model):
    # A model without `context` is a sequence model: forward(x [T, B], state) -> (logits, state).
    return getattr(model, "context", None)


def check_prime(model, vocab: Vocab, prime: str) -> list[int]:
    missing = vocab.missing(prime)
    if missing:
        raise ValueError(f"the prime has characters outside the model's vocabulary: {quote_chars(missing)}; "
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
        # UdacityLM wants its zero state spelled out; the speech models take None.
        state = model.initial_state(1) if hasattr(model, "initial_state") else None
        logits, state = model(torch.tensor(ids).view(-1, 1), state)
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
