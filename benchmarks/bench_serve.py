"""Benchmark `mlpipe serve`: HTTP latency/throughput under load, and in-process lookup+transform.

Setup (in a temp dir): a real redis-server on a free loopback port; N entities (default
100,000) materialized into Redis and into SQLite through the online store's own writer; a
transform fitted with `mlpipe fit`'s core (standard scaling, null filling, one-hot) and a
logistic-regression model registered with `mlpipe model register`'s core.

Measured, each a median over --runs runs:
- `GET /features/{id}` (random ids) against the Redis-backed and the SQLite-backed server;
- `POST /predict` against the Redis-backed server;
- `GET /healthz` on the same server: a constant response on the same stack (the floor);
- in-process `FeatureService.lookup(id)` (lookup + transform, no HTTP) for Redis and SQLite;
- the same for three entity types per request (a user by int id, a merchant and a device by
  string keys of different lengths, some non-ASCII: three store namespaces read in one MGET
  / one query each), beside the single-entity figures of the same run, CPU µs per request.

Load generator: `wrk` (1 thread, C connections, fixed duration, Lua script for random ids and
p50/p99/p99.9) when on PATH, else a separate Python process with an asyncio raw-HTTP/1.1
keep-alive client. Both run on loopback only.

Every HTTP figure is printed for each connection count (default 16 and 1: queueing, and a
single client where any tail is the server's own), beside the server process's CPU seconds
per 1,000 requests and the load average before and after (the machine is shared).

With ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/main main``) a third
server runs that checkout's code on the same Redis data; its constant, ``GET /features/{id}``
and ``/predict`` endpoints are measured interleaved with this checkout's and reported as
ratios, beside each server's event-loop thread CPU per request (on a shared machine the
ratios measured in one run are the figures to compare).

With ``--shadow`` only the shadow comparison runs: two Redis-backed servers side by side, one
plain and one with ``--shadow V2 --shadow-model M2`` (a second transform, ``age`` min-max
scaled, and a model bound to it), measured interleaved on ``GET /features/{id}`` and
``POST /predict``: req/s, p50/p99, the server's CPU per request, and afterwards the shadow
rows lost (live rows written vs rows whose shadow columns are filled).

With ``--trace-tail`` only the tail at one connection is examined: the real server runs
with timestamps on both sides of the socket (``time.perf_counter`` is CLOCK_MONOTONIC, one
clock for every process), so each request's latency splits into ingress (kernel, Granian,
event-loop wake-up), app (arrival in ``__rsgi__`` to ``response_bytes``) and egress; for the
slowest 1 % it reports how many overlapped a garbage collection, a stretch of work of a
background thread (the pointer follower, the ledger, the feature log's sink thread; the
moments between their blocking calls, when they want the GIL; the feature log's own steps
run on the event loop, between requests, so they show up in the app and ingress times) and how long their store round trip
took, and for every thread the median latency of requests that overlapped it vs the rest.

Environment: ``BENCH_LOG=0`` runs every server with the feature log off (what the log costs:
compare with a default run; its writer converts the rows on the event loop between requests,
see docs/serve.md); ``BENCH_LOG_SAMPLE=0.1`` logs that fraction of served entities
(``serving.logging.sample_rate``); ``BENCH_COALESCE=0`` turns request coalescing off.

Usage: .venv/bin/python benchmarks/bench_serve.py [--quick] [--entities N] [--duration S]
       [--runs R] [--connections 16,1] [--json OUT] [--shadow] [--no-http] [--baseline DIR]
       [--trace-tail [--trace-kinds features,constant,predict] [--trace-requests N]]
Run full-size benchmarks under `flock /tmp/mlpipe-bench.lock`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _redis_binary import find_redis_server  # benchmarks/ is sys.path[0] when run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FEATURES = [
    "total_orders", "lifetime_value", "orders_30d", "revenue_30d", "days_since_last_order",
    "age", "country", "plan",
]  # fmt: skip
COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA"]
PLANS = ["free", "pro", "enterprise"]


# -- setup ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    return proc, port


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


def rows_for(n: int, seed: int = 1) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        orders = rng.randint(0, 60)
        rows.append([
            orders,
            round(rng.uniform(0, 3000), 2) if orders else 0.0,
            rng.randint(0, min(orders, 10)),
            round(rng.uniform(0, 400), 2),
            round(rng.uniform(0, 180), 3) if orders else 999.0,
            rng.randint(18, 80) if rng.random() > 0.05 else None,
            rng.choice(COUNTRIES),
            rng.choice(PLANS),
        ])  # fmt: skip
        del i
    return rows


DEFAULTS = {
    "total_orders": 0,
    "lifetime_value": 0.0,
    "orders_30d": 0,
    "revenue_30d": 0.0,
    "days_since_last_order": 999.0,
    "age": None,
    "country": None,
    "plan": "free",
}

# The served transform (also measured alone by bench_transform_one.py).
TRANSFORM_COLUMNS = {
    "total_orders": [{"type": "log1p"}, {"type": "standard"}],
    "lifetime_value": [{"type": "standard"}],
    "orders_30d": [{"type": "standard"}],
    "revenue_30d": [{"type": "minmax"}],
    "days_since_last_order": [{"type": "standard"}],
    "age": [{"type": "fill_null", "strategy": "median"}, {"type": "standard"}],
    "country": [{"type": "onehot"}],
    "plan": [{"type": "onehot"}],
}


def frame_of(rows: list[list]) -> Any:  # type: ignore[type-arg]
    """Rows of ``rows_for`` as a Polars frame with the training dtypes."""
    import polars as pl

    schema = [
        ("total_orders", pl.Int64), ("lifetime_value", pl.Float64), ("orders_30d", pl.Int64),
        ("revenue_30d", pl.Float64), ("days_since_last_order", pl.Float64), ("age", pl.Int64),
        ("country", pl.String), ("plan", pl.String),
    ]  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")


def build_project(root: Path, n: int, redis_port: int) -> dict[str, Path]:
    import numpy as np
    import skops.io as sio
    import yaml
    from sklearn.linear_model import LogisticRegression

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.online import open_store, pack_row
    from mlpipe_cli.online.writer import write_version
    from mlpipe_cli.serving.model import register_model
    from mlpipe_cli.transforms import load_transform, publish

    rows = rows_for(n)
    frame_of(rows[:20_000]).write_parquet(root / "train.parquet")
    transforms = {"data": "train.parquet", "columns": TRANSFORM_COLUMNS}
    base = {
        "pipeline": "bench",
        "entity_keys": ["user_id"],
        "artifact_dir": str(root / "artifacts"),
        "transforms": transforms,
        "serving": {
            "coalesce": os.environ.get("BENCH_COALESCE", "1") == "1",
            "logging": {
                "enabled": os.environ.get("BENCH_LOG", "1") == "1",
                "queue_rows": 1_000_000,
                "segment_rows": 200_000,
                "sample_rate": float(os.environ.get("BENCH_LOG_SAMPLE", "1")),
            },
        },
    }
    configs = {}
    for kind in ("redis", "sqlite"):
        doc = dict(base)
        doc["online_store"] = (
            {"type": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"}
            if kind == "redis" else {"type": "sqlite", "path": str(root / "online.sqlite")}
        )  # fmt: skip
        path = root / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        configs[kind] = path
    config = load_config(configs["redis"])
    artifacts = ArtifactStore(root / "artifacts", "bench")
    publish(artifacts, config.transforms, root / "train.parquet")
    transform = load_transform(artifacts)
    defaults = DEFAULTS
    for path in configs.values():
        store = open_store(load_config(path), root / "artifacts")
        chunk = 20_000
        write_version(
            store,
            features=FEATURES,
            rows=(
                [(f"[{i + 1}]", pack_row(rows[i])) for i in range(s, min(n, s + chunk))]
                for s in range(0, n, chunk)
            ),
            as_of=datetime(2026, 7, 1, tzinfo=UTC),
            feature_hash="bench",
            entity_keys=["user_id"],
            key_types=["int"],
            defaults=defaults,
            expected=n,
        )
        store.close()
    # a model trained on the transformed training rows
    x = np.asarray(
        [transform.transform_one(dict(zip(FEATURES, r, strict=True))) for r in rows[:5000]],
        dtype=np.float64,
    )
    y = (x[:, 0] + 0.3 * x[:, 2] > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(x, y)
    sio.dump(model, root / "model.skops")
    register_model(artifacts, root / "model.skops", transform.version)
    return configs


# -- three entity types per request ------------------------------------------------------------

MERCHANT_FEATURES = ["merchant_fraud_rate", "merchant_category"]
DEVICE_FEATURES = ["device_age_days", "device_os"]
TRANSFORM_COLUMNS_3 = {
    **TRANSFORM_COLUMNS,
    "merchant_fraud_rate": [{"type": "standard"}],
    "merchant_category": [{"type": "onehot"}],
    "device_age_days": [{"type": "fill_null", "strategy": "median"}, {"type": "standard"}],
    "device_os": [{"type": "onehot"}],
}
_MERCHANT_NAMES = ["Zürich Bäckerei", "東京", "A", "São Paulo Café", "shop", "Ålesund Fisk"]


def merchants_for(n: int) -> list[str]:
    """Merchant keys of 1 to ~30 characters, some non-ASCII."""
    return [f"{_MERCHANT_NAMES[i % len(_MERCHANT_NAMES)]}#{i}" for i in range(max(10, n // 10))]


def devices_for(n: int) -> list[str]:
    return [f"dev-{i:x}" for i in range(max(10, n // 2))]


def build_project_3(root: Path, n: int, redis_port: int) -> dict[str, Path]:
    """The same users plus merchants and devices: one version, three namespaces."""
    import polars as pl
    import yaml

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.online import open_store, pack_row
    from mlpipe_cli.online.store import Namespace, StoreMetadata
    from mlpipe_cli.online.writer import finish_version, new_version_id, start_version
    from mlpipe_cli.transforms import publish

    rng = random.Random(11)
    rows = rows_for(n)
    merchants = merchants_for(n)
    devices = devices_for(n)
    m_rows = [[round(rng.random() * 0.1, 4), rng.choice(["food", "travel", "tech", "art"])]
              for _ in merchants]  # fmt: skip
    d_rows = [[rng.randint(0, 900) if rng.random() > 0.05 else None,
               rng.choice(["ios", "android", "web"])] for _ in devices]  # fmt: skip
    train = frame_of(rows[:20_000]).with_columns(
        pl.Series("merchant_fraud_rate", [m_rows[i % len(m_rows)][0] for i in range(min(n, 20_000))]),
        pl.Series("merchant_category", [m_rows[i % len(m_rows)][1] for i in range(min(n, 20_000))]),
        pl.Series("device_age_days", [d_rows[i % len(d_rows)][0] for i in range(min(n, 20_000))],
                  dtype=pl.Int64),
        pl.Series("device_os", [d_rows[i % len(d_rows)][1] for i in range(min(n, 20_000))]),
    )  # fmt: skip
    train.write_parquet(root / "train3.parquet")
    keys = ["user_id", "merchant", "device"]
    base = {
        "pipeline": "bench3",
        "entity_keys": keys,
        "artifact_dir": str(root / "artifacts"),
        "transforms": {"data": "train3.parquet", "columns": TRANSFORM_COLUMNS_3},
        "serving": {"logging": {"enabled": False}},
    }
    configs = {}
    for kind in ("redis", "sqlite"):
        doc = dict(base)
        doc["online_store"] = (
            {"type": "redis", "url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": "b3"}
            if kind == "redis" else {"type": "sqlite", "path": str(root / "online3.sqlite")}
        )  # fmt: skip
        path = root / f"{kind}3.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        configs[kind] = path
    publish(ArtifactStore(root / "artifacts", "bench3"), load_config(configs["redis"]).transforms,
            root / "train3.parquet")  # fmt: skip
    namespaces = [
        Namespace(["user_id"], ["int"], FEATURES, n),
        Namespace(["merchant"], ["str"], MERCHANT_FEATURES, len(merchants)),
        Namespace(["device"], ["str"], DEVICE_FEATURES, len(devices)),
    ]
    dumps = json.dumps
    tables = [
        [(f"[{i + 1}]", pack_row(rows[i])) for i in range(n)],
        [(dumps([m], ensure_ascii=False, separators=(",", ":")), pack_row(v))
         for m, v in zip(merchants, m_rows, strict=True)],
        [(dumps([d]), pack_row(v)) for d, v in zip(devices, d_rows, strict=True)],
    ]  # fmt: skip
    total = sum(len(t) for t in tables)
    for path in configs.values():
        store = open_store(load_config(path), root / "artifacts")
        meta = StoreMetadata(
            version=new_version_id(store), as_of=datetime(2026, 7, 1, tzinfo=UTC),
            finished_at=None, entity_count=total,
            features=FEATURES + MERCHANT_FEATURES + DEVICE_FEATURES, feature_hash="bench3",
            entity_keys=keys, key_types=["int", "str", "str"], namespaces=namespaces,
            defaults={**DEFAULTS, "merchant_fraud_rate": 0.0, "merchant_category": "food",
                      "device_age_days": None, "device_os": "web"},
        )  # fmt: skip
        progress = start_version(store, meta, chunk_size=20_000, entities_hash="")
        for index, table in enumerate(tables):
            for start in range(0, len(table), 20_000):
                store.write_chunk(progress, table[start : start + 20_000], index)
        finish_version(store, meta, progress, expected=total)
        store.close()
    return configs


def in_process_3(config: Path, artifact_dir: Path, n: int, count: int) -> dict:
    """``in_process`` with a (user, merchant, device) request: three namespaces per lookup."""
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.server import tune_serving_process
    from mlpipe_cli.serving.service import build_runtime

    runtime = build_runtime(load_config(config), artifact_dir, model_ref="none",
                            logging_enabled=False)  # fmt: skip
    service = runtime.service
    tune_serving_process()
    rng = random.Random(3)
    merchants, devices = merchants_for(n), devices_for(n)
    entities = [
        {"user_id": rng.randint(1, n), "merchant": rng.choice(merchants),
         "device": rng.choice(devices)}
        for _ in range(count)
    ]  # fmt: skip
    for entity in entities[:2000]:
        service.lookup(entity)
    times = []
    clock = time.perf_counter
    cpu = time.process_time()
    for entity in entities:
        t = clock()
        served = service.lookup(entity)
        times.append(clock() - t)
    cpu = time.process_time() - cpu
    if served.cold_start:
        raise SystemExit("3-entity benchmark: an entity was not found")
    store_times = []
    for entity in entities[: count // 5]:
        t = clock()
        service.store.get(entity)
        store_times.append(clock() - t)
    service.store.close()
    times.sort()
    store_times.sort()
    return {
        "p50": times[len(times) // 2] * 1e6,
        "p99": times[int(len(times) * 0.99)] * 1e6,
        "cpu_us": cpu / count * 1e6,
        "store_get_p50": store_times[len(store_times) // 2] * 1e6,
        "count": count,
    }


# -- servers --------------------------------------------------------------------------------


class Server:
    def __init__(
        self, config: Path, log_dir: Path, workers: int = 1, extra: tuple = (),
        repo: Path | None = None,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.stderr = ""
        # ``repo``: another checkout's code (``python -m`` puts the working directory first
        # on sys.path), for --baseline
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(config), "--port",
             str(self.port), "--log-dir", str(log_dir), "--workers", str(workers), "-q",
             *extra],
            cwd=repo or REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_port(self.port)
        deadline = time.monotonic() + 60  # workers accept only once they have verified
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = self.proc.stderr.read().decode()
        if self.proc.returncode != 0:
            print(self.stderr, file=sys.stderr)


# -- load generators ------------------------------------------------------------------------

WRK_LUA = textwrap.dedent("""
    local n = tonumber(os.getenv("BENCH_N"))
    local kind = os.getenv("BENCH_KIND")
    math.randomseed(7)
    request = function()
      local id = math.random(1, n)
      if kind == "features" then
        return wrk.format("GET", "/features/" .. id)
      elseif kind == "predict" then
        return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"},
                          '{"entity":' .. id .. '}')
      else
        return wrk.format("GET", "/healthz")
      end
    end
    done = function(summary, latency, requests)
      io.write(string.format(
        "BENCH {\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d, \\"p50\\": %d, " ..
        "\\"p99\\": %d, \\"p999\\": %d, \\"non2xx\\": %d}\\n",
        summary.requests, summary.duration / 1e6,
        summary.errors.connect + summary.errors.read + summary.errors.write +
        summary.errors.timeout, latency:percentile(50), latency:percentile(99),
        latency:percentile(99.9), summary.errors.status))
    end
""")

PY_CLIENT = textwrap.dedent(r"""
    import asyncio, json, random, sys, time
    port, kind, n, conns, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    lat = []; errors = 0; non2xx = 0
    def req(i):
        if kind == "features":
            return f"GET /features/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        if kind == "predict":
            body = f'{{"entity":{i}}}'
            return (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    async def worker(stop):
        global errors, non2xx
        r, w = await asyncio.open_connection("127.0.0.1", int(port))
        rng = random.Random()
        while time.perf_counter() < stop:
            t = time.perf_counter()
            w.write(req(rng.randint(1, n)))
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await r.readexactly(length)
            lat.append(time.perf_counter() - t)
            if not head.startswith(b"HTTP/1.1 2"):
                non2xx += 1
        w.close()
    async def main():
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(worker(stop) for _ in range(conns)))
        return time.perf_counter() - start
    secs = asyncio.run(main())
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6
    print("BENCH " + json.dumps({"requests": len(lat), "seconds": secs, "errors": errors,
          "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "non2xx": non2xx}))
""")


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process (or ``pid/task/tid``: one thread) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def load(
    port: int, kind: str, n: int, conns: int, seconds: float, tmp: Path, server_pid: int = 0
) -> dict:
    wrk = shutil.which("wrk")
    if wrk:
        script = tmp / "bench.lua"
        script.write_text(WRK_LUA)
        cmd = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(script),
               f"http://127.0.0.1:{port}/"]  # fmt: skip
        env = {**os.environ, "BENCH_N": str(n), "BENCH_KIND": kind}
    else:
        cmd = [sys.executable, "-c", PY_CLIENT, str(port), kind, str(n), str(conns), str(seconds)]
        env = dict(os.environ)
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    # the event loop's thread alone: the Python request path (Granian's Rust threads spin
    # while they wait, so the process's CPU grows with waiting on a loaded machine)
    main_before = cpu_seconds(f"{server_pid}/task/{server_pid}") if server_pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    main = cpu_seconds(f"{server_pid}/task/{server_pid}") - main_before if server_pid else 0.0
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"load generator failed: {out.stdout}\n{out.stderr}")
    doc = json.loads(line[6:])
    doc["rps"] = doc["requests"] / doc["seconds"]
    doc["tool"] = "wrk" if wrk else "python-asyncio"
    doc["cpu_ms_per_1k"] = cpu / max(1, doc["requests"]) * 1e6
    doc["main_ms_per_1k"] = main / max(1, doc["requests"]) * 1e6
    return doc


def in_process(config: Path, artifact_dir: Path, n: int, count: int) -> dict:
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.service import build_runtime

    runtime = build_runtime(load_config(config), artifact_dir, logging_enabled=False)
    service = runtime.service
    # the server's own process settings (GIL switch interval, gc.freeze of what is loaded):
    # without them this process's set-up data (100k materialized rows) makes its garbage
    # collections, not the lookups, the p99
    from mlpipe_cli.serving.server import tune_serving_process

    tune_serving_process()
    rng = random.Random(3)
    ids = [rng.randint(1, n) for _ in range(count)]
    for i in ids[:2000]:
        service.lookup(i)
    times = []
    clock = time.perf_counter
    cpu = time.process_time()
    for i in ids:
        t = clock()
        service.lookup(i)
        times.append(clock() - t)
    cpu = time.process_time() - cpu
    # where the time goes: the store's lookup alone, the transform alone
    store_times, transform_times = [], []
    record = service.lookup(ids[0]).values
    for i in ids[: count // 5]:
        t = clock()
        service.store.get(i)
        store_times.append(clock() - t)
        t = clock()
        service.transform.transform_one(record)
        transform_times.append(clock() - t)
    service.store.close()
    times.sort()
    store_times.sort()
    transform_times.sort()
    return {
        "p50": times[len(times) // 2] * 1e6,
        "p99": times[int(len(times) * 0.99)] * 1e6,
        "store_get_p50": store_times[len(store_times) // 2] * 1e6,
        "transform_one_p50": transform_times[len(transform_times) // 2] * 1e6,
        "cpu_us": cpu / count * 1e6,
        "count": count,
    }


# -- the app's request path in process (no sockets, no HTTP parsing) ------------------------


class _Scope:
    """The fields of a Granian RSGI HTTP scope that the app reads."""

    __slots__ = ("headers", "method", "path", "proto", "query_string")

    def __init__(self, path: str) -> None:
        self.proto, self.path, self.method, self.headers = "http", path, "GET", {}
        self.query_string = ""
        if path.startswith("/predict/"):  # POST /predict {"entity": id}
            self.path, self.method = "/predict", "POST"
            self.headers = {"content-length": str(len(_predict_body(path)))}


def _predict_body(path: str) -> bytes:
    return b'{"entity":%s}' % path[9:].encode()


class _Proto:
    __slots__ = ("body", "request", "status")

    def __init__(self, path: str = "") -> None:
        self.request = _predict_body(path) if path.startswith("/predict/") else b""

    async def __call__(self) -> bytes:
        return self.request

    def __aiter__(self) -> Any:
        async def chunks() -> Any:
            yield self.request

        return chunks()

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.status, self.body = status, body


def app_path(config: Path, artifact_dir: Path, n: int, count: int, log_dir: Path) -> dict:
    """``ServingApp.__rsgi__`` called directly, the way Granian calls it, against the real
    store, with the server's process settings and feature logging on: CPU µs per request,
    latency, and the garbage collections that ran (the machine's load moves wall-clock tails
    far more than this path does, so these are the figures to compare between versions)."""
    import asyncio
    import gc

    import uvloop

    from mlpipe_cli.serving.server import ServeSpec, build_app, tune_serving_process

    spec = ServeSpec(
        config_path=str(config), artifact_dir=str(artifact_dir), transform_ref="latest",
        model_ref="latest", host="127.0.0.1", port=0, log_dir=str(log_dir),
    )  # fmt: skip
    app = build_app(spec)
    rng = random.Random(5)
    ids = [rng.randint(1, n) for _ in range(count)]
    out: dict[str, dict] = {}

    async def client(paths: list[str], times: list[float]) -> None:
        clock = time.perf_counter
        for path in paths:
            proto = _Proto(path)
            start = clock()
            await app.__rsgi__(_Scope(path), proto)
            times.append(clock() - start)
            if proto.status != 200:
                raise SystemExit(f"{path}: {proto.status} {proto.body[:200]!r}")

    async def main() -> None:
        app.__rsgi_init__(asyncio.get_running_loop())
        tune_serving_process()
        await client([f"/features/{i}" for i in ids[:2000]], [])  # warm-up
        collections: list[tuple[int, float]] = []
        began: dict[str, float] = {}

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                began["t"] = time.perf_counter()
            else:
                collections.append((info["generation"], time.perf_counter() - began["t"]))

        gc.callbacks.append(on_gc)
        try:
            for conns in (1, 16):
                for kind in ("features", "constant", "predict"):
                    prefix = {"features": "/features/", "predict": "/predict/"}.get(kind)
                    paths = [f"{prefix}{i}" if prefix else "/healthz" for i in ids]
                    times: list[float] = []
                    collections.clear()
                    cpu, wall = time.process_time(), time.perf_counter()
                    per = len(paths) // conns
                    await asyncio.gather(
                        *(client(paths[k * per : (k + 1) * per], times) for k in range(conns))
                    )
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    times.sort()
                    gcs = {g: [d for gen, d in collections if gen == g] for g in (0, 1, 2)}
                    out[f"{kind}@{conns}"] = {
                        "cpu_us": cpu / len(times) * 1e6,
                        "wall_us": wall / len(times) * 1e6,
                        "p50": times[len(times) // 2] * 1e6,
                        "p99": times[int(len(times) * 0.99)] * 1e6,
                        "gc": {g: (len(d), max(d, default=0) * 1e6) for g, d in gcs.items() if d},
                    }
        finally:
            gc.callbacks.remove(on_gc)
            app.__rsgi_del__(asyncio.get_running_loop())

    uvloop.run(main())
    app.runtime.service.store.close()
    return out


# -- stack comparison (constant endpoint, no mlpipe code) ------------------------------------

STACK_APP = textwrap.dedent("""
    BODY = b'{"status":"ok"}'
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]
    async def bare(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    async def rsgi(scope, proto):
        proto.response_bytes(200, [("content-type", "application/json")], BODY)
    def starlette_app():
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
        async def const(request):
            return Response(BODY, media_type="application/json")
        return Starlette(routes=[Route("/healthz", const)])
    if __name__ == "__main__":
        import sys, uvicorn
        kind, http, loop, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        app = bare if kind == "bare" else starlette_app()
        uvicorn.run(app, host="127.0.0.1", port=port, http=http, loop=loop, log_level="warning",
                    access_log=False)
""")


def compare_stacks(args: argparse.Namespace, tmp: Path) -> dict[str, dict]:
    """A constant endpoint on each candidate stack (no mlpipe code), same load generator."""
    (tmp / "stack_app.py").write_text(STACK_APP)
    granian = [sys.executable, "-m", "granian", "--loop", "uvloop", "--log-level", "error",
               "--no-ws", "--working-dir", str(tmp)]  # fmt: skip
    stacks: dict[str, list[str]] = {
        "granian rsgi (mlpipe serve)": [*granian, "--interface", "rsgi", "stack_app:rsgi"],
        "granian asgi": [*granian, "--interface", "asgi", "stack_app:bare"],
    }
    uvicorn = [sys.executable, str(tmp / "stack_app.py")]
    try:
        import uvicorn as _  # noqa: F401

        stacks["uvicorn httptools uvloop"] = [*uvicorn, "bare", "httptools", "uvloop"]
        stacks["uvicorn h11 asyncio"] = [*uvicorn, "bare", "h11", "asyncio"]
    except ImportError:
        print("(uvicorn not installed: skipped)")
    try:
        import starlette  # noqa: F401

        stacks["starlette on uvicorn httptools"] = [*uvicorn, "starlette", "httptools", "uvloop"]
    except ImportError:
        print("(starlette not installed: skipped; PYTHONPATH=<dir with starlette> to include)")
    out = {}
    for name, cmd in stacks.items():
        port = free_port()
        full = [*cmd, str(port)] if "uvicorn" in name or "starlette" in name else (
            [*cmd[:-1], "--port", str(port), cmd[-1]]
        )  # fmt: skip
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            load(port, "constant", 1, args.connections, 1, tmp)
            runs = [load(port, "constant", 1, args.connections, args.duration, tmp)
                    for _ in range(args.runs)]  # fmt: skip
            out[name] = median_of(runs)
        finally:
            proc.terminate()
            proc.wait()
    print(f"\nHTTP stacks, constant endpoint, {args.connections} connections, median of "
          f"{args.runs}")  # fmt: skip
    for name, r in out.items():
        print(f"  {name:<32}{r['rps']:>10,.0f} req/s  p50 {r['p50'] / 1000:.3f} ms  "
              f"p99 {r['p99'] / 1000:.3f} ms")  # fmt: skip
    return out


# -- main -----------------------------------------------------------------------------------


def median_of(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["runs"] = len(runs)
    out["tool"] = runs[0].get("tool")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", default="16,1",
                        help="comma-separated connection counts, each measured")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="mlpipe serve --workers")
    parser.add_argument("--in-process", type=int, default=50_000, dest="in_process")
    parser.add_argument("--quick", action="store_true", help="20k entities, 3 s, 1 run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--shadow", action="store_true",
                        help="only compare a server with and without --shadow")  # fmt: skip
    parser.add_argument("--no-http", action="store_true", dest="no_http",
                        help="only the in-process measurements (1 and 3 entity types)")  # fmt: skip
    parser.add_argument("--trace-tail", action="store_true", dest="trace_tail",
                        help="only: where the tail at one connection comes from")  # fmt: skip
    parser.add_argument("--trace-requests", type=int, default=30_000, dest="trace_requests")
    parser.add_argument("--trace-kinds", default="features,constant,predict", dest="trace_kinds")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (e.g. main): its server measured interleaved "
        "with this one on the same Redis data (constant and Redis endpoints)",
    )
    parser.add_argument("--stacks", action="store_true",
                        help="only compare HTTP stacks on a constant endpoint")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.entities, args.duration, args.runs, args.in_process = 20_000, 3.0, 1, 10_000

    args.conn_list = [int(c) for c in str(args.connections).split(",")]
    args.connections = args.conn_list[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    if args.stacks:
        results = compare_stacks(args, tmp)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    redis_proc, redis_port = start_redis(tmp)
    servers: list[Server] = []
    try:
        t0 = time.perf_counter()
        configs = build_project(tmp, args.entities, redis_port)
        if args.trace_tail:
            results = trace_tail(args, tmp, configs)
            results["load"] = {"text": load_average()}
            print(f"load average {results['load']['text']} (2 cores)")
            report_trace({k: v for k, v in results.items() if k != "load"})
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
            return
        configs_3 = build_project_3(tmp, args.entities, redis_port)
        print(f"setup: {args.entities:,} entities in Redis and SQLite (plus merchants and "
              f"devices for the 3-entity case), transforms fitted, model registered in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        if args.shadow:
            shadow_results = shadow_bench(args, tmp, configs)
            report_shadow(shadow_results, args)
            if args.json:
                args.json.write_text(json.dumps(shadow_results, indent=2))
            return
        results: dict[str, dict] = {"load_before": {"text": load_average()}}
        for name, cfg in (("redis", configs["redis"]), ("sqlite", configs["sqlite"])):
            # interleaved: the 1- and 3-entity figures of one backend are taken back to back
            results[f"in_process_{name}"] = in_process(
                cfg, tmp / "artifacts", args.entities, args.in_process
            )
            results[f"in_process3_{name}"] = in_process_3(
                configs_3[name], tmp / "artifacts", args.entities, args.in_process
            )
            if args.no_http:
                continue
            results[f"app_path_{name}"] = app_path(
                cfg, tmp / "artifacts", args.entities, args.in_process, tmp / f"logs-app-{name}"
            )
        if args.no_http:
            results["load_after"] = {"text": load_average()}
            report_in_process(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
            shutil.rmtree(tmp, ignore_errors=True)
            return
        redis_srv = Server(configs["redis"], tmp / "logs-redis", args.workers)
        servers.append(redis_srv)
        sqlite_srv = Server(configs["sqlite"], tmp / "logs-sqlite", args.workers)
        servers.append(sqlite_srv)
        endpoints = [
            ("constant_healthz", redis_srv, "constant"),
            ("features_redis", redis_srv, "features"),
            ("features_sqlite", sqlite_srv, "features"),
            ("predict_redis", redis_srv, "predict"),
        ]
        if args.baseline is not None:
            base_srv = Server(
                configs["redis"], tmp / "logs-baseline", args.workers, repo=args.baseline
            )
            servers.append(base_srv)
            endpoints += [
                ("baseline_constant_healthz", base_srv, "constant"),
                ("baseline_features_redis", base_srv, "features"),
                ("baseline_predict_redis", base_srv, "predict"),
            ]
        plan = [
            (f"{name}@{conns}", srv, kind, conns)
            for conns in args.conn_list
            for name, srv, kind in endpoints
        ]
        for _name, srv, kind, conns in plan:  # warm-up
            load(srv.port, kind, args.entities, conns, 1, tmp)
        runs: dict[str, list[dict]] = {name: [] for name, _, _, _ in plan}
        for _ in range(args.runs):  # interleaved: each run measures every endpoint once
            for name, srv, kind, conns in plan:
                runs[name].append(
                    load(srv.port, kind, args.entities, conns, args.duration, tmp, srv.proc.pid)
                )
        for name, values in runs.items():
            results[name] = median_of(values)
        results["load_after"] = {"text": load_average()}
    finally:
        for srv in servers:
            srv.stop()
        redis_proc.terminate()
        redis_proc.wait()
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


# -- where the tail at one connection comes from (--trace-tail) -------------------------------

# Runs the real `mlpipe serve` (Granian embedded, feature log on) with timestamps taken on
# both sides of the socket. time.perf_counter is CLOCK_MONOTONIC on Linux, one clock for every
# process on the machine, so a request's client send/receive and the server's handler
# entry/exit line up: ingress (kernel + Granian + event-loop wake-up), app (our handler), egress.
TRACE_SERVER = textwrap.dedent(r"""
    import gc, json, sys, threading, time
    from time import perf_counter
    out_path, argv = sys.argv[1], sys.argv[2:]
    from mlpipe_cli.serving import app as app_mod
    from mlpipe_cli.online import redis_store
    requests, collections, stretches, store_calls = [], [], [], []
    _began = {}

    def on_gc(phase, info):
        if phase == "start":
            _began["t"] = perf_counter()
        else:
            collections.append((_began["t"], perf_counter(), info["generation"]))

    gc.callbacks.append(on_gc)
    rsgi = app_mod.ServingApp.__rsgi__

    class Proto:  # stamps the moment the response goes to Granian
        __slots__ = ("proto", "sent")

        def __init__(self, proto):
            self.proto, self.sent = proto, 0.0

        def response_bytes(self, status, headers, body):
            self.sent = perf_counter()
            self.proto.response_bytes(status, headers, body)

        def __call__(self):
            return self.proto()

        def __aiter__(self):
            return self.proto.__aiter__()

    async def traced_rsgi(self, scope, proto):
        t0 = perf_counter()
        shim = Proto(proto)
        await rsgi(self, scope, shim)
        requests.append((t0, shim.sent, scope.path))

    app_mod.ServingApp.__rsgi__ = traced_rsgi
    get_many_async = redis_store.RedisStore.get_many_async

    async def traced_get(self, entities, deadline=None, **kwargs):
        t0 = perf_counter()
        try:
            return await get_many_async(self, entities, deadline, **kwargs)
        finally:
            store_calls.append((t0, perf_counter()))

    redis_store.RedisStore.get_many_async = traced_get
    # Every background thread of the server blocks in time.sleep or Event.wait between
    # stretches of Python work; the stretches in between are when it wants the GIL.
    _awake = {}
    real_sleep, real_wait = time.sleep, threading.Event.wait

    def _blocking(fn):
        def wrapper(*args, **kwargs):
            name = threading.current_thread().name
            t0 = perf_counter()
            if name in _awake:
                stretches.append((_awake[name][0], t0, name, time.thread_time() - _awake[name][1]))
            try:
                return fn(*args, **kwargs)
            finally:
                _awake[name] = (perf_counter(), time.thread_time())
        return wrapper

    time.sleep = _blocking(real_sleep)
    threading.Event.wait = _blocking(real_wait)
    from mlpipe_cli.cli.main import run
    code = run(argv)
    gc.callbacks.remove(on_gc)
    with open(out_path, "w") as f:
        json.dump({"requests": requests, "gc": collections, "stretches": stretches,
                   "store": store_calls, "code": code}, f)
""")


def trace_client(port: int, n: int, count: int, kind: str) -> list[tuple[float, float, str]]:
    """One blocking keep-alive connection, one request at a time: (sent, received, path)."""
    rng = random.Random(11)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = time.perf_counter
    timings = []
    buf = b""
    for _ in range(count):
        i = rng.randint(1, n)
        if kind == "predict":
            body = b'{"entity":%d}' % i
            path = "/predict"
            raw = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        else:
            path = f"/features/{i}" if kind == "features" else "/healthz"
            raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        t0 = clock()
        sock.sendall(raw)
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    buf = rest[length:]
                    break
            buf += sock.recv(65536)
        timings.append((t0, clock(), path))
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{path}: {head[:60]!r}")
    sock.close()
    return timings


def trace_tail(args: argparse.Namespace, tmp: Path, configs: dict[str, Path]) -> dict:
    """Per request at one connection: client latency split into ingress, app and egress,
    and for the slowest 1 % what overlapped them (collections, background threads' stretches
    of work, the store round trip)."""
    results: dict[str, Any] = {}
    for kind in args.trace_kinds.split(","):
        out = tmp / f"trace-{kind}.json"
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", TRACE_SERVER, str(out), "serve", "-c", str(configs["redis"]),
             "--port", str(port), "--log-dir", str(tmp / f"logs-trace-{kind}"), "-q"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_port(port)
        try:
            trace_client(port, args.entities, 2000, kind)  # warm-up
            cpu = cpu_seconds(proc.pid)
            client = trace_client(port, args.entities, args.trace_requests, kind)
            cpu = cpu_seconds(proc.pid) - cpu
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        doc = json.loads(out.read_text())
        server = doc["requests"][len(doc["requests"]) - len(client) :]
        if [s[2] for s in server] != [c[2] for c in client]:
            raise SystemExit("trace: server and client requests do not line up")
        results[kind] = analyse_trace(client, server, doc, cpu)
    return results


def _overlap(lo: float, hi: float, spans: list, key: Any = None) -> float:
    """Seconds of [lo, hi] covered by spans (each (start, end, ...)); ``key`` filters them."""
    total = 0.0
    for span in spans:
        if span[1] <= lo or span[0] >= hi or (key is not None and not key(span)):
            continue
        total += min(hi, span[1]) - max(lo, span[0])
    return total


def analyse_trace(client: list, server: list, doc: dict, cpu: float) -> dict:
    rows = []
    for (sent, got, _), (enter, leave, _) in zip(client, server, strict=True):
        rows.append({"total": got - sent, "ingress": enter - sent, "app": leave - enter,
                     "egress": got - leave, "sent": sent, "got": got})  # fmt: skip
    by_total = sorted(rows, key=lambda r: r["total"])
    n = len(by_total)
    tail = by_total[int(n * 0.99) :]

    def q(values: list[float], p: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(p * len(values)))] * 1e6

    names = sorted({s[2] for s in doc["stretches"]})
    parts = ("total", "ingress", "app", "egress")

    def mean_us(values: Any) -> float:
        return statistics.fmean(values) * 1e6

    summary: dict[str, Any] = {
        "requests": n,
        "cpu_us_per_request": cpu / n * 1e6,
        "p50_us": {k: q([r[k] for r in rows], 0.5) for k in ("total", "ingress", "app", "egress")},
        "p99_us": {k: q([r[k] for r in rows], 0.99) for k in ("total", "ingress", "app", "egress")},
        # the slowest 1 %: mean of each part, and how much of their time overlapped each event
        "tail_mean_us": {k: mean_us(r[k] for r in tail) for k in parts},
        "tail_with_gc": sum(1 for r in tail if _overlap(r["sent"], r["got"], doc["gc"]) > 0),
        "tail_gc_us": mean_us(_overlap(r["sent"], r["got"], doc["gc"]) for r in tail),
        "tail_store_us": mean_us(_overlap(r["sent"], r["got"], doc["store"]) for r in tail),
        "all_store_us": mean_us(_overlap(r["sent"], r["got"], doc["store"]) for r in rows),
        "threads": {},
    }
    for name in names:
        spans = [s for s in doc["stretches"] if s[2] == name]
        hit = [r for r in tail if _overlap(r["sent"], r["got"], spans) > 0]
        hit_all = [r for r in rows if _overlap(r["sent"], r["got"], spans) > 0]
        summary["threads"][name] = {
            "stretches": len(spans),
            "cpu_ms": sum(s[3] for s in spans) * 1e3,
            "tail_overlapped": len(hit),
            "all_overlapped": len(hit_all),
            # requests that overlapped a stretch of this thread vs those that did not
            "p50_with_us": q([r["total"] for r in hit_all], 0.5) if hit_all else 0.0,
            "p50_without_us": q([r["total"] for r in rows if r not in hit_all], 0.5),
        }
    summary["tail_count"] = len(tail)
    return summary


def report_trace(results: dict[str, Any]) -> None:
    print("\nthe tail at one connection (real server, feature log on; client and server "
          "timestamps on one monotonic clock)")  # fmt: skip
    for kind, r in results.items():
        print(f"\n{kind}: {r['requests']:,} requests, server CPU {r['cpu_us_per_request']:.1f} "
              f"µs/request")  # fmt: skip
        print(f"  {'':<10}{'total':>9}{'ingress':>9}{'app':>9}{'egress':>9}   (µs)")
        for label, key in (("p50", "p50_us"), ("p99", "p99_us"), ("tail mean", "tail_mean_us")):
            v = r[key]
            print(f"  {label:<10}{v['total']:>9.0f}{v['ingress']:>9.0f}{v['app']:>9.0f}"
                  f"{v['egress']:>9.0f}")  # fmt: skip
        print(f"  slowest {r['tail_count']}: {r['tail_with_gc']} overlapped a collection "
              f"(mean {r['tail_gc_us']:.0f} µs of GC each); store round trip in them "
              f"{r['tail_store_us']:.0f} µs vs {r['all_store_us']:.0f} µs on average")  # fmt: skip
        for name, t in r["threads"].items():
            print(f"  thread {name}: {t['stretches']} stretches, {t['cpu_ms']:.0f} ms CPU; "
                  f"{t['tail_overlapped']}/{r['tail_count']} of the slowest and "
                  f"{t['all_overlapped']:,} of all requests overlapped one; p50 with "
                  f"{t['p50_with_us']:.0f} µs vs without {t['p50_without_us']:.0f} µs")  # fmt: skip


# -- shadow on vs off -------------------------------------------------------------------------


def publish_shadow(root: Path, config_path: Path) -> tuple[str, str, str, str]:
    """A second transform (age min-max scaled) and a model bound to it; returns the live
    (transform, model) and the shadow (transform, model) versions."""
    import numpy as np
    import skops.io as sio
    import yaml
    from sklearn.linear_model import LogisticRegression

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.model import register_model
    from mlpipe_cli.transforms import load_transform, publish

    artifacts = ArtifactStore(root / "artifacts", "bench")
    live, live_model = artifacts.latest("transform"), artifacts.latest("model")
    doc = yaml.safe_load(config_path.read_text())
    doc["transforms"]["columns"]["age"] = [
        {"type": "fill_null", "strategy": "median"},
        {"type": "minmax"},
    ]
    path = root / "shadow.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    publish(artifacts, load_config(path).transforms, root / "train.parquet")
    shadow = load_transform(artifacts)
    rows = rows_for(5000, seed=3)
    x = np.asarray(
        [shadow.transform_one(dict(zip(FEATURES, r, strict=True))) for r in rows], dtype=np.float64
    )
    y = (x[:, 0] + 0.3 * x[:, 2] > 0).astype(int)
    sio.dump(LogisticRegression(max_iter=500).fit(x, y), root / "shadow.skops")
    model, _ = register_model(artifacts, root / "shadow.skops", shadow.version)
    return live, live_model, shadow.version, model.version


def shadow_bench(args: argparse.Namespace, tmp: Path, configs: dict[str, Path]) -> dict:
    import polars as pl

    live, live_model, shadow, shadow_model = publish_shadow(tmp, configs["redis"])
    pinned = ("--artifact", live, "--model", live_model)
    off = Server(configs["redis"], tmp / "logs-off", args.workers, pinned)
    on = Server(
        configs["redis"],
        tmp / "logs-on",
        args.workers,
        (*pinned, "--shadow", shadow, "--shadow-model", shadow_model),
    )
    results: dict[str, Any] = {"versions": {"live": live, "shadow": shadow}}
    try:
        plan = [(f"{kind}_{mode}@{conns}", srv, kind, conns)
                for conns in args.conn_list for kind in ("features", "predict")
                for mode, srv in (("off", off), ("on", on))]  # fmt: skip
        results["load_before"] = {"text": load_average()}
        for _name, srv, kind, conns in plan:  # warm-up
            load(srv.port, kind, args.entities, conns, 1, tmp)
        runs: dict[str, list[dict]] = {name: [] for name, _, _, _ in plan}
        for _ in range(args.runs):  # interleaved: on and off back to back, every run
            for name, srv, kind, conns in plan:
                runs[name].append(
                    load(srv.port, kind, args.entities, conns, args.duration, tmp, srv.proc.pid)
                )
        for name, values in runs.items():
            results[name] = median_of(values)
        results["load_after"] = {"text": load_average()}
    finally:
        off.stop()
        on.stop()
    frame = pl.scan_parquet(str(tmp / "logs-on" / "segment-*.parquet"))
    counts = (
        frame.select(
            pl.len().alias("rows"),
            pl.col("shadow.transform_version").is_not_null().sum().alias("with_shadow"),
            pl.col("shadow.vec.age").is_not_null().sum().alias("shadow_vec_filled"),
            pl.col("shadow.prediction").is_not_null().sum().alias("shadow_scored"),
        )
        .collect()
        .row(0, named=True)
    )
    results["shadow_log"] = {
        **counts,
        "summary": next((ln for ln in on.stderr.splitlines() if "stopped:" in ln), ""),
    }
    return results


def report_shadow(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nshadow on vs off: live {results['versions']['live']}, shadow "
          f"{results['versions']['shadow']} (+ model); Redis, {args.duration:g} s per run, "
          f"median of {args.runs} interleaved run(s)")  # fmt: skip
    print(f"load average before {results['load_before']['text']}, after "
          f"{results['load_after']['text']} (2 cores)")  # fmt: skip
    print(f"{'endpoint':<30}{'shadow':>7}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU ms/1k':>11}{'non-2xx':>9}")  # fmt: skip
    for conns in args.conn_list:
        for kind, label in (("features", "GET /features/{id}"), ("predict", "POST /predict")):
            for mode in ("off", "on"):
                r = results[f"{kind}_{mode}@{conns}"]
                print(f"{label + f' @{conns}':<30}{mode:>7}{r['rps']:>10,.0f}"
                      f"{r['p50'] / 1000:>9.3f}{r['p99'] / 1000:>9.3f}"
                      f"{r['cpu_ms_per_1k']:>11.1f}{r['non2xx']:>9.0f}")  # fmt: skip
            on, off = results[f"{kind}_on@{conns}"], results[f"{kind}_off@{conns}"]
            print(f"{'':<30}{'on/off':>7}{on['rps'] / off['rps']:>10.2f}"
                  f"{on['p50'] / off['p50']:>9.2f}{on['p99'] / off['p99']:>9.2f}"
                  f"{on['cpu_ms_per_1k'] / off['cpu_ms_per_1k']:>11.2f}")  # fmt: skip
    log = results["shadow_log"]
    print(f"\nshadow log: {log['rows']:,} rows, {log['with_shadow']:,} with shadow columns, "
          f"{log['rows'] - log['with_shadow']:,} shadow rows lost; {log['shadow_scored']:,} "
          f"scored by the shadow model\nserver: {log['summary']}")  # fmt: skip


def report_in_process(results: dict[str, dict]) -> None:
    print(f"\nload average before {results['load_before']['text']}, after "
          f"{results.get('load_after', {}).get('text', '?')} (2 cores)")  # fmt: skip
    print("\nin-process lookup + transform (no HTTP)")
    for key in ("in_process_redis", "in_process_sqlite"):
        r = results[key]
        print(f"  {key[11:]:<8} p50 {r['p50']:.1f} µs  p99 {r['p99']:.1f} µs  CPU {r['cpu_us']:.1f} "
              f"µs/lookup ({r['count']:,} lookups; of which store.get p50 "
              f"{r['store_get_p50']:.1f} µs, transform_one p50 {r['transform_one_p50']:.1f} µs)")  # fmt: skip
    print("in-process, 3 entity types per request (user int, merchant and device strings)")
    for name in ("redis", "sqlite"):
        r, one = results[f"in_process3_{name}"], results[f"in_process_{name}"]
        print(f"  {name:<8} p50 {r['p50']:.1f} µs  p99 {r['p99']:.1f} µs  CPU {r['cpu_us']:.1f} "
              f"µs/lookup = {r['cpu_us'] / one['cpu_us']:.2f}x one entity ({r['count']:,} lookups; "
              f"store.get p50 {r['store_get_p50']:.1f} µs = "
              f"{r['store_get_p50'] / one['store_get_p50']:.2f}x)")  # fmt: skip
    ipr, ips = results["in_process3_redis"], results["in_process3_sqlite"]
    print("goals (3 entity types, same as one)")
    for text, ok in (("in-process Redis p99 <= 0.3 ms", ipr["p99"] <= 300),
                     ("in-process SQLite p99 <= 0.05 ms", ips["p99"] <= 50)):  # fmt: skip
        print(f"  {'PASS' if ok else 'MISS'}  {text}")


def report_baseline(results: dict[str, dict], args: argparse.Namespace) -> None:
    """This checkout against --baseline, measured interleaved in the same run: ratios of
    throughput and latency, each server's ratio to its own constant endpoint, and CPU."""
    print(f"\nthis checkout vs --baseline {args.baseline} (same Redis data, interleaved runs)")
    print(f"{'endpoint':<26}{'conns':>6}{'req/s':>9}{'base':>9}{'ratio':>7}{'p50 ms':>8}"
          f"{'base':>7}{'p99 ms':>8}{'base':>7}{'vs floor':>9}{'base':>6}"
          f"{'loop CPU µs':>12}{'base':>6}")  # fmt: skip
    for conns in args.conn_list:
        floor = results[f"constant_healthz@{conns}"]["rps"]
        base_floor = results[f"baseline_constant_healthz@{conns}"]["rps"]
        for key, label in (("constant_healthz", "GET /healthz (constant)"),
                           ("features_redis", "GET /features/{id} Redis"),
                           ("predict_redis", "POST /predict Redis")):  # fmt: skip
            r, b = results[f"{key}@{conns}"], results[f"baseline_{key}@{conns}"]
            print(f"{label:<26}{conns:>6}{r['rps']:>9,.0f}{b['rps']:>9,.0f}"
                  f"{r['rps'] / b['rps']:>7.2f}{r['p50'] / 1000:>8.3f}{b['p50'] / 1000:>7.3f}"
                  f"{r['p99'] / 1000:>8.3f}{b['p99'] / 1000:>7.3f}{r['rps'] / floor:>9.0%}"
                  f"{b['rps'] / base_floor:>6.0%}{r['main_ms_per_1k']:>12.1f}"
                  f"{b['main_ms_per_1k']:>6.1f}")  # fmt: skip


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    tool = results[f"constant_healthz@{args.conn_list[0]}"]["tool"]
    print(f"\nload average before {results['load_before']['text']}, after "
          f"{results['load_after']['text']} (2 cores)")  # fmt: skip
    labels = {
        "constant_healthz": "GET /healthz (constant, floor)",
        "features_redis": "GET /features/{id}  Redis",
        "features_sqlite": "GET /features/{id}  SQLite",
        "predict_redis": "POST /predict       Redis",
    }
    for conns in args.conn_list:
        floor = results[f"constant_healthz@{conns}"]["rps"]
        print(f"\nHTTP, {conns} connection(s), {args.duration:g} s per run, median of "
              f"{args.runs} interleaved run(s), load generator {tool}, {args.entities:,} "
              f"entities, {args.workers} server worker(s)")  # fmt: skip
        print(f"{'endpoint':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
              f"{'vs floor':>10}{'CPU ms/1k':>11}{'non-2xx':>9}")  # fmt: skip
        for key, label in labels.items():
            r = results[f"{key}@{conns}"]
            print(f"{label:<34}{r['rps']:>10,.0f}{r['p50'] / 1000:>9.3f}{r['p99'] / 1000:>9.3f}"
                  f"{r['p999'] / 1000:>10.3f}{r['rps'] / floor:>10.0%}"
                  f"{r['cpu_ms_per_1k']:>11.1f}{r['non2xx']:>9.0f}"
                  f"   (event-loop thread {r.get('main_ms_per_1k', 0):.1f} ms/1k)")  # fmt: skip
    if args.baseline is not None:
        report_baseline(results, args)
    report_in_process(results)
    print("\napp request path in process (ServingApp.__rsgi__ called as Granian calls it; "
          "no sockets; feature log on)")  # fmt: skip
    for name in ("redis", "sqlite"):
        for key, r in results[f"app_path_{name}"].items():
            gcs = ", ".join(f"gen{g} {c}x max {m:.0f} µs" for g, (c, m) in r["gc"].items())
            print(f"  {name:<7}{key:<13} CPU {r['cpu_us']:6.1f} µs/request  p50 {r['p50']:7.1f} µs"
                  f"  p99 {r['p99']:8.1f} µs  GC: {gcs or 'none'}")  # fmt: skip
    many, one = max(args.conn_list), min(args.conn_list)
    fr = results[f"features_redis@{many}"]
    ipr, ips = results["in_process_redis"], results["in_process_sqlite"]
    goals = [
        (f"GET /features Redis p99 <= 2 ms at {many} connections", fr["p99"] <= 2000),
        (f"GET /features Redis p50 <= 0.8 ms at {many} connections", fr["p50"] <= 800),
        ("feature throughput >= 50% of constant",
         fr["rps"] >= 0.5 * results[f"constant_healthz@{many}"]["rps"]),
        ("POST /predict >= 10k req/s", results[f"predict_redis@{many}"]["rps"] >= 10_000),
        ("in-process Redis p99 <= 0.3 ms", ipr["p99"] <= 300),
        ("in-process SQLite p99 <= 0.05 ms", ips["p99"] <= 50),
    ]  # fmt: skip
    if one != many:
        goals.append((f"GET /features Redis p99 <= 0.5 ms at {one} connection",
                      results[f"features_redis@{one}"]["p99"] <= 500))  # fmt: skip
    print("\ngoals")
    for text, ok in goals:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")


if __name__ == "__main__":
    main()
