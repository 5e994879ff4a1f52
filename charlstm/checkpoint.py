"""One checkpoint format for every model charlstm trains: the weights plus a JSON description.

A checkpoint is two files with one name, side by side; in a run folder they are

    checkpoint.json   what the weights are, as JSON:
                      {"format": "charlstm-checkpoint", "version": 1, "charlstm": "0.2.0",
                       "workload": "train" | "speech" | "calc",
                       "model": {"name": "lstm-seq", "config": {"embedding": 42, ...}},
                       "vocab": "\\n !\\"'(),-.0123...",   the characters, in id order
                       "config": {...}}                    every option of the run
    checkpoint.pt     torch.save of {"state_dict": the model's weights,
                                     "training": what resuming the run needs}

`charlstm.models.build_model(model["name"], len(vocab), **model["config"])` rebuilds the model
and `state_dict` fills it, so `load_model` serves any checkpoint. `training` holds tensors and
plain numbers only (the step or epochs done, optimizer state, batch cursors, carried state, the
torch RNG, the metrics so far) and is each workload's own. The .pt file is read with
`torch.load(weights_only=True)`, which builds tensors and plain containers and never runs code.

Each file is written atomically, the JSON first. The description does not change while a run
goes on (a resumed run may change options such as --steps, which are not part of the model), so
a reader never sees a description that does not fit the weights beside it.

A `.pt` file with no `.json` beside it is a checkpoint of charlstm 0.1.0, one torch.save dict
from `charlstm train` or `charlstm speech`; `read` converts it, so such runs still sample and
resume.
"""

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from charlstm import __version__
from charlstm.config import RUNS_DIR
from charlstm.data.normalize import TEXT8_ALPHABET

NAME = "checkpoint"
FORMAT = "charlstm-checkpoint"
VERSION = 1


class NotACheckpoint(ValueError):
    """A path that holds no charlstm checkpoint; the message says what was found instead."""


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), since setting
    it to read it races with threads that create files meanwhile."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part.
    The file gets the mode a plain open() would give it (0666 less the umask), not mkstemp's
    0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode())


def describe(workload: str, model: str, model_config: dict, vocab: str, config: dict) -> dict:
    """The JSON half of a checkpoint."""
    return {"format": FORMAT, "version": VERSION, "charlstm": __version__, "workload": workload,
            "model": {"name": model, "config": dict(model_config)}, "vocab": str(vocab),
            "config": dict(config)}


def save(folder, description: dict, state_dict: dict, training: dict | None = None) -> Path:
    """Write `folder`/checkpoint.json and `folder`/checkpoint.pt; return the .pt path."""
    import torch

    folder = Path(folder)
    atomic_write_json(folder / f"{NAME}.json", description)
    buffer = io.BytesIO()
    torch.save({"state_dict": state_dict, "training": training or {}}, buffer)
    atomic_write_bytes(folder / f"{NAME}.pt", buffer.getvalue())
    return folder / f"{NAME}.pt"


@dataclass
class Checkpoint:
    """A checkpoint's description, read; its tensors are loaded when asked for."""

    path: Path  # the .pt file
    description: dict
    _tensors: dict | None = field(default=None, repr=False)

    @property
    def workload(self) -> str:
        return self.description["workload"]

    @property
    def model_name(self) -> str:
        return self.description["model"]["name"]

    @property
    def model_config(self) -> dict:
        return dict(self.description["model"].get("config") or {})

    @property
    def vocab(self) -> str:
        return self.description["vocab"]

    @property
    def config(self) -> dict:
        return dict(self.description.get("config") or {})

    def tensors(self, map_location="cpu") -> dict:
        """{"state_dict": ..., "training": ...}, loaded with weights_only=True."""
        if self._tensors is None:
            self._tensors = _torch_load(self.path, map_location)
            if not isinstance(self._tensors, dict) or "state_dict" not in self._tensors:
                raise NotACheckpoint(f"{self.path} is not a charlstm checkpoint (no state_dict "
                                     "in it); pass the checkpoint.pt written with its .json")
        return self._tensors

    @property
    def state_dict(self) -> dict:
        return self.tensors()["state_dict"]

    @property
    def training(self) -> dict:
        return self.tensors()["training"]


def read(path) -> Checkpoint:
    """The checkpoint at `path`: a run folder, its checkpoint.pt or checkpoint.json, or a
    single-file checkpoint of charlstm 0.1.0."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{NAME}.pt"
    pt = path.with_suffix(".pt") if path.suffix == ".json" else path
    described = pt.with_suffix(".json")
    if described.is_file():
        try:
            description = json.loads(described.read_text())
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotACheckpoint(f"{described} is not a charlstm checkpoint (not JSON: {exc}); "
                                 "pass a run folder written by --out") from None
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise NotACheckpoint(f"{described} is not a charlstm checkpoint (no \"format\": "
                                 f"\"{FORMAT}\" in it); pass a run folder written by --out")
        if description.get("version", 0) > VERSION:
            raise NotACheckpoint(f"{described} is a checkpoint of version "
                                 f"{description['version']}, newer than this charlstm reads "
                                 f"({VERSION}); upgrade charlstm")
        if not pt.is_file():
            raise NotACheckpoint(f"{described} has no {pt.name} beside it; copy the two files "
                                 "together")
        return Checkpoint(pt, description)
    if not pt.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass a run folder written by --out "
                                "or its checkpoint.pt")
    return _single_file(pt, _torch_load(pt, "cpu"))


def folder_of(path) -> Path:
    """The run folder of a checkpoint: `path` itself when it is a folder, the folder that holds
    it when it is a run's checkpoint.pt or checkpoint.json, else `path` unchanged (a file that
    is no run's checkpoint has no run folder)."""
    path = Path(path)
    if path.name in (f"{NAME}.pt", f"{NAME}.json") and path.is_file():
        return path.parent
    return path


def find(path=None, runs=RUNS_DIR, usable=None) -> Path:
    """`path` itself if a file, its checkpoint.pt if a run folder (else the newest *.pt in it),
    and without a path the newest *.pt under `runs` for which `usable(path)` holds (any, when
    `usable` is None)."""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            if (path / f"{NAME}.pt").is_file():
                return path / f"{NAME}.pt"
            found = sorted(path.glob("*.pt"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise FileNotFoundError(f"no checkpoint in {path}; pass a run folder written "
                                        "by --out or a checkpoint file")
            return found[-1]
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}; pass a run folder written by "
                                    "--out or a checkpoint file")
        return path
    runs = Path(runs)
    found = sorted(runs.rglob("*.pt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    found = [p for p in found if usable is None or usable(p)]
    if not found:
        raise FileNotFoundError(f"no trained model under {runs}/; train one with `charlstm "
                                "train` or `charlstm speech` (they save under ./runs), or pass "
                                "--checkpoint PATH")
    return found[-1]


def load_model(path, backend: str | None = None):
    """(model in eval mode, its Vocab, the Checkpoint) for the checkpoint at `path` (or a
    Checkpoint already read).

    `backend` swaps the recurrent implementation of a model that has one (the weights are the
    same for all of them)."""
    from charlstm.data.vocab import Vocab
    from charlstm.models import build_model, model_config_keys

    saved = path if isinstance(path, Checkpoint) else read(path)
    config = saved.model_config
    if backend is not None and "backend" in model_config_keys(saved.model_name):
        config["backend"] = backend
    vocab = Vocab(saved.vocab)
    model = build_model(saved.model_name, len(vocab), **config)
    model.load_state_dict(saved.state_dict)
    model.eval()
    return model, vocab, saved


def _torch_load(path: Path, map_location):
    import pickle
    import warnings
    import zipfile

    import torch

    if path.stat().st_size == 0:
        raise NotACheckpoint(f"{path} is not a charlstm checkpoint (the file is empty); pass a "
                             "run folder written by --out")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols, not for users
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        why = "not tensors and plain data, which is all a checkpoint is read as"
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        why = f"not a torch.save file: {(str(exc).splitlines() or [''])[0][:160]}"
    except Exception:  # the unpickler meets bytes that are no pickle at all in many ways
        why = "not tensors and plain data, which is all a checkpoint is read as"
    raise NotACheckpoint(f"{path} is not a charlstm checkpoint ({why}); pass a run folder "
                         "written by --out") from None


def _single_file(path: Path, saved) -> Checkpoint:
    """A charlstm 0.1.0 checkpoint, one torch.save dict, in the two-part form."""
    if not isinstance(saved, dict):
        saved = {}
    model = saved.get("model")
    if isinstance(model, dict) and "name" in model and "state_dict" in saved and "vocab" in saved:
        # charlstm speech: the model described, its weights, and the run under "run".
        run = saved.get("run") or {}
        description = describe("speech", model["name"], model.get("config") or {},
                               "".join(saved["vocab"]), run.get("key") or {})
        training = {"epochs_done": run.get("epochs_done", 0), "metrics": run.get("metrics", [])}
        if "optimizer" in saved:
            training["optimizer"] = saved["optimizer"]
        return Checkpoint(path, description, {"state_dict": saved["state_dict"],
                                              "training": training})
    config = saved.get("config")
    if isinstance(config, dict) and "nodes" in config and isinstance(model, dict):
        # charlstm train: its options and the UdacityLM weights; the alphabet is text8's.
        model_config = {k: config[k] for k in ("nodes", "cell", "backend", "init") if k in config}
        description = describe("train", "udacity", model_config, TEXT8_ALPHABET.decode(), config)
        training = {k: saved[k] for k in ("step", "batches", "state", "mean_loss", "milestones")
                    if k in saved}
        if "rng" in saved:
            training["rng"] = saved["rng"]["torch"]
        training["metrics"] = _metrics_before(path.parent / "metrics.jsonl", saved.get("step", 0))
        return Checkpoint(path, description, {"state_dict": model, "training": training})
    raise NotACheckpoint(f"{path} is not a charlstm checkpoint (no model description in it); "
                         "pass one written by `charlstm train`, `charlstm speech` or "
                         "`charlstm calc`")


def _metrics_before(path: Path, step: int) -> list:
    """The summaries a 0.1.0 train run logged before its checkpoint's step."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the process was killed
                continue
            if record.get("step", step) < step:
                records.append(record)
    return records
