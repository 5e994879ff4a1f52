"""Arithmetic and counting strings for the calculator task: "2+3" -> 5, "0110" -> 2.

Every example of a task has the same length, so a batch is one [B, T] tensor of token ids.
Multi-digit operands are zero-padded ("07+12"), which also gives every digit a fixed position:
the training split must show every digit in every operand position, else the model has
never seen, say, a '9' as the first operand (an ordered split of "0+0" ... "9+9" does exactly
that) and its validation accuracy says nothing about arithmetic.
"""

import random
from dataclasses import dataclass

import torch

OPERATORS = {"add": "+", "sub": "-", "mul": "*"}
DIGITS = "0123456789"
# Enumerating every pair stops being cheap (and useful) beyond this many examples.
MAX_ENUMERATED = 10_000
SPLIT_DRAWS = 100


@dataclass
class ArithData:
    """One task's examples, split into training and validation, as token ids and float targets."""

    task: str
    symbols: str
    train_text: list
    train_targets: list
    valid_text: list
    valid_targets: list

    def tensors(self, split: str):
        """(ids [N, T] int64, targets [N] float32) of the "train" or "valid" split."""
        text, targets = ((self.train_text, self.train_targets) if split == "train"
                         else (self.valid_text, self.valid_targets))
        return encode(text, self.symbols), torch.tensor(targets, dtype=torch.float32)


def symbols_for(task: str) -> str:
    """The vocabulary of a task (one of TASKS); a symbol's token id is its index in this string."""
    return "01" if task == "count-ones" else DIGITS + OPERATORS[task]


def encode(texts, symbols: str) -> torch.Tensor:
    """Token ids [N, T] of equal-length strings."""
    index = {s: i for i, s in enumerate(symbols)}
    return torch.tensor([[index[c] for c in text] for text in texts], dtype=torch.long)


def evaluate(task: str, text: str) -> int:
    """The exact target of one example string; the specification the generators are tested on."""
    if task == "count-ones":
        return text.count("1")
    a, b = text.split(OPERATORS[task])
    a, b = int(a), int(b)
    return {"add": a + b, "sub": a - b, "mul": a * b}[task]


def operand_examples(task: str, digits: int, samples: int, rng: random.Random):
    """Every zero-padded operand pair when there are at most MAX_ENUMERATED, else `samples`
    distinct random pairs."""
    span = 10 ** digits
    total = span * span
    picks = range(total) if total <= MAX_ENUMERATED else rng.sample(range(total), min(samples, total))
    op = OPERATORS[task]
    return [f"{i // span:0{digits}d}{op}{i % span:0{digits}d}" for i in picks]


def count_examples(length: int, samples: int, rng: random.Random):
    """All binary strings of `length` when there are at most `samples`, else `samples` distinct ones.

    Drawn strings first draw their number of ones uniformly from 0..length, then its positions:
    uniform bits would put almost every target near length/2 and leave the extremes untested.
    """
    if 2 ** length <= samples:
        return [format(i, f"0{length}b") for i in range(2 ** length)]
    seen, texts = set(), []
    # Short strings have few distinct values per count; give up on duplicates after a while.
    for _ in range(50 * samples):
        ones = rng.randint(0, length)
        positions = set(rng.sample(range(length), ones))
        text = "".join("1" if i in positions else "0" for i in range(length))
        if text not in seen:
            seen.add(text)
            texts.append(text)
            if len(texts) == samples:
                break
    return texts


def missing_in_training(task: str, texts, digits: int = 1) -> list:
    """What the training strings never show: symbols, and for arithmetic digits per operand position."""
    symbols = symbols_for(task)
    missing = [f"symbol {s!r}" for s in symbols if not any(s in t for t in texts)]
    if task != "count-ones":
        positions = [(f"first operand digit {p + 1}", p) for p in range(digits)]
        positions += [(f"second operand digit {p + 1}", digits + 1 + p) for p in range(digits)]
        for name, column in positions:
            seen = {t[column] for t in texts}
            missing += [f"'{d}' as {name}" for d in DIGITS if d not in seen]
    return missing


def make_dataset(task: str = "add", digits: int = 1, length: int = 8, samples: int = 1000,
                 valid_fraction: float = 0.2, seed: int = 0) -> ArithData:
    """Generate a task's examples and split them at random (seeded) into training and validation.

    The settings are those of CalcConfig, which checks them. The split is redrawn until training
    shows every symbol (and every digit in every operand position); if SPLIT_DRAWS draws all
    fail, a ValueError says what is missing.
    """
    rng = random.Random(seed)
    texts = (count_examples(length, samples, rng) if task == "count-ones"
             else operand_examples(task, digits, samples, rng))
    n_valid = max(1, round(valid_fraction * len(texts)))
    if n_valid >= len(texts):
        raise ValueError(f"only {len(texts)} examples: a validation fraction of {valid_fraction} "
                         "leaves nothing to train on; lower --valid-fraction or raise --samples/--length")
    for _ in range(SPLIT_DRAWS):
        order = list(range(len(texts)))
        rng.shuffle(order)
        train = [texts[i] for i in order[n_valid:]]
        missing = missing_in_training(task, train, digits)
        if not missing:
            valid = [texts[i] for i in order[:n_valid]]
            return ArithData(task, symbols_for(task), train, [evaluate(task, t) for t in train],
                             valid, [evaluate(task, t) for t in valid])
    raise ValueError(f"the training split never showed {', '.join(missing[:5])} in {SPLIT_DRAWS} "
                     f"random splits of {len(texts)} examples: lower --valid-fraction "
                     "or raise --samples/--length")
