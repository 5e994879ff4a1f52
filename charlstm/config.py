"""Every workload's options and the names they choose from, defined once and free of torch.

A config is a dataclass whose fields are the options of one command: the field's name is the
option (`batch_size` is `--batch-size`), its default is the command's default, and its help text
sits in the field's metadata. The command line (`charlstm_cli`) builds its options from these
fields, the trainers take the dataclasses, and the sweep's workers make them from grid points;
`check()` is the one validation of each, with messages that name the option and the fix. Nothing
here imports torch, so `charlstm --help` and a sweep's parent process start without it.
"""

import math
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

BACKENDS = ("fused", "reference", "torch")
BACKEND_HELP = ("fused (charlstm's kernels), reference (the plain-PyTorch specification) or "
                "torch (torch.nn's own kernels)")
CELLS = ("lstm", "gru", "rnn")
DTYPES = ("float32", "float64")
DEFAULT_INIT = "truncated_normal:-0.1,0.1"
INIT_KINDS = ("truncated_normal", "normal", "uniform")

# The speech ladder of the fast.ai lesson 6 notebook: window models with the number of characters
# each reads, and stateful sequence models with their cell.
WINDOW_MODELS = {"fc3": 3, "char3": 3, "charloop": 8, "rnn": 8}
SEQUENCE_MODELS = {"rnn-seq": "rnn", "gru-seq": "gru", "lstm-seq": "lstm"}
SPEECH_MODELS = (*WINDOW_MODELS, *SEQUENCE_MODELS)
# What a checkpoint can hold: the assignment's model, the ladder, and a calculator.
MODELS = ("udacity", *SPEECH_MODELS, "calculator")

CALCULATORS = ("linear", "tanh", "rnn", "gru", "lstm")
TASKS = ("add", "sub", "mul", "count-ones")
MAX_DIGITS = 6

RUNS_DIR = "runs"


def option(default=..., help: str = "", flag: str | None = None, factory=None):
    """A config field: its default (none: the option is required), help text, and the flag when it
    is not the field's name with dashes (SpeechConfig.lrs is `--lr`, given once per stage)."""
    metadata = {"help": help, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if default is ...:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def flag(config_class, name: str) -> str:
    """The command-line flag of a field: `--batch-size` for batch_size."""
    for f in fields(config_class):
        if f.name == name:
            return f.metadata.get("flag") or "--" + name.replace("_", "-")
    raise KeyError(name)


def run_folder(name: str) -> Path:
    """A new run folder under ./runs, named after what runs and when: runs/NAME-YYYYmmdd-HHMMSS."""
    return Path(RUNS_DIR) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_choice(option_name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{option_name} must be one of {', '.join(map(str, choices))}; "
                         f"got {value!r}")


def check_backend(backend: str, option_name: str = "--backend") -> str:
    """The one check of a backend name, for the configs and for charlstm.nn's modules."""
    check_choice(option_name, backend, BACKENDS)
    return backend


def _at_least(config, names, low: int = 1) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ValueError(f"{flag(type(config), name)} must be at least {low}, got {value}")


def _positive(config, names) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{flag(type(config), name)} must be a positive number, got {value}")


def parse_init(spec: str) -> tuple[str, float, float]:
    """Parse an init spec: truncated_normal:MEAN,STD (cut at two std), normal:MEAN,STD or
    uniform:LOW,HIGH; the numbers default to the assignment's -0.1, 0.1."""
    name, _, params = spec.partition(":")
    if name not in INIT_KINDS:
        raise ValueError(f"unknown init {spec!r}: use truncated_normal:MEAN,STD, normal:MEAN,STD "
                         f"or uniform:LOW,HIGH (the assignment's is {DEFAULT_INIT})")
    if not params:
        return name, -0.1, 0.1
    try:
        a, b = (float(x) for x in params.split(","))
    except ValueError:
        raise ValueError(f"init {spec!r} needs two numbers after the colon, as in "
                         f"{name}:-0.1,0.1") from None
    if (not (math.isfinite(a) and math.isfinite(b)) or (name != "uniform" and b <= 0)
            or (name == "uniform" and b <= a)):
        raise ValueError(f"init {spec!r} is empty: the std must be > 0, and for uniform LOW < HIGH")
    return name, a, b


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass
class TrainConfig:
    """Every option of `charlstm train`; the defaults are the assignment's (Udacity 6_lstm)."""

    data: str | None = option(None, "A folder of .txt files, a .zip of them, a text file or "
                                    "cops:PRESIDENT, normalised to text8 form. Default: text8, "
                                    "downloaded once into $CHARLSTM_HOME (~/.cache/charlstm).")
    url: str | None = option(None, "Where to download text8 from. Default: $CHARLSTM_TEXT8_URL, "
                                   "else http://mattmahoney.net/dc/text8.zip.")
    nodes: int = option(64, "Hidden units (assignment: 64).")
    batch_size: int = option(64, "Rows per batch (assignment: 64).")
    unrollings: int = option(10, "Characters per window (assignment: 10).")
    steps: int = option(3001, "Training steps (assignment: 3001).")
    lr: float = option(10.0, "Initial learning rate of plain SGD (assignment: 10).")
    decay_steps: int = option(5000, "Multiply the learning rate by --decay-rate every this many "
                                    "steps (assignment: 5000).")
    decay_rate: float = option(0.1, "Staircase learning-rate decay (assignment: 0.1).")
    clip: float = option(1.25, "Clip gradients to this global norm (assignment: 1.25).")
    init: str = option(DEFAULT_INIT, "Weight init: truncated_normal:MEAN,STD (cut at 2 std), "
                                     "normal:MEAN,STD or uniform:LOW,HIGH; biases start at zero "
                                     f"(assignment: {DEFAULT_INIT}).")
    valid_size: int = option(1000, "Validation characters, taken from the start of the text "
                                   "(assignment: 1000).")
    summary_frequency: int = option(100, "Print loss, perplexities and a sample every this many "
                                         "steps (assignment: 100).")
    cell: str = option("lstm", "Recurrent cell: lstm (assignment), gru or rnn (tanh).")
    backend: str = option("fused", f"{BACKEND_HELP}.")
    seed: int = option(0, "Random seed (the assignment sets none).")
    threads: int | None = option(None, "CPU threads for torch. Default: torch's.")
    device: str = option("cpu", "cpu or cuda.")
    dtype: str = option("float32", "float32 (assignment) or float64.")
    out: str | None = option(None, "Run folder for checkpoint.json, checkpoint.pt, metrics.jsonl "
                                   "and result.json.")
    resume: str | None = option(None, "Continue the run saved in this folder; only --steps, "
                                      "--summary-frequency, --threads, --device and --out may "
                                      "change.")

    def check(self) -> None:
        """Raise ValueError naming the first option that cannot work."""
        _at_least(self, ("nodes", "batch_size", "unrollings", "steps", "decay_steps",
                         "valid_size", "summary_frequency", "threads"))
        _positive(self, ("lr", "decay_rate", "clip"))
        check_choice("--cell", self.cell, CELLS)
        check_backend(self.backend)
        check_choice("--dtype", self.dtype, DTYPES)
        parse_init(self.init)
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"--device {self.device!r} is not a device: use cpu or cuda")


@dataclass
class SpeechConfig:
    """Every option of `charlstm speech`; the defaults are the fast.ai lesson 6 notebook's."""

    corpus: str = option(help="A folder of .txt files (recursive), a .zip of them, one text "
                              "file, or cops:PRESIDENT (e.g. cops:obama) to fetch the Corpus of "
                              "Presidential Speeches into the cache.")
    model: str = option("lstm-seq", f"{', '.join(WINDOW_MODELS)} (window models) or "
                                    f"{', '.join(SEQUENCE_MODELS)} (stateful sequence models).")
    embedding: int = option(42, "Char embedding size (notebook: 42).")
    hidden: int = option(256, "Hidden size (notebook: 256).")
    layers: int = option(1, "Recurrent layers of the sequence models.")
    dropout: float = option(0.0, "Dropout of the sequence models (between layers and before the "
                                 "output).")
    backend: str = option("fused", f"Recurrent implementation: {BACKEND_HELP}.")
    bptt: int = option(8, "Window length of truncated backprop for the sequence models "
                          "(notebook: 8).")
    batch_size: int | None = option(None, "Batch size; default the notebook's: 512 windows, or "
                                          "64 streams for sequence models.")
    lrs: list[float] = option(help="Adam learning rate of each stage, repeat for a schedule "
                                   "(notebook: 1e-2 then 1e-3).", flag="--lr",
                              factory=lambda: [1e-2, 1e-3])
    epochs_per_lr: int = option(1, "Epochs at each learning rate (notebook: 1).", flag="--epochs")
    max_steps_per_epoch: int | None = option(None, "Cap on batches per epoch, for a reduced "
                                                   "budget (default: whole epochs).",
                                             flag="--max-steps")
    valid_fraction: float = option(0.1, "Share of the text, taken from its end as one block, "
                                        "used for validation.")
    seed: int = option(0, "Random seed (init, shuffling, dropout).")
    out: str | None = option(None, "Run folder for checkpoint.json, checkpoint.pt, metrics.jsonl "
                                   "and result.json; an unfinished run there resumes. Default: "
                                   "runs/MODEL-TIMESTAMP.")
    cops_url: str | None = option(None, "Where to download the Corpus of Presidential Speeches "
                                        "zip (default: $CHARLSTM_COPS_URL or the Grammar Lab "
                                        "link).")

    WINDOW_BATCH, SEQUENCE_BATCH = 512, 64
    # What may differ when a rerun resumes a run folder: where things are, not what is trained.
    WHERE = ("out", "cops_url")

    def batch(self, sequence: bool) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return self.SEQUENCE_BATCH if sequence else self.WINDOW_BATCH

    def check(self) -> None:
        """Raise ValueError naming the first option that cannot work."""
        check_choice("--model", self.model, SPEECH_MODELS)
        check_backend(self.backend)
        _at_least(self, ("embedding", "hidden", "layers", "bptt", "epochs_per_lr", "batch_size",
                         "max_steps_per_epoch"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise ValueError(f"--lr: learning rates must be positive and at least one given, "
                             f"got {self.lrs}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be between 0 and 1, got {self.valid_fraction}")


@dataclass
class CalcConfig:
    """Every option of `charlstm calc` (one run: restarts of one model on one task)."""

    task: str = option("add", "add / sub / mul: \"2+3\" -> 5 over every operand pair; "
                              "count-ones: a binary string -> its number of ones.")
    model: str = option("linear", "linear: embedding and a linear recurrence; tanh: embedding, "
                                  "input layer, tanh recurrence; rnn / gru / lstm: charlstm.nn.")
    digits: int = option(1, "Digits per operand (zero-padded) for add/sub/mul; above 2, "
                            "--samples random pairs are drawn.")
    length: int = option(8, "Bits per string for count-ones.")
    samples: int = option(1000, "Examples to draw when there are too many to enumerate "
                                "(count-ones longer than 9 bits, add/sub/mul over 2 digits).")
    valid_fraction: float = option(0.2, "Fraction of the examples held out for validation, drawn "
                                        "at random with --seed.")
    n_fac: int = option(1, "Embedding size per symbol.")
    hidden: int = option(4, "Hidden state size.")
    epochs: int = option(300, "Epochs per restart at most; a restart stops early once every "
                              "training prediction is within 0.1 of its target.")
    lr: float = option(0.01, "Adam learning rate (above 0).")
    batch_size: int = option(16, "Examples per Adam step.")
    restarts: int = option(5, "Seeds to train (seed, seed+1, ...); the best is kept and a restart "
                              "succeeds when its validation exact-match accuracy is 1.0.")
    seed: int = option(0, "Seed of the validation split and of the first restart.")
    backend: str = option("fused", "charlstm.nn backend of rnn / gru / lstm: " + BACKEND_HELP + ".")
    out: str | None = option(None, "Run folder for the best restart's checkpoint (checkpoint.json, "
                                   "checkpoint.pt) and result.json.")

    def check(self) -> None:
        """Raise ValueError naming the first bad option and the fix."""
        check_choice("--task", self.task, TASKS)
        check_choice("--model", self.model, CALCULATORS)
        check_backend(self.backend)
        _at_least(self, ("n_fac", "hidden", "epochs", "batch_size", "restarts", "length",
                         "digits"))
        _at_least(self, ("samples",), 2)
        if self.task == "count-ones" and self.digits != 1:
            raise ValueError("--digits applies to add/sub/mul only; count-ones strings are "
                             "--length bits long")
        if self.task != "count-ones" and self.length != CalcConfig.length:
            raise ValueError("--length applies to count-ones only; drop it or use --task "
                             "count-ones")
        if self.task != "count-ones" and self.digits > MAX_DIGITS:
            raise ValueError(f"--digits must be between 1 and {MAX_DIGITS}, got {self.digits}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be between 0 and 1 (exclusive), got "
                             f"{self.valid_fraction}")
        _positive(self, ("lr",))


def check_sampling(length: int, temperature: float, top_k: int | None) -> None:
    """The checks of `charlstm sample`'s settings, shared by sample() and generate()."""
    if length < 0:
        raise ValueError(f"--length must be at least 0, got {length}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"--temperature must be a number of at least 0 (0 picks the likeliest "
                         f"char), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")


@dataclass
class SampleConfig:
    """Every option of `charlstm sample`."""

    prime: str = option("Good mo", "Text the generation continues (the notebook's \"Good mo\").")
    length: int = option(200, "Characters to generate.")
    temperature: float = option(1.0, "Softmax temperature; 0 picks the likeliest char.")
    top_k: int | None = option(None, "Sample among the k likeliest chars only (default: all).")
    seed: int = option(0, "Random seed: the same seed gives the same text.")
    checkpoint: str | None = option(None, "A run folder or a checkpoint file (default: the newest "
                                          "under --runs).")
    runs: str = option(RUNS_DIR, "Runs folder searched when no --checkpoint is given.")
    backend: str | None = option(None, f"Recurrent implementation to sample with: "
                                       f"{', '.join(BACKENDS)} (default: as trained).")

    def check(self) -> None:
        check_sampling(self.length, self.temperature, self.top_k)
        if self.backend is not None:
            check_backend(self.backend)


@dataclass
class ExplainConfig:
    """Every option of `charlstm explain`."""

    checkpoint: str | None = option(None, "A run folder or a checkpoint file (default: the newest "
                                          "under --runs).")
    runs: str = option(RUNS_DIR, "Runs folder searched when no --checkpoint is given.")
    text: str | None = option(None, "Text to explain: a text file, a folder of .txt files, a .zip "
                                    "of them or cops:PRESIDENT, read as training reads a corpus "
                                    "(text8 form for `charlstm train` models). Default: the run's "
                                    "own validation text, when --prime is not given either.")
    prime: str | None = option(None, "Explain a sample instead: the model continues this prime "
                                     "for --length chars. For a calculator, the string it reads "
                                     "(default: \"2+3\" in the trained form).")
    length: int = option(2000, "Characters to generate after --prime.")
    temperature: float = option(1.0, "Softmax temperature of the sample; 0 picks the likeliest "
                                     "char.")
    seed: int = option(0, "Random seed of the sample.")
    max_chars: int = option(20_000, "Explain at most this many chars; longer texts are cut to "
                                    "their start, with a message. The page stays quick to use "
                                    "at the default.")
    skip_unknown: bool = option(False, "Drop characters the model has no id for, instead of "
                                       "stopping with an error that names them.")
    backend: str | None = option(None, f"Recurrent implementation to run: "
                                       f"{', '.join(BACKENDS)} (default: as trained).")
    out: str | None = option(None, "Where to write the page (default: explain.html in the run "
                                   "folder).")

    def check(self) -> None:
        """Raise ValueError naming the first option that cannot work."""
        if self.text is not None and self.prime is not None:
            raise ValueError("give --text (a text to explain) or --prime (explain a sample the "
                             "model writes), not both")
        _at_least(self, ("max_chars",))
        check_sampling(self.length, self.temperature, None)
        if self.backend is not None:
            check_backend(self.backend)
