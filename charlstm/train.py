"""Train the assignment's character model and measure validation perplexity (Udacity 6_lstm).

One loop, top to bottom, with the assignment's semantics by default: validation is the first
`valid_size` characters and training the rest; the BatchGenerator's windows; state carried
across windows; mean softmax cross-entropy; SGD with a staircase-decayed learning rate and
gradients clipped to a global norm; every `summary_frequency` steps the average loss, minibatch
and validation perplexity and a sampled string. Validation resets the state, runs the whole
validation text as one sequence with batch 1, and scores each character's prediction of the
next, the last one predicting the first (the assignment's generator wraps).
"""

import hashlib
import math
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm import checkpoint, loop
from charlstm.config import TrainConfig
from charlstm.data.batches import BatchGenerator, encode
from charlstm.data.corpus import read_corpus
from charlstm.data.normalize import TEXT8_ALPHABET, text8_form
from charlstm.data.vocab import Vocab
from charlstm.models import UdacityLM
from charlstm.sample import generate

# The assignment's logprob() clips predicted probabilities at 1e-10 before taking the log.
MAX_NLL = -math.log(1e-10)
SAMPLE_LENGTH = 80
VOCAB = Vocab(TEXT8_ALPHABET.decode("ascii"))
# What may change when a run is resumed; everything else must stay as the run was started.
RESUME_OVERRIDES = ("steps", "summary_frequency", "threads", "device")
# What the saved weights and batch cursors depend on: a resumed run must have the same.
RUN_DEFINITION = ("nodes", "cell", "batch_size", "unrollings", "valid_size", "dtype")


def resume_config(run_dir, **overrides) -> TrainConfig:
    """The configuration saved in the run folder `run_dir` (or the folder of its checkpoint file),
    set to resume there, with some options changed.

    A resumed run writes into its own folder, wherever it was started from and wherever the
    folder has been moved. Only options in RESUME_OVERRIDES may change (more steps, another
    device...); the others define the run and a ValueError names any that differs.
    """
    if not str(run_dir).strip():
        raise ValueError("--resume is empty; pass the run folder to continue")
    saved = checkpoint.read(run_dir)  # what is wrong with the path is told with its name
    folder = checkpoint.folder_of(run_dir)
    if not folder.is_dir():
        raise ValueError(f"--resume {run_dir}: a run continues in its own folder, from the "
                         f"{checkpoint.NAME}.pt there; pass the run folder (or its "
                         f"{checkpoint.NAME}.pt)")
    _check_workload(saved, folder)
    out = overrides.pop("out", None)
    if out is not None and Path(out).resolve() != folder.resolve():
        raise ValueError(f"--out {out} cannot be given with --resume: a resumed run writes into "
                         f"its own folder, {folder}; copy that folder first to continue a copy")
    saved_config = saved.config
    for name, value in overrides.items():
        if name not in RESUME_OVERRIDES and value != saved_config.get(name):
            raise ValueError(f"--{name.replace('_', '-')} cannot change when resuming (the run in "
                             f"{folder} has {saved_config.get(name)!r}); only "
                             f"{', '.join('--' + o.replace('_', '-') for o in RESUME_OVERRIDES)} can")
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved_config.items() if k in known})
    for name, value in overrides.items():
        if name in RESUME_OVERRIDES:
            setattr(config, name, value)
    config.resume = config.out = str(folder)
    config.save = True
    return config


def _check_workload(saved: checkpoint.Checkpoint, folder) -> None:
    if saved.workload == "speech":
        raise ValueError(f"{folder} holds a `charlstm speech` run, not a `charlstm train` one; "
                         f"continue it with `charlstm speech` and its options and --out {folder}")
    if saved.workload != "train":
        raise ValueError(f"{folder} holds a `charlstm {saved.workload}` run, not a `charlstm "
                         "train` one; only train and speech runs can be continued")


def learning_rate(config: TrainConfig, step: int) -> float:
    """tf.train.exponential_decay(lr, step, decay_steps, decay_rate, staircase=True)."""
    return config.lr * config.decay_rate ** (step // config.decay_steps)


def clip_global_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Scale gradients by max_norm / max(norm, max_norm), as tf.clip_by_global_norm; returns the norm.

    torch's clip_grad_norm_ divides by norm + 1e-6 instead, which is not quite the assignment's.
    """
    grads = [p.grad for p in parameters]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = max_norm / torch.clamp(norm, min=max_norm)
    for g in grads:
        g.mul_(scale)
    return norm


@torch.no_grad()
def sgd_step_(parameters, lr: float) -> None:
    """Plain gradient descent, tf.train.GradientDescentOptimizer: it has no state to keep.

    Written out rather than torch.optim.SGD, whose construction imports torch._dynamo: seconds
    of start-up for a whole `charlstm train` process that takes a few.
    """
    for p in parameters:
        p.add_(p.grad, alpha=-lr)
        p.grad = None


FUSED_CELLS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}


def fused_step(model: UdacityLM, window: torch.Tensor, state, lr: float, clip: float):
    """One training step as charlstm.ops.lm_sgd_step: forward, loss, backward, clip_global_norm_
    and sgd_step_ in one call -> (loss, norm, logits [T * B, 27], state after the window)."""
    from charlstm import ops

    return ops.lm_sgd_step(window, state, model.weight_ih, model.weight_hh, model.bias_ih, None,
                           model.w, model.b, cell=FUSED_CELLS[model.cell], lr=lr, clip=clip)


@torch.no_grad()
def validation_losses(model: UdacityLM, valid_ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of each validation character given the ones before
    it; their mean is the log of the validation perplexity.

    One sequence from a zero state with batch 1; character i predicts i + 1 and the last one
    predicts the first, as the assignment's BatchGenerator(valid_text, 1, 1) wraps around.
    """
    logits, _ = model(valid_ids.unsqueeze(1), model.initial_state(1))
    return _nll(logits.squeeze(1), torch.roll(valid_ids, -1))


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    nll = -torch.log_softmax(logits.double(), dim=-1).gather(-1, targets.unsqueeze(-1))
    return nll.clamp(max=MAX_NLL).squeeze(-1)


def char_losses(losses: torch.Tensor) -> list[float]:
    """Per-character losses as the result keeps them: a list, rounded to 1e-5 nats, which leaves
    the mean and any resampling of it unchanged at the precision reported."""
    return [round(x, 5) for x in losses.cpu().tolist()]


def summary_sample(model: UdacityLM, seed: int) -> str:
    """The summary's string: a random first character, then the model's own continuation, drawn
    with a generator of its own, so that sampling never changes training."""
    draw = torch.Generator().manual_seed(seed)
    first = VOCAB.chars[torch.randint(len(VOCAB), (), generator=draw)]
    return first + "".join(generate(model, VOCAB, first, SAMPLE_LENGTH - 1, seed=seed))


def describe(config: TrainConfig) -> dict:
    """The checkpoint's description of this run's model."""
    model = {"nodes": config.nodes, "cell": config.cell, "backend": config.backend,
             "init": config.init}
    return checkpoint.describe("train", "udacity", model, VOCAB, asdict(config))


def train(config: TrainConfig, milestones: list[int] | None = None, on_milestone=None,
          progress: bool = True) -> dict:
    """Train as `config` says and return the result (see docs/train.md).

    `milestones`: step counts k at which to evaluate validation perplexity as a run with
    `steps=k` would report it (k <= config.steps), returned as result["milestones"] {k: ppl};
    `on_milestone(k, ppl)` is called at each, and may raise to stop the run. `progress`: a
    progress bar and the summaries on stderr.
    """
    started = time.perf_counter()
    config = replace(config)  # the run fills in its folder and data path; the caller's stays
    config.check()
    milestones = sorted(set(milestones or []))
    if milestones and not (1 <= milestones[0] and milestones[-1] <= config.steps):
        raise ValueError(f"milestones must lie between 1 and --steps ({config.steps}), got "
                         f"{milestones}")
    device, dtype = loop.device(config.device), getattr(torch, config.dtype)
    saved = None
    if config.resume:
        config.out = str(checkpoint.folder_of(config.resume))
        saved = checkpoint.read(config.out)
        _check_resume(saved, config)
    run = loop.RunFolder.choose(config.out, config.save, "train")
    _check_run_folder(config, run)
    _check_memory(config, device)
    if config.threads:
        torch.set_num_threads(config.threads)

    corpus = read_corpus(config.data, text8_url=config.url, progress=progress, option="--data")
    text, normalization = text8_form(corpus.documents)
    ids = encode(text)
    config.check_text(len(ids), corpus.source)
    if saved is None and config.data is not None and Path(config.data).exists():
        # The run records where its text is, so that it resumes from any folder.
        config.data = str(Path(config.data).resolve())
    valid_ids = torch.from_numpy(ids[:config.valid_size].astype(np.int64)).to(device)
    batches = BatchGenerator(ids[config.valid_size:], config.batch_size, config.unrollings)

    torch.manual_seed(config.seed)
    with loop.memory_errors(MEMORY_FIX):
        model = UdacityLM(config.nodes, config.cell, config.backend, config.init).to(device, dtype)
    parameters = list(model.parameters())
    state = model.initial_state(config.batch_size)
    step, mean_loss, reached, reached_losses, records = 0, 0.0, {}, {}, []
    if saved is not None:
        step, mean_loss, reached, reached_losses, state, records = _restore(saved, config, model,
                                                                            batches)
    first_step = step

    def save():
        return run.save(description, model.state_dict(), {
            "step": step, "batches": batches.state_dict(), "state": [s.cpu() for s in state],
            "mean_loss": mean_loss, "milestones": dict(reached),
            "milestone_char_nll": dict(reached_losses), "rng": torch.get_rng_state()})

    def validate() -> tuple[float, float, torch.Tensor]:
        losses = validation_losses(model, valid_ids)
        nll = losses.mean().item()
        return math.exp(nll), nll / math.log(2), losses

    loop_started = time.perf_counter()
    with loop.Progress("training", config.steps, first_step, "loss {loss:.3f}  lr {lr:g}",
                       enabled=progress, rate="steps/s") as bar, \
            loop.deferred_interrupt() as interrupted, loop.memory_errors(MEMORY_FIX):
        # The run folder's metrics start under the deferred Ctrl-C: pressed at any time after,
        # it is answered with what was kept, never with a bare interruption.
        run.start(records)
        if run.path is not None:
            config.out = str(run.path)
        description = describe(config)
        if normalization is not None:
            bar.print(normalization.describe())
        if saved is not None:
            bar.print(f"resuming {config.resume} at step {step}")
        while step < config.steps:
            lr = learning_rate(config, step)
            window = batches.next().to(device, non_blocking=True)
            if config.backend == "fused":
                # The whole step in one op; it changes no weight when the loss or norm is not finite.
                loss, norm, logits, next_state = fused_step(model, window, state, lr, config.clip)
            else:
                logits, next_state = model(window[:-1], state)
                loss = F.cross_entropy(logits.reshape(-1, model.vocab_size), window[1:].reshape(-1))
                loss.backward()
                norm = clip_global_norm_(parameters, config.clip)
            # One device-to-host transfer per step for both figures.
            loss_value, norm_value = torch.stack([loss.detach().float(),
                                                  norm.detach().float()]).tolist()
            loop.check_finite(f"step {step}", f"lower --lr (now {config.lr}) or --clip (now "
                              f"{config.clip})", run.checkpoint, loss=loss_value,
                              gradient_norm=norm_value)
            if config.backend != "fused":
                sgd_step_(parameters, lr)
            state = tuple(s.detach() for s in next_state)
            mean_loss += loss_value
            bar.advance(loss=loss_value, lr=lr)

            record = None
            if step % config.summary_frequency == 0:
                if step > 0:
                    mean_loss /= config.summary_frequency
                ppl, bpc, _ = validate()
                minibatch = math.exp(_nll(logits.detach().reshape(-1, model.vocab_size),
                                          window[1:].reshape(-1)).mean().item())
                record = {"step": step, "lr": lr, "loss": mean_loss,
                          "minibatch_perplexity": minibatch, "valid_perplexity": ppl,
                          "valid_bpc": bpc,
                          "sample": summary_sample(model, config.seed * 1_000_003 + step),
                          "seconds": time.perf_counter() - started}
                bar.print(f"step {step}: average loss {mean_loss:.6f}, learning rate {lr:g}, "
                          f"minibatch perplexity {minibatch:.2f}, validation perplexity "
                          f"{ppl:.2f}\n  {record['sample']!r}")
                mean_loss = 0.0
            step += 1
            if record is not None:
                run.log(record)
                save()
            if step in milestones:
                ppl, _, losses = validate()
                reached[step] = ppl
                reached_losses[step] = char_losses(losses)
                if on_milestone is not None:
                    on_milestone(step, reached[step])
            if interrupted():
                where = save()
                raise loop.Interrupted(
                    f"interrupted after {step} steps; " + (
                        f"saved to {where}; continue with `charlstm train --resume {run.path}`"
                        if where else "nothing saved (--no-save); run it again without "
                                      "--no-save to be able to resume"),
                    where)
        train_seconds = time.perf_counter() - loop_started
    save()

    ppl, bpc, losses = validate()
    trained = config.steps - first_step
    result = {
        "valid_perplexity": ppl,
        "valid_bpc": bpc,
        "steps": config.steps,
        "resumed_at_step": first_step if saved is not None else None,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "tokens_per_second": (trained * config.batch_size * config.unrollings / train_seconds
                              if trained else 0.0),
        "milestones": {k: reached[k] for k in milestones if k in reached},
        "out": str(run.path) if run.path is not None else None,
        "valid_char_nll": char_losses(losses),
        "milestone_char_nll": {k: reached_losses[k] for k in milestones if k in reached_losses},
        "parameters": sum(p.numel() for p in parameters),
        "data": {"source": corpus.source, "characters": len(ids),
                 "sha1": hashlib.sha1(text).hexdigest(),
                 "normalization": normalization.to_dict() if normalization else None},
        "config": asdict(config),
    }
    run.finish(result)
    return result


def _check_resume(saved: checkpoint.Checkpoint, config: TrainConfig) -> None:
    """Refuse, before any work, a checkpoint this run cannot continue."""
    _check_workload(saved, config.out)
    for name in RUN_DEFINITION:
        if saved.config.get(name) != getattr(config, name):
            raise ValueError(f"the checkpoint in {config.out} was made with "
                             f"{name}={saved.config.get(name)!r}, not {getattr(config, name)!r}; "
                             "resume with the run's own options")
    done = saved.training.get("step", 0)
    if config.steps <= done:
        raise ValueError(f"the run in {config.out} has already trained {done} steps, so --steps "
                         f"{config.steps} leaves nothing to train; pass --steps above {done} to "
                         "train further")


def _restore(saved: checkpoint.Checkpoint, config: TrainConfig, model, batches):
    """Weights, batch cursors, carried state, RNG and the run's counters from a checkpoint."""
    training = saved.training
    model.load_state_dict(saved.state_dict)
    batches.load_state_dict(training["batches"])
    if "rng" in training:
        torch.set_rng_state(training["rng"])
    state = tuple(s.to(model.w.device, model.w.dtype) for s in training["state"])
    return (training["step"], training["mean_loss"], dict(training["milestones"]),
            dict(training.get("milestone_char_nll", {})), state, training.get("metrics", []))


MEMORY_FIX = "lower --nodes, --batch-size or --unrollings"


def _check_memory(config: TrainConfig, device) -> None:
    """Refuse a run whose weights and activations cannot fit, before reading any data."""
    size = 8 if config.dtype == "float64" else 4
    parameters = loop.parameter_count(
        lambda: UdacityLM(config.nodes, config.cell, config.backend, config.init))
    # Weights, gradients and the fused step's copies; the saved gate activations (four per unit
    # at most) of a window and of the validation text, and their gradients.
    weights = 4 * parameters * size
    activations = (3 * config.batch_size * config.unrollings + config.valid_size) * \
        4 * config.nodes * size
    fix = ("lower --batch-size or --unrollings" if activations > weights else "lower --nodes")
    loop.check_memory(weights + activations, device,
                      f"--nodes {config.nodes} ({parameters:,} weights) with --batch-size "
                      f"{config.batch_size} and --unrollings {config.unrollings}", fix)


def _check_run_folder(config: TrainConfig, run: loop.RunFolder) -> None:
    """Refuse to start a new run over a folder that holds one: its checkpoint would be lost."""
    if run.checkpoint is None or config.resume is not None:
        return
    raise ValueError(f"{config.out} already holds a run ({run.checkpoint.name}); continue it "
                     f"with --resume {config.out}, or pass another --out")
