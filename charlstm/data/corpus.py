"""The one corpus reader: a spec names files, each file is a document, the documents a Corpus.

A spec is
- a folder: every `.txt` file below it, searched recursively, in sorted path order;
- a `.zip`: every `.txt` member in sorted name order (macOS `__MACOSX` copies skipped); a zip with
  no `.txt` member but exactly one file is that file, which is how text8.zip (one member,
  `text8`) is read;
- any other file: that file;
- `cops:NAME`: the Corpus of Presidential Speeches, downloaded once into the cache, narrowed to
  one president's folder (`cops:obama`, `cops:Barack Obama`; `cops:all` for every speech);
- None: text8, downloaded once into the cache.

Every file must be UTF-8 text (a leading byte-order mark is dropped); a file with other bytes, with
NUL bytes (binary data, UTF-16), or with more than 1% control characters, is refused with its name
and the first bad byte. A file that is named .zip or starts as a zip does but cannot be read as one
(cut short, damaged) is refused as a damaged zip archive, not read as text. Line
endings become "\\n", and metadata lines are removed: a leading `President: NAME` line and
whole-line tags such as `<title="...">` (a tag inside a line stays). Documents left empty are
dropped. `Corpus.text` joins the documents with a blank line; `charlstm train` reads the same
documents in text8 form (charlstm.data.normalize.text8_form).
"""

import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from charlstm.data.download import fetch_cops, fetch_text8

# The signatures a zip file starts with: a local file header, or the end record of an empty one.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Control characters that text does not hold (tab, newlines, vertical tab, form feed and escape
# may appear in text files; NUL is refused on its own).
_CONTROL = bytes([*range(1, 9), 14, 15, *range(16, 27), *range(28, 32), 127])
_PRESIDENT_LINE = re.compile(r"\A\s*President:[^\n]*\n")
# CoPS puts <title="..."> and <date=...> on lines of their own before each transcript.
_TAG_LINE = re.compile(r"^[ \t]*<[A-Za-z_]+[ \t]*=[^\n]*>[ \t]*\n?", re.MULTILINE)


@dataclass
class Corpus:
    """The documents of a spec, in reading order, and the spec they came from."""

    documents: list[str]
    source: str

    @cached_property
    def text(self) -> str:
        return "\n\n".join(self.documents) + "\n"

    def split(self, valid_fraction: float = 0.1) -> tuple[str, str]:
        """Train and validation text: the validation text is the last `valid_fraction` as one block.

        One contiguous block at the end keeps validation text unseen in training up to a single
        boundary; the fast.ai notebook's `[-100_000]` index picked a single example instead.
        """
        cut = len(self.text) - int(round(len(self.text) * valid_fraction))
        return self.text[:cut], self.text[cut:]


def read_corpus(spec=None, *, text8_url: str | None = None, cops_url: str | None = None,
                progress: bool = True, option: str = "--corpus") -> Corpus:
    """The corpus that `spec` names (see the module's docstring); `option` is the flag that
    took the spec, for the error messages."""
    if spec is None:
        path = fetch_text8(text8_url, progress=progress)
        return _corpus(_zip_members(path), str(path), option)
    spec = str(spec)
    if spec == "cops" or spec.startswith("cops:"):
        return _read_cops(spec.partition(":")[2], cops_url, progress, option)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt"),
                       key=lambda p: str(p.relative_to(path)))
        if not files:
            raise ValueError(f"{option} {path}: the folder has no .txt files; put the text in "
                             ".txt files, or pass a .zip of them or one text file")
        return _corpus(((str(p.relative_to(path)), p.read_bytes()) for p in files), str(path),
                       option)
    if not path.is_file():
        raise ValueError(f"{option} {spec}: no such file or folder; pass a folder of .txt files, "
                         "a .zip of them, a text file or cops:PRESIDENT")
    if zipfile.is_zipfile(path):
        return _corpus(_zip_members(path), str(path), option)
    data = path.read_bytes()
    if path.suffix.lower() == ".zip" or data[:4] in _ZIP_MAGIC:
        raise ValueError(f"{option} {spec} is a damaged zip archive (cut short, or not a zip file "
                         "at all); download or copy it again, or pass a folder of .txt files")
    return _corpus([(str(path), data)], str(path), option)


def strip_metadata(text: str) -> str:
    """The transcript alone: no leading `President: NAME` line, no whole-line `<tag=...>` lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _PRESIDENT_LINE.sub("", text, count=1)
    if "<" in text:  # a scan for line starts costs seconds on text8's 100 MB single line
        text = _TAG_LINE.sub("", text)
    return text.strip("\n")


def decode(name: str, data: bytes) -> str:
    """UTF-8 text of a file, or a ValueError naming the file and its first byte that is not."""
    if b"\0" in data:
        offset = data.index(b"\0")
        raise ValueError(f"{name} is not text: it holds a NUL byte at offset {offset} (binary "
                         "data, or UTF-16 text); pass UTF-8 text files")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text: undecodable byte {data[exc.start]:#04x} at "
                         f"offset {exc.start}; convert it first (for example `iconv -f latin1 "
                         "-t utf-8`)") from exc
    controls = len(data) - len(data.translate(None, _CONTROL))
    if controls > len(data) // 100:
        offset = next(i for i, b in enumerate(data) if b in _CONTROL)
        raise ValueError(f"{name} is not text: {controls:,} of its {len(data):,} bytes are control "
                         f"characters, the first ({data[offset]:#04x}) at offset {offset}; pass "
                         "UTF-8 text files")
    return text


def _corpus(named_bytes, source: str, option: str) -> Corpus:
    documents = [strip_metadata(decode(name, data)) for name, data in named_bytes]
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise ValueError(f"{option} {source} holds no text once metadata lines are removed; "
                         "pass files with text in them")
    return Corpus(documents, source)


def _zip_members(path: Path, select=None) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is not a valid zip archive ({exc}); delete it and retry, "
                         "or pass a folder of .txt files") from exc
    with archive:
        files = [i for i in archive.infolist() if not i.is_dir() and "__MACOSX" not in i.filename]
        texts = [i for i in files if i.filename.lower().endswith(".txt")]
        if not texts and len(files) == 1:
            texts = files
        if not texts:
            raise ValueError(f"{path} holds no .txt files (and is not a zip of one file, as "
                             "text8.zip is); put the text in .txt members")
        chosen = [i for i in sorted(texts, key=lambda i: i.filename)
                  if select is None or select(i.filename)]
        try:
            return [(f"{path}:{i.filename}", archive.read(i)) for i in chosen]
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
            raise ValueError(f"{path} is a damaged zip archive ({exc}); download or copy it "
                             "again, or pass a folder of .txt files") from None


def _president_folders(name: str) -> list[str]:
    return [part.lower() for part in Path(name).parts[:-1]]


def _read_cops(president: str, url: str | None, progress: bool, option: str) -> Corpus:
    """One president's speeches from CoPS, chosen by folder: `obama`, `Barack Obama`; `all` for
    all of them."""
    path = fetch_cops(url, progress)
    wanted = president.strip().lower()
    if wanted in ("", "all"):
        return _corpus(_zip_members(path), f"cops:{wanted or 'all'}", option)
    keys = {wanted, wanted.split()[-1]}
    members = _zip_members(path, lambda n: keys & set(_president_folders(n)))
    if not members:
        with zipfile.ZipFile(path) as archive:
            folders = sorted({p for n in archive.namelist() if n.lower().endswith(".txt")
                              for p in _president_folders(n)[-1:]})
        raise ValueError(f"{option} cops:{president}: no president folder of that name in the "
                         f"corpus; choose one of {', '.join(folders)} (or cops:all)")
    return _corpus(members, f"cops:{wanted}", option)
