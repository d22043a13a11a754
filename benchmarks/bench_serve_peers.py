"""`mlpipe serve` side by side with the servers people write or deploy instead, same Redis.

Servers (each a separate process, one worker, loopback; the same 100,000 users, features and
scikit-learn-equivalent transform + logistic regression):

- ``mlpipe``: `mlpipe serve` as `bench_serve.py` runs it (Granian RSGI, coalescing, feature
  log ON), its values in mlpipe's packed layout in Redis;
- ``fastapi-reference``: the reference design: FastAPI + uvicorn, sync handlers, a sync
  ``redis`` client calling ``HMGET user:<id>`` (one hash per entity), joblib-loaded
  scikit-learn objects (median imputer + StandardScaler on the numeric features, a
  OneHotEncoder, a LogisticRegression) called on numpy arrays, FastAPI's JSON responses;
- ``fastapi-tuned``: the same design tuned: ``redis.asyncio`` with hiredis, uvloop, httptools,
  orjson responses, the transform fused into numpy;
- ``feast``: Feast's Python feature server (`feast serve`, Redis online store filled by
  `feast materialize` from the same rows), ``POST /get-online-features`` for one entity (it has
  no transform and no model: only the feature lookup is compared).

The peers need packages mlpipe does not depend on; they run from throwaway virtualenvs, never
from this project's: ``BENCH_PEERS_PYTHON`` (default /tmp/mlpipe-peers-venv/bin/python, with
fastapi uvicorn uvloop httptools orjson redis[hiredis] joblib scikit-learn) and
``BENCH_FEAST_PYTHON`` (default /tmp/feastvenv/bin/python, with feast[redis]). A peer whose
interpreter or packages are missing is skipped with the reason printed.

Measured with wrk (1 thread, random ids, same Lua as bench_serve.py), interleaved rounds,
medians: GET features at 16 and 1 connections, POST /predict at 16, plus mlpipe's constant
endpoint (/healthz) in the same rounds; req/s, p50/p99, server CPU ms per 1,000 requests,
load average, and mlpipe's ratio over each peer.

Usage: .venv/bin/python benchmarks/bench_serve_peers.py [--entities N] [--duration S]
       [--runs R] [--json OUT]     (run under `flock /tmp/mlpipe-bench.lock`)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import bench_serve as bs  # benchmarks/ is sys.path[0] when run

PEERS_PYTHON = os.environ.get("BENCH_PEERS_PYTHON", "/tmp/mlpipe-peers-venv/bin/python")
FEAST_PYTHON = os.environ.get("BENCH_FEAST_PYTHON", "/tmp/feastvenv/bin/python")
NUMERIC = ["total_orders", "lifetime_value", "orders_30d", "revenue_30d",
           "days_since_last_order", "age"]  # fmt: skip
CATEGORICAL = ["country", "plan"]

# The reference design, as its tutorial writes it; TUNED switches on every knob it offers.
PEER_APP = textwrap.dedent(r"""
    import json, os, sys
    import joblib
    import numpy as np
    TUNED = os.environ["PEER_TUNED"] == "1"
    FEATURES = json.loads(os.environ["PEER_FEATURES"])
    NUMERIC, CATEGORICAL = json.loads(os.environ["PEER_NUMERIC"]), json.loads(os.environ["PEER_CATEGORICAL"])
    ROOT = os.environ["PEER_ROOT"]
    from fastapi import FastAPI
    from pydantic import BaseModel
    pre, model = joblib.load(f"{ROOT}/peer_preprocess.joblib"), joblib.load(f"{ROOT}/peer_model.joblib")
    app = FastAPI()
    class Entity(BaseModel):
        entity: int
    def parse(raw):
        row = {}
        for name, value in zip(FEATURES, raw):
            if value is None:
                row[name] = None
            elif name in CATEGORICAL:
                row[name] = value.decode()
            else:
                row[name] = float(value)
        return row
    if not TUNED:
        import redis
        r = redis.Redis(host="127.0.0.1", port=int(os.environ["PEER_REDIS_PORT"]))
        num_pipe, onehot = pre.named_transformers_["num"], pre.named_transformers_["cat"]
        def transform(row):  # the fitted scaler and encoder, called as the tutorials do
            num = np.array([[np.nan if row[n] is None else row[n] for n in NUMERIC]])
            cat = np.array([[row[c] for c in CATEGORICAL]], dtype=object)
            return np.hstack([num_pipe.transform(num), onehot.transform(cat)])
        @app.get("/features/{user_id}")
        def features(user_id: int):
            row = parse(r.hmget(f"user:{user_id}", FEATURES))
            vector = transform(row)[0]
            return {"entity": user_id, "features": row, "vector": vector.tolist()}
        @app.post("/predict")
        def predict(body: Entity):
            row = parse(r.hmget(f"user:{body.entity}", FEATURES))
            vector = transform(row)
            score = float(model.predict_proba(vector)[0, 1])
            return {"entity": body.entity, "features": row, "vector": vector[0].tolist(),
                    "prediction": score}
    else:
        import orjson
        import redis.asyncio as aioredis
        from fastapi.responses import Response
        r = aioredis.Redis(host="127.0.0.1", port=int(os.environ["PEER_REDIS_PORT"]))
        # the fitted ColumnTransformer's arithmetic, unrolled once (what a tuned service does)
        imputer, scaler = pre.named_transformers_["num"].steps[0][1], pre.named_transformers_["num"].steps[1][1]
        fill, mean, scale = imputer.statistics_, scaler.mean_, scaler.scale_
        cats = pre.named_transformers_["cat"].categories_
        coef, intercept = model.coef_[0], model.intercept_[0]
        def transform(row):
            num = np.array([np.nan if row[n] is None else row[n] for n in NUMERIC])
            num = (np.where(np.isnan(num), fill, num) - mean) / scale
            onehot = [float(row[c] == v) for c, values in zip(CATEGORICAL, cats) for v in values]
            return np.concatenate([num, onehot])
        @app.get("/features/{user_id}")
        async def features(user_id: int):
            row = parse(await r.hmget(f"user:{user_id}", FEATURES))
            vector = transform(row)
            return Response(orjson.dumps({"entity": user_id, "features": row,
                                          "vector": vector}, option=orjson.OPT_SERIALIZE_NUMPY),
                            media_type="application/json")
        @app.post("/predict")
        async def predict(body: Entity):
            row = parse(await r.hmget(f"user:{body.entity}", FEATURES))
            vector = transform(row)
            score = float(1 / (1 + np.exp(-(vector @ coef + intercept))))
            return Response(orjson.dumps({"entity": body.entity, "features": row,
                                          "vector": vector, "prediction": score},
                                         option=orjson.OPT_SERIALIZE_NUMPY),
                            media_type="application/json")
    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}
    if __name__ == "__main__":
        import uvicorn
        kw = dict(loop="uvloop", http="httptools") if TUNED else {}
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                    access_log=False, **kw)
""")

# Fits the peers' scikit-learn objects in their own environment (joblib files are tied to
# the scikit-learn version that wrote them) and loads the peers' Redis layout.
PEER_SETUP = textwrap.dedent(r"""
    import json, os, sys
    import joblib, numpy as np, pandas as pd, redis
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    root, port = sys.argv[1], int(sys.argv[2])
    features = json.loads(os.environ["PEER_FEATURES"])
    numeric, categorical = json.loads(os.environ["PEER_NUMERIC"]), json.loads(os.environ["PEER_CATEGORICAL"])
    rows = json.load(open(f"{root}/peer_rows.json"))
    frame = pd.DataFrame(rows[:20000], columns=features)
    pre = ColumnTransformer([
        ("num", Pipeline([("fill", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)])
    x = pre.fit_transform(frame)
    y = (x[:, 0] + 0.3 * x[:, 2] > 0).astype(int)
    joblib.dump(pre, f"{root}/peer_preprocess.joblib")
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), f"{root}/peer_model.joblib")
    r = redis.Redis(host="127.0.0.1", port=port)
    pipe = r.pipeline(transaction=False)
    for i, row in enumerate(rows, start=1):
        pipe.hset(f"user:{i}", mapping={k: v for k, v in zip(features, row) if v is not None})
        if i % 5000 == 0:
            pipe.execute()
    pipe.execute()
""")

FEAST_REPO = textwrap.dedent("""
    from datetime import timedelta
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String
    user = Entity(name="user_id", join_keys=["user_id"])
    source = FileSource(path="{parquet}", timestamp_field="event_ts")
    user_features = FeatureView(
        name="user_features", entities=[user], ttl=timedelta(days=3650), online=True,
        source=source,
        schema=[Field(name="total_orders", dtype=Int64), Field(name="lifetime_value", dtype=Float64),
                Field(name="orders_30d", dtype=Int64), Field(name="revenue_30d", dtype=Float64),
                Field(name="days_since_last_order", dtype=Float64), Field(name="age", dtype=Int64),
                Field(name="country", dtype=String), Field(name="plan", dtype=String)],
    )
""")

FEAST_LUA = textwrap.dedent("""
    local n = tonumber(os.getenv("BENCH_N"))
    local names = {}
    for name in string.gmatch(os.getenv("BENCH_FEATURES"), "[^,]+") do
      table.insert(names, '"user_features:' .. name .. '"')
    end
    local features = table.concat(names, ",")
    math.randomseed(7)
    request = function()
      local body = '{"features":[' .. features .. '],"entities":{"user_id":[' ..
                   math.random(1, n) .. ']}}'
      return wrk.format("POST", "/get-online-features",
                        {["Content-Type"] = "application/json"}, body)
    end
""")


def have(python: str, modules: str) -> str | None:
    """None when ``python`` imports ``modules``; else why not (the skip reason)."""
    if not Path(python).exists():
        return f"{python} not found"
    probe = subprocess.run([python, "-c", f"import {modules}"], capture_output=True, text=True)
    if probe.returncode:
        return (probe.stderr.strip().splitlines() or ["import failed"])[-1]
    return None


class Proc:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str], cwd: Path,
                 ready: str) -> None:  # fmt: skip
        self.port = port
        # stderr to a file: a pipe nobody reads fills up and stalls a chatty server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log)  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"{cmd[:4]} exited: {self.stderr()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def pids(self) -> list[int]:
        """The server and its children (feast serve forks gunicorn workers)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [self.proc.pid, *(int(p) for p in out.stdout.split())]

    def stop(self) -> None:
        if self.proc.poll() is not None:  # it died while measured: say why
            print(f"server {self.proc.args[:3]} exited {self.proc.returncode}: "
                  f"{self.stderr()[-1500:]}")  # fmt: skip
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def setup_feast(root: Path, rows: list[list], redis_port: int, env: dict[str, str]) -> Path:
    """A Feast repo over the same rows, applied and materialized into the same Redis."""
    import polars as pl

    repo = root / "feast_repo"
    (repo / "data").mkdir(parents=True)
    frame = bs.frame_of(rows).with_columns(
        pl.Series("user_id", range(1, len(rows) + 1), dtype=pl.Int64),
        pl.lit("2026-06-30T00:00:00").str.to_datetime(time_zone="UTC").alias("event_ts"),
    )
    frame.write_parquet(repo / "data" / "users.parquet")
    (repo / "feature_store.yaml").write_text(textwrap.dedent(f"""
        project: bench
        registry: data/registry.db
        provider: local
        online_store:
          type: redis
          connection_string: "127.0.0.1:{redis_port}"
        entity_key_serialization_version: 3
    """))  # fmt: skip
    (repo / "features.py").write_text(FEAST_REPO.format(parquet=repo / "data" / "users.parquet"))
    feast = str(Path(FEAST_PYTHON).parent / "feast")
    for args in (["apply"], ["materialize", "2026-01-01T00:00:00", "2026-07-01T00:00:00"]):
        done = subprocess.run([feast, *args], cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"feast {args[0]}: {done.stderr.strip()[-800:]}")
    return repo


def load_feast(port: int, n: int, conns: int, seconds: float, tmp: Path, pids: list[int]) -> dict:
    script = tmp / "feast.lua"
    script.write_text(FEAST_LUA + bs.WRK_LUA[bs.WRK_LUA.index("done = function") :])
    env = {**os.environ, "BENCH_N": str(n), "BENCH_FEATURES": ",".join(bs.FEATURES)}
    return _run_wrk(script, port, conns, seconds, env, pids)


def _run_wrk(
    script: Path, port: int, conns: int, seconds: float, env: dict, pids: list[int]
) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(script),
           f"http://127.0.0.1:{port}/"]  # fmt: skip
    before = sum(bs.cpu_seconds(p) for p in pids)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    cpu = sum(bs.cpu_seconds(p) for p in pids) - before
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    doc = json.loads(line[6:])
    doc["rps"] = doc["requests"] / doc["seconds"]
    doc["cpu_ms_per_1k"] = cpu / max(1, doc["requests"]) * 1e6
    return doc


def load_http(port: int, kind: str, n: int, conns: int, seconds: float, tmp: Path,
              pids: list[int]) -> dict:  # fmt: skip
    script = tmp / "bench.lua"
    script.write_text(bs.WRK_LUA)
    env = {**os.environ, "BENCH_N": str(n), "BENCH_KIND": kind}
    return _run_wrk(script, port, conns, seconds, env, pids)


def start_servers(
    tmp: Path,
    configs: dict[str, Path],
    rows: list[list],
    redis_port: int,
    servers: dict[str, Proc],
) -> dict[str, str]:
    """Start every server that can run here into ``servers`` (mlpipe always); returns the
    others with the reason why not."""
    skipped: dict[str, str] = {}
    peer_env = {**os.environ, "PEER_FEATURES": json.dumps(bs.FEATURES),
                "PEER_NUMERIC": json.dumps(NUMERIC),
                "PEER_CATEGORICAL": json.dumps(CATEGORICAL), "PEER_ROOT": str(tmp),
                "PEER_REDIS_PORT": str(redis_port)}  # fmt: skip
    peer_env.pop("VIRTUAL_ENV", None)
    servers["mlpipe"] = Proc(
        [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(configs["redis"]), "--port",
         str(port := bs.free_port()), "--log-dir", str(tmp / "logs"), "-q"],
        port, dict(os.environ), bs.REPO, "/healthz",
    )  # fmt: skip
    why = have(PEERS_PYTHON, "fastapi, uvicorn, uvloop, httptools, orjson, redis, hiredis, "
                             "joblib, sklearn, pandas")  # fmt: skip
    if why is None:
        subprocess.run([PEERS_PYTHON, "-c", PEER_SETUP, str(tmp), str(redis_port)],
                       env=peer_env, check=True)  # fmt: skip
        (tmp / "peer_app.py").write_text(PEER_APP)
        for name, tuned in (("fastapi-reference", "0"), ("fastapi-tuned", "1")):
            port = bs.free_port()
            servers[name] = Proc([PEERS_PYTHON, str(tmp / "peer_app.py"), str(port)], port,
                                 {**peer_env, "PEER_TUNED": tuned}, tmp, "/healthz")  # fmt: skip
    else:
        skipped["fastapi-reference"] = skipped["fastapi-tuned"] = why
    why = have(FEAST_PYTHON, "feast, redis")
    if why is None:
        try:
            repo = setup_feast(tmp, rows, redis_port, peer_env)
            port = bs.free_port()
            servers["feast"] = Proc(
                [str(Path(FEAST_PYTHON).parent / "feast"), "serve", "-h", "127.0.0.1", "-p",
                 str(port), "--no-access-log", "--max-requests", "100000000"],
                port, peer_env, repo, "/health",
            )  # fmt: skip
        except (RuntimeError, SystemExit) as exc:
            skipped["feast"] = str(exc)
    else:
        skipped["feast"] = why
    return skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    redis_proc, redis_port = bs.start_redis(tmp)
    servers: dict[str, Proc] = {}
    results: dict[str, Any] = {"load_before": bs.load_average()}
    try:
        t0 = time.perf_counter()
        configs = bs.build_project(tmp, args.entities, redis_port)
        rows = bs.rows_for(args.entities)
        (tmp / "peer_rows.json").write_text(json.dumps(rows))
        skipped = start_servers(tmp, configs, rows, redis_port, servers)
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}")
        print(f"setup: {args.entities:,} users in Redis (mlpipe's layout, one hash per user, "
              f"Feast's layout), servers up in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        plan: list[tuple[str, str, str, int]] = [
            ("mlpipe healthz@16 (constant)", "mlpipe", "constant", 16)
        ]
        for name in servers:
            kind = "feast" if name == "feast" else "features"
            plan += [(f"{name} features@16", name, kind, 16), (f"{name} features@1", name, kind, 1)]
            if name != "feast":
                plan.append((f"{name} predict@16", name, "predict", 16))

        def measure(name: str, kind: str, conns: int, seconds: float) -> dict:
            srv = servers[name]
            if kind == "feast":
                return load_feast(srv.port, args.entities, conns, seconds, tmp, srv.pids())
            return load_http(srv.port, kind, args.entities, conns, seconds, tmp, srv.pids())

        for _label, name, kind, conns in plan:  # warm-up
            measure(name, kind, conns, 1)
        runs: dict[str, list[dict]] = {label: [] for label, *_ in plan}
        for _ in range(args.runs):  # interleaved rounds
            for label, name, kind, conns in plan:
                runs[label].append(measure(name, kind, conns, args.duration))
        for label, values in runs.items():
            results[label] = {k: statistics.median(v[k] for v in values)
                              for k in ("rps", "p50", "p99", "cpu_ms_per_1k", "non2xx")}  # fmt: skip
        results["load_after"] = bs.load_average()
        results["skipped"] = skipped
    finally:
        for srv in servers.values():
            srv.stop()
        redis_proc.terminate()
        redis_proc.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report(results, args)
    shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nload average before {results['load_before']}, after {results['load_after']} "
          f"(2 cores); {args.entities:,} users; wrk, {args.duration:g} s per run, median of "
          f"{args.runs} interleaved rounds; one server process each")  # fmt: skip
    print(f"{'server / endpoint':<34}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU ms/1k':>11}"
          f"{'non-2xx':>9}{'mlpipe ×':>10}")  # fmt: skip
    for label, r in results.items():
        if not isinstance(r, dict) or "rps" not in r:
            continue
        _, _, what = label.partition(" ")
        ours = results.get(f"mlpipe {what}") if what else None
        ratio = ""
        if ours and r["rps"] and not label.startswith("mlpipe"):
            ratio = f"{ours['rps'] / r['rps']:>9.1f}×"
        print(f"{label:<34}{r['rps']:>9,.0f}{r['p50'] / 1000:>8.2f}{r['p99'] / 1000:>8.2f}"
              f"{r['cpu_ms_per_1k']:>11.1f}{r['non2xx']:>9.0f}{ratio:>10}")  # fmt: skip
    for name, reason in results.get("skipped", {}).items():
        print(f"skipped {name}: {reason}")


if __name__ == "__main__":
    sys.path.insert(0, str(bs.REPO))
    main()
