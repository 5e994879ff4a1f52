#!/usr/bin/env python3
"""Print the commands README.md gives after the marker `<!-- NAME -->`, one per line.

    python3 .ci/readme_commands.py "ci: install"

The commands are the indented block that follows the marker. .ci/run runs the install line and
the test command this way, and tests/test_readme.py the first-run pair, so that what the README
says is what is run. Standard library only: it runs before anything is installed.
"""

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def commands(name: str, text: str) -> list[str]:
    lines = text.splitlines()
    marker = f"<!-- {name} -->"
    if marker not in lines:
        raise SystemExit(f"{README} has no line {marker!r}")
    block = []
    for line in lines[lines.index(marker) + 1:]:
        if not line.strip():
            if block:
                break
            continue
        if not line.startswith("    "):
            break
        block.append(line[4:])
    if not block:
        raise SystemExit(f"{README}: no indented commands follow {marker!r}")
    return block


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: readme_commands.py NAME (as in <!-- NAME --> in README.md)")
    print("\n".join(commands(sys.argv[1], README.read_text())))
