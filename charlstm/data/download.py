"""Cached downloads: a file appears under its final name complete or not at all."""

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path


def cache_dir() -> Path:
    """Where downloaded corpora live: $CHARLSTM_HOME, else ~/.cache/charlstm."""
    return Path(os.environ.get("CHARLSTM_HOME") or Path.home() / ".cache" / "charlstm")


def download(url: str, dest, expected_size: int | None = None, progress: bool = True) -> Path:
    """Fetch `url` to `dest` unless a file of the expected size is already there; return `dest`.

    The bytes go to a temporary file beside `dest` that is renamed only once complete, so an
    interrupted or failed download leaves nothing behind and the next call starts afresh.
    """
    dest = Path(dest)
    if dest.is_file() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise ValueError(f"could not download {url}: {exc}; check the URL and the "
                                 f"network, or place the file at {dest} yourself") from exc
            with response:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else expected_size
                _copy(response, out, total, f"downloading {dest.name}", progress)
        size = Path(tmp).stat().st_size
        if expected_size is not None and size != expected_size:
            raise ValueError(f"download of {url} gave {size} bytes, expected {expected_size}: "
                             "the server sent something else; try again or set the URL")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _copy(source, out, total, label, progress):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), disable=not progress,
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        while chunk := source.read(1 << 16):
            out.write(chunk)
            bar.advance(task, len(chunk))
