"""One table from several `charlstm bench --suite general --out FILE` runs (slices of the grid).

    python benchmarks/general_table.py lstm_h64.json lstm_h128.json ... [--out all.json]

Prints the markdown table and summary of all their rows, as `format_table` prints one run's. A
cell timed in several of the runs keeps the row of the last file that has it, so a slice timed
again (`--batch 1`, say) goes after the runs it replaces.
"""

import argparse
import json

from charlstm.bench_suite import combine, format_table
from charlstm.checkpoint import atomic_write_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by --out")
    parser.add_argument("--out", help="also write the combined result as JSON here")
    args = parser.parse_args()
    results = []
    for path in args.results:
        with open(path) as f:
            results.append(json.load(f))
    combined = combine(results)
    if args.out:
        atomic_write_bytes(args.out, json.dumps(combined, indent=2).encode())
    print(format_table(combined))


if __name__ == "__main__":
    main()
