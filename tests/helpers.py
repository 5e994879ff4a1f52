"""What several test files share: generated corpora, small checkpoints, a stand-in trainer for
the sweep, the command line in a subprocess, a local text8 server, and the language-model step's
specification."""

import http.server
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which").split()


def words(chars: int = 6000, seed: int = 0, vocabulary=WORDS) -> str:
    """Words drawn at random (seeded) until the text is `chars` characters long or a bit more."""
    rng = random.Random(seed)
    out = []
    while sum(len(w) + 1 for w in out) < chars:
        out.append(rng.choice(vocabulary))
    return " ".join(out)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def text8_server(folder: Path, text: str):
    """Serves `folder`/text8.zip, one member `text8` holding `text`, on 127.0.0.1 for the block.
    Yields the archive's URL and its bytes."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("text8", text)
    folder.mkdir(parents=True)
    (folder / "text8.zip").write_bytes(archive.getvalue())
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: _QuietFiles(*args, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/text8.zip", archive.getvalue()
    finally:
        server.shutdown()
        server.server_close()


def write_text(path, chars: int = 6000, seed: int = 0, vocabulary=WORDS) -> Path:
    path = Path(path)
    path.write_text(words(chars, seed, vocabulary))
    return path


def write_model(folder, name: str, vocab, workload: str = "speech", **config):
    """A freshly initialised model saved as a checkpoint in `folder`; returns the model."""
    from charlstm import checkpoint
    from charlstm.models import build_model

    torch.manual_seed(len(str(folder)))
    config = {"embedding": 8, "hidden": 16, **config}
    model = build_model(name, len(vocab), **config)
    checkpoint.save(folder, checkpoint.describe(workload, name, config, "".join(vocab), {}),
                    model.state_dict())
    return model


def charlstm(*args, cwd=None, timeout=300, **env):
    """`charlstm ARGS` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "charlstm_cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **env})


# A stand-in trainer for the sweep: it trains nothing, so the sweep's tests run in seconds.

def fake_perplexity(config, steps):
    return (3.0 + 20.0 / config.nodes + 2.0 / config.unrollings + 100.0 / steps
            + 0.01 * ((config.seed * 7919) % 13))


def _first_time(calls, name) -> bool:
    """True for the first process to ask, across processes (a marker file in `calls`)."""
    try:
        marker = os.open(Path(calls, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(marker, str(os.getpid()).encode())
    os.close(marker)
    return True


def fake_train(config, milestones=None, progress=True):
    """Records each call in $CHARLSTM_TEST_CALLS; the first run with $CHARLSTM_TEST_BLOCK nodes
    blocks (until killed or interrupted); the first run with $CHARLSTM_TEST_EXIT nodes ends its
    process at once, as a killed worker does; runs with $CHARLSTM_TEST_FAIL nodes raise."""
    calls = os.environ.get("CHARLSTM_TEST_CALLS")
    point = {"nodes": config.nodes, "unrollings": config.unrollings, "seed": config.seed,
             "steps": config.steps}
    if calls:
        Path(calls, uuid.uuid4().hex).write_text(json.dumps({**point, "pid": os.getpid(),
                                                             "threads": config.threads}))
    nodes = str(config.nodes)
    if os.environ.get("CHARLSTM_TEST_BLOCK") == nodes and _first_time(calls, "blocked"):
        time.sleep(600)
    if os.environ.get("CHARLSTM_TEST_EXIT") == nodes and _first_time(calls, "exited"):
        os._exit(1)
    if os.environ.get("CHARLSTM_TEST_FAIL") == str(config.nodes):
        raise RuntimeError(f"loss became NaN at nodes {config.nodes}")
    return {"valid_perplexity": fake_perplexity(config, config.steps), "valid_bpc": 1.5,
            "steps": config.steps, "train_seconds": 0.01, "seconds": 0.02,
            "tokens_per_second": 1000.0,
            "milestones": {m: fake_perplexity(config, m) for m in (milestones or [])}}


def synthetic_trainer(mean_loss, seed_noise: float = 0.0, text_noise: float = 0.0,
                      chars: int = 1000, data=None):
    """A stand-in trainer whose per-character validation losses are known, for tests of what the
    report concludes from them.

    Character i of a run costs text[i] + mean_loss(config, steps) + text_noise * z[i] +
    seed_noise * e: text is one fixed sequence (mean 1 nat) of easy and hard characters shared
    by every run; z is drawn per point, so points differ character by character in a way no
    seed reveals (what the validation text's bootstrap measures); e is drawn per point and seed
    (what the seeds measure)."""
    import numpy as np

    text = np.random.default_rng(12345).gamma(2.0, 0.5, size=chars)
    text += 1.0 - text.mean()  # a mean of exactly 1 nat: a run's perplexity is e^(1 + mean_loss)

    def losses(config, steps):
        point = [config.nodes, config.batch_size, config.unrollings, steps]
        z = np.random.default_rng(point).standard_normal(chars)
        e = np.random.default_rng(point + [config.seed, 1]).standard_normal()
        return text + mean_loss(config, steps) + text_noise * z + seed_noise * e

    def trainer(config, milestones=None, progress=True):
        import math
        final = losses(config, config.steps)
        result = {"valid_perplexity": math.exp(final.mean()), "steps": config.steps,
                  "valid_char_nll": final.tolist(),
                  "milestones": {m: math.exp(losses(config, m).mean()) for m in milestones or []},
                  "milestone_char_nll": {m: losses(config, m).tolist() for m in milestones or []}}
        if data is not None:
            result["data"] = data
        return result

    return trainer


def calls_by_point(folder) -> dict:
    """How often fake_train ran each (nodes, unrollings, seed)."""
    counts = {}
    for path in Path(folder).iterdir():
        if path.name in ("blocked", "exited"):
            continue
        call = json.loads(path.read_text())
        key = (call["nodes"], call["unrollings"], call["seed"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def complete_trials(url, name):
    import optuna
    from optuna.trial import TrialState
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def small_grid(name="sweep", repeats=2):
    from charlstm import sweep
    return sweep.make_grid({"nodes": "2,4,8", "unrollings": "1,2"}, repeats=repeats, name=name)


# The language-model step (charlstm.ops.lm_sgd_step) and its specification, which
# tests/test_lm_step.py and the per-build check of tests/test_ops.py compare.

LM_STEP_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
def make(cell, T, B, V, H, dtype=torch.float64, device="cpu", bias=(True, True), seed=0):
    """Random inputs of one language-model step: (window [T + 1, B], state, weights)."""
    gen = torch.Generator().manual_seed(seed)
    G = LM_STEP_GATES[cell]

    def uniform(*shape, scale=0.6):
        return ((torch.rand(*shape, generator=gen, dtype=dtype) * 2 - 1) * scale).to(device)

    weights = {
        "w_ih": uniform(G * H, V), "w_hh": uniform(G * H, H),
        "b_ih": uniform(G * H, scale=0.2) if bias[0] else None,
        "b_hh": uniform(G * H, scale=0.2) if bias[1] else None,
        "w_out": uniform(H, V), "b_out": uniform(V, scale=0.2),
    }
    window = torch.randint(0, V, (T + 1, B), generator=gen).to(device)
    state = tuple(uniform(B, H, scale=0.5) for _ in range(2 if cell == "lstm" else 1))
    return window, state, weights


def autograd_step(cell, window, state, weights, lr, clip, compute=None):
    """The specification: -> loss, norm, logits, new weights (dict), new state, in the weights'
    dtype. With `compute` (the AMP way) the recurrence and the classifier run on the weights and
    state cast to that dtype; the loss, the gradients, clipping and SGD stay in the weights'."""
    from charlstm import reference

    master = weights["w_hh"].dtype
    compute = compute or master
    w = {k: None if v is None else v.clone().requires_grad_() for k, v in weights.items()}
    low = {k: None if v is None else v.to(compute) for k, v in w.items()}
    rec = (low["w_ih"], low["w_hh"], low["b_ih"], low["b_hh"])
    state = tuple(s.to(compute) for s in state)
    if cell == "lstm":
        y, new_state = reference.lstm(window[:-1], state[0], state[1], *rec)
    elif cell == "gru":
        y, h = reference.gru(window[:-1], state[0], *rec)
        new_state = (h,)
    else:
        y, h = reference.rnn(window[:-1], state[0], *rec, nonlinearity=cell.split("_")[1])
        new_state = (h,)
    logits = (y.reshape(-1, y.shape[-1]) @ low["w_out"] + low["b_out"]).to(master)
    loss = F.cross_entropy(logits, window[1:].reshape(-1))
    loss.backward()
    leaves = [v for v in w.values() if v is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.grad) for v in leaves]))
    scale = clip / max(norm.item(), clip) if clip > 0 else 1.0
    with torch.no_grad():
        new = {k: None if v is None else v - lr * scale * v.grad for k, v in w.items()}
    return (loss.detach(), norm, logits.detach(), new,
            tuple(s.detach().to(master) for s in new_state))


def fused_step(cell, window, state, weights, lr, clip):
    """The same step as one charlstm.ops.lm_sgd_step on copies of the weights."""
    from charlstm import ops

    w = {k: None if v is None else v.clone() for k, v in weights.items()}
    loss, norm, logits, new_state = ops.lm_sgd_step(window, state, w["w_ih"], w["w_hh"],
                                                    w["b_ih"], w["b_hh"], w["w_out"], w["b_out"],
                                                    cell=cell, lr=lr, clip=clip)
    return loss, norm, logits, w, new_state




# A language model wired by hand: unit 3 of its LSTM switches on inside quotes.

QUOTE_UNIT = 3


def quote_text(chars: int = 3000, seed: int = 0) -> str:
    """Words, some in double quotes, separated by spaces, full stops and newlines."""
    rng = random.Random(seed)
    vocabulary = "a bb cad ebf gh hag fed".split()
    parts, length = [], 0
    while length < chars:
        phrase = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 6)))
        parts += [f'"{phrase}"' if rng.random() < 0.5 else phrase, rng.choice([" ", ". ", "\n"])]
        length += len(parts[-2]) + len(parts[-1])
    return "".join(parts)


def page_data_from(html: str) -> dict:
    """The data an explain page inlines as JSON."""
    found = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def page_data(path) -> dict:
    return page_data_from(open(path, encoding="utf-8").read())


def write_quote_model(folder, hidden: int = 8, seed: int = 0):
    """An lstm-seq checkpoint over quote_text's chars whose unit QUOTE_UNIT flips its cell state
    at every '"': the forget gate opens and the input gate writes -sign(h) there, and nowhere
    else, so c is near +1 inside quotes and near -1 (0 before the first quote) outside. Its
    other units have random weights and never read unit QUOTE_UNIT. Returns the model."""
    from charlstm import checkpoint
    from charlstm.models import build_model

    vocab = sorted(set(quote_text()))
    V, H, q, u = len(vocab), hidden, vocab.index('"'), QUOTE_UNIT
    torch.manual_seed(seed)
    model = build_model("lstm-seq", V, embedding=V, hidden=H)
    rnn = model.rnn
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(V))  # each char's embedding is its one-hot vector
        for weight in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0):
            weight.normal_(0, 0.5)
        rnn.bias_hh_l0.zero_()
        rnn.weight_hh_l0[:, u] = 0
        i, f, g, o = (u + k * H for k in range(4))  # unit u's row in each gate (i f g o)
        for row in (i, f, g, o):
            rnn.weight_ih_l0[row] = 0
            rnn.weight_hh_l0[row] = 0
            rnn.bias_ih_l0[row] = 0
        rnn.weight_ih_l0[i, q], rnn.bias_ih_l0[i] = 20.0, -10.0  # write only at a quote
        rnn.weight_ih_l0[f, q], rnn.bias_ih_l0[f] = -20.0, 10.0  # forget only at a quote
        rnn.weight_hh_l0[g, u], rnn.bias_ih_l0[g] = -10.0, 2.0   # write -sign(h), +1 at first
        rnn.bias_ih_l0[o] = 10.0
    config = {"embedding": V, "hidden": H}
    checkpoint.save(folder, checkpoint.describe("speech", "lstm-seq", config, "".join(vocab), {}),
                    model.state_dict())
    return model.eval()


def press_ctrl_c_as_the_run_folder_starts(monkeypatch):
    """Patches RunFolder.start to send this process SIGINT right after it writes metrics.jsonl
    (how a script knows the run began)."""
    from charlstm import loop

    start = loop.RunFolder.start

    def start_then_press_ctrl_c(self, records=()):
        start(self, records)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop.RunFolder, "start", start_then_press_ctrl_c)
