"""Benchmark the streaming consumer against a real redis-server.

    .venv/bin/python benchmarks/bench_stream.py                     # 200k events, 10k entities
    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/bench_stream.py --events 1000000

What it measures (one redis-server on loopback, the example config's 8 order features:
lifetime count/sum/mean-interval/last, 30-day count and sum, 7-day mean, days since last):

1. append: ``RedisStreamSource.append`` (pipelined XADD) of pre-encoded events.
2. consumer throughput, each variant over its own copy of the same events:
   a. one by one through redis-py (the obvious hand-rolled consumer): XREADGROUP COUNT 1,
      then ZADD the event, HSET the entity's newest time, XACK — four round trips per event,
      no fold, no idempotency (it does less than mlpipe). Timed on --baseline-sample events.
   b. the mlpipe apply script with one event per call (server-side Lua, one round trip each).
   c. the mlpipe apply script with batches of 50, 100 (the default) and 500 events, and
      the `mlpipe stream` loop itself (batches of 100, two scripts in flight while full).
   Client CPU seconds (this process) and redis-server CPU seconds (INFO cpu) beside wall,
   and redis-server CPU microseconds per event: the consumer's real cost, which a loaded
   machine does not inflate the way it inflates wall time.
3. event -> visible in GET /features: the example project on generated sample data
   (training-set, fit, materialize), then `mlpipe stream` and `mlpipe serve` as their own
   processes; this one appends --rate events/s (a batch every 10 ms) for --seconds, to
   entities nobody asks for, plus 20 probe events a second, each to a sample user of its
   own; a poller GETs /features/<user> over HTTP until the response's freshness shows the
   probe: p50/p99/max of XADD -> visible. Timing starts once both processes are up.
4. serving reads (``StreamingFeatureReader.read_one``, in-process) p50/p99, the thread's CPU per
   read and the Redis round trip apart from the rest: idle, and while
   the consumer applies the sustained stream of 3.

Load average is printed before and after; the machine is shared, so compare the ratios
measured in the same run rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import yaml
from _redis_binary import find_redis_server  # benchmarks/ is sys.path[0] when run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlpipe_cli.config import load_config
from mlpipe_cli.streaming import StreamingFeatureReader
from mlpipe_cli.streaming.consumer import Consumer
from mlpipe_cli.streaming.events import encode_events
from mlpipe_cli.streaming.plan import build_plan
from mlpipe_cli.streaming.state import StateStore

T_B = datetime(2026, 1, 1, tzinfo=UTC)


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
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def server_cpu(client) -> float:  # type: ignore[no-untyped-def]
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def runqueue_wait(pid: int) -> float:
    """Seconds the process has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    except OSError:
        return float("nan")
    return int(fields[1]) / 1e9


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_project(tmp: Path, url: str, key: str) -> Path:
    example = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" /
                              "example.yaml").read_text())  # fmt: skip
    orders = example["sources"]["orders"]
    orders["path"] = str(tmp / "orders.parquet")
    orders["stream"] = {"key": key, "url": url, "max_lateness": "1h"}
    config = {
        "pipeline": "bench",
        "entity_keys": ["user_id"],
        "sources": {"orders": orders},
        "features": [f for f in example["features"] if f["source"] == "orders"],
    }
    path = tmp / f"{key}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def make_events(n: int, entities: int, start: datetime, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    step = 86400 * 30 / max(n, 1)  # n events over 30 days, in time order, some jitter
    rows = {
        "order_id": list(range(1, n + 1)),
        "user_id": [rng.randrange(entities) for _ in range(n)],
        "order_ts": [start + timedelta(seconds=i * step + rng.random() * 60) for i in range(n)],
        "revenue": [round(rng.random() * 200, 2) for _ in range(n)],
        "product_id": [rng.randrange(1, 50) for _ in range(n)],
        "channel": [rng.choice(["web", "app", "store"]) for _ in range(n)],
    }
    return pl.DataFrame(rows, schema_overrides={"order_ts": pl.Datetime("us", "UTC")})


def setup(tmp: Path, server: Server, key: str, events: pl.DataFrame, batch_rows: pl.DataFrame
          ):  # type: ignore[no-untyped-def]  # fmt: skip
    batch_rows.write_parquet(tmp / "orders.parquet")
    config = load_config(write_project(tmp, server.url, key))
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    store.bootstrap(config, as_of=T_B, batch_version="bench")
    encoded = encode_events(config, plan, events)
    return config, plan, store, encoded


class ReadTimer:
    """read_one timed whole (wall, this thread's CPU) and split: the Redis round trip
    (StateStore._transaction: send MULTI/EXEC, read the replies) vs the rest (key, decode,
    evaluation, freshness). All in microseconds."""

    def __init__(self, reader: StreamingFeatureReader) -> None:
        self.reader = reader
        self.runs: dict[str, list[float]] = {"wall": [], "cpu": [], "redis": [], "rest": []}
        self._in_redis = 0.0
        for store in reader.stores.values():
            inner = store._transaction

            def wrapped(packed: bytes, queued: int, inner=inner):  # type: ignore[no-untyped-def]
                begin = time.perf_counter()
                try:
                    return inner(packed, queued)
                finally:
                    self._in_redis += time.perf_counter() - begin

            store._transaction = wrapped  # type: ignore[method-assign]

    def read(self, entity: object) -> None:
        self._in_redis = 0.0
        cpu, begin = time.thread_time(), time.perf_counter()
        self.reader.read_one(entity)
        wall = time.perf_counter() - begin
        self.runs["cpu"].append((time.thread_time() - cpu) * 1e6)
        self.runs["wall"].append(wall * 1e6)
        self.runs["redis"].append(self._in_redis * 1e6)
        self.runs["rest"].append((wall - self._in_redis) * 1e6)

    def take(self) -> dict[str, list[float]]:
        runs, self.runs = self.runs, {k: [] for k in self.runs}
        return runs


def reader_child(cfg_path: str, seconds: str, users_json: str) -> None:
    """read_one every 10 ms for ``seconds``; the ReadTimer runs as JSON on stdout."""
    reader = StreamingFeatureReader(load_config(Path(cfg_path)))
    users = json.loads(users_json)
    timer = ReadTimer(reader)
    for n in range(200):  # warm: connection, metadata, the plan's precomputed features
        timer.read(users[n % len(users)])
    timer.take()
    print("ready", flush=True)
    sys.stdin.readline()  # the sustained run starts
    end = time.perf_counter() + float(seconds)
    n = 0
    while time.perf_counter() < end:
        timer.read(users[n % len(users)])
        n += 1
        time.sleep(0.01)
    reader.close()
    print(json.dumps(timer.take()))


def timed(fn):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), client_cpu()
    out = fn()
    return out, time.perf_counter() - wall, client_cpu() - cpu


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mlpipe(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "mlpipe_cli", *argv, "-q"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def wait_for(predicate, what: str, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_get(conn: http.client.HTTPConnection, path: str) -> dict:  # type: ignore[type-arg]
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
    return json.loads(body)


def visibility_over_http(args: argparse.Namespace, tmp: Path, server: Server) -> None:
    """Event -> visible in GET /features of a real `mlpipe serve`, at --rate events/s.

    The example project on generated sample data with its online store in the benchmark's
    redis-server and orders streamed: training-set, fit, materialize as of AS_OF, then
    `mlpipe stream` and `mlpipe serve` as their own processes. Load events go to entities
    that serve never asks for; every 50 ms a probe event goes to a sample user of its own,
    and a poller GETs /features/<user> until the response's freshness shows that event."""
    from mlpipe_cli.sample_data import generate

    data = tmp / "sample"
    generate(data, rows=20_000, seed=7)
    example = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" /
                              "example.yaml").read_text())  # fmt: skip
    text = yaml.safe_dump(example, sort_keys=False).replace("../data/sample/", f"{data}/")
    config_doc = yaml.safe_load(text)
    config_doc["artifact_dir"] = str(tmp / "artifacts")
    config_doc["transforms"]["data"] = str(tmp / "train.parquet")
    config_doc["online_store"] = {"type": "redis", "url": server.url}
    config_doc["sources"]["orders"]["stream"] = {"key": "ev-http", "max_lateness": "1h",
                                                 "batch": args.stream_batch}  # fmt: skip
    config_doc["serving"]["logging"] = {"enabled": False}
    cfg_path = tmp / "http.yaml"
    cfg_path.write_text(yaml.safe_dump(config_doc, sort_keys=False))
    as_of = "2026-04-01T00:00:00Z"
    t_b = datetime(2026, 4, 1, tzinfo=UTC)
    mlpipe("training-set", "-c", str(cfg_path), "--out", str(tmp / "train.parquet"))
    mlpipe("fit", "-c", str(cfg_path))
    mlpipe("materialize", "-c", str(cfg_path), "--as-of", as_of)
    config = load_config(cfg_path)
    plan = build_plan(config, "orders")
    state = StateStore(plan)
    users = pl.read_parquet(data / "orders.parquet").get_column("user_id").unique().sort()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    consumer = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "stream", "-c", str(cfg_path), "--consumer", "live",
         "--status-every", "5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    serve = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(cfg_path), "--port", str(port),
         "--model", "none", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # steady state only: the consumer has bootstrapped and made its first read
        wait_for(lambda: any(c["name"] == b"live" for c in
                             state.client.xinfo_consumers(plan.stream.key, plan.stream.group))
                 if state.client.exists(plan.stream.key) else False, "the consumer")  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def ready() -> bool:
            try:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                return response.status == 200
            except OSError:
                conn.close()
                return False

        wait_for(ready, "mlpipe serve")
        reader = StreamingFeatureReader(config)
        read_timer = ReadTimer(reader)
        for n in range(2000):
            read_timer.read(int(users[n % len(users)]))
        idle = read_timer.take()
        load_rows = make_events(int(args.rate * args.seconds), args.entities,
                                t_b + timedelta(days=1), seed=3)  # fmt: skip
        load_rows = load_rows.with_columns(pl.col("user_id") + 10_000_000)
        load_encoded = encode_events(config, plan, load_rows)
        probes: dict[int, tuple[float, str]] = {}  # user -> (sent at, expected newest_event)
        latencies: list[float] = []
        in_state: list[float] = []  # XADD -> in the state (Redis), the consumer's share
        applied_at: dict[int, float] = {}
        probe_us: dict[int, int] = {}
        probe_client = StateStore(plan).client
        gets: list[float] = []
        stop = threading.Event()
        lock = threading.Lock()

        def poller() -> None:
            poll = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while not stop.is_set():
                with lock:
                    todo = list(probes.items())
                if not todo:
                    time.sleep(0.001)
                    continue
                for user, (sent, newest) in todo:
                    if user not in applied_at:  # the state itself, straight from Redis
                        nw = probe_client.hget(plan.agg_key(f"[{user}]"), "nw")
                        if nw is not None and int(float(nw)) == probe_us[user]:
                            applied_at[user] = time.perf_counter()
                            in_state.append((applied_at[user] - sent) * 1000)
                    begin = time.perf_counter()
                    doc = http_get(poll, f"/features/{user}")
                    done = time.perf_counter()
                    gets.append((done - begin) * 1000)
                    if doc["freshness"]["total_orders"]["newest_event"] == newest:
                        latencies.append((done - sent) * 1000)
                        if user not in applied_at:
                            in_state.append((done - sent) * 1000)
                        with lock:
                            del probes[user]
            poll.close()

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        per_tick = max(1, args.rate // 100)
        # probe events encoded before the clock starts: one a user, 20 a second
        ticks = -(-len(load_encoded) // per_tick)
        probe_rows = [
            {"order_id": 1, "revenue": 1.0, "product_id": 1, "channel": "web", "user_id": user,
             "order_ts": t_b + timedelta(days=2, microseconds=tick)}
            for user, tick in zip(users.to_list(), range(0, ticks, 5), strict=False)
        ]  # fmt: skip
        probe_frame = pl.DataFrame(
            probe_rows, schema_overrides={"order_ts": pl.Datetime("us", "UTC")}
        )
        probe_events = dict(
            zip(
                range(0, ticks, 5),
                zip(probe_rows, encode_events(config, plan, probe_frame), strict=False),
                strict=False,
            )
        )
        for row in probe_rows:
            at = row["order_ts"]
            probe_us[row["user_id"]] = int(at.timestamp()) * 1_000_000 + at.microsecond
        missed = 0
        # redis-server's own stalls over 10 ms, to tell them from the clients' (LATENCY LATEST)
        state.client.config_set("latency-monitor-threshold", 10)
        # every command over 300 us (the read goal): a read arriving meanwhile waits for it
        state.client.config_set("slowlog-log-slower-than", 300)
        state.client.config_set("slowlog-max-len", 100_000)
        state.client.slowlog_reset()
        # a read in its own process (as a serve worker: no GIL shared with this process's
        # poller thread), one every 10 ms for the sustained run
        child = subprocess.Popen(
            [sys.executable, __file__, "--reader-child", str(cfg_path), str(args.seconds),
             json.dumps(users.to_list()[:500])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stdin is not None
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("the reader process did not start")
        child.stdin.write("go\n")
        child.stdin.flush()
        state.client.config_resetstat()  # per-command server time of the run alone
        t0 = time.perf_counter()
        s0, c0 = server_cpu(state.client), client_cpu()
        waits = {"redis-server": server.proc.pid, "mlpipe stream": consumer.pid,
                 "mlpipe serve": serve.pid}  # fmt: skip
        waited = {name: runqueue_wait(pid) for name, pid in waits.items()}
        for tick, start in enumerate(range(0, len(load_encoded), per_tick)):
            chunk = list(load_encoded[start : start + per_tick])
            probe = probe_events.get(tick)
            if probe is not None:
                chunk.append(probe[1])
            ids = state.source.append(chunk)
            if probe is not None:
                # sent = the XADD's own time (its stream id, the server's clock): a stall
                # of this process after the XADD is not counted as the consumer's
                sent_ms = int(ids[-1].split("-")[0])
                sent = time.perf_counter() - (time.time() - sent_ms / 1000)
                with lock:
                    probes[probe[0]["user_id"]] = (sent, probe[0]["order_ts"].isoformat())
            if tick % 10 == 0:
                read_timer.read(int(users[tick % len(users)]))
            target = t0 + (tick + 1) * 0.01
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                missed += 1
        sent_wall = time.perf_counter() - t0
        commandstats = state.client.info("commandstats")
        child_runs = json.loads(child.communicate(timeout=120)[0])
        wait_for(lambda: not probes, "the last probes", timeout=30)
        stop.set()
        thread.join(timeout=30)
        applied = state.stats().get("applied", 0)
        print(f"sustained: {len(load_encoded) / sent_wall:,.0f} events/s appended for "
              f"{sent_wall:.1f}s ({missed} of {tick + 1} 10-ms ticks late); consumer applied "
              f"{applied}; redis-server cpu {server_cpu(state.client) - s0:.2f}s, this process "
              f"cpu {client_cpu() - c0:.2f}s")  # fmt: skip
        print(f"event -> visible in GET /features over HTTP ({len(latencies)} probes): "
              f"p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
              f"max {max(latencies):.1f} ms (goal p99 <= 100 ms); one poll GET: "
              f"p50 {pct(gets, 0.5):.2f} ms, p99 {pct(gets, 0.99):.2f} ms")  # fmt: skip
        waited = {name: runqueue_wait(pid) - waited[name] for name, pid in waits.items()}
        print(
            "  seconds spent runnable but waiting for a CPU during the run: "
            + ", ".join(f"{name} {seconds:.2f}" for name, seconds in waited.items())
        )
        stalls = state.client.execute_command("LATENCY", "LATEST")
        slow = sorted(state.client.slowlog_get(100_000), key=lambda e: -e["duration"])
        state.client.config_set("slowlog-log-slower-than", 10_000)
        print(f"  redis-server stalls > 10 ms: {stalls or 'none'}; slowest commands: "
              f"{[(e['duration'], e['command'][:60]) for e in slow[:3]]}")  # fmt: skip
        scripts = [e["duration"] for e in slow if e["command"].startswith(b"EVALSHA")]
        print(f"  apply scripts over 300 us: {len(scripts)} ({sum(scripts) / 1e6:.2f}s of "
              f"{sent_wall:.1f}s), over 1 ms: {sum(d > 1000 for d in scripts)}, longest "
              f"{max(scripts, default=0)} us")  # fmt: skip
        print(f"  of which XADD -> applied in the state (polled in Redis): "
              f"p50 {pct(in_state, 0.5):.1f} ms, p99 {pct(in_state, 0.99):.1f} ms, "
              f"max {max(in_state):.1f} ms")  # fmt: skip
        busy = read_timer.take()
        print(f"read_one in-process, idle: p50 {pct(idle['wall'], 0.5):.0f} us, "
              f"p99 {pct(idle['wall'], 0.99):.0f} us; while consuming {args.rate}/s: "
              f"p50 {pct(busy['wall'], 0.5):.0f} us, p99 {pct(busy['wall'], 0.99):.0f} us")  # fmt: skip
        print(f"read_one in its own process while consuming {args.rate}/s: "
              f"p50 {pct(child_runs['wall'], 0.5):.0f} us, p99 {pct(child_runs['wall'], 0.99):.0f}"
              f" us")  # fmt: skip
        for label, runs in (("idle", idle), (f"while consuming {args.rate}/s", busy),
                            ("own process, while consuming", child_runs)):  # fmt: skip
            print(f"  {label} ({len(runs['wall'])} reads): this thread's cpu "
                  f"{statistics.fmean(runs['cpu']):.0f} us/read (p50 {pct(runs['cpu'], 0.5):.0f}, "
                  f"p99 {pct(runs['cpu'], 0.99):.0f}); MULTI/EXEC round trip p50 "
                  f"{pct(runs['redis'], 0.5):.0f} us, p99 {pct(runs['redis'], 0.99):.0f} us; "
                  f"rest of read_one p50 {pct(runs['rest'], 0.5):.0f} us, "
                  f"p99 {pct(runs['rest'], 0.99):.0f} us")  # fmt: skip
        apply = commandstats.get("cmdstat_evalsha", {})
        print(
            f"  redis-server during the run: the apply script (EVALSHA) {apply.get('calls')} "
            f"calls, {apply.get('usec_per_call')} us each on average: a read arriving while "
            f"one runs waits for it (one thread); "
            + ", ".join(
                f"{name[8:]} {stat['usec_per_call']:.0f} us"
                for name, stat in sorted(commandstats.items())
                if name[8:] in ("xadd", "zrange", "hgetall", "exec", "xreadgroup")
            )
        )
        reader.close()
        conn.close()
    finally:
        for proc in (serve, consumer):
            proc.send_signal(signal.SIGTERM)
        for proc in (serve, consumer):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        state.close()
    statuses = [json.loads(line)["status"] for line in (consumer.stdout.read() if consumer.stdout
                else "").splitlines() if line.startswith('{"status"')]  # fmt: skip
    if statuses:
        last = statuses[-1]
        print(f"consumer status (mlpipe stream --json): events/s "
              f"{last.get('events_per_second')}, lag "
              f"{last['sources']['orders']['lag_events']} events / "
              f"{last['sources']['orders']['lag_seconds']} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=10_000, help="sustained events/s for 3-4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only-live", action="store_true", help="only 3-4 (sustained rate)")
    parser.add_argument(
        "--stream-batch",
        type=int,
        default=100,
        help="stream.batch of the project in 3-4 (events per apply script)",
    )
    parser.add_argument(
        "--reader-child", nargs=3, metavar=("CONFIG", "SECONDS", "USERS"), help=argparse.SUPPRESS
    )  # internal: the own-process reader of 4
    args = parser.parse_args()
    if args.reader_child:
        reader_child(*args.reader_child)
        return
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    server = Server(tmp)
    client = None
    try:
        events = make_events(args.events, args.entities, T_B, seed=1)
        history = make_events(args.entities * 3, args.entities, T_B - timedelta(days=60), 2)
        results: dict[str, float] = {}

        if args.only_live:
            visibility_over_http(args, tmp, server)
            return
        # 1. append
        config, plan, store, encoded = setup(tmp, server, "ev-append", events, history)
        client = store.client
        _, wall, cpu = timed(lambda: store.source.append(encoded))
        print(f"append (pipelined XADD): {len(encoded) / wall:,.0f} events/s "
              f"({wall:.2f}s wall, {cpu:.2f}s client cpu)")  # fmt: skip

        # 2a. one by one through redis-py
        sample = encoded[: args.baseline_sample]
        key = "ev-naive"
        client.delete(key)
        store.source.__class__(client, key).append(sample)
        client.xgroup_create(key, "g", id="0")

        def naive() -> int:
            done = 0
            while True:
                reply = client.xreadgroup("g", "c", {key: ">"}, count=1)
                if not reply:
                    return done
                entry_id, fields = reply[0][1][0]
                k = fields[b"k"].decode()
                client.zadd(f"naive:r:{k}", {entry_id + b"|" + fields[b"d"]: int(fields[b"e"])})
                client.hset(f"naive:a:{k}", "nw", fields[b"e"])
                client.xack(key, "g", entry_id)
                done += 1

        s0 = server_cpu(client)
        done, wall, cpu = timed(naive)
        results["one by one (redis-py)"] = done / wall
        print(f"consumer, one by one through redis-py (4 round trips/event, no fold): "
              f"{done / wall:,.0f} events/s ({done} events, {wall:.2f}s wall, {cpu:.2f}s client "
              f"cpu, {server_cpu(client) - s0:.2f}s server cpu)")  # fmt: skip

        # 2b/2c. the apply script, per event and batched
        for label, count, limit in (("Lua, 1 event per call", 1, args.baseline_sample),
                                    ("Lua, batches of 50", 50, None),
                                    ("Lua, batches of 100 (default)", 100, None),
                                    ("Lua, batches of 500", 500, None),
                                    ("mlpipe stream loop (100, two in flight)", 0, None)
                                    ):  # fmt: skip
            stream_key = f"ev-{count or 'loop'}"
            cfg_path = write_project(tmp, server.url, stream_key)
            config = load_config(cfg_path)
            plan = build_plan(config, "orders")
            # a separate state namespace per variant: the same starting state each time
            plan = plan.__class__(**{**plan.__dict__, "prefix": f"{plan.prefix}:{count or 'loop'}"})
            variant = StateStore(plan)
            variant.bootstrap(config, as_of=T_B, batch_version="bench")
            todo = encoded[:limit] if limit else encoded
            variant.source.append(todo)

            def drain(variant=variant, count=count, config=config) -> int:  # type: ignore[no-untyped-def]
                if count == 0:  # the consumer's own loop: reads ahead while batches are full
                    loop = Consumer(config, [variant.plan], name="c")
                    loop.run(once=True)
                    loop.close()
                    return loop.total_entries()
                total = 0
                while True:
                    result = variant.apply("c", count=count)
                    if result is None or result.entries == 0:
                        return total
                    total += result.entries

            s0 = server_cpu(client)
            done, wall, cpu = timed(drain)
            results[label] = done / wall
            applied = variant.stats().get("applied", 0)
            spent = server_cpu(client) - s0
            print(f"consumer, {label}: {done / wall:,.0f} events/s ({done} events, "
                  f"applied {applied}, {wall:.2f}s wall, {cpu:.2f}s client cpu, "
                  f"{spent:.2f}s server cpu = {spent / max(done, 1) * 1e6:.1f} us/event)")  # fmt: skip
            variant.close()
        base = results["one by one (redis-py)"]
        for label, rate in results.items():
            print(f"  {label}: {rate / base:.1f}x the one-by-one baseline")

        # 3 + 4. sustained rate: `mlpipe stream` and `mlpipe serve` as their own processes
        visibility_over_http(args, tmp, server)
        store.close()
    finally:
        server.stop()
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
