"""Start-up time of the `charlstm` command: `charlstm --help` and `charlstm <command> --help`.

Each measurement is a fresh process of the installed console script (the `charlstm` beside this
Python), so it counts what a user waits for: the interpreter, the imports and typer's help.
Commands alternate within each round, so that a change in machine load hits them alike. Prints
the median and the fastest run per command and writes JSON to benchmarks/results/.

    python benchmarks/cli_startup.py --repeats 15
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from charlstm.checkpoint import atomic_write_json

COMMANDS = ["", "info", "bench", "train", "sweep", "speech", "sample", "calc"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help="comma-separated commands; an empty name is `charlstm --help`")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    args = parser.parse_args()
    script = Path(sys.executable).with_name("charlstm")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "charlstm_cli.main"]
    commands = args.commands.split(",")
    times = {c: [] for c in commands}
    for _ in range(args.repeats):
        for command in commands:
            argv = base + ([command] if command else []) + ["--help"]
            started = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
            times[command].append(time.perf_counter() - started)
    rows = []
    print(f"{'command':<26} {'median ms':>9} {'min ms':>8}")
    for command, samples in times.items():
        name = f"charlstm {command} --help".replace("  ", " ")
        row = {"command": name, "median_ms": statistics.median(samples) * 1e3,
               "min_ms": min(samples) * 1e3, "runs_ms": [s * 1e3 for s in samples]}
        rows.append(row)
        print(f"{name:<26} {row['median_ms']:9.0f} {row['min_ms']:8.0f}")
    atomic_write_json(args.out, {"python": sys.version, "repeats": args.repeats, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
