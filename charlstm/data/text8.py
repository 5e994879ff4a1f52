"""Load a corpus in text8 form: text8 itself, or a .zip, a text file or a folder of .txt files."""

import zipfile
from dataclasses import dataclass
from pathlib import Path

from charlstm.data.download import fetch_text8
from charlstm.data.normalize import NormalizeReport, is_text8_form, normalize_text8


@dataclass
class Corpus:
    """Text in text8 form (ASCII 'a'-'z' and ' '), where it came from, and what normalising did."""

    text: bytes
    source: str
    normalization: NormalizeReport | None  # None when the input was already in text8 form


def load_text8(data=None, url: str | None = None, progress: bool = True) -> Corpus:
    """Load `data` (None: text8, downloaded once), normalised to text8 form if it is not already.

    `data` may be a .zip (its first member is read, as the assignment reads text8.zip), a text
    file, or a folder whose .txt files are read in name order, one after the other.
    """
    path = fetch_text8(url, progress=progress) if data is None else Path(data)
    parts = _read_parts(path)
    raw = b"\n".join(content for _, content in parts)
    if is_text8_form(raw):
        text, report = raw, None
    else:
        text, report = normalize_text8("\n".join(_decode(name, content) for name, content in parts))
    if not text.strip():
        raise ValueError(f"{path} holds no text: after normalisation to text8 form (letters a-z and "
                         "spaces) nothing is left; pass a file with English text")
    return Corpus(text=text, source=str(path), normalization=report)


def _read_parts(path: Path) -> list[tuple[str, bytes]]:
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}; --data takes a .zip, a text file "
                                "or a folder of .txt files (leave it out to use text8)")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"folder {path} has no .txt files; put the text in .txt files or pass "
                             "one file")
        return [(str(f), f.read_bytes()) for f in files]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not names:
                raise ValueError(f"zip file {path} is empty; it should hold the text as its first member")
            return [(f"{path}:{names[0]}", archive.read(names[0]))]
    return [(str(path), path.read_bytes())]


def _decode(name: str, content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name} is not UTF-8 text: undecodable byte {content[exc.start]:#04x} at "
                         f"offset {exc.start}; convert it first (for example `iconv -f latin1 -t "
                         "utf-8`)") from exc
