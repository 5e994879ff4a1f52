"""Generate text from a trained char model, one character at a time from a prime.

Any checkpoint of `charlstm train` or `charlstm speech` samples (charlstm.checkpoint describes the
format, and reads checkpoints of charlstm 0.1.0 too); with none given, the most recently written
`*.pt` under the runs folder (./runs) is used.
"""

from typing import Iterator

import torch

from charlstm import checkpoint as checkpoints
from charlstm.config import SampleConfig, check_sampling
from charlstm.data.vocab import Vocab, quote_chars


def _context(model):
    # A model without `context` is a sequence model: forward(x [T, B], state) -> (logits, state).
    return getattr(model, "context", None)


def check_prime(model, vocab: Vocab, prime: str) -> list[int]:
    missing = vocab.missing(prime)
    if missing:
        raise ValueError(f"the prime has characters outside the model's vocabulary: "
                         f"{quote_chars(missing)}; the model knows {''.join(vocab.chars)!r}")
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


def sample(prime: str = SampleConfig.prime, length: int = SampleConfig.length,
           temperature: float = SampleConfig.temperature, top_k: int | None = None,
           seed: int = SampleConfig.seed, checkpoint=None, runs=SampleConfig.runs,
           backend: str | None = None, on_char=None) -> dict:
    """Generate from a checkpoint (default: the newest under `runs`), calling `on_char` with each
    character as it comes; return the prime, the generated text and where the model came from."""
    SampleConfig(prime, length, temperature, top_k, seed, checkpoint, runs, backend).check()
    path = checkpoints.find(checkpoint, runs)
    saved = checkpoints.read(path)
    if saved.model_name == "calculator":
        raise ValueError(f"{path} holds a calculator from `charlstm calc`, which maps a string to "
                         "a number and writes no text; sample a model of `charlstm train` or "
                         "`charlstm speech`")
    model, vocab, _ = checkpoints.load_model(saved, backend)
    chars = []
    for char in generate(model, vocab, prime, length, temperature, top_k, seed):
        chars.append(char)
        if on_char is not None:
            on_char(char)
    return {"checkpoint": str(path), "model": saved.model_name, "prime": prime,
            "text": "".join(chars), "length": length, "temperature": temperature,
            "top_k": top_k, "seed": seed}
