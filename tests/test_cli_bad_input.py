"""Every command with a list of bad inputs, as a careless user types them, each in a subprocess.

Each case must exit non-zero with no traceback, an error of at most two lines on stderr that
names the option or the file, nothing on stdout, and no change to the run folders that were
there before (hashed before and after). The cases of a command run two at a time.
"""

import hashlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import words, write_text

# A text model's prime may not hold this character: the speech run's corpus has none.
EURO = "\u20ac"


@dataclass
class Case:
    args: list
    names: str  # what the error must name: the option, the file, the value
    env: dict = field(default_factory=dict)
    stdout: str | None = None  # a file to send stdout to (default: a pipe)

    def __str__(self):
        return " ".join(map(str, self.args))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_only_folder(path: Path) -> bool:
    """Make `path` a folder no one can write in, root included (chattr +i; chmod for others);
    False when this system allows neither."""
    path.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    else:
        path.chmod(0o555)
    return not os.access(path, os.W_OK)


def writable_again(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder a user might work in: corpora good and bad, a file where a folder is expected,
    a read-only folder, files that are not checkpoints, and a saved run of each workload."""
    from charlstm import checkpoint
    from charlstm.calc import train as train_calc
    from charlstm.config import CalcConfig, SpeechConfig, TrainConfig
    from charlstm.speech import train_speech
    from charlstm.train import train

    root = tmp_path_factory.mktemp("workspace")
    write_text(root / "corpus.txt", chars=6000)
    (root / "speech.txt").write_text("Good morning. " + words(3000, 1).capitalize() + ".\n")
    (root / "tiny.txt").write_text("ab")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 16)
    (root / "latin1.txt").write_bytes("caf\u00e9 ".encode("latin-1") * 300)
    (root / "utf16.txt").write_bytes(("hello world " * 300).encode("utf-16"))
    (root / "controls.txt").write_bytes(bytes(range(1, 32)) * 100)
    (root / "empty.txt").write_text("")
    (root / "afile").write_text("not a folder")
    (root / "empty-folder").mkdir()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("speech.txt", words(3000, 2))
    (root / "truncated.zip").write_bytes(archive.getvalue()[:len(archive.getvalue()) // 2])
    (root / "garbage.zip").write_bytes(b"PK\x03\x04" + b"x" * 500)
    with zipfile.ZipFile(root / "binary-member.zip", "w") as z:
        z.writestr("a.txt", bytes(range(256)) * 4)
    damaged = bytearray(archive.getvalue())
    damaged[60:70] = bytes(10)  # inside the compressed data of the one member
    (root / "damaged-member.zip").write_bytes(bytes(damaged))

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch exploited",))

    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(os.urandom(3000))
    (root / "exploit.pt").write_bytes(pickle.dumps(Exploit()))
    saved = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(100)}}, saved)
    (root / "truncated.pt").write_bytes(saved.getvalue()[:len(saved.getvalue()) // 2])
    torch.save({"weights": [1, 2]}, root / "other-dict.pt")

    runs = root / "runs"
    train(TrainConfig(data=str(root / "corpus.txt"), nodes=8, batch_size=4, unrollings=5,
                      steps=20, valid_size=50, summary_frequency=10, threads=1,
                      out=str(runs / "train-run")), progress=False)
    train_speech(SpeechConfig(corpus=str(root / "speech.txt"), model="lstm-seq", embedding=8,
                              hidden=16, batch_size=16, max_steps_per_epoch=5,
                              out=str(runs / "speech-run")), progress=False, log=lambda _: None)
    train_calc(CalcConfig(hidden=2, epochs=1, restarts=1, out=str(runs / "calc-run")))
    (runs / "bad-description").mkdir()
    shutil.copy(runs / "speech-run" / "checkpoint.pt", runs / "bad-description")
    (runs / "bad-description" / "checkpoint.json").write_text("{not json")
    (runs / "weights-only").mkdir()
    shutil.copy(runs / "speech-run" / "checkpoint.json", runs / "weights-only")
    assert checkpoint.read(runs / "train-run").training["step"] == 20

    read_only = read_only_folder(root / "read-only")
    yield root, read_only
    writable_again(root / "read-only")


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run(case: Case, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARLSTM_HOME": str(root / "home"), "OMP_NUM_THREADS": "1",
           "CHARLSTM_TEXT8_URL": f"http://127.0.0.1:{closed_port()}/text8.zip",
           "CHARLSTM_COPS_URL": f"http://127.0.0.1:{closed_port()}/cops.zip", **case.env}
    command = [sys.executable, "-m", "charlstm_cli.main", *map(str, case.args)]
    if case.stdout is None:
        return subprocess.run(command, capture_output=True, text=True, cwd=root, env=env,
                              timeout=300)
    with open(case.stdout, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, text=True, cwd=root,
                              env=env, timeout=300)
    done.stdout = ""
    return done


def problems(case: Case, done: subprocess.CompletedProcess) -> list:
    found = []
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode == 0:
        found.append("exit code 0")
    if "Traceback" in done.stderr:
        found.append("a traceback")
    if not lines or not lines[0].startswith("Error: ") or len(lines) > 2:
        found.append(f"not a one- or two-line error: {done.stderr[-600:]!r}")
    elif case.names not in done.stderr:
        found.append(f"the error does not name {case.names!r}: {lines}")
    if done.stdout:
        found.append(f"stdout: {done.stdout[:200]!r}")
    return found


def check(cases, workspace):
    root, read_only = workspace
    runs = root / "runs"
    before = tree_hash(runs)
    chosen = [c for c in cases if read_only or "read-only" not in str(c)]
    if len(chosen) < len(cases):
        print(f"{len(cases) - len(chosen)} read-only cases left out: this system has no "
              "folder that its user cannot write in")
    failures = []
    with ThreadPoolExecutor(2) as pool:
        for case, done in zip(chosen, pool.map(lambda c: run(c, root), chosen)):
            failures += [f"{case}: {p}" for p in problems(case, done)]
            if tree_hash(runs) != before:
                failures.append(f"{case}: changed the runs folder")
                before = tree_hash(runs)
    assert not (root / "exploited").exists()
    assert not failures, "\n".join(failures)
    return len(chosen)


TRAIN = ["train", "--data", "corpus.txt", "--nodes", "8", "--batch-size", "4", "--unrollings",
         "5", "--valid-size", "50", "--steps", "5", "--no-progress"]
TRAIN_CASES = [
    Case([*TRAIN, "--nodes", "0"], "--nodes"),
    Case([*TRAIN, "--nodes", "-5"], "--nodes"),
    Case([*TRAIN, "--nodes", "abc"], "--nodes"),
    Case([*TRAIN, "--nodes", "1.5"], "--nodes"),
    Case([*TRAIN, "--nodes", "100000"], "--nodes 100000"),
    Case([*TRAIN, "--nodes", "99999999999999999999"], "--nodes"),
    Case([*TRAIN, "--batch-size", "0"], "--batch-size"),
    Case([*TRAIN, "--batch-size", "100000000"], "--batch-size"),
    Case([*TRAIN, "--unrollings", "0"], "--unrollings"),
    Case([*TRAIN, "--unrollings", "5000"], "--unrollings"),
    Case([*TRAIN, "--steps", "0"], "--steps"),
    Case([*TRAIN, "--steps", "-1"], "--steps"),
    Case([*TRAIN, "--lr", "0"], "--lr"),
    Case([*TRAIN, "--lr", "nan"], "--lr"),
    Case([*TRAIN, "--lr", "inf"], "--lr"),
    Case([*TRAIN, "--lr", "ten"], "--lr"),
    Case([*TRAIN, "--clip", "0"], "--clip"),
    Case([*TRAIN, "--decay-rate", "0"], "--decay-rate"),
    Case([*TRAIN, "--decay-steps", "0"], "--decay-steps"),
    Case([*TRAIN, "--valid-size", "0"], "--valid-size"),
    Case([*TRAIN, "--valid-size", "100000"], "--valid-size"),
    Case([*TRAIN, "--summary-frequency", "0"], "--summary-frequency"),
    Case([*TRAIN, "--threads", "0"], "--threads"),
    Case([*TRAIN, "--threads", "100000"], "--threads 100000"),
    Case([*TRAIN, "--cell", "lstmx"], "--cell"),
    Case([*TRAIN, "--backend", "tf"], "--backend"),
    Case([*TRAIN, "--dtype", "float16"], "--dtype"),
    Case([*TRAIN, "--device", "tpu"], "--device"),
    Case([*TRAIN, "--init", "ones"], "ones"),
    Case([*TRAIN, "--init", "normal:0"], "normal:0"),
    Case([*TRAIN, "--init", "uniform:1,0"], "uniform:1,0"),
    Case([*TRAIN, "--data", "missing.txt"], "missing.txt"),
    Case([*TRAIN, "--data", ""], "--data"),
    Case([*TRAIN, "--data", "binary.bin"], "binary.bin"),
    Case([*TRAIN, "--data", "latin1.txt"], "latin1.txt"),
    Case([*TRAIN, "--data", "utf16.txt"], "utf16.txt"),
    Case([*TRAIN, "--data", "controls.txt"], "controls.txt"),
    Case([*TRAIN, "--data", "empty.txt"], "empty.txt"),
    Case([*TRAIN, "--data", "tiny.txt"], "tiny.txt"),
    Case([*TRAIN, "--data", "empty-folder"], "empty-folder"),
    Case([*TRAIN, "--data", "truncated.zip"], "truncated.zip"),
    Case([*TRAIN, "--data", "garbage.zip"], "garbage.zip"),
    Case([*TRAIN, "--data", "binary-member.zip"], "binary-member.zip"),
    Case([*TRAIN, "--data", "damaged-member.zip"], "damaged-member.zip"),
    Case(["train", "--steps", "5", "--no-save"], "cannot download"),
    Case([*TRAIN, "--out", "afile"], "--out afile"),
    Case([*TRAIN, "--out", "afile/run"], "--out afile/run"),
    Case([*TRAIN, "--out", "read-only/run"], "--out read-only/run"),
    Case([*TRAIN, "--out", ""], "--out"),
    Case([*TRAIN, "--out", "runs/train-run"], "runs/train-run"),
    Case([*TRAIN, "--out", "runs/speech-run"], "runs/speech-run"),
    Case([*TRAIN, "--no-save", "--out", "elsewhere"], "--no-save"),
    Case(["train", "--resume", "runs/speech-run"], "runs/speech-run"),
    Case(["train", "--resume", "runs/calc-run"], "runs/calc-run"),
    Case(["train", "--resume", "runs/missing"], "runs/missing"),
    Case(["train", "--resume", ""], "--resume"),
    Case(["train", "--resume", "afile"], "afile"),
    Case(["train", "--resume", "empty.pt"], "empty.pt"),
    Case(["train", "--resume", "random.pt"], "random.pt"),
    Case(["train", "--resume", "exploit.pt"], "exploit.pt"),
    Case(["train", "--resume", "truncated.pt"], "truncated.pt"),
    Case(["train", "--resume", "runs/bad-description"], "runs/bad-description"),
    Case(["train", "--resume", "runs/train-run", "--steps", "5"], "--steps 5"),
    Case(["train", "--resume", "runs/train-run", "--steps", "20"], "--steps 20"),
    Case(["train", "--resume", "runs/train-run/checkpoint.pt", "--steps", "10"], "--steps 10"),
    Case(["train", "--resume", "runs/train-run", "--steps", "30", "--nodes", "16"], "--nodes"),
    Case(["train", "--resume", "runs/train-run", "--steps", "30", "--out", "other"], "--out"),
    Case(["train", "--resume", "runs/train-run", "--steps", "30", "--no-save"], "--save"),
    Case(["train", "--nodez", "8"], "--nodez"),
    Case(["trian"], "trian"),
]


def test_train(workspace):
    assert check(TRAIN_CASES + [
        Case([*TRAIN, "--out", workspace[0] / "full-disk", "--json"], "cannot write the output",
             stdout="/dev/full")], workspace) >= 70


SAMPLE_CASES = [
    Case(["sample", "--temperature", "nan"], "--temperature"),
    Case(["sample", "--temperature", "-1"], "--temperature"),
    Case(["sample", "--temperature", "inf"], "--temperature"),
    Case(["sample", "--temperature", "hot"], "--temperature"),
    Case(["sample", "--top-k", "0"], "--top-k"),
    Case(["sample", "--top-k", "-3"], "--top-k"),
    Case(["sample", "--length", "-1"], "--length"),
    Case(["sample", "--backend", "tf"], "--backend"),
    Case(["sample", "--checkpoint", "missing.pt"], "missing.pt"),
    Case(["sample", "--checkpoint", ""], "--checkpoint"),
    Case(["sample", "--checkpoint", "afile"], "afile"),
    Case(["sample", "--checkpoint", "empty.pt"], "empty.pt"),
    Case(["sample", "--checkpoint", "random.pt"], "random.pt"),
    Case(["sample", "--checkpoint", "exploit.pt"], "exploit.pt"),
    Case(["sample", "--checkpoint", "truncated.pt"], "truncated.pt"),
    Case(["sample", "--checkpoint", "other-dict.pt"], "other-dict.pt"),
    Case(["sample", "--checkpoint", "corpus.txt"], "corpus.txt"),
    Case(["sample", "--checkpoint", "empty-folder"], "empty-folder"),
    Case(["sample", "--checkpoint", "runs/calc-run"], "runs/calc-run"),
    Case(["sample", "--checkpoint", "runs/bad-description"], "runs/bad-description"),
    Case(["sample", "--checkpoint", "runs/weights-only"], "runs/weights-only"),
    Case(["sample", "--checkpoint", "runs/speech-run", "--prime", f"Good {EURO}"], EURO),
    Case(["sample", "--checkpoint", "runs/speech-run", "--prime", ""], "prime"),
    Case(["sample", "--runs", "empty-folder"], "empty-folder"),
    Case(["sample", "--runs", "afile"], "afile"),
    Case(["sample", "--runs", ""], "--runs"),
    Case(["sample", "--lenght", "5"], "--lenght"),
]


def test_sample(workspace):
    assert check(SAMPLE_CASES, workspace) == len(SAMPLE_CASES)


SPEECH = ["speech", "--corpus", "speech.txt", "--embedding", "8", "--hidden", "16",
          "--batch-size", "16", "--max-steps", "5"]
SPEECH_CASES = [
    Case(["speech"], "--corpus"),
    Case([*SPEECH, "--corpus", "missing.txt"], "missing.txt"),
    Case([*SPEECH, "--corpus", ""], "--corpus"),
    Case([*SPEECH, "--corpus", "binary.bin"], "binary.bin"),
    Case([*SPEECH, "--corpus", "latin1.txt"], "latin1.txt"),
    Case([*SPEECH, "--corpus", "utf16.txt"], "utf16.txt"),
    Case([*SPEECH, "--corpus", "controls.txt"], "controls.txt"),
    Case([*SPEECH, "--corpus", "empty.txt"], "empty.txt"),
    Case([*SPEECH, "--corpus", "empty-folder"], "empty-folder"),
    Case([*SPEECH, "--corpus", "truncated.zip"], "truncated.zip"),
    Case([*SPEECH, "--corpus", "garbage.zip"], "garbage.zip"),
    Case([*SPEECH, "--corpus", "binary-member.zip"], "binary-member.zip"),
    Case([*SPEECH, "--corpus", "damaged-member.zip"], "damaged-member.zip"),
    Case([*SPEECH, "--corpus", "cops:obama"], "cannot download"),
    Case([*SPEECH, "--corpus", "tiny.txt", "--model", "fc3"], "too small"),
    Case([*SPEECH, "--model", "udacity"], "--model"),
    Case([*SPEECH, "--model", "gpt"], "--model"),
    Case([*SPEECH, "--hidden", "100000"], "--hidden 100000"),
    Case([*SPEECH, "--hidden", "0"], "--hidden"),
    Case([*SPEECH, "--embedding", "0"], "--embedding"),
    Case([*SPEECH, "--layers", "0"], "--layers"),
    Case([*SPEECH, "--dropout", "1"], "--dropout"),
    Case([*SPEECH, "--dropout", "-0.5"], "--dropout"),
    Case([*SPEECH, "--lr", "0"], "--lr"),
    Case([*SPEECH, "--lr", "nan"], "--lr"),
    Case([*SPEECH, "--epochs", "0"], "--epochs"),
    Case([*SPEECH, "--batch-size", "0"], "--batch-size"),
    Case([*SPEECH, "--batch-size", "100000000"], "--batch-size"),
    Case([*SPEECH, "--max-steps", "0"], "--max-steps"),
    Case([*SPEECH, "--bptt", "0"], "--bptt"),
    Case([*SPEECH, "--valid-fraction", "0"], "--valid-fraction"),
    Case([*SPEECH, "--valid-fraction", "1"], "--valid-fraction"),
    Case([*SPEECH, "--backend", "gpu"], "--backend"),
    Case([*SPEECH, "--out", "afile"], "--out afile"),
    Case([*SPEECH, "--out", "afile/run"], "--out afile/run"),
    Case([*SPEECH, "--out", "read-only/run"], "--out read-only/run"),
    Case([*SPEECH, "--out", ""], "--out"),
    Case([*SPEECH, "--out", "runs/train-run"], "runs/train-run"),
    Case([*SPEECH, "--out", "runs/speech-run", "--hidden", "32"], "--hidden"),
    Case([*SPEECH, "--out", "runs/bad-description"], "runs/bad-description"),
    Case([*SPEECH, "--no-save", "--out", "elsewhere"], "--no-save"),
]


def test_speech(workspace):
    assert check(SPEECH_CASES, workspace) >= len(SPEECH_CASES) - 1


CALC = ["calc", "--epochs", "1", "--restarts", "1"]
CALC_CASES = [
    Case([*CALC, "--task", "div"], "--task"),
    Case([*CALC, "--model", "cnn"], "--model"),
    Case([*CALC, "--hidden", "0"], "--hidden"),
    Case([*CALC, "--hidden", "100000"], "--hidden 100000"),
    Case([*CALC, "--n-fac", "0"], "--n-fac"),
    Case([*CALC, "--epochs", "0"], "--epochs"),
    Case([*CALC, "--lr", "0"], "--lr"),
    Case([*CALC, "--lr", "nan"], "--lr"),
    Case([*CALC, "--batch-size", "0"], "--batch-size"),
    Case([*CALC, "--restarts", "0"], "--restarts"),
    Case([*CALC, "--digits", "0"], "--digits"),
    Case([*CALC, "--digits", "7"], "--digits"),
    Case([*CALC, "--samples", "1"], "--samples"),
    Case([*CALC, "--valid-fraction", "0"], "--valid-fraction"),
    Case([*CALC, "--task", "count-ones", "--digits", "2"], "--digits"),
    Case([*CALC, "--length", "5"], "--length"),
    Case([*CALC, "--backend", "gpu"], "--backend"),
    Case([*CALC, "--plot", "empty-folder"], "--plot empty-folder"),
    Case([*CALC, "--plot", "read-only"], "--plot read-only"),
    Case([*CALC, "--plot", "read-only/embeddings.png"], "--plot read-only"),
    Case([*CALC, "--plot", "afile/embeddings.png"], "--plot afile"),
    Case([*CALC, "--plot", ""], "--plot"),
    Case([*CALC, "--out", "afile"], "--out afile"),
    Case([*CALC, "--out", "read-only/run"], "--out read-only/run"),
    Case([*CALC, "--out", "runs/calc-run"], "runs/calc-run"),
    Case([*CALC, "--no-save", "--out", "elsewhere"], "--no-save"),
    Case(["calc", "study", "--hidden", "x"], "--hidden"),
    Case(["calc", "study", "--hidden", "0"], "--hidden"),
    Case(["calc", "study", "--hidden", ""], "--hidden"),
    Case(["calc", "study", "--hidden", "100000", "--models", "lstm"], "--hidden 100000"),
    Case(["calc", "study", "--models", "cnn"], "--models"),
    Case(["calc", "study", "--models", ""], "--models"),
    Case(["calc", "study", "--length", "8"], "--length"),
    Case(["calc", "study", "--out", "afile"], "--out afile"),
    Case(["calc", "study", "--out", "read-only"], "--out read-only"),
    Case(["calc", "study", "--out", "read-only/study"], "--out read-only/study"),
    Case(["calc", "study", "--out", ""], "--out"),
]


def test_calc(workspace):
    assert check(CALC_CASES, workspace) >= len(CALC_CASES) - 4


BENCH = ["bench", "--rounds", "1", "--steps-per-round", "1", "--shapes", "2x2x2"]
BENCH_CASES = [
    Case([*BENCH, "--shapes", "64x64"], "--shapes"),
    Case([*BENCH, "--shapes", "0x1x1"], "--shapes"),
    Case([*BENCH, "--shapes", ""], "--shapes"),
    Case([*BENCH, "--shapes", "100000x100000x100"], "--shapes 100000x100000x100"),
    Case([*BENCH, "--shapes", "10000000000x64x10"], "--shapes 10000000000x64x10"),
    Case([*BENCH, "--backends", "foo"], "--backends"),
    Case([*BENCH, "--backends", ""], "--backends"),
    Case([*BENCH, "--rounds", "0"], "--rounds"),
    Case([*BENCH, "--steps-per-round", "0"], "--steps-per-round"),
    Case([*BENCH, "--device", "tpu"], "--device"),
    Case([*BENCH, "--threads", "0"], "--threads"),
    Case([*BENCH, "--threads", "100000"], "--threads"),
    Case([*BENCH, "--out", "empty-folder"], "--out empty-folder"),
    Case([*BENCH, "--out", "afile/bench.json"], "--out afile"),
    Case([*BENCH, "--out", "read-only/bench.json"], "--out read-only"),
    Case([*BENCH, "--out", ""], "--out"),
]


def test_bench(workspace):
    cases = BENCH_CASES
    if not torch.cuda.is_available():
        cases = cases + [Case([*BENCH, "--device", "cuda"], "--device cuda")]
    assert check(cases, workspace) >= len(cases) - 1


SWEEP = ["sweep", "--data", "corpus.txt", "--batch-size", "4", "--valid-size", "50", "--steps",
         "5"]
SWEEP_CASES = [
    Case([*SWEEP, "--nodes", "2,,4"], "--nodes"),
    Case([*SWEEP, "--nodes", "2,four"], "four"),
    Case([*SWEEP, "--unrollings", "0,5"], "--unrollings"),
    Case([*SWEEP, "--depth", "1,2"], "--depth"),
    Case([*SWEEP, "--nodes", "64"], "nothing to sweep"),
    Case([*SWEEP, "--preset", "imagenet"], "imagenet"),
    Case([*SWEEP, "--preset", "udacity", "--nodes", "2,4"], "--preset"),
    Case([*SWEEP, "--preset", "udacity", "--scale", "0"], "--scale"),
    Case([*SWEEP, "--nodes", "2,4", "--workers", "0"], "--workers"),
    Case([*SWEEP, "--nodes", "2,4", "--repeats", "0"], "--repeats"),
    Case([*SWEEP, "--nodes", "2,4", "--heartbeat", "0"], "heartbeat"),
    Case([*SWEEP, "--nodes", "2,4", "--seed", "x"], "--seed"),
    Case([*SWEEP, "--nodes", "2,4", "--save", "false"], "--save"),
    Case([*SWEEP, "--nodes", "2,4", "--threads", "1"], "--threads"),
    Case([*SWEEP, "--nodes", "2,4", "--out", "afile"], "--out afile"),
    Case([*SWEEP, "--nodes", "2,4", "--out", "afile/sweep"], "--out afile/sweep"),
    Case([*SWEEP, "--nodes", "2,4", "--out", "read-only/sweep"], "--out read-only/sweep"),
    Case([*SWEEP, "--nodes", "2,4", "--out", ""], "--out"),
    Case(["sweep", *SWEEP[3:], "--nodes", "2,4", "--data", "missing.txt"], "missing.txt"),
    Case(["sweep", *SWEEP[3:], "--nodes", "2,4", "--data", "binary.bin"], "binary.bin"),
    Case(["sweep", *SWEEP[3:], "--nodes", "2,4", "--data", "truncated.zip"], "truncated.zip"),
    Case([*SWEEP, "--nodes", "2,4", "--unrollings", "5,5000"], "--unrollings 5000"),
    Case([*SWEEP, "--nodes", "2,4", "--storage", "nonsense://x"], "storage"),
    Case(["sweep", "report", "nowhere"], "nowhere"),
    Case(["sweep", "report", "afile"], "afile"),
    Case(["sweep", "report", "empty-folder"], "empty-folder"),
]


def test_sweep(workspace):
    cases = SWEEP_CASES
    if not torch.cuda.is_available():
        cases = cases + [Case([*SWEEP, "--nodes", "2,4", "--device", "cuda"], "--device cuda")]
    assert check(cases, workspace) >= len(cases) - 1


def test_info_and_the_kernels_build_named_in_the_environment(workspace):
    assert check([Case(["info", "--jsn"], "--jsn"),
                  Case(["info", "extra"], "extra"),
                  Case(["info"], "CHARLSTM_CPU_SIMD=bogus", env={"CHARLSTM_CPU_SIMD": "bogus"}),
                  Case(["info", "--json"], "cannot write the output", stdout="/dev/full")],
                 workspace) == 4
