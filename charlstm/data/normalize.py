"""Text8-form normalisation: the vocabulary the assignment's models see, 'a'-'z' and ' '.

Follows Matt Mahoney's wikifil.pl, which made text8 from Wikipedia: uppercase letters are
lowercased, each digit becomes its word surrounded by spaces, every other character becomes a
space, and runs of spaces collapse into one.
"""

import re
from dataclasses import asdict, dataclass

TEXT8_ALPHABET = b" abcdefghijklmnopqrstuvwxyz"

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# ASCII-only lowercasing, as wikifil.pl's tr/A-Z/a-z/: str.lower() would turn a few non-ASCII
# letters (the Kelvin sign, for one) into a-z, which text8 never did.
_TABLE = {ord(c): c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_TABLE.update({ord(str(d)): f" {word} " for d, word in enumerate(_DIGITS)})
_OUTSIDE = re.compile(r"[^a-z]+")


@dataclass
class NormalizeReport:
    """How much normalisation changed a text."""

    input_chars: int
    output_chars: int
    changed_chars: int  # input characters outside 'a'-'z' and ' ' (uppercase, digits, the rest)

    @property
    def changed_fraction(self) -> float:
        return self.changed_chars / self.input_chars if self.input_chars else 0.0

    def describe(self) -> str:
        return (f"normalised to text8 form: {self.input_chars:,} -> {self.output_chars:,} characters; "
                f"{self.changed_chars:,} ({self.changed_fraction:.1%}) were not a-z or space")

    def to_dict(self) -> dict:
        return {**asdict(self), "changed_fraction": self.changed_fraction}


def is_text8_form(data: bytes) -> bool:
    """True when `data` holds only 'a'-'z' and ' ' (runs of spaces are left as they are)."""
    return not data.translate(None, TEXT8_ALPHABET)


def normalize_text8(text: str) -> tuple[bytes, NormalizeReport]:
    """Return `text` in text8 form as ASCII bytes, and a report of what changed."""
    changed = len(text) - sum(text.count(c) for c in TEXT8_ALPHABET.decode())
    normalised = _OUTSIDE.sub(" ", text.translate(_TABLE)).encode("ascii")
    return normalised, NormalizeReport(len(text), len(normalised), changed)


def text8_form(documents) -> tuple[bytes, NormalizeReport | None]:
    """The documents joined by a space, in text8 form; the report is None when they already were
    (text8 itself is read as it is, without a pass over its 100 MB)."""
    text = " ".join(documents)
    if text.isascii():
        raw = text.encode("ascii")
        if is_text8_form(raw):
            return raw, None
    return normalize_text8(text)
