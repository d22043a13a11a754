#!/usr/bin/env bash
# Run the whole pipeline on the bundled sample data with the embedded defaults.
# Every step prints what it produced; the first failing step stops the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
MLPIPE="${MLPIPE:-.venv/bin/mlpipe}"
CONFIG=configs/example.yaml

step() { printf '\n== %s\n' "$*"; }

step "sample data -> data/sample/"
$MLPIPE sample-data --out data/sample --rows 100000 --seed 42

step "artifacts published so far"
$MLPIPE artifacts list -c "$CONFIG"
