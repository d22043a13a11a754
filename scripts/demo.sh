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

# json_field KEY < DOCUMENT: print DOCUMENT's KEY; one clear line (not a traceback) and exit 1
# when the document is not the JSON expected.
json_field() {
  $PYTHON -c '
import json, sys
text = sys.stdin.read()
try:
    print(json.loads(text)[sys.argv[1]])
except (ValueError, KeyError, TypeError):
    sys.exit(f"demo: expected a JSON document with {sys.argv[1]!r}, got: {text.strip()[:200]!r}")
' "$1"
}

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

step "11. several entities per row: rides by rider, driver and zone (configs/rides.yaml)"
RIDES=configs/rides.yaml
$MLPIPE sample-data --dataset rides --out data/rides -q
$MLPIPE training-set -c "$RIDES" --out data/rides_train.parquet
$MLPIPE fit -c "$RIDES"
$MLPIPE materialize -c "$RIDES" --as-of "$AS_OF"
echo "-> one lookup by all four keys (GET /features?rider_id=...&driver_id=...&pickup_zone=...&dropoff_zone=...):"
$PYTHON - "$RIDES" <<'PY'
import asyncio, sys
from pathlib import Path
from urllib.parse import urlencode

import orjson
import polars as pl

from mlpipe_cli.config import load_config
from mlpipe_cli.serving.app import ServingApp
from mlpipe_cli.serving.service import build_runtime

config = load_config(Path(sys.argv[1]))
runtime = build_runtime(config, config.artifact_dir, model_ref="none", logging_enabled=False)
app = ServingApp(runtime.service, runtime.metrics)
keys = ["rider_id", "driver_id", "pickup_zone", "dropoff_zone"]
row = pl.read_parquet("data/rides/labels.parquet").filter(
    ~pl.col("pickup_zone").str.contains(r"^[A-Za-z]+$")).row(0, named=True)

async def body() -> bytes:
    return b""

query = urlencode({k: row[k] for k in keys})
print(f"GET /features?{query}")
_, status, answer, _, _ = asyncio.run(app.handle("/features", "GET", body, None, query))
doc = orjson.loads(answer)
print(status, orjson.dumps({k: doc[k] for k in ("entity", "cold_start", "features", "expired")},
                           option=orjson.OPT_INDENT_2).decode())
runtime.service.store.close()
PY

step "artifacts published"
$MLPIPE artifacts list -c "$CONFIG"
$MLPIPE artifacts verify --all -c "$CONFIG" -q && echo "all artifact versions verify"

# -- shadow serving, promote and SLOs (issue 15) ------------------------------------------------
LOG_DIR=data/shadow-log
LIVE=$($PYTHON -c "
from mlpipe_cli.artifacts import ArtifactStore; from mlpipe_cli.config import load_config
c = load_config('$CONFIG'); print(ArtifactStore(c.artifact_dir, c.pipeline).latest('transform'))")
LIVE_MODEL=$($PYTHON -c "
from mlpipe_cli.artifacts import ArtifactStore; from mlpipe_cli.config import load_config
c = load_config('$CONFIG'); print(ArtifactStore(c.artifact_dir, c.pipeline).latest('model'))")

step "12. promote: verify transform $LIVE + model $LIVE_MODEL and publish the serving pointer"
$MLPIPE promote "$LIVE" --model "$LIVE_MODEL" -c "$CONFIG"

step "13. a candidate version: age min-max scaled instead of standardised (fit, train, register)"
# Next to mlpipe.yaml: relative paths in a config resolve against its own directory, so the
# candidate reads the same sample data and publishes into the same artifact store.
SHADOW_CONFIG=$PROJECT/shadow.yaml
$PYTHON - "$CONFIG" "$SHADOW_CONFIG" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["transforms"]["columns"]["age"] = [{"type": "fill_null", "strategy": "median"},
                                          {"type": "minmax"}]
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
# The command's own output first: under set -e a failing command stops the demo here with its
# exit code and its one-line error, before anything tries to read its JSON.
FIT_JSON=$($MLPIPE fit -c "$SHADOW_CONFIG" --data data/training_set.parquet --json)
SHADOW=$(json_field version <<<"$FIT_JSON")
$MLPIPE transform -c "$SHADOW_CONFIG" --artifact "$SHADOW" --data data/training_set.parquet \
  --out data/features_shadow.parquet -q
$PYTHON scripts/train_demo_model.py "$SHADOW_CONFIG" data/features_shadow.parquet data/model_shadow.skops
REGISTER_JSON=$($MLPIPE model register data/model_shadow.skops --artifact "$SHADOW" -c "$CONFIG" --json)
SHADOW_MODEL=$(json_field model_version <<<"$REGISTER_JSON")

step "14. serve the promoted version with $SHADOW in shadow; 2,000 requests; stop"
rm -rf "$LOG_DIR"
$PYTHON - "$MLPIPE" "$CONFIG" "$LOG_DIR" "$SHADOW" "$SHADOW_MODEL" <<'PY'
import random, signal, socket, subprocess, sys, time, urllib.request, json
mlpipe, config, log_dir, shadow, shadow_model = sys.argv[1:6]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
proc = subprocess.Popen([mlpipe, "serve", "-c", config, "--port", str(port), "--log-dir", log_dir,
                         "--shadow", shadow, "--shadow-model", shadow_model])
base = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=1); break
    except OSError:
        time.sleep(0.1)
rng = random.Random(1)
for _ in range(2000):
    body = json.dumps({"entity": rng.randint(1, 5000)}).encode()
    urllib.request.urlopen(urllib.request.Request(base + "/predict", body), timeout=10).read()
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
print("\n".join(l for l in metrics.splitlines() if l.startswith("mlpipe_serve_shadow")))
proc.send_signal(signal.SIGTERM)
sys.exit(proc.wait(60))
PY

step "15. compare live vs shadow on the same requests: age changed, unannounced -> exit 1"
set +e
$MLPIPE psi-report -c "$CONFIG" --compare-shadow --serving-log "$LOG_DIR" --since 1h
code=$?
set -e
if [[ $code -ne 1 ]]; then echo "expected exit 1 (unexpected change), got $code"; exit 1; fi
echo "-> exit 1: the change to age was caught"
$MLPIPE psi-report -c "$CONFIG" --compare-shadow --serving-log "$LOG_DIR" --since 1h \
  --expect-change age --html data/shadow.html
echo "-> exit 0 with --expect-change age; HTML report: data/shadow.html"

step "16. promote the candidate while a server follows the pointer, then roll back"
$PYTHON - "$MLPIPE" "$CONFIG" "$SHADOW" "$SHADOW_MODEL" <<'PY'
import json, signal, socket, subprocess, sys, threading, time, urllib.request
mlpipe, config, shadow, shadow_model = sys.argv[1:5]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
proc = subprocess.Popen([mlpipe, "serve", "-c", config, "--port", str(port)])
base = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=1); break
    except OSError:
        time.sleep(0.1)
stop, seen, failed = threading.Event(), {}, [0]
def client():
    while not stop.is_set():
        try:
            doc = json.load(urllib.request.urlopen(base + "/features/3", timeout=10))
            seen[doc["transform_version"]] = seen.get(doc["transform_version"], 0) + 1
        except Exception:
            failed[0] += 1
threads = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in threads]
def version():
    return json.load(urllib.request.urlopen(base + "/readyz"))["transform_version"]
before = version()
for args in (["promote", shadow, "--model", shadow_model], ["promote", "--rollback"]):
    subprocess.run([mlpipe, *args, "-c", config], check=True)
    target = shadow if args[1] == shadow else before
    deadline = time.monotonic() + 60
    while version() != target and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"server now serves {version()}")
    time.sleep(1)
stop.set(); [t.join() for t in threads]
proc.send_signal(signal.SIGTERM); code = proc.wait(60)
print(f"responses per version: {seen}; failed requests: {failed[0]}")
sys.exit(code or (1 if failed[0] else 0))
PY

step "17. SLOs from the run ledger (latency p99 from the servers' histograms); exit 1 = a breach"
set +e
$MLPIPE slo -c "$CONFIG"
echo "-> mlpipe slo exit $?"
set -e
$MLPIPE artifacts verify --all -c "$RIDES" -q && echo "all rides artifact versions verify"
