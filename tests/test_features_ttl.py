"""One ttl rule offline and online (issue 12): a timestamped attribute with a ttl, materialized
into a real SQLite store and read after the ttl, equals `compute_features` at that instant."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.features import compute_features
from mlpipe_cli.features.ttl import feature_ttls, governing_ttl, is_expired
from mlpipe_cli.online import open_store
from mlpipe_cli.ops.materialize import run_materialize

AS_OF = datetime(2026, 3, 1, 12, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")
FEATURES = ["plan", "plan_long", "n_updates", "plan_type2", "country"]


def _config(tmp_path: Path) -> PipelineConfig:
    log = [  # a timestamped attribute table: the plan as of each update
        {"user_id": 1, "updated_at": AS_OF - timedelta(minutes=30), "plan": "pro"},
        {"user_id": 2, "updated_at": AS_OF - timedelta(hours=3), "plan": "free"},
        {"user_id": 2, "updated_at": AS_OF - timedelta(hours=1, minutes=59), "plan": "team"},
        {"user_id": 3, "updated_at": AS_OF - timedelta(days=2), "plan": "gone"},
    ]
    pl.DataFrame(
        log, schema={"user_id": pl.Int64, "updated_at": TS, "plan": pl.String}
    ).write_parquet(tmp_path / "log.parquet")
    versions = [
        {"user_id": u, "plan": p, "valid_from": AS_OF - timedelta(days=9), "valid_to": None}
        for u, p in [(1, "a"), (2, "b"), (3, "c")]
    ]
    pl.DataFrame(
        versions, schema={"user_id": pl.Int64, "plan": pl.String, "valid_from": TS, "valid_to": TS}
    ).write_parquet(tmp_path / "t2.parquet")
    pl.DataFrame({"user_id": [1, 2, 3], "country": ["DE", "US", "FR"]}).write_parquet(
        tmp_path / "users.parquet"
    )
    return PipelineConfig.model_validate(
        {
            "pipeline": "ttl",
            "entity_keys": ["user_id"],
            "sources": {
                "log": {"path": str(tmp_path / "log.parquet"), "timestamp": "updated_at", "ttl": "2h"},
                "t2": {"path": str(tmp_path / "t2.parquet"), "valid_from": "valid_from",
                       "valid_to": "valid_to", "ttl": "1h"},
                "users": {"path": str(tmp_path / "users.parquet"), "ttl": "1h"},
            },
            "features": [
                {"name": "plan", "source": "log", "kind": "attribute", "default": "none"},
                {"name": "plan_long", "source": "log", "kind": "attribute", "column": "plan",
                 "ttl": "10h", "default": "none"},
                {"name": "n_updates", "source": "log", "agg": "count", "default": 0},
                {"name": "plan_type2", "source": "t2", "kind": "attribute", "column": "plan"},
                {"name": "country", "source": "users", "kind": "attribute"},
            ],
            "online_store": {"type": "sqlite", "path": str(tmp_path / "online.sqlite")},
        }
    )  # fmt: skip


def _offline(config: PipelineConfig, when: datetime) -> dict[int, dict[str, object]]:
    spine = pl.DataFrame(
        {"user_id": [1, 2, 3, 4], "t": [when] * 4}, schema={"user_id": pl.Int64, "t": TS}
    )
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="t")
    return {r["user_id"]: {n: r[n] for n in FEATURES} for r in out.iter_rows(named=True)}


def test_ttl_rule_governs_timestamped_attributes_only(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ttls = feature_ttls(config, config.features)
    # the attribute on the timestamped log is governed (the store used to leave it out);
    # type-2 and plain tables have no event time, so their source ttl governs nothing
    assert ttls == {"plan": 7200.0, "plan_long": 36000.0, "n_updates": 7200.0}
    by_name = {f.name: f for f in config.features}
    assert governing_ttl(by_name["plan_type2"], config.sources["t2"]) is None
    assert is_expired(7200.5, 7200.0)
    assert not is_expired(7200.0, 7200.0)


@pytest.mark.parametrize(
    "read_after",
    [timedelta(0), timedelta(minutes=1), timedelta(minutes=90), timedelta(hours=1, minutes=59), timedelta(hours=3),
     timedelta(hours=9, minutes=30), timedelta(hours=10), timedelta(days=3)],
)  # fmt: skip
def test_materialized_attribute_expires_as_compute_features_says(
    tmp_path: Path, read_after: timedelta
) -> None:
    config = _config(tmp_path)
    store = open_store(config, tmp_path)
    try:
        result = run_materialize(config, None, store, as_of=AS_OF)
        assert result.entity_count == 3
        read_at = AS_OF + read_after
        view = store._live_view()
        assert view is not None
        entities = [1, 2, 3, 4]
        rows = store._fetch(view, [view.keys.key(e) for e in entities])
        online = {
            e: view.decoder.decode(row, read_at.timestamp()).values
            for e, row in zip(entities, rows, strict=True)
        }
    finally:
        store.close()
    expected = _offline(config, read_at)
    assert online == expected
    # not vacuous: at some instants the 2h attribute has expired and the 10h one not, and
    # exactly ttl old is still fresh (user 2 at +1m, user 1 at +90m: both exactly 2h old)
    if read_after == timedelta(minutes=1):
        assert (expected[1]["plan"], expected[2]["plan"]) == ("pro", "team")
    if read_after == timedelta(minutes=90):
        assert (expected[1]["plan"], expected[2]["plan"]) == ("pro", "none")
    if read_after == timedelta(hours=3):
        assert (expected[1]["plan"], expected[1]["plan_long"]) == ("none", "pro")
    assert expected[3]["plan"] == "none"
    assert expected[3]["plan_type2"] == "c"


def test_store_reads_at_wall_clock_time_equal_compute_features_now(tmp_path: Path) -> None:
    """The public read path (real time): every ttl has long passed, so only the governed
    features fall back to their defaults, in the store and in the engine alike."""
    config = _config(tmp_path)
    store = open_store(config, tmp_path)
    try:
        run_materialize(config, None, store, as_of=AS_OF)
        now = datetime.fromtimestamp(time.time(), tz=UTC)
        got = {e: r.values for e, r in zip([1, 2, 3, 4], store.get_many([1, 2, 3, 4]), strict=True)}
    finally:
        store.close()
    expected = _offline(config, now)
    assert got == expected
    assert expected[1] == {"plan": "none", "plan_long": "none", "n_updates": 0,
                           "plan_type2": "a", "country": "DE"}  # fmt: skip
