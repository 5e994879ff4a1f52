"""Speech corpora: plain-text transcripts with their metadata lines removed.

A corpus is a directory of .txt files (searched recursively), a .zip of them, one text file, or
`cops:NAME`, the Corpus of Presidential Speeches (Brown 2016) fetched into the cache and narrowed
to one president's folder. Files are read in sorted path order and joined with a blank line, so
the same input always gives the same text and the same vocabulary.
"""

import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from charlstm.data.download import DownloadError, cache_dir, download

COPS_URL = "http://www.thegrammarlab.com/?wpdmpro=corpus-of-presidential-speeches&wpdmdl=595"
COPS_URL_ENV = "CHARLSTM_COPS_URL"
COPS_FILE = "corpus-of-presidential-speeches.zip"

_PRESIDENT_LINE = re.compile(r"\A\s*President:[^\n]*\n")
# CoPS puts <title="..."> and <date=...> on lines of their own before each transcript.
_TAG_LINE = re.compile(r"^[ \t]*<[A-Za-z_]+[ \t]*=[^\n]*>[ \t]*\n?", re.MULTILINE)


def strip_metadata(text: str) -> str:
    """The transcript alone: no leading `President: NAME` line, no whole-line `<tag=...>` lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    text = _PRESIDENT_LINE.sub("", text, count=1)
    text = _TAG_LINE.sub("", text)
    return text.strip("\n")


class Vocab:
    """The sorted set of characters of a corpus, as given (no case folding, Unicode kept)."""

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

    def missing(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, each once, in order of appearance."""
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


@dataclass
class Corpus:
    text: str
    vocab: Vocab
    documents: int
    source: str

    def split(self, valid_fraction: float = 0.1) -> tuple[str, str]:
        """Train and validation text: the validation text is the last `valid_fraction` as one block.

        One contiguous block at the end keeps validation text unseen in training up to a single
        boundary; the fast.ai notebook's `[-100_000]` index picked a single example instead.
        """
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
        cut = len(self.text) - int(round(len(self.text) * valid_fraction))
        return self.text[:cut], self.text[cut:]


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Some older transcripts are Windows-1252; latin-1 maps every byte, so nothing is lost.
        return data.decode("latin-1")


def _from_documents(named_bytes, source: str) -> Corpus:
    docs = [strip_metadata(_decode(data, name)) for name, data in sorted(named_bytes)]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"{source} holds no text once metadata lines are removed: "
                         "point --corpus at .txt transcripts")
    text = "\n\n".join(docs) + "\n"
    return Corpus(text=text, vocab=Vocab.from_text(text), documents=len(docs), source=source)


def _zip_members(path: Path, select=None):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a valid zip archive ({exc}); delete it and retry, "
                         "or pass a directory of .txt files") from exc
    with archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.lower().endswith(".txt") or "__MACOSX" in name:
                continue
            if select is None or select(name):
                yield name, archive.read(info)


def cops_path(url: str | None = None, progress: bool = True) -> Path:
    """The cached Corpus of Presidential Speeches zip, downloaded on first use.

    The URL is `url`, else $CHARLSTM_COPS_URL, else the Grammar Lab's download link.
    """
    url = url or os.environ.get(COPS_URL_ENV) or COPS_URL
    path = cache_dir() / "cops" / COPS_FILE
    if path.is_file():
        return path
    try:
        download(url, path, progress=progress)
    except DownloadError as exc:
        reason = exc.__cause__ or exc
        raise ValueError(f"cannot download the Corpus of Presidential Speeches from {url} ({reason}); "
                         f"point --cops-url or ${COPS_URL_ENV} at a reachable copy, or download the "
                         "zip yourself and pass --corpus PATH.zip") from exc
    if not zipfile.is_zipfile(path):
        path.unlink()
        raise ValueError(f"{url} did not return a zip archive (a web page instead?); download "
                         f"the corpus by hand and pass --corpus PATH.zip, or set {COPS_URL_ENV}")
    return path


def _president_folders(name: str) -> list[str]:
    return [part.lower() for part in Path(name).parts[:-1]]


def load_cops(president: str, url: str | None = None, progress: bool = True) -> Corpus:
    """One president's speeches from CoPS, chosen by folder: `obama`, `Barack Obama`; `all` for all."""
    path = cops_path(url, progress)
    wanted = president.strip().lower()
    if wanted in ("", "all"):
        return _from_documents(_zip_members(path), f"cops:{wanted or 'all'}")
    keys = {wanted, wanted.split()[-1]}
    members = list(_zip_members(path, lambda n: keys & set(_president_folders(n))))
    if not members:
        folders = sorted({p for n, _ in _zip_members(path) for p in _president_folders(n)[-1:]})
        raise ValueError(f"no president folder named {president!r} in the corpus; "
                         f"choose one of: {', '.join(folders)} (or cops:all)")
    return _from_documents(members, f"cops:{wanted}")


def load_corpus(spec: str, cops_url: str | None = None, progress: bool = True) -> Corpus:
    """A corpus from a directory of .txt files, a .zip of them, one text file or `cops:NAME`."""
    spec = str(spec)
    if spec == "cops" or spec.startswith("cops:"):
        return load_cops(spec.partition(":")[2], cops_url, progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        if not files:
            raise ValueError(f"no .txt files under {path}: pass a directory of transcripts, "
                             "a .zip of them or one text file")
        return _from_documents([(str(p.relative_to(path)), p.read_bytes()) for p in files], str(path))
    if not path.is_file():
        raise ValueError(f"corpus {spec!r} does not exist: pass a directory of .txt files, "
                         "a .zip of them, one text file, or cops:PRESIDENT")
    if zipfile.is_zipfile(path):
        members = list(_zip_members(path))
        if not members:
            raise ValueError(f"{path} holds no .txt files")
        return _from_documents(members, str(path))
    return _from_documents([(path.name, path.read_bytes())], str(path))
