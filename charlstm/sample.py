"""Generate text from a trained char model, one character at a time from a prime.

Any checkpoint of `charlstm train` or `charlstm speech` samples (charlstm.checkpoint describes the
format, and reads checkpoints of charlstm 0.1.0 too); with none given, the most recently written
one under the runs folder (./runs) that writes text (not a calculator) is used. A model of the
27 text8 characters reads its prime in text8 form, as its training text was.
"""

import itertools
import json
from pathlib import Path
from typing import Iterator

import torch

from charlstm import checkpoint as checkpoints
from charlstm.config import SampleConfig, check_sampling
from charlstm.data.normalize import TEXT8_ALPHABET, normalize_text8
from charlstm.data.vocab import Vocab, quote_chars


def _context(model):
    # A model without `context` is a sequence model: forward(x [T, B], state) -> (logits, state).
    return getattr(model, "context", None)


def model_prime(vocab: Vocab, prime: str) -> tuple[str, str | None]:
    """The prime as the model reads it, and a note when that is not the prime as given: a model
    of text8's 27 characters reads it lowercased, digits spelled out, the rest as spaces."""
    if str(vocab) != TEXT8_ALPHABET.decode() or not vocab.missing(prime):
        return prime, None
    normalised = normalize_text8(prime)[0].decode("ascii")
    return normalised, f"prime normalised to text8 form: {normalised!r}"


def _check_chars(vocab: Vocab, prime: str) -> None:
    missing = vocab.missing(prime)
    if missing:
        raise ValueError(f"the prime has characters outside the model's vocabulary: "
                         f"{quote_chars(missing)}; the model knows {''.join(vocab.chars)!r}")


def check_prime(model, vocab: Vocab, prime: str) -> list[int]:
    _check_chars(vocab, prime)
    context = _context(model)
    if context is None and not prime:
        raise ValueError("the prime is empty; give at least one character to start from")
    if context is not None and len(prime) < context:
        raise ValueError(f"the prime {prime!r} has {len(prime)} chars but this model reads a window "
                         f"of {context}; give a prime of at least {context} chars")
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
    the same seed gives the same text. The model runs in eval mode and is left as it was."""
    check_sampling(length, temperature, top_k)
    ids = check_prime(model, vocab, prime)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        context = _context(model)
        if context is None:
            # UdacityLM wants its zero state spelled out; the speech models take None.
            state = model.initial_state(1) if hasattr(model, "initial_state") else None
            logits, state = model(torch.tensor(ids, device=device).view(-1, 1), state)
            for _ in range(length):
                nxt = _pick(logits[-1, 0].float().cpu(), temperature, top_k, generator)
                yield vocab.chars[nxt]
                logits, state = model(torch.tensor([[nxt]], device=device), state)
        else:
            window = list(ids[-context:])
            for _ in range(length):
                logits = model(torch.tensor([window], device=device))
                nxt = _pick(logits[0].float().cpu(), temperature, top_k, generator)
                yield vocab.chars[nxt]
                window = window[1:] + [nxt]
    finally:
        model.train(was_training)


def _writes_text(path: Path) -> bool:
    """Whether the checkpoint at `path` holds a model that writes text (not a calculator), told
    from its description alone; a file whose description cannot be read counts, so that reading
    it says what is wrong with it."""
    try:
        description = json.loads(path.with_suffix(".json").read_text())
        return description["model"]["name"] != "calculator"
    except (OSError, ValueError, KeyError, TypeError):
        return True


def sample(prime: str = SampleConfig.prime, length: int = SampleConfig.length,
           temperature: float = SampleConfig.temperature, top_k: int | None = None,
           seed: int = SampleConfig.seed, checkpoint=None, runs=SampleConfig.runs,
           backend: str | None = None, on_char=None, on_prime=None, log=None) -> dict:
    """Generate from a checkpoint (default: the newest under `runs` that writes text).

    `on_prime` is called with the prime as the model reads it before the first character, and
    `on_char` with each character as it comes; `log` with a note when the prime was normalised.
    Returns the prime, the generated text and where the model came from.
    """
    SampleConfig(prime, length, temperature, top_k, seed, checkpoint, runs, backend).check()
    path = checkpoints.find(checkpoint, runs, usable=_writes_text)
    saved = checkpoints.read(path)
    if saved.model_name == "calculator":
        raise ValueError(f"{path} holds a calculator from `charlstm calc`, which maps a string to "
                         "a number and writes no text; sample a model of `charlstm train` or "
                         "`charlstm speech`")
    given = prime
    prime, note = model_prime(Vocab(saved.vocab), prime)
    _check_chars(Vocab(saved.vocab), prime)
    model, vocab, _ = checkpoints.load_model(saved, backend)
    chars = generate(model, vocab, prime, length, temperature, top_k, seed)
    first = next(chars, None)  # the prime is checked against the model before anything is shown
    if note is not None and log is not None:
        log(note)
    if on_prime is not None:
        on_prime(prime)
    text = []
    for char in itertools.chain([] if first is None else [first], chars):
        text.append(char)
        if on_char is not None:
            on_char(char)
    return {"checkpoint": str(path), "model": saved.model_name, "prime": prime,
            "prime_given": given, "text": "".join(text), "length": length,
            "temperature": temperature, "top_k": top_k, "seed": seed}
