"""The streamed state read (one hand-packed MULTI/EXEC) gives the same entity states over
RESP2 and RESP3 connections, and survives a redis-server restart (the per-thread connection
is made again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.streaming.events import encode_events
from mlpipe_cli.streaming.plan import build_plan
from mlpipe_cli.streaming.state import StateStore

T_B = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = {"user_id": pl.String, "order_ts": pl.Datetime("us", "UTC"), "revenue": pl.Float64,
          "channel": pl.String}  # fmt: skip


def make_store(tmp: Path, url: str) -> StateStore:
    doc = {
        "pipeline": "reads",
        "entity_keys": ["user_id"],
        "sources": {"orders": {
            "path": str(tmp / "orders.parquet"), "timestamp": "order_ts",
            "columns": {"user_id": {"dtype": "string"},
                        "order_ts": {"dtype": "datetime", "timezone": "UTC"},
                        "revenue": {"dtype": "float64", "nullable": True},
                        "channel": {"dtype": "string"}},
            "stream": {"key": "ev", "url": url, "max_lateness": "1h"},
        }},
        "features": [
            {"name": "n", "source": "orders", "agg": "count", "window": "7d"},
            {"name": "total", "source": "orders", "agg": "sum", "column": "revenue"},
            {"name": "channels", "source": "orders", "agg": "count_distinct",
             "column": "channel"},
        ],
    }  # fmt: skip
    (tmp / "mlpipe.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    batch = [{"user_id": "Zürich", "order_ts": T_B - timedelta(days=d), "revenue": float(d),
              "channel": "web" if d % 2 else "app"} for d in (1, 3, 40, 90)]  # fmt: skip
    pl.DataFrame(batch, schema=SCHEMA).write_parquet(tmp / "orders.parquet")
    config = load_config(tmp / "mlpipe.yaml")
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    store.bootstrap(config, as_of=T_B, batch_version=None)
    events = [{"user_id": u, "order_ts": T_B + timedelta(hours=h), "revenue": h * 1.5,
               "channel": "store"} for u in ("Zürich", "東京") for h in (1, 2)]  # fmt: skip
    store.source.append(encode_events(config, plan, pl.DataFrame(events, schema=SCHEMA)))
    store.apply("c")
    return store


@pytest.mark.parametrize("protocol", [2, 3])
def test_reads_are_the_same_over_resp2_and_resp3(
    protocol: int, tmp_path: Path, redis_server: Any
) -> None:
    store = make_store(tmp_path, redis_server.url)
    keys = ['["Zürich"]', '["東京"]', '["nobody"]']
    try:
        expected = store.read(keys)
        store.close()
        store.client = redis.Redis.from_url(redis_server.url, protocol=protocol)
        store._local.conn = None
        got = store.read(keys)
    finally:
        store.close()
    assert got == expected
    zurich, tokyo, nobody = got
    assert [(e, r["revenue"]) for e, _, r in tokyo.raw] == [
        (int((T_B + timedelta(hours=h)).timestamp() * 1_000_000), h * 1.5) for h in (1, 2)
    ]
    assert zurich.agg["n"] == "2"  # the rows 40 and 90 days old are folded (7d + 1 h back)
    assert zurich.sets == {2: {"sapp"}}  # lifetime count_distinct: the folded row's channel
    assert (nobody.raw, nobody.agg, nobody.newest_us) == ([], {}, None)


def test_a_restarted_server_is_reconnected(tmp_path: Path, redis_server: Any) -> None:
    store = make_store(tmp_path, redis_server.url)
    try:
        before = store.read(['["東京"]'])
        redis_server.client().save()
        redis_server.restart()
        after = store.read(['["東京"]'])
    finally:
        store.close()
    assert after == before
    assert len(after[0].raw) == 2


def test_read_ahead_sends_two_batches_each_applied_once(tmp_path: Path, redis_server: Any) -> None:
    """Two apply scripts in one round trip: each takes its own batch (no entry twice), and
    the one that finds the stream drained returns its head for the blocking wait."""
    store = make_store(tmp_path, redis_server.url)  # 4 events applied already
    config = load_config(tmp_path / "mlpipe.yaml")
    events = [{"user_id": f"u{n % 7}", "order_ts": T_B + timedelta(minutes=n),
               "revenue": float(n), "channel": "web"} for n in range(250)]  # fmt: skip
    ids = store.source.append(encode_events(config, store.plan,
                                            pl.DataFrame(events, schema=SCHEMA)))  # fmt: skip
    try:
        first = store.apply_ahead("c", 2)
        second = store.apply_ahead("c", 2)
        stats = store.stats()
        pending = store.source.pending(store.plan.stream.group).count
    finally:
        store.close()
    assert [r.entries for r in first if r] == [100, 100]
    assert [r.entries for r in second if r] == [50, 0]
    assert second[0] is not None
    assert second[0].last_id == ids[-1]
    assert second[1] is not None
    assert second[1].stream_head == ids[-1]
    assert stats["applied"] == 4 + 250
    assert stats.get("duplicate", 0) == 0
    assert pending == 0
