"""compute_features: composite keys, key mapping, hand-worked values and input errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from test_features_oracle import assert_matches_oracle, oracle

from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.errors import ConfigError, DataCheckFailed, InputError, UsageError
from mlpipe_cli.features import compute_features, feature_names

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
TS = pl.Datetime("us", "UTC")


def _config(
    tmp: Path, sources: dict[str, Any], features: list[dict[str, Any]], **extra: Any
) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "pipeline": "t",
            "entity_keys": ["user_id"],
            "sources": sources,
            "features": features,
            **extra,
        }
    )


def _orders(tmp: Path, rows: list[dict[str, Any]] | None = None, **schema_over: Any) -> str:
    rows = rows or [
        {"user_id": 1, "ts": T0, "revenue": 10.0},
        {"user_id": 1, "ts": T0 + 2 * H, "revenue": 30.0},
        {"user_id": 1, "ts": T0 + 5 * H, "revenue": 5.0},
        {"user_id": 2, "ts": T0 + H, "revenue": 7.0},
    ]
    schema = {"user_id": pl.Int64, "ts": TS, "revenue": pl.Float64, **schema_over}
    path = tmp / "orders.parquet"
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)
    return str(path)


def test_hand_worked_values(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"orders": {"path": _orders(tmp_path), "timestamp": "ts", "ttl": "4h"}},
        [
            {"name": "n", "source": "orders", "agg": "count", "default": 0},
            {"name": "rev_3h", "source": "orders", "agg": "sum", "column": "revenue", "window": "3h"},
            {"name": "gap_h", "source": "orders", "kind": "mean_interval", "unit": "h"},
            {"name": "since_h", "source": "orders", "kind": "time_since_last", "unit": "h"},
            {"name": "n_incl", "source": "orders", "agg": "count", "inclusive": True},
        ],
    )  # fmt: skip
    spine = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 3],
            "at": [T0, T0 + 2 * H, T0 + 5 * H, T0 + 10 * H, T0 + 5 * H, T0],
        },
        schema={"user_id": pl.Int64, "at": TS},
    )
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="at")
    assert out["n"].to_list() == [0, 1, 2, 0, 1, 0]  # t+10h: newest order 5h old > ttl 4h
    assert out["n_incl"].to_list() == [1, 2, 3, None, 1, None]
    # at t0+5h the 3h window is [t0+2h, t0+5h): only the 30.0 order
    assert out["rev_3h"].to_list() == [None, 10.0, 30.0, None, 0.0, None]  # user 2: order 4h ago
    assert out["gap_h"].to_list() == [None, None, 2.0, None, None, None]
    assert out["since_h"].to_list() == [None, 2.0, 3.0, None, 4.0, None]
    assert feature_names(config) == ["n", "rev_3h", "gap_h", "since_h", "n_incl"]


def test_composite_keys_and_source_key_mapping_match_oracle(tmp_path: Path) -> None:
    rows = [
        {"shop": s, "customer": c, "ts": T0 + h * H, "amount": float(h % 4), "sku": f"s{h % 3}"}
        for h, (s, c) in enumerate([("a", 1), ("a", 2), ("b", 1), ("a", 1), ("b", 1), ("a", 1)] * 3)
    ]
    path = tmp_path / "ev.parquet"
    pl.DataFrame(rows).write_parquet(path)
    dims = [{"store": "a", "cust": 1, "tier": "gold"}, {"store": "b", "cust": 1, "tier": "tin"}]
    dpath = tmp_path / "dim.parquet"
    pl.DataFrame(dims).write_parquet(dpath)
    raw = {
        "pipeline": "t",
        "entity_keys": ["shop", "customer"],
        "sources": {
            "ev": {"path": str(path), "timestamp": "ts"},
            "dim": {"path": str(dpath), "entity_keys": ["store", "cust"],
                    "join": {"shop": "store", "customer": "cust"}},
        },
        "features": [
            {"name": "cnt", "source": "ev", "agg": "count", "default": 0},
            {"name": "sum_4h", "source": "ev", "agg": "sum", "column": "amount", "window": "4h"},
            {"name": "skus", "source": "ev", "agg": "count_distinct", "column": "sku"},
            {"name": "skus_5h", "source": "ev", "agg": "count_distinct", "column": "sku", "window": "5h"},
            {"name": "last_sku", "source": "ev", "agg": "last", "column": "sku"},
            {"name": "tier", "source": "dim", "kind": "attribute", "default": "none"},
        ],
    }  # fmt: skip
    spine = [
        {"shop": s, "customer": c, "t": T0 + h * H}
        for s in ("a", "b", "c")
        for c in (1, 2)
        for h in (0, 3, 7, 11, 18, 30)
    ]
    frame = pl.DataFrame(spine)
    out = compute_features(
        PipelineConfig.model_validate(raw),
        frame.lazy(),
        entity_keys=["shop", "customer"],
        timestamp="t",
    )
    expected = oracle(
        raw, {"ev": rows, "dim": dims}, spine, keys=["shop", "customer"], timestamp="t"
    )
    assert_matches_oracle(out, expected, [f["name"] for f in raw["features"]])


def test_nanosecond_source_against_microsecond_spine(tmp_path: Path) -> None:
    """The finest unit wins, so an order 500 ns after t is not 'at' t."""
    path = tmp_path / "ev.parquet"
    pl.DataFrame(
        {"user_id": [1], "ts": [datetime(2026, 3, 1, tzinfo=UTC)]},
        schema={"user_id": pl.Int64, "ts": pl.Datetime("ns", "UTC")},
    ).with_columns(pl.col("ts") + pl.duration(nanoseconds=500)).write_parquet(path)
    config = _config(
        tmp_path,
        {"ev": {"path": str(path), "timestamp": "ts"}},
        [{"name": "n", "source": "ev", "agg": "count", "inclusive": True, "default": 0}],
    )
    spine = pl.DataFrame({"user_id": [1, 1], "at": [T0, T0 + timedelta(microseconds=1)]})
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="at")
    assert out["n"].to_list() == [0, 1]


def test_date_spine_with_naive_sources(tmp_path: Path) -> None:
    path = tmp_path / "ev.parquet"
    pl.DataFrame(
        {"user_id": [1, 1], "ts": [datetime(2026, 3, 1, 12), datetime(2026, 3, 2)]}
    ).write_parquet(path)
    config = _config(
        tmp_path,
        {"ev": {"path": str(path), "timestamp": "ts"}},
        [{"name": "n", "source": "ev", "agg": "count", "default": 0}],
    )
    spine = pl.DataFrame({"user_id": [1, 1], "day": [date(2026, 3, 2), date(2026, 3, 3)]})
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="day")
    assert out["n"].to_list() == [1, 2]


def _one_feature(tmp_path: Path, source: dict[str, Any], feature: dict[str, Any]) -> PipelineConfig:
    return _config(tmp_path, {"s": source}, [{"source": "s", **feature}])


SPINE = pl.DataFrame(
    {"user_id": [1, 2], "at": [T0 + H, T0 + 9 * H]}, schema={"user_id": pl.Int64, "at": TS}
)


def test_input_errors(tmp_path: Path) -> None:
    orders = _orders(tmp_path)
    count = {"name": "n", "agg": "count"}
    cfg = _one_feature(tmp_path, {"path": orders, "timestamp": "ts"}, count)
    with pytest.raises(InputError, match="spine has no column 'when'"):
        compute_features(cfg, SPINE, entity_keys=["user_id"], timestamp="when")
    with pytest.raises(InputError, match=r"feature 'n' joins source 's' key 'user_id' \(Int64\) on spine column 'uid', which the spine lacks"):  # fmt: skip
        compute_features(cfg, SPINE, entity_keys=["uid"], timestamp="at")
    with pytest.raises(UsageError, match="unknown feature 'x'"):
        compute_features(cfg, SPINE, entity_keys=["user_id"], timestamp="at", features=["x"])
    with pytest.raises(UsageError, match="spine already has a column named like feature 'n'"):
        compute_features(cfg, SPINE.with_columns(n=1), entity_keys=["user_id"], timestamp="at")
    with pytest.raises(InputError, match="must be a datetime or date"):
        compute_features(
            cfg,
            SPINE.with_columns(pl.col("at").cast(pl.Int64)),
            entity_keys=["user_id"],
            timestamp="at",
        )
    bad_ts = _one_feature(tmp_path, {"path": orders, "timestamp": "revenue"}, count)
    with pytest.raises(InputError, match="source 's' column 'revenue' must be a datetime"):
        compute_features(bad_ts, SPINE, entity_keys=["user_id"], timestamp="at")
    no_col = _one_feature(
        tmp_path,
        {"path": orders, "timestamp": "ts"},
        {"name": "x", "agg": "sum", "column": "price"},
    )
    with pytest.raises(InputError, match="source 's' has no column 'price'"):
        compute_features(no_col, SPINE, entity_keys=["user_id"], timestamp="at")
    with pytest.raises(
        InputError,
        match="feature 'n': spine column 'user_id' is Int64 but source 's' key 'user_id' is "
        "String: an integer key never equals a string key",
    ):
        compute_features(
            _one_feature(tmp_path, {"path": _orders(tmp_path, user_id=pl.String, rows=[{"user_id": "1", "ts": T0, "revenue": 1.0}]), "timestamp": "ts"}, count),
            SPINE, entity_keys=["user_id"], timestamp="at",
        )  # fmt: skip
    missing = _one_feature(
        tmp_path, {"path": str(tmp_path / "nope.parquet"), "timestamp": "ts"}, count
    )
    with pytest.raises(InputError, match="not found"):
        compute_features(missing, SPINE, entity_keys=["user_id"], timestamp="at")


def test_null_timestamps_are_data_failures(tmp_path: Path) -> None:
    rows = [{"user_id": 1, "ts": None, "revenue": 1.0}, {"user_id": 1, "ts": T0, "revenue": 2.0}]
    cfg = _one_feature(
        tmp_path,
        {"path": _orders(tmp_path, rows), "timestamp": "ts"},
        {"name": "n", "agg": "count"},
    )
    with pytest.raises(DataCheckFailed, match="source 's' column 'ts' has 1 null timestamp"):
        compute_features(cfg, SPINE, entity_keys=["user_id"], timestamp="at")
    spine = SPINE.with_columns(pl.lit(None, TS).alias("at"))
    with pytest.raises(DataCheckFailed, match="spine column 'at' has 2 null timestamp"):
        compute_features(cfg, spine, entity_keys=["user_id"], timestamp="at")


def test_naive_and_aware_never_compared_silently(tmp_path: Path) -> None:
    cfg = _one_feature(
        tmp_path, {"path": _orders(tmp_path), "timestamp": "ts"}, {"name": "n", "agg": "count"}
    )
    naive = SPINE.with_columns(pl.col("at").dt.replace_time_zone(None))
    with pytest.raises(
        InputError, match=r"naive timestamps \(spine.at\) and zone-aware ones \(s.ts\)"
    ):
        compute_features(cfg, naive, entity_keys=["user_id"], timestamp="at")
    # naive spine in Berlin wall time: 2026-03-01 02:00 Berlin = 01:00 UTC, one order before
    zoned = _config(
        tmp_path,
        dict(cfg.sources),
        [f.model_dump() for f in cfg.features],
        timezone="Europe/Berlin",
    )
    spine = pl.DataFrame({"user_id": [1], "at": [datetime(2026, 3, 1, 2, 0, 0, 1)]})
    out = compute_features(zoned, spine, entity_keys=["user_id"], timestamp="at")
    assert out["n"].to_list() == [1]


def test_dimension_table_problems(tmp_path: Path) -> None:
    dim = tmp_path / "dim.parquet"
    pl.DataFrame({"user_id": [1, 1, 2], "plan": ["a", "b", "c"]}).write_parquet(dim)
    cfg = _one_feature(tmp_path, {"path": str(dim)}, {"name": "plan", "kind": "attribute"})
    with pytest.raises(InputError, match="2 rows sharing an entity key"):
        compute_features(cfg, SPINE, entity_keys=["user_id"], timestamp="at")
    plain_agg = _one_feature(tmp_path, {"path": str(dim)}, {"name": "n", "agg": "count"})
    with pytest.raises(ConfigError, match="needs source 's' to have a `timestamp` column"):
        compute_features(plain_agg, SPINE, entity_keys=["user_id"], timestamp="at")


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "a", "source": "s"}, "kind aggregate needs `agg`"),
        ({"name": "a", "source": "s", "agg": "sum"}, "agg sum needs `column`"),
        ({"name": "a", "source": "s", "kind": "lag"}, "kind lag needs `column`"),
        ({"name": "a", "source": "s", "agg": "count", "window": "soon"}, "expected a duration"),
        ({"name": "a", "source": "s", "kind": "time_since_last", "window": "1d"}, "takes no window"),
        ({"name": "a", "source": "s", "kind": "lag", "column": "x", "agg": "sum"}, "only applies to kind aggregate"),
    ],
)  # fmt: skip
def test_config_validation(tmp_path: Path, feature: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _config(tmp_path, {"s": {"path": "x.parquet", "timestamp": "ts"}}, [feature])


def test_null_keys_never_match(tmp_path: Path) -> None:
    """Null entity keys in a source match nothing; a null key in the spine is refused
    (exit 2): it would get the defaults as if it were an entity with no history."""
    path = tmp_path / "e.parquet"
    pl.DataFrame(
        {"user_id": [1, None, 1, None], "ts": [T0, T0, T0 + H, T0 + H], "x": [1.0, 2.0, 3.0, 4.0]}
    ).write_parquet(path)
    cfg = _config(
        tmp_path,
        {"e": {"path": str(path), "timestamp": "ts"}},
        [
            {"name": "n", "source": "e", "agg": "count", "default": 0},
            {"name": "s7", "source": "e", "agg": "sum", "column": "x", "window": "7d"},
            {"name": "last", "source": "e", "agg": "last", "column": "x"},
        ],
    )
    spine = pl.DataFrame(
        {"user_id": [3, 1, 3, 2], "at": [T0 + 2 * H] * 4},
        schema={"user_id": pl.Int64, "at": TS},
    )
    out = compute_features(cfg, spine, entity_keys=["user_id"], timestamp="at")
    assert out["n"].to_list() == [0, 2, 0, 0]
    assert out["s7"].to_list() == [None, 4.0, None, None]
    assert out["last"].to_list() == [None, 3.0, None, None]
    with_nulls = spine.with_columns(pl.Series("user_id", [None, 1, None, 2], pl.Int64))
    with pytest.raises(InputError, match=r"spine column 'user_id' is null in 2 of 4 rows"):
        compute_features(cfg, with_nulls, entity_keys=["user_id"], timestamp="at")
    empty = compute_features(cfg, spine.clear(), entity_keys=["user_id"], timestamp="at")
    assert empty.columns == ["user_id", "at", "n", "s7", "last"]
    assert empty.height == 0


@pytest.mark.parametrize("dtype", [pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.Int8])
def test_run_cumsums_bit_identical_to_per_entity_cum_sum(dtype: pl.DataType) -> None:
    """The vectorised per-entity running sum equals Polars' cum_sum().over(entity) bit for
    bit: short runs (numpy rank steps), runs longer than _SCAN_STEPS, one-row runs."""
    import numpy as np

    from mlpipe_cli.features import engine

    rng = np.random.default_rng(3)
    lengths = [1, 2, 3, engine._SCAN_STEPS, engine._SCAN_STEPS + 1, 300, 5, 1, 70, 2]
    entity = np.repeat(np.arange(len(lengths)), lengths)
    raw = (
        rng.normal(0, 1e6, entity.size)
        if dtype.is_float()
        else rng.integers(-100, 100, entity.size)
    )
    stage = pl.DataFrame({"e": entity, "v": pl.Series(raw).cast(dtype)}).with_columns(
        (pl.col("e") != pl.col("e").shift()).fill_null(True).alias("__start"),
        pl.col("e").alias(engine._GID),
    )
    got = engine._run_cumsums(stage, ["v"]).get_column("v")
    want = stage.select(pl.col("v").cum_sum().over("e")).get_column("v")
    assert got.dtype == want.dtype
    assert got.equals(want)
    assert (got.to_frame().hash_rows() == want.to_frame().hash_rows()).all()
