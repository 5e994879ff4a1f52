"""Train the fast.ai lesson 6 ladder of char models on a speech corpus.

The defaults are the notebook's: embedding 42, hidden 256, Adam for one epoch at 1e-2 and one at
1e-3, batch 512 for the window models and 64 streams of bptt 8 for the sequence models.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from charlstm.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from charlstm.data.speeches import load_corpus
from charlstm.models import BACKENDS, DEFAULT_BACKEND, MODELS, build_model, count_parameters, \
    model_config_keys

RUNS_DIR = Path("runs")
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "charlstm.model/1"
WINDOW_BATCH, SEQUENCE_BATCH = 512, 64
EVAL_BATCH, EVAL_CHUNK = 4096, 256


@dataclass
class SpeechConfig:
    corpus: str
    model: str = "lstm-seq"
    embedding: int = 42
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    backend: str = DEFAULT_BACKEND
    bptt: int = 8
    batch_size: int | None = None
    lrs: list[float] = field(default_factory=lambda: [1e-2, 1e-3])
    epochs_per_lr: int = 1
    max_steps_per_epoch: int | None = None
    valid_fraction: float = 0.1
    seed: int = 0
    cops_url: str | None = None

    def batch(self, sequence: bool) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return SEQUENCE_BATCH if sequence else WINDOW_BATCH

    def check(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        for name in ("embedding", "hidden", "layers", "bptt", "epochs_per_lr"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be at least 1, got {self.max_steps_per_epoch}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"learning rates must be positive and at least one given, got {self.lrs}")

    def run_key(self) -> dict:
        """What makes two runs the same run: everything but where the corpus was downloaded from."""
        key = asdict(self)
        key.pop("cops_url")
        return key


def bits(nats: float) -> float:
    return nats / math.log(2)


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _window_batches(ids, context, batch, generator, max_steps):
    starts = torch.randperm(len(ids) - context, generator=generator)
    offsets = torch.arange(context)
    steps = math.ceil(len(starts) / batch)
    for s in range(min(steps, max_steps or steps)):
        idx = starts[s * batch:(s + 1) * batch]
        yield ids[idx[:, None] + offsets], ids[idx + context]


def _streams(ids, batch):
    """[L, batch] columns of consecutive text, as the stateful models read it."""
    length = len(ids) // batch
    return ids[:length * batch].view(batch, length).t()


def _sequence_batches(ids, batch, bptt, max_steps):
    streams = _streams(ids, batch)
    starts = range(0, streams.shape[0] - 1, bptt)
    for start in list(starts)[:max_steps or None]:
        end = min(start + bptt, streams.shape[0] - 1)
        yield streams[start:end], streams[start + 1:end + 1]


def steps_per_epoch(config: SpeechConfig, model, n_train: int) -> int:
    batch = config.batch(model.context is None)
    if model.context is None:
        steps = math.ceil((n_train // batch - 1) / config.bptt)
    else:
        steps = math.ceil((n_train - model.context) / batch)
    return min(steps, config.max_steps_per_epoch or steps)


@torch.no_grad()
def evaluate(model, ids, batch: int) -> float:
    """Mean cross-entropy in nats per predicted char over `ids`, with dropout off."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    if model.context is None:
        state = None
        streams = _streams(ids, min(batch, max(1, len(ids) // 2)))
        for start in range(0, streams.shape[0] - 1, EVAL_CHUNK):
            end = min(start + EVAL_CHUNK, streams.shape[0] - 1)
            logits, state = model(streams[start:end], state)
            target = streams[start + 1:end + 1]
            total += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
            count += target.numel()
    else:
        starts = torch.arange(len(ids) - model.context)
        offsets = torch.arange(model.context)
        for idx in starts.split(EVAL_BATCH):
            logits = model(ids[idx[:, None] + offsets])
            total += F.cross_entropy(logits, ids[idx + model.context], reduction="sum").item()
            count += len(idx)
    model.train(was_training)
    return total / count


def _check_sizes(config, model, n_train, n_valid):
    if model.context is not None:
        need = model.context + 1
        if n_train < need or n_valid < need:
            raise ValueError(f"the corpus is too small for {config.model}: the training and validation "
                             f"parts need at least {need} chars each (have {n_train} and {n_valid}); "
                             "use a larger corpus or a larger --valid-fraction")
        return
    batch = config.batch(True)
    if n_train // batch < 2 or n_valid < 2:
        raise ValueError(f"the corpus is too small for {batch} streams: {n_train} training chars give "
                         f"{n_train // batch} per stream (need at least 2); lower --batch-size")


def model_config(config: SpeechConfig, model) -> dict:
    values = {"embedding": config.embedding, "hidden": config.hidden, "layers": config.layers,
              "dropout": config.dropout, "backend": config.backend, "context": model.context}
    return {k: values[k] for k in model_config_keys(config.model)}


def default_out(model: str) -> Path:
    return RUNS_DIR / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _resume(path: Path, config: SpeechConfig):
    if not path.is_file():
        return None
    saved = load_checkpoint(path)
    run = saved.get("run") if isinstance(saved, dict) else None
    if not run or run.get("key") != config.run_key():
        raise ValueError(f"{path.parent} holds a different run; pass another --out or remove it")
    return saved


def _epoch_progress(progress):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), "{task.fields[loss]}", console=Console(stderr=True),
                    disable=not progress, transient=True)


def train_speech(config: SpeechConfig, out=None, progress: bool = True, log=print) -> dict:
    """Train `config.model` on `config.corpus`; write config, metrics and a checkpoint to `out`
    after every epoch (a rerun with the same `out` resumes after the last finished epoch), and
    return the final train and validation loss in nats and bits per char."""
    config.check()
    corpus = load_corpus(config.corpus, config.cops_url, progress)
    train_text, valid_text = corpus.split(config.valid_fraction)
    train_ids = torch.tensor(corpus.vocab.encode(train_text), dtype=torch.long)
    valid_ids = torch.tensor(corpus.vocab.encode(valid_text), dtype=torch.long)

    torch.manual_seed(config.seed)
    model = build_model(config.model, len(corpus.vocab), embedding=config.embedding,
                        hidden=config.hidden, layers=config.layers, dropout=config.dropout,
                        backend=config.backend)
    _check_sizes(config, model, len(train_ids), len(valid_ids))
    sequence = model.context is None
    batch = config.batch(sequence)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lrs[0])
    total_epochs = len(config.lrs) * config.epochs_per_lr

    out = Path(out) if out is not None else default_out(config.model)
    ckpt_path = out / CHECKPOINT_FILE
    metrics, train_seconds, start_epoch = [], 0.0, 0
    saved = _resume(ckpt_path, config)
    if saved is not None:
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        metrics = list(saved["run"]["metrics"])
        start_epoch = saved["run"]["epochs_done"]
        train_seconds = metrics[-1]["train_seconds"] if metrics else 0.0
        log(f"{out} is already trained ({total_epochs} epochs)" if start_epoch == total_epochs
            else f"resuming {out} after epoch {start_epoch} of {total_epochs}")
    info = {"model": config.model, "parameters": count_parameters(model),
            "model_config": model_config(config, model), "corpus": corpus.source,
            "documents": corpus.documents, "train_chars": len(train_ids),
            "valid_chars": len(valid_ids), "vocab_size": len(corpus.vocab),
            "batch_size": batch, "steps_per_epoch": steps_per_epoch(config, model, len(train_ids))}
    atomic_write_bytes(out / "config.json", json.dumps(
        {"config": asdict(config), **info}, indent=2).encode())

    for epoch in range(start_epoch, total_epochs):
        lr = config.lrs[epoch // config.epochs_per_lr]
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        model.train()
        loss_sum, count, state = 0.0, 0, None
        began = time.perf_counter()
        batches = (_sequence_batches(train_ids, batch, config.bptt, config.max_steps_per_epoch)
                   if sequence else
                   _window_batches(train_ids, model.context, batch, generator, config.max_steps_per_epoch))
        with _epoch_progress(progress) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{total_epochs}", loss="",
                                total=info["steps_per_epoch"])
            for x, y in batches:
                if sequence:
                    logits, state = model(x, state)
                    state = _detach(state)
                    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                else:
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * y.numel()
                count += y.numel()
                bar.update(task, advance=1, loss=f"loss {loss.item():.3f}")
        train_seconds += time.perf_counter() - began
        train_loss = loss_sum / count
        valid_loss = evaluate(model, valid_ids, batch)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                  "train_bits_per_char": bits(train_loss), "valid_loss": valid_loss,
                  "valid_bits_per_char": bits(valid_loss), "train_seconds": train_seconds}
        metrics.append(record)
        save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT,
            "model": {"name": config.model, "config": info["model_config"]},
            "state_dict": model.state_dict(),
            "vocab": list(corpus.vocab.chars),
            "optimizer": optimizer.state_dict(),
            "run": {"key": config.run_key(), "epochs_done": epoch + 1, "metrics": metrics},
        })
        atomic_write_bytes(out / "metrics.json", json.dumps({"epochs": metrics}, indent=2).encode())
        log(f"epoch {epoch + 1}/{total_epochs}  lr {lr:g}  train {train_loss:.4f} nats/char "
            f"({bits(train_loss):.4f} bpc)  valid {valid_loss:.4f} nats/char "
            f"({bits(valid_loss):.4f} bpc)  {train_seconds:.1f}s")

    final = metrics[-1]
    return {"model": config.model, "parameters": info["parameters"], "corpus": corpus.source,
            "vocab_size": len(corpus.vocab), "epochs": len(metrics),
            "train_loss": final["train_loss"], "valid_loss": final["valid_loss"],
            "train_bits_per_char": final["train_bits_per_char"],
            "valid_bits_per_char": final["valid_bits_per_char"],
            "train_seconds": final["train_seconds"], "out": str(out), "checkpoint": str(ckpt_path)}
