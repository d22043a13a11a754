"""Consumer lag, events applied and dead letters: `mlpipe stream --json`, the server's
/metrics and `mlpipe slo`'s stream_lag objective, all read from a real redis-server.

Lag is made measurable by appending entries with explicit stream ids two minutes in the
past: their age (from the id) is then the lag in seconds, whatever the machine's speed.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from mlpipe_cli.config import load_config
from mlpipe_cli.streaming.consumer import Consumer
from mlpipe_cli.streaming.events import encode_events
from mlpipe_cli.streaming.plan import build_plan
from mlpipe_cli.streaming.state import StateStore, pack_values, unpack_values
from mlpipe_cli.streaming.status import StreamMetrics, lag_readings

AS_OF = "2026-04-01T00:00:00Z"
AS_OF_DT = datetime(2026, 4, 1, tzinfo=UTC)
WAITING = 120  # seconds the back-dated entries have waited


def with_stream(project: Path, redis_url: str, **stream: Any) -> Path:
    config = yaml.safe_load(project.read_text())
    config["sources"]["orders"]["stream"] = {"key": "orders-events", "url": redis_url, **stream}
    config["slo"] = {"stream_lag": {"max_seconds": "60s", "max_events": 5}}
    project.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return project


def append_back_dated(store: StateStore, events: list[dict[str, str]]) -> None:
    """XADD with ids WAITING seconds old (as if the consumer had been down that long)."""
    base = int(time.time() * 1000) - WAITING * 1000
    for seq, fields in enumerate(events):
        store.client.xadd(store.plan.stream.key, fields, id=f"{base}-{seq}")


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def src(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"source": "orders", **labels}.items()))


def test_lag_applied_and_dead_letters_in_status_metrics_and_slo(
    project: Path, redis_server: Any, sample_data_dir: Path, cli: Any, tmp_path: Path
) -> None:
    from mlpipe_cli.serving.app import ServingApp
    from mlpipe_cli.serving.service import build_runtime

    config_path = with_stream(project, redis_server.url, max_lateness="1h")
    assert cli("training-set", "-c", config_path, "--out", tmp_path / "t.parquet").exit_code == 0
    assert cli("fit", "-c", config_path, "--data", tmp_path / "t.parquet").exit_code == 0
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF).exit_code == 0
    config = load_config(config_path)
    plan = build_plan(config, "orders")
    # the state exists before any event: bootstrap through the consumer itself
    assert cli("stream", "-c", config_path, "--once").exit_code == 0
    orders = pl.read_parquet(sample_data_dir / "orders.parquet")
    later = orders.filter(pl.col("order_ts") >= AS_OF_DT).sort("order_ts").head(8)
    rows = [
        *later.to_dicts(),
        # before the batch as-of: the batch owns that time
        {**later.row(0, named=True), "order_ts": AS_OF_DT - timedelta(days=1)},
        # the user's newest event, then one 2 h older than it: late (1 h allowed)
        {**later.row(0, named=True), "order_ts": AS_OF_DT + timedelta(days=5)},
        {**later.row(0, named=True), "order_ts": AS_OF_DT + timedelta(days=5, hours=-2)},
    ]  # fmt: skip
    store = StateStore(plan)
    frame = pl.DataFrame(rows, schema=orders.schema)
    append_back_dated(store, encode_events(config, plan, frame))
    total = len(rows)

    # before consuming: everything is lag, two minutes old
    [reading] = lag_readings(config)
    assert (reading.source, reading.events, reading.capped) == ("orders", total, False)
    assert WAITING - 1 <= reading.seconds < WAITING + 60
    slo = cli("slo", "-c", config_path, "--json")
    assert slo.exit_code == 1
    assert "SLO breached: stream_lag source=orders:" in slo.stderr
    objectives = {o["objective"]: o for o in slo.json()["objectives"]
                  if o.get("labels") == {"source": "orders"}}  # fmt: skip
    assert objectives["stream_lag"]["status"] == "breach"
    assert objectives["stream_lag"]["threshold"] == 60
    assert objectives["stream_lag_events"]["value"] == total
    assert objectives["stream_lag_events"]["status"] == "breach"  # 10 > max_events 5

    runtime = build_runtime(config, config.artifact_dir, model_ref="none", logging_enabled=False)
    app = ServingApp(runtime.service, runtime.metrics)

    async def body() -> bytes:
        return b""

    def scrape() -> dict[Any, float]:
        import asyncio

        _, status, raw, _, _ = asyncio.run(app.handle("/metrics", "GET", body, None, ""))
        assert status == 200
        return metric_values(raw.decode())

    try:
        before = scrape()
        assert before[("mlpipe_stream_up", src())] == 1
        assert before[("mlpipe_stream_lag_events", src())] == total
        assert before[("mlpipe_stream_lag_seconds", src())] >= WAITING - 1
        assert before[("mlpipe_stream_events_applied_total", src())] == 0

        consumed = cli("stream", "-c", config_path, "--once", "--json")
        assert consumed.exit_code == 0, consumed.stderr
        status = consumed.json()["sources"]["orders"]
        assert status["lag_events"] == 0
        assert status["lag_seconds"] == 0
        everyone = status["all_consumers"]
        assert (everyone["applied"], everyone["before_batch"], everyone["late"]) == (
            total - 2, 1, 1)  # fmt: skip
        assert everyone["dead_lettered"] == 2
        assert status["dead_letter_length"] == 2

        time.sleep(1.1)  # the exposition caches its reading for a second
        after = scrape()
    finally:
        runtime.service.store.close()
        runtime.service.streaming.close()
        store.close()
    assert after[("mlpipe_stream_lag_events", src())] == 0
    assert after[("mlpipe_stream_lag_seconds", src())] == 0
    assert after[("mlpipe_stream_events_applied_total", src())] == total - 2
    assert after[("mlpipe_stream_events_dead_lettered_total", src(reason="late"))] == 1
    assert after[("mlpipe_stream_events_dead_lettered_total", src(reason="before_batch"))] == 1
    assert after[("mlpipe_stream_events_dead_lettered_total", src(reason="malformed"))] == 0
    assert after[("mlpipe_stream_dead_letter_length", src())] == 2
    assert after[("mlpipe_stream_events_per_second", src())] > 0
    newest = AS_OF_DT + timedelta(days=5)
    assert after[("mlpipe_stream_newest_event_timestamp_seconds", src())] == pytest.approx(
        newest.timestamp())  # fmt: skip
    caught_up = cli("slo", "-c", config_path, "--json", "--prometheus", tmp_path / "slo.prom")
    assert caught_up.exit_code == 0, caught_up.stderr
    textfile = metric_values((tmp_path / "slo.prom").read_text())
    labels = (("objective", "stream_lag"), ("pipeline", config.pipeline), ("source", "orders"),
              ("unit", "seconds"))  # fmt: skip
    assert textfile[("mlpipe_slo_met", labels)] == 1
    assert textfile[("mlpipe_slo_value", labels)] == 0


def test_redis_down_is_metrics_up_0_and_slo_exit_4(
    project: Path, redis_server: Any, cli: Any
) -> None:
    config_path = with_stream(project, redis_server.url)
    config = load_config(config_path)
    metrics = StreamMetrics([build_plan(config, "orders")], timeout=0.2)
    try:
        up = metric_values("\n".join(metrics.lines()) + "\n")
        assert up[("mlpipe_stream_up", src())] == 1
        assert up[("mlpipe_stream_lag_events", src())] == 0  # no stream yet: nothing behind
        redis_server.stop()
        metrics._cached = None  # past the one-second cache
        down = metric_values("\n".join(metrics.lines()) + "\n")
    finally:
        metrics.close()
    assert down == {("mlpipe_stream_up", src()): 0}
    result = cli("slo", "-c", config_path)
    assert result.exit_code == 4
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_state_in_the_old_member_format_is_refused(
    project: Path, redis_server: Any, cli: Any
) -> None:
    config_path = with_stream(project, redis_server.url)
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF).exit_code == 0
    assert cli("stream", "-c", config_path, "--once").exit_code == 0
    plan = build_plan(load_config(config_path), "orders")
    client = redis_server.client()
    client.hset(plan.meta_key, "format", "1")
    refused = cli("stream", "-c", config_path, "--once")
    assert refused.exit_code == 2
    assert "format 1" in refused.stderr
    assert "mlpipe stream --reset" in refused.stderr
    store = StateStore(plan)
    try:  # the script itself refuses too: nothing is read, applied or acknowledged
        client.xadd(plan.stream.key, {"k": "[1]", "e": "1", "d": "{}"})
        with pytest.raises(Exception, match="format 1"):
            store.apply("c")
        assert store.source.pending(plan.stream.group).count == 0
    finally:
        store.close()
    assert cli("stream", "-c", config_path, "--once", "--reset").exit_code == 0


def test_a_drained_consumer_blocks_and_applies_what_arrives(
    project: Path, redis_server: Any
) -> None:
    """The loop waits on XREAD when drained (no polling sleep) and applies each new entry;
    a stop request is honoured while it waits."""
    config_path = with_stream(project, redis_server.url)
    config = load_config(config_path)
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    store.bootstrap(config, as_of=AS_OF_DT, batch_version=None)
    consumer = Consumer(config, [plan], name="blocker")
    stop = threading.Event()
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(
        consumer.run(should_stop=stop.is_set)))  # fmt: skip
    thread.start()
    try:
        row = {"order_id": 1, "user_id": 77, "order_ts": AS_OF_DT + timedelta(hours=1),
               "revenue": 2.5, "product_id": 3, "channel": "web"}  # fmt: skip
        for n in range(3):
            frame = pl.DataFrame(
                [{**row, "order_ts": row["order_ts"] + timedelta(hours=n)}],
                schema_overrides={"order_ts": pl.Datetime("us", "UTC")},
            )
            store.source.append(encode_events(config, plan, frame))
            deadline = time.monotonic() + 30
            while store.stats().get("applied", 0) < n + 1:
                assert time.monotonic() < deadline, "the event was never applied"
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=30)
        consumer.close()
        store.close()
    assert outcome == ["signal"]


def _config_for_values(tmp: Path, url: str) -> Path:
    doc = {
        "pipeline": "packing",
        "entity_keys": ["user_id"],
        "sources": {"orders": {
            "path": str(tmp / "orders.parquet"), "timestamp": "order_ts",
            "columns": {"user_id": {"dtype": "string"},
                        "order_ts": {"dtype": "datetime", "timezone": "UTC"},
                        "revenue": {"dtype": "float64", "nullable": True},
                        "product_id": {"dtype": "int64", "nullable": True},
                        "flag": {"dtype": "bool", "nullable": True},
                        "channel": {"dtype": "string", "nullable": True}},
            "stream": {"key": "ev", "url": url, "max_lateness": "1000d"},
        }},
        "features": [
            {"name": "r", "source": "orders", "agg": "last", "column": "revenue"},
            {"name": "p", "source": "orders", "agg": "last", "column": "product_id"},
            {"name": "f", "source": "orders", "agg": "last", "column": "flag"},
            {"name": "c", "source": "orders", "agg": "last", "column": "channel"},
        ],
    }  # fmt: skip
    path = tmp / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


VALUES = st.fixed_dictionaries({
    "revenue": st.one_of(st.none(), st.floats(allow_nan=False), st.just(-0.0),
                         st.sampled_from([float("inf"), float("-inf")])),
    "product_id": st.one_of(st.none(), st.integers(-(2**53), 2**53)),
    "flag": st.one_of(st.none(), st.booleans()),
    "channel": st.one_of(st.none(), st.text(max_size=80)),
})  # fmt: skip


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and str(a) == str(b)  # -0.0 keeps its sign, inf its infinity
    return a == b and type(a) is type(b)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(rows=st.lists(VALUES, min_size=1, max_size=12))
def test_packed_members_keep_every_value(
    rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory, redis_server: Any
) -> None:
    """The Lua script packs each event's plan columns; Python unpacks exactly the values
    that were pushed (-0.0, ±inf, integers to 2**53, booleans, nulls, any Unicode text); and
    Python's packing (the bootstrap's) unpacks to the same values."""
    tmp = tmp_path_factory.mktemp("pack")
    path = _config_for_values(tmp, redis_server.url)
    schema = {"user_id": pl.String, "order_ts": pl.Datetime("us", "UTC"),
              "revenue": pl.Float64, "product_id": pl.Int64, "flag": pl.Boolean,
              "channel": pl.String}  # fmt: skip
    pl.DataFrame(schema=schema).write_parquet(tmp / "orders.parquet")
    config = load_config(path)
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    store.client.flushall()
    try:
        store.bootstrap(config, as_of=AS_OF_DT, batch_version=None)
        events = [{"user_id": "Zürich-東京", "order_ts": AS_OF_DT + timedelta(seconds=n), **row}
                  for n, row in enumerate(rows)]  # fmt: skip
        frame = pl.DataFrame(events, schema=schema)
        store.source.append(encode_events(config, plan, frame))
        result = store.apply("c", count=100)
        assert result is not None
        assert result.applied == len(rows)
        [state] = store.read(['["Zürich-東京"]'])
    finally:
        store.close()
    stored = [record for _, _, record in state.raw]
    columns = plan.columns
    for want, got in zip(rows, stored, strict=True):
        assert all(same_value(want[c], got[c]) for c in columns), (want, got)
        local = unpack_values(pack_values([want[c] for c in columns]), columns,
                              plan.int_columns)  # fmt: skip
        assert all(same_value(want[c], local[c]) for c in columns), (want, local)
    assert json.dumps(columns) == json.dumps(["revenue", "product_id", "flag", "channel"])
