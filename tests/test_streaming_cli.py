"""`mlpipe push` and `mlpipe stream` end to end: real redis-server, real Parquet, real CLI.

The oracle for feature values is the batch engine (`compute_features`) on the same events
written to a Parquet file; counts are checked against hand-built inputs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.features.engine import compute_features
from mlpipe_cli.streaming import StreamingFeatureReader
from mlpipe_cli.streaming.events import encode_events
from mlpipe_cli.streaming.plan import build_plan
from mlpipe_cli.streaming.state import StateStore
from tests.conftest import run_mlpipe

AS_OF = "2026-04-01T00:00:00Z"
AS_OF_DT = datetime(2026, 4, 1, tzinfo=UTC)


def with_stream(project: Path, redis_url: str, **stream: Any) -> Path:
    config = yaml.safe_load(project.read_text())
    config["sources"]["orders"]["stream"] = {"key": "orders-events", "url": redis_url, **stream}
    project.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return project


def jsonl(rows: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        return value.isoformat()

    return "".join(json.dumps(r, default=default) + "\n" for r in rows)


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@pytest.fixture
def orders(sample_data_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(sample_data_dir / "orders.parquet")


def test_push_dead_letters_bad_events_with_their_checks(
    project: Path, redis_server: Any, orders: pl.DataFrame, cli: Any
) -> None:
    config = with_stream(project, redis_server.url)
    good = orders.head(3).to_dicts()
    bad = [
        {**good[0], "order_id": 10**9, "revenue": -5.0},  # min and the SQL row check
        {**good[1], "order_id": 10**9 + 1, "channel": "fax"},  # allowed set
        {**good[2], "order_id": 10**9 + 2, "user_id": "seven"},  # wrong type
        {**good[2], "order_id": 10**9 + 3, "email": "x@y.z"},  # forbidden + strict
    ]
    events = config.parent / "events.jsonl"
    events.write_text(jsonl(good[:2]) + jsonl(bad) + "{not json\n" + jsonl(good[2:]))
    result = cli("push", "-c", config, "--source", "orders", events, "--json")
    assert result.exit_code == 1, result.stderr
    doc = result.json()
    assert (doc["read"], doc["pushed"], doc["dead_lettered"]) == (8, 3, 5)
    assert doc["failed_checks"] == {
        "orders.channel.allowed": 1,
        "orders.check.revenue_non_negative": 1,
        "orders.email.forbidden": 1,
        "orders.event.json": 1,
        "orders.revenue.min": 1,
        "orders.table.strict": 1,
        "orders.user_id.dtype": 1,
    }
    assert "dead-lettered" in result.stderr or "failed their checks" in result.stderr
    client = redis_server.client()
    assert client.xlen("orders-events") == 3
    letters = client.xrange("orders-events:dead")
    assert [int(f[b"row"]) for _, f in letters] == [2, 3, 4, 5, 6]
    first = letters[0][1]
    assert first[b"reason"] == b"invalid"
    assert json.loads(first[b"checks"]) == [
        "orders.revenue.min",
        "orders.check.revenue_non_negative",
    ]
    assert json.loads(first[b"d"])["revenue"] == -5.0
    entries = client.xrange("orders-events")
    assert [json.loads(f[b"d"])["order_id"] for _, f in entries] == [r["order_id"] for r in good]
    assert entries[0][1][b"k"] == f"[{good[0]['user_id']}]".encode()
    ts = good[0]["order_ts"]
    assert int(entries[0][1][b"e"]) == int(ts.timestamp()) * 1_000_000 + ts.microsecond


def test_push_from_stdin_and_parquet(
    project: Path, redis_server: Any, orders: pl.DataFrame, tmp_path: Path
) -> None:
    config = with_stream(project, redis_server.url)
    rows = orders.head(5)
    stdin = run_mlpipe("push", "-c", config, "--source", "orders", "-", "--json",
                       input=jsonl(rows.to_dicts()))  # fmt: skip
    assert stdin.exit_code == 0, stdin.stderr
    assert stdin.json()["pushed"] == 5
    part = tmp_path / "events.parquet"
    orders.slice(5, 7).write_parquet(part)
    parquet = run_mlpipe("push", "-c", config, "--source", "orders", part)
    assert parquet.exit_code == 0, parquet.stderr
    assert "pushed 7 of 7 events to orders-events" in parquet.stdout
    assert redis_server.client().xlen("orders-events") == 12


def test_push_refuses_a_source_without_a_stream(project: Path, cli: Any, tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("{}\n")
    result = cli("push", "-c", project, "--source", "users", events)
    assert result.exit_code == 2
    assert "source 'users' has no stream" in result.stderr


def test_stream_refuses_before_materialize(project: Path, redis_server: Any, cli: Any) -> None:
    config = with_stream(project, redis_server.url)
    result = cli("stream", "-c", config, "--once")
    assert result.exit_code == 2
    assert "run mlpipe materialize first" in result.stderr


def test_push_stream_read_equals_the_batch_engine(
    project: Path, redis_server: Any, orders: pl.DataFrame, cli: Any, tmp_path: Path
) -> None:
    """materialize at T_b, push every later order, stream --once, read at t: the values equal
    compute_features at t over the whole orders file."""
    config_path = with_stream(project, redis_server.url, max_lateness="1h")
    done = cli("materialize", "-c", config_path, "--as-of", AS_OF, "--json")
    assert done.exit_code == 0, done.stderr
    later = orders.filter(pl.col("order_ts") >= AS_OF_DT)
    assert later.height > 100
    events = tmp_path / "later.jsonl"
    events.write_text(jsonl(later.to_dicts()))
    pushed = cli("push", "-c", config_path, "--source", "orders", events, "--json")
    assert pushed.exit_code == 0, pushed.stderr
    streamed = cli("stream", "-c", config_path, "--once", "--json", "--consumer", "w1")
    assert streamed.exit_code == 0, streamed.stderr
    doc = streamed.json()  # (no status line: --once drains before the first interval)
    src = doc["sources"]["orders"]
    assert src["this_consumer"]["applied"] == later.height
    assert src["this_consumer"]["dead_lettered"] == 0
    assert src["lag_events"] == 0
    assert doc["bootstrapped"] == ["orders"]
    assert doc["batch_as_of"].startswith("2026-04-01T00:00:00")

    config = load_config(config_path)
    reader = StreamingFeatureReader(config)
    users = orders.get_column("user_id").unique().sort().to_list()
    t = datetime(2026, 7, 3, 12, tzinfo=UTC)
    try:
        hits = reader.read(users, t)
        one = reader.read_one({"user_id": str(users[0])}, t)  # a numeric string key, too
    finally:
        reader.close()
    assert one.values == hits[0].values
    spine = pl.DataFrame({"user_id": users, "t": [t] * len(users)},
                         schema={"user_id": pl.Int64, "t": pl.Datetime("us", "UTC")})  # fmt: skip
    batch = compute_features(config, spine, entity_keys=["user_id"], timestamp="t",
                             features=reader.features).to_dicts()  # fmt: skip
    mismatches = [
        (row["user_id"], name, hit.values[name], row[name])
        for row, hit in zip(batch, hits, strict=True)
        for name in reader.features
        if not same(hit.values[name], row[name])
    ]
    assert mismatches == []
    newest = later.group_by("user_id").agg(pl.col("order_ts").max())
    by_user = dict(newest.iter_rows())
    for user, hit in zip(users, hits, strict=True):
        fresh = hit.freshness["orders_30d"]
        assert fresh["batch_as_of"].startswith("2026-04-01T00:00:00")
        if user in by_user:
            assert datetime.fromisoformat(fresh["newest_event"]) == by_user[user]


def test_windows_decay_with_no_new_events(
    project: Path, redis_server: Any, orders: pl.DataFrame, cli: Any
) -> None:
    """A 30-day count read later, with nothing pushed in between, shrinks to 0."""
    config_path = with_stream(project, redis_server.url)
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF).exit_code == 0
    assert cli("stream", "-c", config_path, "--once").exit_code == 0
    reader = StreamingFeatureReader(load_config(config_path))
    busiest = orders.filter(pl.col("order_ts") < AS_OF_DT).group_by("user_id").len().sort(
        "len", descending=True).item(0, "user_id")  # fmt: skip
    try:
        soon = reader.read_one(busiest, AS_OF_DT + timedelta(hours=1)).values
        later = reader.read_one(busiest, AS_OF_DT + timedelta(days=31)).values
    finally:
        reader.close()
    assert soon["orders_30d"] > 0
    assert later["orders_30d"] == 0
    assert later["total_orders"] == soon["total_orders"]
    assert later["days_since_last_order"] == pytest.approx(
        soon["days_since_last_order"] + 31 - 1 / 24
    )


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_kill_9_and_restart_loses_nothing_and_counts_nothing_twice(
    project: Path, redis_server: Any, orders: pl.DataFrame, cli: Any
) -> None:
    config_path = with_stream(project, redis_server.url, batch=50, claim_idle="0s")
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF).exit_code == 0
    config = load_config(config_path)
    plan = build_plan(config, "orders")
    later = orders.filter(pl.col("order_ts") >= AS_OF_DT)
    # many copies of the later orders, one hour apart per copy (so none is late), each
    # with its own order id: a long stream the consumer needs a while to get through
    copies = [
        later.with_columns(pl.col("order_ts") + timedelta(days=100 * i),
                           pl.col("order_id") + 10_000_000 * (i + 1))
        for i in range(8)
    ]  # fmt: skip
    events = encode_events(config, plan, pl.concat(copies))
    store = StateStore(plan)
    store.source.append(events)
    # a client-side reader takes some entries and dies: they stay pending
    store.source.ensure_group(plan.stream.group)
    stolen = store.source.read_group(plan.stream.group, "dead-reader", 7)
    assert len(stolen) == 7
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "stream", "-c", str(config_path),
         "--consumer", "victim"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        _wait(lambda: store.stats().get("applied", 0) > len(events) // 10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    applied_at_kill = store.stats().get("applied", 0)
    assert 0 < applied_at_kill < len(events), "kill landed after the stream was drained"
    restarted = cli("stream", "-c", config_path, "--once", "--consumer", "survivor", "--json")
    assert restarted.exit_code == 0, restarted.stderr
    stats = store.stats()
    assert stats["applied"] == len(events)
    assert stats.get("duplicate", 0) == 0
    assert store.source.pending(plan.stream.group).count == 0
    assert redis_server.client().xlen(plan.stream.dead_letter_key) == 0
    # and the values are those of the batch engine over the same events
    oracle = config_path.parent / "oracle.parquet"
    pl.concat([orders.filter(pl.col("order_ts") < AS_OF_DT), *copies]).write_parquet(oracle)
    batch_config = config.model_copy(update={"sources": {
        **config.sources, "orders": config.sources["orders"].model_copy(update={"path": oracle})
    }})  # fmt: skip
    reader = StreamingFeatureReader(config)
    users = orders.get_column("user_id").unique().sort().to_list()
    t = datetime(2028, 6, 1, tzinfo=UTC)
    try:
        hits = reader.read(users, t)
    finally:
        reader.close()
        store.close()
    spine = pl.DataFrame({"user_id": users, "t": [t] * len(users)},
                         schema={"user_id": pl.Int64, "t": pl.Datetime("us", "UTC")})  # fmt: skip
    batch = compute_features(batch_config, spine, entity_keys=["user_id"], timestamp="t",
                             features=reader.features).to_dicts()  # fmt: skip
    bad = [(r["user_id"], n) for r, h in zip(batch, hits, strict=True) for n in reader.features
           if not same(h.values[n], r[n])]  # fmt: skip
    assert bad == []


def test_memory_per_entity_stays_bounded(tmp_path: Path, redis_server: Any) -> None:
    """One entity, an event every hour for 120 days, 7-day window, 1 h lateness: the raw
    set holds about 7 days of events, not 120."""
    config = {
        "pipeline": "bounded",
        "entity_keys": ["user_id"],
        "sources": {"orders": {
            "path": str(tmp_path / "orders.parquet"), "timestamp": "order_ts",
            "columns": {"user_id": {"dtype": "int64"},
                        "order_ts": {"dtype": "datetime", "timezone": "UTC"},
                        "revenue": {"dtype": "float64"}},
            "stream": {"key": "ev", "url": redis_server.url, "max_lateness": "1h"},
        }},
        "features": [
            {"name": "n_7d", "source": "orders", "agg": "count", "window": "7d"},
            {"name": "total", "source": "orders", "agg": "sum", "column": "revenue"},
            {"name": "top", "source": "orders", "agg": "max", "column": "revenue"},
        ],
    }  # fmt: skip
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    empty = pl.DataFrame(schema={"user_id": pl.Int64, "order_ts": pl.Datetime("us", "UTC"),
                                 "revenue": pl.Float64})  # fmt: skip
    empty.write_parquet(tmp_path / "orders.parquet")
    hours = 24 * 120
    events = pl.DataFrame({
        "user_id": [5] * hours,
        "order_ts": [start + timedelta(hours=h) for h in range(hours)],
        "revenue": [float(h % 97) for h in range(hours)],
    }, schema=empty.schema)  # fmt: skip
    loaded = load_config(path)
    plan = build_plan(loaded, "orders")
    store = StateStore(plan)
    try:
        store.bootstrap(loaded, as_of=start, batch_version=None)
        store.source.append(encode_events(loaded, plan, events))
        while (result := store.apply("c")) is not None and result.entries:
            pass
        raw = redis_server.client().zcard(plan.raw_key("[5]"))
        reader = StreamingFeatureReader(loaded)
        t = start + timedelta(hours=hours)
        values = reader.read_one(5, t).values
        reader.close()
    finally:
        store.close()
    assert raw <= 7 * 24 + 2  # the window plus the lateness allowance, not 2880 events
    assert values == {"n_7d": 7 * 24, "total": float(sum(h % 97 for h in range(hours))),
                      "top": 96.0}  # fmt: skip


def test_serve_answers_streamed_features_at_request_time(
    project: Path, redis_server: Any, orders: pl.DataFrame, cli: Any, tmp_path: Path
) -> None:
    """GET /features overlays the streamed features, evaluated now, on the batch values: a
    lifetime count includes the events pushed after the materialized as-of, equal to the batch
    engine over every order, and the response says how fresh each streamed feature is."""
    import asyncio

    import orjson

    from mlpipe_cli.serving.app import ServingApp
    from mlpipe_cli.serving.service import build_runtime

    config_path = with_stream(project, redis_server.url, max_lateness="1h")
    assert (
        cli("training-set", "-c", config_path, "--out", tmp_path / "train.parquet").exit_code == 0
    )
    assert cli("fit", "-c", config_path, "--data", tmp_path / "train.parquet").exit_code == 0
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF).exit_code == 0
    later = orders.filter(pl.col("order_ts") >= AS_OF_DT)
    events = tmp_path / "later.jsonl"
    events.write_text(jsonl(later.to_dicts()))
    assert cli("push", "-c", config_path, "--source", "orders", events).exit_code == 0
    assert cli("stream", "-c", config_path, "--once").exit_code == 0

    config = load_config(config_path)
    user = later.group_by("user_id").len().sort("len", descending=True).item(0, "user_id")
    runtime = build_runtime(config, config.artifact_dir, model_ref="none", logging_enabled=False)
    app = ServingApp(runtime.service, runtime.metrics)

    async def body() -> bytes:
        return b""

    try:
        _, status, raw, _, _ = asyncio.run(app.handle(f"/features/{user}", "GET", body, None, ""))
        batch_only = runtime.service.store.get([user]).values
    finally:
        runtime.service.store.close()
        runtime.service.streaming.close()
    assert status == 200, raw
    doc = orjson.loads(raw)
    spine = pl.DataFrame({"user_id": [user], "t": [datetime.now(UTC)]},
                         schema={"user_id": pl.Int64, "t": pl.Datetime("us", "UTC")})  # fmt: skip
    expected = compute_features(config, spine, entity_keys=["user_id"], timestamp="t",
                                features=["total_orders"]).item(0, "total_orders")  # fmt: skip
    assert doc["features"]["total_orders"] == expected
    assert batch_only["total_orders"] < expected  # the batch value alone misses the new events
    fresh = doc["freshness"]["total_orders"]
    assert fresh["batch_as_of"].startswith("2026-04-01T00:00:00")
    newest = later.filter(pl.col("user_id") == user)["order_ts"].max()
    assert datetime.fromisoformat(fresh["newest_event"]) == newest
