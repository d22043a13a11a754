"""Parity: features evaluated from the streamed state == the batch engine on the same events.

Hypothesis draws batch rows (some after the batch as-of, which the stream must not double
count), stream events out of order, tied in time, late (past max_lateness), before the batch
as-of, several entities with int or non-ASCII string keys, with and without a ttl. The
events go through a real redis-server: bootstrap, two consumers taking small interleaved
batches, a third that reads entries client-side and "dies" (its pending entries are claimed).
Then for random (entity, t) pairs from each entity's exact range on, every feature of
``streaming.evaluate.features_at`` must equal ``features.engine.compute_features`` at t over
the events the documented rules keep: batch rows before T_b plus every stream event that was
not dead-lettered, in stream order.

Equal means: identical for integers, strings, booleans and nulls; floats within 1e-9
(relative or absolute) — the batch engine's rolling sums add and subtract, so their last
bits depend on the history, not on the value.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config import load_config
from mlpipe_cli.features.engine import compute_features
from mlpipe_cli.streaming.evaluate import RequestTimeTooEarly, exact_from_us, features_at
from mlpipe_cli.streaming.events import encode_events
from mlpipe_cli.streaming.plan import build_plan
from mlpipe_cli.streaming.state import StateStore, to_epoch_us

T_B = datetime(2026, 3, 1, tzinfo=UTC)
CHANNELS = ["web", "app", "store"]

FEATURES: list[dict[str, Any]] = [
    {"name": "n_orders", "agg": "count", "default": 0},
    {"name": "n_revenue", "agg": "count", "column": "revenue"},
    {"name": "lifetime_value", "agg": "sum", "column": "revenue", "default": 0},
    {"name": "units", "agg": "sum", "column": "product_id"},
    {"name": "mean_revenue", "agg": "mean", "column": "revenue"},
    {"name": "min_revenue", "agg": "min", "column": "revenue"},
    {"name": "max_product", "agg": "max", "column": "product_id"},
    {"name": "min_channel", "agg": "min", "column": "channel"},
    {"name": "std_revenue", "agg": "std", "column": "revenue"},
    {"name": "channels", "agg": "count_distinct", "column": "channel"},
    {"name": "last_product", "agg": "last", "column": "product_id", "default": -1},
    {"name": "lag_channel", "kind": "lag", "column": "channel"},
    {"name": "hours_since", "kind": "time_since_last", "unit": "h", "default": 9999},
    {"name": "gap_days", "kind": "mean_interval", "unit": "d"},
    {"name": "orders_7d", "agg": "count", "window": "7d", "default": 0},
    {"name": "revenue_7d", "agg": "sum", "column": "revenue", "window": "7d"},
    {"name": "mean_7d", "agg": "mean", "column": "revenue", "window": "7d"},
    {"name": "max_30d", "agg": "max", "column": "revenue", "window": "30d"},
    {"name": "min_30d", "agg": "min", "column": "product_id", "window": "30d"},
    {"name": "std_30d", "agg": "std", "column": "revenue", "window": "30d"},
    {"name": "channels_30d", "agg": "count_distinct", "column": "channel", "window": "30d"},
    {"name": "last_30d", "agg": "last", "column": "channel", "window": "30d"},
    {"name": "gap_30d", "kind": "mean_interval", "unit": "h", "window": "30d"},
    {"name": "orders_7d_incl", "agg": "count", "window": "7d", "inclusive": True},
    {"name": "value_incl", "agg": "sum", "column": "revenue", "inclusive": True},
]


def write_config(tmp: Path, redis_url: str, *, key_dtype: str, ttl: str | None,
                 lateness: str) -> Path:  # fmt: skip
    source: dict[str, Any] = {
        "path": str(tmp / "orders.parquet"),
        "timestamp": "order_ts",
        "columns": {
            "user_id": {"dtype": key_dtype},
            "order_ts": {"dtype": "datetime", "timezone": "UTC"},
            "revenue": {"dtype": "float64", "nullable": True},
            "product_id": {"dtype": "int64", "nullable": True},
            "channel": {"dtype": "string", "allowed": CHANNELS},
        },
        "stream": {"key": "orders-events", "url": redis_url, "max_lateness": lateness},
    }
    if ttl:
        source["ttl"] = ttl
    config = {
        "pipeline": "parity",
        "entity_keys": ["user_id"],
        "sources": {"orders": source},
        "features": [{"source": "orders", **f} for f in FEATURES],
    }
    path = tmp / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def frame_of(rows: list[dict[str, Any]], key_dtype: str) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "user_id": pl.Int64 if key_dtype == "int64" else pl.String,
            "order_ts": pl.Datetime("us", "UTC"),
            "revenue": pl.Float64,
            "product_id": pl.Int64,
            "channel": pl.String,
        },
        orient="row",
    )


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


INT_KEYS = [1, 2, 30, -7]
STR_KEYS = ["a", "Zürich", "bb-long-key-ß", "東京"]


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    key_dtype = draw(st.sampled_from(["int64", "string"]))
    keys = (INT_KEYS if key_dtype == "int64" else STR_KEYS)[: draw(st.integers(1, 4))]

    def row(lo_hours: int, hi_hours: int) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({
            "user_id": st.sampled_from(keys),
            # whole hours make ties (same entity, same time) common
            "order_ts": st.integers(lo_hours, hi_hours).map(lambda h: T_B + timedelta(hours=h)),
            "revenue": st.one_of(st.none(), st.floats(0, 1000, allow_nan=False).map(
                lambda x: round(x, 2))),
            "product_id": st.one_of(st.none(), st.integers(1, 50)),
            "channel": st.sampled_from(CHANNELS),
        })  # fmt: skip

    return {
        "key_dtype": key_dtype,
        "keys": keys,
        "batch": draw(st.lists(row(-24 * 60, 24 * 5), max_size=25)),
        "stream": draw(st.lists(row(-24 * 2, 24 * 40), max_size=40)),
        "ttl": draw(st.sampled_from([None, "10d"])),
        "lateness": draw(st.sampled_from(["0s", "6h", "3d"])),
        "chunks": draw(st.lists(st.integers(1, 7), min_size=1, max_size=6)),
        "crash_reads": draw(st.integers(0, 5)),
        "times": draw(st.lists(st.integers(0, 24 * 60 * 50), min_size=3, max_size=12)),
    }


def run_scenario(tmp: Path, redis_url: str, case: dict[str, Any]) -> int:
    """Stream the case through Redis; return how many (entity, t, feature) values matched."""
    key_dtype = case["key_dtype"]
    config_path = write_config(tmp, redis_url, key_dtype=key_dtype, ttl=case["ttl"],
                               lateness=case["lateness"])  # fmt: skip
    frame_of(case["batch"], key_dtype).write_parquet(tmp / "orders.parquet")
    config = load_config(config_path)
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    store.client.flushall()
    try:
        store.bootstrap(config, as_of=T_B, batch_version="test")
        events = encode_events(config, plan, frame_of(case["stream"], key_dtype))
        ids = store.source.append(events)
        # a consumer that reads client-side and dies: its entries stay pending until claimed
        if case["crash_reads"]:
            store.source.read_group(plan.stream.group, "crashed", case["crash_reads"])
        consumers = ["c1", "c2"]
        turn = 0
        while True:
            count = case["chunks"][turn % len(case["chunks"])]
            result = store.apply(consumers[turn % 2], count=count)
            turn += 1
            if result is not None and result.entries == 0:
                claimed = store.apply("c1", mode="claim", min_idle_ms=0)
                if claimed is None or claimed.entries == 0:
                    break
        assert store.source.pending(plan.stream.group).count == 0
        dead = {e.fields["id"] for e in store.source.dead_letters(plan.stream.dead_letter_key)
                if e.fields}  # fmt: skip
        stats = store.stats()
        assert stats.get("applied", 0) + len(dead) == len(events)
        assert stats.get("duplicate", 0) == 0
        kept = [ev for ev, i in zip(case["stream"], ids, strict=True) if i not in dead]
        # documented rules: batch rows before T_b (file order), then accepted stream events
        # in stream order
        before = [r for r in case["batch"] if r["order_ts"] < T_B]
        oracle_path = tmp / "oracle.parquet"
        frame_of(before + kept, key_dtype).write_parquet(oracle_path)
        meta = store.meta()
        assert meta is not None
        default_horizon = meta.batch_as_of_us - plan.horizon_lag_us
        states = dict(zip(case["keys"], store.read([f"[{k}]" if key_dtype == "int64" else
                                                    f'["{k}"]' for k in case["keys"]]),
                          strict=True))  # fmt: skip
        spine, expected = [], []
        for n, minutes in enumerate(case["times"]):
            key = case["keys"][n % len(case["keys"])]
            state = states[key]
            earliest = exact_from_us(plan, state, default_horizon)
            t_us = earliest + minutes * 60_000_000
            t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)
            if n == 0:
                with pytest.raises(RequestTimeTooEarly):
                    features_at(plan, state, earliest - 1, default_horizon_us=default_horizon)
            spine.append({"user_id": key, "t": t})
            expected.append(features_at(plan, state, t_us, default_horizon_us=default_horizon))
            # the edge of the exact range and an event's own time (the strict boundary)
            spine.append({"user_id": key, "t": datetime(1970, 1, 1, tzinfo=UTC)
                          + timedelta(microseconds=earliest)})  # fmt: skip
            expected.append(features_at(plan, state, earliest,
                                        default_horizon_us=default_horizon))  # fmt: skip
            for e_us, _, _ in state.raw[-1:]:
                if e_us >= earliest:
                    spine.append({"user_id": key, "t": datetime(1970, 1, 1, tzinfo=UTC)
                                  + timedelta(microseconds=e_us)})  # fmt: skip
                    expected.append(features_at(plan, state, e_us,
                                                default_horizon_us=default_horizon))  # fmt: skip
        batch_config = config.model_copy(
            update={
                "sources": {
                    "orders": config.sources["orders"].model_copy(update={"path": oracle_path})
                }
            }
        )
        spine_frame = pl.DataFrame(spine, schema={
            "user_id": pl.Int64 if key_dtype == "int64" else pl.String,
            "t": pl.Datetime("us", "UTC")})  # fmt: skip
        batch = compute_features(batch_config, spine_frame, entity_keys=["user_id"],
                                 timestamp="t").to_dicts()  # fmt: skip
    finally:
        store.close()
    mismatches = []
    for row, streamed in zip(batch, expected, strict=True):
        for feature in FEATURES:
            name = feature["name"]
            if not same(streamed[name], row[name]):
                mismatches.append((row["user_id"], row["t"], name, streamed[name], row[name]))
    assert mismatches == [], mismatches[:10]
    return len(batch) * len(FEATURES)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario())
def test_streamed_values_equal_the_batch_engine(
    case: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, redis_server: Any
) -> None:  # fmt: skip
    compared = run_scenario(tmp_path_factory.mktemp("parity"), redis_server.url, case)
    assert compared >= len(FEATURES) * 2


def test_a_hand_worked_history(tmp_path: Path, redis_server: Any) -> None:
    """Numbers worked by hand: late, before-batch, out-of-order and tied events."""
    config_path = write_config(tmp_path, redis_server.url, key_dtype="int64", ttl=None,
                               lateness="6h")  # fmt: skip
    h = lambda n: T_B + timedelta(hours=n)  # noqa: E731
    batch = [
        {"user_id": 1, "order_ts": h(-24 * 40), "revenue": 10.0, "product_id": 1, "channel": "web"},
        {"user_id": 1, "order_ts": h(-24 * 3), "revenue": 20.0, "product_id": 2, "channel": "app"},
        {"user_id": 1, "order_ts": h(5), "revenue": 999.0, "product_id": 9, "channel": "web"},
    ]  # the last row is after T_b: the stream owns that time, the batch row is not counted
    frame_of(batch, "int64").write_parquet(tmp_path / "orders.parquet")
    stream = [
        {"user_id": 1, "order_ts": h(48), "revenue": 5.0, "product_id": 3, "channel": "store"},
        {"user_id": 1, "order_ts": h(45), "revenue": 1.0, "product_id": 4, "channel": "web"},
        {"user_id": 1, "order_ts": h(40), "revenue": 2.0, "product_id": 5, "channel": "web"},
        {"user_id": 1, "order_ts": h(-1), "revenue": 3.0, "product_id": 6, "channel": "web"},
        {"user_id": 1, "order_ts": h(48), "revenue": None, "product_id": 7, "channel": "app"},
    ]
    config = load_config(config_path)
    plan = build_plan(config, "orders")
    store = StateStore(plan)
    try:
        store.bootstrap(config, as_of=T_B, batch_version="v")
        store.source.append(encode_events(config, plan, frame_of(stream, "int64")))
        result = store.apply("c1")
        assert result is not None
        # h(40) is 8 h older than the newest h(48): late (6 h allowed); h(-1) is before T_b
        assert (result.applied, result.late, result.before_batch) == (3, 1, 1)
        state = store.read(["[1]"])[0]
        meta = store.meta()
        assert meta is not None
        values = features_at(
            plan,
            state,
            to_epoch_us(h(49)),
            default_horizon_us=meta.batch_as_of_us - plan.horizon_lag_us,
        )
    finally:
        store.close()
    assert values["n_orders"] == 5  # 2 batch + h(45), h(48), h(48)
    assert values["n_revenue"] == 4
    assert values["lifetime_value"] == 10.0 + 20.0 + 1.0 + 5.0
    assert values["orders_7d"] == 4  # h(-72) is inside [h(49) - 7d, h(49))
    assert values["revenue_7d"] == 20.0 + 1.0 + 5.0
    assert values["last_product"] == 7  # the tie at h(48) goes to the later stream entry
    assert values["lag_channel"] == "app"
    assert values["hours_since"] == 1.0
    assert values["channels"] == 3
    assert values["min_channel"] == "app"
