"""Downloads of the corpora a user can name, text8 and the Corpus of Presidential Speeches, each
fetched once into a cache, atomically and size-checked."""

import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from charlstm.checkpoint import umask

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_BYTES = 31344016  # the size the assignment's maybe_download checks
# text8 itself, the one member of text8.zip: its size and the SHA-1 that dataset libraries
# (GluonNLP's Text8, for one) check it against. A corpus with both is text8.
TEXT8_CHARACTERS = 100_000_000
TEXT8_SHA1 = "0dc3edebc970dcc96137e7deda4d9995af9d93de"
URL_ENV = "CHARLSTM_TEXT8_URL"
HOME_ENV = "CHARLSTM_HOME"
COPS_URL = "http://www.thegrammarlab.com/?wpdmpro=corpus-of-presidential-speeches&wpdmdl=595"
COPS_URL_ENV = "CHARLSTM_COPS_URL"
COPS_FILE = "corpus-of-presidential-speeches.zip"


class DownloadError(OSError):
    """A download failed; the message says what failed and how to go on without it."""


def cache_dir() -> Path:
    """Where downloads are kept: $CHARLSTM_HOME, by default ~/.cache/charlstm."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "charlstm")


def text8_url(url: str | None = None) -> str:
    """The text8 address: `url` if given, else $CHARLSTM_TEXT8_URL, else the original one."""
    return url or os.environ.get(URL_ENV) or TEXT8_URL


def is_text8(characters: int, sha1: str) -> bool:
    """True for a text of text8's size and checksum (what charlstm train records as `data`)."""
    return characters == TEXT8_CHARACTERS and sha1 == TEXT8_SHA1


def fetch_text8(url: str | None = None, progress: bool = True) -> Path:
    """Path of text8.zip in the cache, downloading it first if it is not there."""
    url = text8_url(url)
    expected = TEXT8_BYTES if url == TEXT8_URL else None
    path = cache_dir() / "text8.zip"
    if path.is_file() and (expected is None or path.stat().st_size == expected):
        return path
    return download(url, path, expected_bytes=expected, progress=progress)


def fetch_cops(url: str | None = None, progress: bool = True) -> Path:
    """Path of the Corpus of Presidential Speeches zip in the cache, downloading it first if it is
    not there, from `url`, else $CHARLSTM_COPS_URL, else the Grammar Lab's download link."""
    url = url or os.environ.get(COPS_URL_ENV) or COPS_URL
    path = cache_dir() / "cops" / COPS_FILE
    if path.is_file():
        return path
    try:
        download(url, path, progress=progress)
    except DownloadError as exc:
        reason = exc.__cause__ or exc
        raise DownloadError(f"cannot download the Corpus of Presidential Speeches from {url} "
                            f"({reason}); point --cops-url or ${COPS_URL_ENV} at a reachable "
                            "copy, or download the zip yourself and pass its path") from exc
    if not zipfile.is_zipfile(path):
        path.unlink()
        raise DownloadError(f"{url} did not return a zip archive (a web page instead?); download "
                            f"the corpus by hand and pass the zip's path, or set {COPS_URL_ENV}")
    return path


def download(url: str, path, expected_bytes: int | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Download `url` to `path` through a temporary file renamed only once the size checks out.

    The size must equal `expected_bytes` when given, and the server's Content-Length when it
    sends one; on any failure nothing is left at `path` or beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as out:
            received, announced = _stream(url, out, expected_bytes, progress, timeout)
            out.flush()
            os.fsync(out.fileno())
        for what, size in (("expected", expected_bytes), ("announced by the server", announced)):
            if size is not None and received != size:
                raise DownloadError(
                    f"download of {url} went wrong: got {received:,} bytes, {what} {size:,} (broken "
                    "off, or not the file expected); run the command again, or download the file "
                    "yourself and pass it with --data")
        os.replace(tmp, path)
        return path
    finally:
        Path(tmp).unlink(missing_ok=True)


def _stream(url, out, expected_bytes, progress, timeout) -> tuple[int, int | None]:
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"cannot download {url}: the server answered HTTP {exc.code} {exc.reason}; check the "
            f"address (--url or ${URL_ENV}), or pass a local copy with --data PATH") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); if this machine is offline, download text8.zip "
            f"elsewhere and pass it with --data PATH (a .zip, a text file or a folder of .txt files), "
            f"or point --url / ${URL_ENV} at a reachable copy") from exc
    with response:
        length = response.headers.get("Content-Length")
        announced = int(length) if length and length.isdigit() else None
        total = expected_bytes or announced
        received = 0
        bar = _progress_bar(progress)
        with bar:
            task = bar.add_task(f"downloading {Path(urllib.parse.urlsplit(url).path).name}", total=total)
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, ValueError, urllib.error.URLError) as exc:
                    raise DownloadError(f"download of {url} broke off after {received:,} bytes "
                                        f"({exc}); run the command again") from exc
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(task, completed=received)
    return received, announced


def _progress_bar(enabled):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                    console=Console(file=sys.stderr), disable=not enabled)
