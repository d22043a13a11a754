#!/usr/bin/env bash
# Run the whole pipeline on the bundled sample data with the embedded defaults (SQLite online
# store, no server to start by hand). Every step prints what it produced; the first failing
# step stops the demo with its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
MLPIPE="${MLPIPE:-.venv/bin/mlpipe}"
PYTHON="${PYTHON:-.venv/bin/python}"
PROJECT=data/demo                  # a fresh `mlpipe init` project each run (data/ is git-ignored)
CONFIG=$PROJECT/mlpipe.yaml
AS_OF=2026-07-01T00:00:00Z

step() { printf '\n== %s\n' "$*"; }

step "1. mlpipe init -> $PROJECT/ (mlpipe.yaml, 100k sample orders in data/sample/, Makefile)"
rm -rf "$PROJECT"
$MLPIPE init "$PROJECT" --rows 100000 --seed 42

step "2. validate every source against its contract; save reference profiles"
$MLPIPE validate -c "$CONFIG" --save-profile

step "3. point-in-time training set -> data/training_set.parquet"
$MLPIPE training-set -c "$CONFIG" --out data/training_set.parquet

step "4. fit the preprocessing -> a versioned transform artifact"
$MLPIPE fit -c "$CONFIG" --data data/training_set.parquet

step "5. transform the training set with the fitted state -> data/features.parquet"
$MLPIPE transform -c "$CONFIG" --data data/training_set.parquet --out data/features.parquet

step "6. materialize the latest features as of $AS_OF into the online store (SQLite)"
$MLPIPE materialize -c "$CONFIG" --as-of "$AS_OF"

step "7. train a small model on the transformed features and register it with that transform version"
$PYTHON scripts/train_demo_model.py "$CONFIG" data/features.parquet data/model.skops
$MLPIPE model register data/model.skops --artifact latest -c "$CONFIG"

step "8. serve: start the feature server, query it, stop it (log flushed)"
$PYTHON scripts/serve_smoke.py -c "$CONFIG"

step "9. drift: the training set against the fitted reference profile"
$MLPIPE psi-report -c "$CONFIG" --current data/training_set.parquet --html data/drift.html
echo "HTML report: data/drift.html"

step "10. the drift gate: this week's orders (sample data with --fault drift) vs the saved reference"
$MLPIPE sample-data --out data/drifted --rows 100000 --seed 42 --fault drift -q
$PYTHON - <<'PY'
import polars as pl
week = pl.scan_parquet("data/drifted/orders.parquet").filter(
    pl.col("order_ts") >= pl.datetime(2026, 6, 24, time_zone="UTC"))
week.sink_parquet("data/drifted/orders_last_week.parquet")
PY
set +e
$MLPIPE validate -c "$CONFIG" --source orders --data data/drifted/orders_last_week.parquet \
  --reference latest --no-publish
code=$?
set -e
if [[ $code -ne 1 ]]; then echo "expected exit 1 from the drift gate, got $code"; exit 1; fi
echo "-> exit 1: validate --reference caught the drifted revenue, as it should"

step "artifacts published"
$MLPIPE artifacts list -c "$CONFIG"
$MLPIPE artifacts verify --all -c "$CONFIG" -q && echo "all artifact versions verify"
