"""See what a trained char model learned: one self-contained web page per text.

`explain(ExplainConfig(...))` runs a model of `charlstm train` or `charlstm speech` over a text
(a file, a sample the model writes from a prime, or by default the run's own validation text)
and writes a page that loads nothing from the network:

- the text, each char shaded by the bits the model paid for it, and on hover the model's five
  likeliest next chars with their probabilities;
- the text coloured by one hidden unit (red above zero, blue below), as in Karpathy, Johnson &
  Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks"; for an LSTM the unit's
  tanh(c) or h, for a GRU or RNN its h;
- units ranked by the correlation of their activation with indicator features of the text
  (FEATURES), the best per feature listed; clicking one recolours the text;
- for an LSTM (and a GRU), the fraction of steps each gate of each unit spends below 0.1 and
  above 0.9, the paper's saturation scatter plot.

A calculator of `charlstm calc` gets a page of its own: the hidden state after each token of a
string such as "2+3", the prediction, and the learned symbol embeddings.

The states come from charlstm.states; the page is explain.html beside this file with the data
inlined as JSON (`render`).
"""

import base64
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from charlstm import checkpoint as checkpoints
from charlstm.calc import single_thread
from charlstm.config import ExplainConfig
from charlstm.data.vocab import quote_chars
from charlstm.models import UdacityLM
from charlstm.states import model_states

TEMPLATE = Path(__file__).with_name("explain.html")
PAGE = "explain.html"
TOP_K = 5
RANKED = 5  # units listed per feature
LEFT, RIGHT = 0.1, 0.9  # a gate is saturated below LEFT or above RIGHT (the paper's thresholds)
SATURATION_GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update")}
# Which states are bounded to [-1, 1] (coloured on an absolute scale) and which are not (each
# unit coloured relative to its largest magnitude in the text).
BOUNDED = {"lstm", "gru", "rnn"}

QUOTES_OPEN, QUOTES_CLOSE = "“", "”"
SENTENCE_ENDS = ".!?"
# name -> what it marks at char t, reading the text up to and including t (a unit's activation
# at t is the state after reading t, so that is what it can know).
FEATURES = {
    "inside quotes": "1 from an opening quote up to its closing quote (\" toggles; “ opens, ” "
                     "closes), else 0",
    "inside parentheses": "1 from '(' up to its ')', else 0",
    "position in line": "chars since the last newline",
    "position in sentence": "chars since the last '.', '!', '?' or newline",
    "start of word": "1 at a letter or digit that follows none, else 0",
    "after full stop": "1 at a '.' and the spaces after it, else 0",
    "digit": "1 at 0-9, else 0",
    "upper case": "1 at an upper-case letter, else 0",
}


def features(text: str) -> dict:
    """Each of FEATURES as a list of len(text) numbers."""
    values = {name: [] for name in FEATURES}
    quote = paren = line = sentence = 0
    previous, after_stop = "", False
    for char in text:
        if char == '"':
            quote = 1 - quote
        elif char == QUOTES_OPEN:
            quote = 1
        elif char == QUOTES_CLOSE:
            quote = 0
        values["inside quotes"].append(float(quote))  # a closing quote is outside: read, it ends
        if char == "(":
            paren += 1
        values["inside parentheses"].append(float(paren > 0 and char != ")"))
        if char == ")":
            paren = max(0, paren - 1)
        values["position in line"].append(float(line))
        line = 0 if char == "\n" else line + 1
        values["position in sentence"].append(float(sentence))
        sentence = 0 if char in SENTENCE_ENDS or char == "\n" else sentence + 1
        values["start of word"].append(float(char.isalnum() and not previous.isalnum()))
        after_stop = char == "." or (after_stop and char in " \t")
        values["after full stop"].append(float(after_stop))
        values["digit"].append(float(char in "0123456789"))
        values["upper case"].append(float(char.isupper()))
        previous = char
    return values


def correlations(values: torch.Tensor, marks: torch.Tensor) -> torch.Tensor:
    """Pearson correlation [U, F] of each column of values [T, U] with each of marks [T, F];
    NaN where a column does not vary."""
    def standardised(x):
        x = x.double() - x.double().mean(0)
        norm = x.norm(dim=0)
        return x / torch.where(norm > 1e-12 * max(1.0, x.shape[0]), norm, math.nan)
    return standardised(values).t() @ standardised(marks)


def saturation(gate: torch.Tensor) -> dict:
    """Per unit, the fraction of steps the gate [T, H] spends below LEFT and above RIGHT."""
    return {"left": (gate < LEFT).double().mean(0).tolist(),
            "right": (gate > RIGHT).double().mean(0).tolist()}


def signals(layers) -> list[dict]:
    """The unit activations the page colours by: per layer tanh(c) and h for an LSTM, h else;
    each {"name", "layer", "state", "values" [T, U], "first", "bounded"}."""
    out = []
    for k, states in enumerate(layers, start=1):
        where = f"layer {k} " if len(layers) > 1 else ""
        if states.c is not None:
            out.append({"name": f"{where}cell state tanh(c)", "layer": k, "state": "c",
                        "values": torch.tanh(states.c)})
        name = {"relu": "hidden layer (ReLU)", "linear": "hidden state h"}.get(
            states.kind, "hidden state h")
        out.append({"name": where + name, "layer": k, "state": "h", "values": states.h})
        for signal in out[-2 if states.c is not None else -1:]:
            signal.update(first=states.first, bounded=states.kind in BOUNDED)
    return out


def rank_units(found: list[dict], marks: dict) -> list[dict]:
    """For each feature the RANKED units whose activation correlates most with it (either sign):
    [{"feature", "rank", "signal", "layer", "state", "unit", "correlation"}], best first."""
    ranking = []
    for signal_index, signal in enumerate(found):
        first = signal["first"]
        table = torch.tensor([marks[name][first:] for name in FEATURES], dtype=torch.float64).t()
        signal["correlations"] = correlations(signal["values"], table)
    for f, feature in enumerate(FEATURES):
        scored = [(abs(r), s, u, r) for s, signal in enumerate(found)
                  for u, r in enumerate(signal["correlations"][:, f].tolist()) if not math.isnan(r)]
        scored.sort(key=lambda item: (-item[0], item[1], item[2]))
        for rank, (_, s, u, r) in enumerate(scored[:RANKED], start=1):
            ranking.append({"feature": feature, "rank": rank, "signal": s,
                            "layer": found[s]["layer"], "state": found[s]["state"], "unit": u,
                            "correlation": r})
    return ranking


def _quantised(values: torch.Tensor, bounded: bool, length: int, first: int):
    """Unit-major int8 bytes [U, length] of values [T, U] (rows from `first`), as base64, and the
    scale of each unit: value = byte / 127 * scale."""
    values = values.detach().double()
    scale = (torch.ones(values.shape[1], dtype=torch.float64) if bounded
             else values.abs().amax(0).clamp_min(1e-12))
    codes = torch.zeros(values.shape[1], length, dtype=torch.int8)
    levels = (values / scale).clamp(-1, 1).mul(127).round()
    codes[:, first:first + len(values)] = levels.t().to(torch.int8)
    return (base64.b64encode(codes.numpy().tobytes()).decode("ascii"),
            [round(s, 6) for s in scale.tolist()])


def analyse(model, vocab, text: str) -> dict:
    """Everything the page shows for a language model reading `text`, and the summary figures:
    {"bits" per char (None where nothing predicted it), "bits_per_char", "next" top-k, "signals",
    "ranking", "gates", ...}. Raises ValueError when the text is too short to predict from."""
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    context = getattr(model, "context", None)
    need = 2 if context is None else context + 1
    if len(ids) < need:
        raise ValueError(f"the text has {len(ids)} chars; this model needs at least {need} to "
                         f"predict one from {'the chars before' if context is None else 'a window'}"
                         "; give a longer text")
    layers = model_states(model, ids)
    # The model's classifier over its last layer's outputs: its forward's logits, which the
    # tests hold equal to its loss, with no second pass over the text.
    with torch.no_grad():
        top = layers[-1].h
        logits = model.readout(top) if isinstance(model, UdacityLM) else model.out(top)
    first_row = layers[-1].first
    # Row t of log_probs is the prediction after reading char t, for char t + 1.
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    targets = ids[first_row + 1:]
    paid = -log_probs[:len(targets)].gather(1, targets.unsqueeze(1)).squeeze(1) / math.log(2)
    bits = [None] * (first_row + 1) + [round(b, 4) for b in paid.tolist()]
    k = min(TOP_K, len(vocab))
    top = log_probs.exp().topk(k, dim=-1)
    next_ids = [-1] * (first_row * k) + top.indices.flatten().tolist()
    next_probs = [0.0] * (first_row * k) + [round(p, 4) for p in top.values.flatten().tolist()]

    found = signals(layers)
    ranking = rank_units(found, features(text))
    gates = []
    for k_layer, states in enumerate(layers, start=1):
        chosen = SATURATION_GATES.get(states.kind, ())
        if chosen:
            gates.append({"layer": k_layer, "cell": states.kind,
                          "gates": {name: saturation(states.gates[name]) for name in chosen}})
    page_signals = []
    for signal in found:
        data, scale = _quantised(signal["values"], signal["bounded"], len(ids), signal["first"])
        page_signals.append({
            "name": signal["name"], "layer": signal["layer"], "state": signal["state"],
            "units": signal["values"].shape[1], "first": signal["first"],
            "bounded": signal["bounded"], "scale": scale, "data": data,
            "correlations": [[None if math.isnan(r) else round(r, 4) for r in row]
                             for row in signal["correlations"].tolist()]})
    return {"bits": bits, "bits_per_char": paid.mean().item(), "predicted_chars": len(targets),
            "next": {"k": k, "ids": next_ids, "probs": next_probs}, "signals": page_signals,
            "ranking": ranking, "gates": gates}


def window_note(model_name: str, context: int | None) -> str | None:
    """What a unit is for a model without a carried state."""
    if model_name == "fc3":
        return (f"fc3 has no recurrent state: a unit here is one of its ReLU hidden layer, "
                f"computed afresh from the {context} chars ending at each char (so it can only "
                "track what fits in that window)")
    if context is not None:
        return (f"{model_name} carries no state from one window to the next: a unit here is its "
                f"hidden state after reading the {context} chars ending at each char")
    return None


def render(data: dict) -> str:
    """The page: the template with `data` inlined as JSON (escaped so no `</script>` can end it)."""
    payload = (json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
               .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return TEMPLATE.read_text(encoding="utf-8").replace("__EXPLAIN_DATA__", payload)


def check_writable(path: Path) -> None:
    """Refuse an --out that cannot be written before any work is done."""
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name, such as "
                         f"{path / PAGE}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"cannot write --out {path}: {exc.strerror or exc}; choose a file in a "
                         "folder you can write to") from None


def _text(config: ExplainConfig, saved, model, vocab, log) -> tuple[str, str]:
    """(the text to explain, where it came from), before any cut or check of its chars."""
    from charlstm.data.corpus import read_corpus

    if config.prime is not None:
        from charlstm.sample import generate

        total = len(config.prime) + config.length
        if total > config.max_chars:
            raise ValueError(f"--prime and --length make {total:,} chars, more than --max-chars "
                             f"{config.max_chars:,}; lower --length or raise --max-chars")
        sample = "".join(generate(model, vocab, config.prime, config.length, config.temperature,
                                  None, config.seed))
        return config.prime + sample, (f"a sample: {config.length:,} chars after the prime "
                                       f"{config.prime!r} (temperature {config.temperature:g}, "
                                       f"seed {config.seed})")
    if config.text is not None:
        corpus = read_corpus(config.text, progress=False, option="--text")
        return _as_trained(saved, corpus.documents, corpus.text, log), corpus.source
    return _validation_text(saved, log)


def _as_trained(saved, documents, text, log) -> str:
    """The text in the form the run trained on: text8 form for `charlstm train` models."""
    if saved.workload != "train":
        return text
    from charlstm.data.normalize import text8_form

    normalised, report = text8_form(documents)
    if report is not None:
        log(f"explain: {report.describe()}, as `charlstm train` reads its data")
    return normalised.decode("ascii")


def _validation_text(saved, log) -> tuple[str, str]:
    """The held-out text of the run: the last --valid-fraction of a speech corpus, the first
    --valid-size chars of a train run's text."""
    from charlstm.data.corpus import read_corpus

    config = saved.config
    if saved.workload == "speech" and "corpus" in config:
        spec, fraction = config["corpus"], config.get("valid_fraction", 0.1)
        where = f"the validation text of the run: the last {fraction:.0%} of {spec}"
        options = {"cops_url": config.get("cops_url")}
    elif saved.workload == "train" and "valid_size" in config:
        spec, fraction = config.get("data"), None
        where = (f"the validation text of the run: the first {config['valid_size']:,} chars of "
                 f"{spec or 'text8'} in text8 form")
        options = {"text8_url": config.get("url")}
    else:
        raise ValueError(f"{saved.path} does not say what it was trained on; pass --text FILE or "
                         "--prime STR")
    try:
        corpus = read_corpus(spec, progress=False, **options)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read the run's corpus to explain its validation text ({exc}); "
                         "pass --text FILE or --prime STR") from None
    log(f"explain: {where}")
    if fraction is not None:
        return corpus.split(fraction)[1], where
    return _as_trained(saved, corpus.documents, corpus.text, log)[:config["valid_size"]], where


def _fit(text: str, vocab, config: ExplainConfig, log) -> tuple[str, int]:
    """The text checked against the vocabulary and cut to --max-chars; and its length before the
    cut."""
    if config.skip_unknown:
        missing = vocab.missing(text)
        if missing:
            kept = "".join(c for c in text if c in vocab.index)
            log(f"explain: dropped {len(text) - len(kept):,} chars the model has no id for: "
                f"{_listed(missing)}")
            text = kept
    length = len(text)
    if len(text) > config.max_chars:
        log(f"explain: the text has {len(text):,} chars; explaining the first "
            f"{config.max_chars:,} (raise --max-chars to explain more; the page stays quick up "
            f"to about {ExplainConfig.max_chars:,})")
        text = text[:config.max_chars]
    missing = vocab.missing(text)
    if missing:
        raise ValueError(f"the text has chars outside the model's vocabulary: {_listed(missing)}; "
                         "pass --skip-unknown to drop them, or a text in the model's chars")
    if not text:
        raise ValueError("the text is empty; give a text with chars in it (--text FILE) or "
                         "--prime STR")
    return text, length


def _listed(chars, most: int = 12) -> str:
    more = f" and {len(chars) - most} more" if len(chars) > most else ""
    return quote_chars(chars[:most]) + more


def explain(config: ExplainConfig, log=lambda line: None) -> dict:
    """Write the page for `config` and return the summary: the page's path, the mean bits per
    char, the unit ranking (see `analyse`); for a calculator its reading of the string."""
    config.check()
    path = checkpoints.find(config.checkpoint, config.runs)
    saved = checkpoints.read(path)
    out = Path(config.out) if config.out is not None else path.parent / PAGE
    check_writable(out)
    model, vocab, _ = checkpoints.load_model(saved, config.backend)
    header = {"checkpoint": str(path), "model": saved.model_name, "workload": saved.workload,
              "model_config": saved.model_config}
    if saved.model_name == "calculator":
        if config.text is not None:
            raise ValueError("a calculator reads one short string, not a text: give it with "
                             "--prime, e.g. --prime 2+3")
        data, summary = explain_calculator(model, vocab, saved, config.prime, log)
    else:
        text, source = _text(config, saved, model, vocab, log)
        text, original = _fit(text, vocab, config, log)
        with single_thread():
            data = analyse(model, vocab, text)
        data.update(text=text, vocab="".join(vocab.chars), source=source,
                    first_predicted=len(text) - data["predicted_chars"],
                    note=window_note(saved.model_name, getattr(model, "context", None)),
                    features=FEATURES)
        summary = {"source": source, "chars": len(text),
                   "cut_from": original if original > len(text) else None,
                   "bits_per_char": data["bits_per_char"],
                   "ranking": [{k: r[k] for k in ("feature", "rank", "unit", "layer", "state",
                                                  "correlation")} for r in data["ranking"]]}
    data.update(kind="calculator" if saved.model_name == "calculator" else "text", **header)
    try:
        checkpoints.atomic_write_bytes(out, render(data).encode("utf-8"))
        os.chmod(out, 0o644)  # a page is for others to read, unlike the 0600 of a checkpoint
    except OSError as exc:
        raise ValueError(f"cannot write --out {out}: {exc.strerror or exc}; choose a file in a "
                         "folder you can write to") from None
    return {"page": str(out), **header, **summary}


def default_calculation(config: dict) -> str:
    """The string a calculator page reads unless told: 2+3 (2-3, 2*3) in the trained digits, or
    a bit string of the trained length."""
    from charlstm.data.arith import OPERATORS

    task = config.get("task", "add")
    if task == "count-ones":
        return ("1011" * 64)[:config.get("length", 8)]
    digits = config.get("digits", 1)
    return f"{2:0{digits}d}{OPERATORS[task]}{3:0{digits}d}"


def explain_calculator(model, vocab, saved, string: str | None, log) -> tuple[dict, dict]:
    """The calculator's page data and summary: its hidden state after each token of `string`,
    its prediction, and the symbol embeddings (two principal axes when they have more than two
    numbers)."""
    from charlstm.data.arith import evaluate, make_dataset

    config = saved.config
    string = default_calculation(config) if string is None else string
    missing = vocab.missing(string)
    if missing or not string:
        raise ValueError(f"the calculator reads strings of {''.join(vocab.chars)!r}; "
                         + (f"{_listed(missing)} are not among them" if missing else
                            "the string is empty") + f"; give one such as "
                         f"--prime {default_calculation(config)}")
    trained = len(default_calculation(config))
    if len(string) != trained:
        log(f"explain: the calculator was trained on strings of {trained} chars, and this one "
            f"has {len(string)}; its prediction may mean little")
    ids = torch.tensor(vocab.encode(string), dtype=torch.long)
    # Targets were standardised with the training split's mean and std; the split is seeded, so
    # making the data set again gives them back.
    data = make_dataset(config["task"], config.get("digits", 1), config.get("length", 8),
                        config.get("samples", 1000), config.get("valid_fraction", 0.2),
                        config.get("seed", 0))
    _, train_y = data.tensors("train")
    mean = train_y.mean().item()
    std = train_y.std().item() if len(train_y) > 1 and train_y.std() > 0 else 1.0
    with torch.no_grad():
        prediction = model(ids.unsqueeze(0)).item() * std + mean
    try:
        target = evaluate(config["task"], string)
    except ValueError:
        target = None
    layer = model_states(model, ids)[0]
    trajectory = {"h": layer.h.tolist()}
    if layer.c is not None:
        trajectory["c"] = layer.c.tolist()
    table = model.embedding.weight.detach().double()
    if table.shape[1] <= 2:
        points = table
    else:
        centred = table - table.mean(0)
        points = centred @ torch.linalg.svd(centred, full_matrices=False).Vh[:2].t()
    embedding = {s: table[i].tolist() for i, s in enumerate(vocab.chars)}
    page = {"string": string, "tokens": list(string), "prediction": prediction,
            "target": target, "task": config["task"], "kind_of_model": config.get("model"),
            "trajectory": trajectory, "state_kind": layer.kind,
            "embedding": {"symbols": list(vocab.chars), "vectors": table.tolist(),
                          "points": points.tolist(),
                          "axes": (["embedding"] if table.shape[1] == 1 else
                                   ["dimension 1", "dimension 2"] if table.shape[1] == 2 else
                                   ["principal axis 1", "principal axis 2"])}}
    summary = {"string": string, "prediction": prediction, "target": target,
               "trajectory": trajectory, "embedding": embedding}
    return page, summary
