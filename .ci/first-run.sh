#!/usr/bin/env bash
# README's first-run pair (`charlstm train ...` then `charlstm sample ...`), run exactly as written
# in an empty folder of a fresh environment. text8 comes from a server on 127.0.0.1 that holds a
# generated text8.zip (.ci/text8_server.py), since CI has no internet.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$scratch"; }
trap cleanup EXIT
python "$root/.ci/text8_server.py" "$scratch/server" > "$scratch/url" &
server=$!
for _ in $(seq 300); do [ -s "$scratch/url" ] && break; sleep 0.1; done
CHARLSTM_TEXT8_URL=$(cat "$scratch/url")
CHARLSTM_HOME="$scratch/home"
export CHARLSTM_TEXT8_URL CHARLSTM_HOME
mkdir "$scratch/work"
cd "$scratch/work"
mapfile -t commands < <(python3 "$root/.ci/readme_commands.py" "test: first run")
for command in "${commands[@]}"; do
    echo "+ $command"
    eval "$command"
done
# The run was saved where the README says, and sample used it.
ls -d runs/train-*/checkpoint.pt
