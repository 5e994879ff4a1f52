"""Train the fast.ai lesson 6 ladder of char models on a speech corpus.

The defaults are the notebook's: embedding 42, hidden 256, Adam for one epoch at 1e-2 and one at
1e-3, batch 512 for the window models and 64 streams of bptt 8 for the sequence models. One loop
over epochs and batches; a checkpoint after every epoch, from which a rerun with the same run
folder resumes.
"""

import math
import time
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F

from charlstm import checkpoint, loop
from charlstm.config import SEQUENCE_MODELS, SpeechConfig, flag
from charlstm.data.corpus import read_corpus
from charlstm.data.vocab import Vocab
from charlstm.models import build_model, count_parameters, model_config_keys

EVAL_BATCH, EVAL_CHUNK = 4096, 256


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


def _resume(run: loop.RunFolder, config: SpeechConfig):
    """The checkpoint in the run folder, if any, when it is this run's; else a ValueError."""
    if run.checkpoint is None:
        return None
    saved = checkpoint.read(run.path)
    mine = {k: v for k, v in asdict(config).items() if k not in config.WHERE}
    theirs = {k: v for k, v in saved.config.items() if k not in config.WHERE}
    if saved.workload != "speech":
        raise ValueError(f"{run.path} holds a `charlstm {saved.workload}` run; pass another --out")
    if mine != theirs:
        differ = [k for k in mine if mine[k] != theirs.get(k)]
        shown = ", ".join(f"{flag(SpeechConfig, k)} {theirs.get(k)!r} there, {mine[k]!r} here"
                          for k in differ[:3])
        raise ValueError(f"{run.path} holds a different run ({shown}); pass another --out, or "
                         "the run's own options to resume it")
    return saved


MEMORY_FIX = "lower --hidden, --embedding, --layers or --batch-size"
# The vocabulary is not known before the corpus is read; speech corpora have about a hundred
# characters, and the check only has to tell a model that fits from one that cannot.
VOCAB_GUESS = 128


def _build(config: SpeechConfig, vocab_size: int):
    return build_model(config.model, vocab_size, embedding=config.embedding, hidden=config.hidden,
                       layers=config.layers, dropout=config.dropout, backend=config.backend)


def _check_memory(config: SpeechConfig) -> None:
    """Refuse a model that cannot fit, before reading the corpus."""
    parameters = loop.parameter_count(lambda: _build(config, VOCAB_GUESS))
    batch = config.batch(config.model in SEQUENCE_MODELS)
    # Weights, gradients and Adam's two moments; per batch row the activations of a window (the
    # gates of every layer, kept for backward, and their gradients).
    weights = 4 * 4 * parameters
    activations = 3 * 4 * batch * max(config.bptt, 8) * (4 * config.hidden * config.layers +
                                                         config.embedding + VOCAB_GUESS)
    fix = "lower --batch-size" if activations > weights else MEMORY_FIX
    loop.check_memory(weights + activations, loop.device("cpu"),
                      f"--model {config.model} with --hidden {config.hidden} "
                      f"({parameters:,} weights) and batch {batch}", fix)


def _interrupted(run: loop.RunFolder, out_given: bool, epoch: int) -> str:
    """What Ctrl-C in `epoch` (0-based) kept, and how to go on."""
    where = f"interrupted in epoch {epoch + 1}"
    if run.path is None:
        return f"{where}; nothing saved (--no-save)"
    if run.checkpoint is None:
        return (f"{where}; nothing was saved yet (a checkpoint comes after each epoch); rerun to "
                "start again")
    again = ("rerun the same command to resume from it" if out_given else
             f"rerun the same command with --out {run.path} to resume from it")
    return f"{where}; the checkpoint after epoch {epoch} is {run.checkpoint}; {again}"


def train_speech(config: SpeechConfig, progress: bool = True, log=print) -> dict:
    """Train `config.model` on `config.corpus`; write the checkpoint and metrics to `config.out`
    (default runs/speech-MODEL-TIMESTAMP; none with save False) after every epoch (a rerun with
    the same `out` resumes after the last finished epoch), and return the final train and
    validation loss in nats and bits per char."""
    config = replace(config)  # the run fills in its folder; the caller's config stays
    config.check()
    out_given = config.out is not None
    run = loop.RunFolder.choose(config.out, config.save, f"speech-{config.model}")
    saved = _resume(run, config)
    _check_memory(config)
    corpus = read_corpus(config.corpus, cops_url=config.cops_url, progress=progress)
    vocab = Vocab.from_text(corpus.text)
    train_text, valid_text = corpus.split(config.valid_fraction)
    train_ids = torch.tensor(vocab.encode(train_text), dtype=torch.long)
    valid_ids = torch.tensor(vocab.encode(valid_text), dtype=torch.long)

    torch.manual_seed(config.seed)
    with loop.memory_errors(MEMORY_FIX):
        model = _build(config, len(vocab))
    _check_sizes(config, model, len(train_ids), len(valid_ids))
    sequence = model.context is None
    batch = config.batch(sequence)
    steps = steps_per_epoch(config, model, len(train_ids))
    # One fused kernel over all parameters rather than torch's loop of a dozen ops per parameter:
    # at the defaults (lstm-seq), on a 2-core AMD EPYC (Zen 4), the loop made a step of 9 to 12 ms
    # 0.6 to 0.8 ms longer on either backend.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lrs[0], fused=True)
    total_epochs = len(config.lrs) * config.epochs_per_lr

    start_epoch, records = 0, []
    if saved is not None:
        if saved.vocab != str(vocab):
            raise ValueError(f"{run.path} holds a run on another text (its vocabulary differs "
                             "from the corpus's); pass another --out or the corpus it trained on")
        model.load_state_dict(saved.state_dict)
        optimizer.load_state_dict(saved.training["optimizer"])
        start_epoch, records = saved.training["epochs_done"], saved.training["metrics"]
        log(f"{run.path} is already trained ({total_epochs} epochs)" if start_epoch == total_epochs
            else f"resuming {run.path} after epoch {start_epoch} of {total_epochs}")
    train_seconds = records[-1]["train_seconds"] if records else 0.0

    # Ctrl-C is deferred from before the run folder's metrics start: pressed at any time after,
    # it is answered with what was kept, never with a bare interruption.
    with loop.deferred_interrupt() as interrupted, loop.memory_errors(MEMORY_FIX):
        run.start(records)
        if run.path is not None:
            config.out = str(run.path)
        description = checkpoint.describe("speech", config.model, model_config(config, model),
                                          vocab, asdict(config))
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
                       _window_batches(train_ids, model.context, batch, generator,
                                       config.max_steps_per_epoch))
            with loop.Progress(f"epoch {epoch + 1}/{total_epochs}", steps, status="loss {loss:.3f}",
                               enabled=progress, transient=True) as bar:
                for i, (x, y) in enumerate(batches):
                    if sequence:
                        logits, state = model(x, state)
                        state = _detach(state)
                        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                    else:
                        loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    loss_value = loss.item()
                    loop.check_finite(f"epoch {epoch + 1} batch {i + 1}", "lower --lr",
                                      run.checkpoint, loss=loss_value)
                    optimizer.step()
                    loss_sum += loss_value * y.numel()
                    count += y.numel()
                    bar.advance(loss=loss_value)
                    if interrupted():
                        raise loop.Interrupted(_interrupted(run, out_given, epoch),
                                               run.checkpoint)
            train_seconds += time.perf_counter() - began
            train_loss = loss_sum / count
            valid_loss = evaluate(model, valid_ids, batch)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss,
                      "train_bits_per_char": bits(train_loss), "valid_loss": valid_loss,
                      "valid_bits_per_char": bits(valid_loss), "train_seconds": train_seconds}
            run.log(record)
            run.save(description, model.state_dict(),
                     {"optimizer": optimizer.state_dict(), "epochs_done": epoch + 1})
            log(f"epoch {epoch + 1}/{total_epochs}  lr {lr:g}  train {train_loss:.4f} nats/char "
                f"({bits(train_loss):.4f} bpc)  valid {valid_loss:.4f} nats/char "
                f"({bits(valid_loss):.4f} bpc)  {train_seconds:.1f}s")

    final = run.records[-1]
    result = {"model": config.model, "parameters": count_parameters(model),
              "corpus": corpus.source, "documents": len(corpus.documents),
              "vocab_size": len(vocab), "train_chars": len(train_ids),
              "valid_chars": len(valid_ids), "batch_size": batch, "steps_per_epoch": steps,
              "epochs": len(run.records), "train_loss": final["train_loss"],
              "valid_loss": final["valid_loss"],
              "train_bits_per_char": final["train_bits_per_char"],
              "valid_bits_per_char": final["valid_bits_per_char"],
              "train_seconds": final["train_seconds"],
              "out": str(run.path) if run.path is not None else None,
              "checkpoint": str(run.checkpoint) if run.path is not None else None,
              "config": asdict(config)}
    run.finish(result)
    return result
