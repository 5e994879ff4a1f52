"""Checkpoints: atomic writes, and loading that never unpickles arbitrary objects."""

import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path, payload: dict) -> None:
    """Save a dict of tensors, numbers, strings, lists and dicts atomically with torch.save."""
    import io
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by save_checkpoint, with weights_only=True (no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a run folder written by --out "
                                "or a checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a charlstm checkpoint that loads safely: {exc}") from exc
