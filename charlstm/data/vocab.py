"""A model's characters and their ids: the sorted set of a corpus's characters, as given."""


class Vocab:
    """Characters in id order (no case folding, Unicode kept); a checkpoint stores them as one
    string, so sampling needs no corpus."""

    def __init__(self, chars):
        chars = list(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("a vocabulary is a non-empty list of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("a vocabulary lists each character once")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.chars == other.chars

    def __str__(self):
        return "".join(self.chars)

    def missing(self, text: str) -> list[str]:
        """Characters of `text` not in the vocabulary, each once, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        missing = self.missing(text)
        if missing:
            raise ValueError(f"characters not in the model's vocabulary: {quote_chars(missing)}; "
                             "use only characters the model was trained on")
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def quote_chars(chars):
    """Characters as reprs, so a space, a tab or a curly quote is visible in an error message."""
    return ", ".join(repr(c) for c in chars)
