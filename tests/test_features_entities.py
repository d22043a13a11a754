"""Issue 12: keys by name per source, several entities in one run, match rates, key dtypes,
derived columns, event-count windows, lag offsets, null created times. Hand-worked numbers
and loud failures; the brute-force oracle tests are in test_features_oracle.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.errors import ConfigError, DataCheckFailed, InputError
from mlpipe_cli.features import (
    FeatureFrame,
    check_match_rates,
    compute_features,
    scan_source,
)
from mlpipe_cli.features.keys import KeyTypeMismatch, coerce_key_value, join_key_dtype

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)
TS = pl.Datetime("us", "UTC")


def _write(path: Path, rows: list[dict[str, Any]], schema: dict[str, Any]) -> str:
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)
    return str(path)


def _flights(tmp_path: Path) -> dict[str, str]:
    """Flights by tail number, hourly weather by airport, carriers: the issue's data shape."""
    paths = {}
    paths["flights"] = _write(
        tmp_path / "flights.parquet",
        [
            {"tailnum": "N1", "origin": "JFK", "carrier": "UA", "sched": T0, "delay": 10},
            {"tailnum": "N1", "origin": "JFK", "carrier": "UA", "sched": T0 + 2 * H, "delay": 50},
            {"tailnum": "N22", "origin": "LGA", "carrier": "AA", "sched": T0 + H, "delay": None},
            {"tailnum": "N333", "origin": "JFK", "carrier": "AA", "sched": T0 + 3 * H, "delay": 0},
        ],
        {"tailnum": pl.String, "origin": pl.String, "carrier": pl.String, "sched": TS,
         "delay": pl.Int64},
    )  # fmt: skip
    paths["weather"] = _write(
        tmp_path / "weather.parquet",
        [
            {"origin": "JFK", "hour": T0, "temp": 1.0},
            {"origin": "JFK", "hour": T0 + 2 * H, "temp": 3.0},
            {"origin": "LGA", "hour": T0 + H, "temp": -2.0},
            {"origin": "EWR", "hour": T0, "temp": 9.0},
        ],
        {"origin": pl.String, "hour": TS, "temp": pl.Float64},
    )
    paths["carriers"] = _write(
        tmp_path / "carriers.parquet",
        [{"carrier": "UA", "name": "United"}, {"carrier": "AA", "name": "American"}],
        {"carrier": pl.String, "name": pl.String},
    )
    return paths


def _config(
    paths: dict[str, str], features: list[dict[str, Any]], **sources: Any
) -> PipelineConfig:
    raw = {
        "pipeline": "flights",
        "entity_keys": ["tailnum"],
        "sources": {
            "flights": {"path": paths["flights"], "timestamp": "sched"},
            "weather": {"path": paths["weather"], "timestamp": "hour", "entity_keys": ["origin"]},
            "carriers": {"path": paths["carriers"], "entity_keys": ["carrier"]},
        },
        "features": features,
    }
    for name, extra in sources.items():
        raw["sources"][name] = {**raw["sources"][name], **extra}
    return PipelineConfig.model_validate(raw)


SPINE = pl.DataFrame(
    {
        "tailnum": ["N1", "N22", "N333", "N4444", "N1"],
        "dest": ["LGA", "JFK", "JFK", "EWR", "JFK"],
        "origin": ["JFK", "LGA", "JFK", "JFK", "JFK"],
        "carrier": ["UA", "AA", "AA", "ZZ", "UA"],
        "t": [T0 + 3 * H, T0 + 3 * H, T0 + 4 * H, T0 + 4 * H, T0 + 2 * H],
    },
    schema={"tailnum": pl.String, "dest": pl.String, "origin": pl.String, "carrier": pl.String,
            "t": TS},
)  # fmt: skip


def test_three_entities_in_one_run(tmp_path: Path) -> None:
    """Issue 12.3 regression: tail number, airport (at the origin and, mapped, at the
    destination) and carrier features in one run, hand-worked."""
    config = _config(
        _flights(tmp_path),
        [
            {"name": "n_flights", "source": "flights", "agg": "count", "default": 0},
            {"name": "temp_origin", "source": "weather", "agg": "last", "column": "temp"},
            {"name": "temp_dest", "source": "weather", "agg": "last", "column": "temp",
             "join": {"dest": "origin"}},
            {"name": "carrier_name", "source": "carriers", "kind": "attribute",
             "column": "name", "default": "?"},
        ],
    )  # fmt: skip
    result = compute_features(config, SPINE, timestamp="t", stats=True)
    assert isinstance(result, FeatureFrame)
    out = result.frame
    assert out.columns == [*SPINE.columns, "n_flights", "temp_origin", "temp_dest", "carrier_name"]
    assert out.select(SPINE.columns).equals(SPINE)
    assert out["n_flights"].to_list() == [2, 1, 1, 0, 1]
    assert out["temp_origin"].to_list() == [3.0, -2.0, 3.0, 3.0, 1.0]
    assert out["temp_dest"].to_list() == [-2.0, 3.0, 3.0, 9.0, 1.0]
    assert out["carrier_name"].to_list() == ["United", "American", "American", "?", "United"]
    stats = {s.feature: s for s in result.stats}
    assert stats["n_flights"].keys == {"tailnum": "tailnum"}
    assert (stats["n_flights"].matched, stats["n_flights"].rows) == (4, 5)
    assert stats["temp_dest"].keys == {"dest": "origin"}
    assert stats["temp_dest"].match_rate == 1.0
    assert stats["carrier_name"].matched == 4
    assert stats["carrier_name"].to_json()["match_rate"] == 0.8
    check_match_rates(result.stats)  # nothing below its threshold
    # the plain call still returns the frame alone, equal to the stats call's frame
    assert compute_features(config, SPINE, timestamp="t").equals(out)


def test_source_keyed_by_another_column_is_loud_not_null(tmp_path: Path) -> None:
    """Issue 12.2 regression: a source keyed by `origin` used to be joined by position onto a
    spine keyed by `tailnum`, giving exit 0 and an all-null column."""
    paths = _flights(tmp_path)
    config = _config(
        paths, [{"name": "temp", "source": "weather", "agg": "last", "column": "temp"}]
    )
    spine = SPINE.drop("origin")
    with pytest.raises(InputError) as caught:
        compute_features(config, spine, entity_keys=["tailnum"], timestamp="t")
    message = str(caught.value)
    assert (
        "feature 'temp' joins source 'weather' key 'origin' (String) on spine column 'origin'"
        in message
    )
    assert "join: {<spine column>: origin}" in message


def test_zero_matched_rows_fail_naming_feature_and_keys(tmp_path: Path) -> None:
    paths = _flights(tmp_path)
    config = _config(
        paths,
        [
            {"name": "n_flights", "source": "flights", "agg": "count", "default": 0},
            # a feature whose mapped column holds other entities (carriers, not airports)
            {"name": "temp_bad", "source": "weather", "agg": "last", "column": "temp",
             "join": {"carrier": "origin"}, "default": 0.0},
        ],
    )  # fmt: skip
    result = compute_features(config, SPINE, timestamp="t", stats=True)
    assert result.frame["temp_bad"].to_list() == [0.0] * 5  # all defaults: silent before
    with pytest.raises(DataCheckFailed) as caught:
        check_match_rates(result.stats)
    message = caught.value.message
    assert message.startswith("feature 'temp_bad' matched none of 5 spine rows")
    assert "keys spine.carrier -> weather.origin" in message
    assert "tried e.g. 'UA', 'AA', 'ZZ'" in message
    assert "weather has e.g. 'JFK', 'LGA', 'EWR'" in message
    assert caught.value.exit_code == 1


def test_min_match_rate_per_feature_and_per_source(tmp_path: Path) -> None:
    paths = _flights(tmp_path)
    features = [
        {"name": "n_flights", "source": "flights", "agg": "count"},
        {"name": "carrier_name", "source": "carriers", "kind": "attribute", "column": "name"},
    ]
    # 4 of 5 rows match either source: 0.8 passes 0.8 and fails 0.81
    ok = _config(paths, features, carriers={"min_match_rate": 0.8})
    check_match_rates(compute_features(ok, SPINE, timestamp="t", stats=True).stats)
    strict = _config(paths, features, carriers={"min_match_rate": 0.81})
    with pytest.raises(DataCheckFailed, match=r"'carrier_name' matched 4 of 5 spine rows \(80.0%\), below min_match_rate 0.81"):  # fmt: skip
        check_match_rates(compute_features(strict, SPINE, timestamp="t", stats=True).stats)
    # the feature's own threshold overrides its source's
    own = _config(paths, [dict(features[1], min_match_rate=0.5)], carriers={"min_match_rate": 0.9})
    stats = compute_features(own, SPINE, timestamp="t", stats=True).stats
    assert stats[0].min_match_rate == 0.5
    check_match_rates(stats)
    # an empty spine has no rate and fails nothing
    empty = compute_features(strict, SPINE.clear(), timestamp="t", stats=True)
    assert empty.stats[0].match_rate is None
    check_match_rates(empty.stats)


@pytest.mark.parametrize(
    ("spine_dtype", "source_dtype", "values"),
    [
        (pl.Int32, pl.Int64, [7, 8]),
        (pl.UInt64, pl.Int64, [7, 8]),
        (pl.UInt8, pl.Int16, [7, 8]),
        (pl.Categorical, pl.String, ["é7", "8"]),
        (pl.String, pl.Enum(["é7", "8", "x"]), ["é7", "8"]),
    ],
)
def test_compatible_key_dtypes_match(
    tmp_path: Path, spine_dtype: Any, source_dtype: Any, values: list[Any]
) -> None:
    path = _write(
        tmp_path / "ev.parquet", [{"k": values[0], "ts": T0}], {"k": source_dtype, "ts": TS}
    )
    config = PipelineConfig.model_validate(
        {"pipeline": "k", "entity_keys": ["k"], "sources": {"ev": {"path": path, "timestamp": "ts"}},
         "features": [{"name": "n", "source": "ev", "agg": "count", "default": 0}]}
    )  # fmt: skip
    spine = pl.DataFrame({"k": values, "t": [T0 + H] * 2}, schema={"k": spine_dtype, "t": TS})
    out = compute_features(config, spine, timestamp="t")
    assert out["n"].to_list() == [1, 0]
    assert out.schema["k"] == spine.schema["k"]  # the spine's own column is untouched


@pytest.mark.parametrize(
    ("spine_dtype", "source_dtype", "reason"),
    [
        (pl.Int64, pl.String, "an integer key never equals a string key"),
        (pl.String, pl.Int32, "an integer key never equals a string key"),
        (pl.Float64, pl.Float64, "floating-point keys are not compared"),
        (pl.Date, pl.Int64, "these types cannot be compared"),
    ],
)
def test_incompatible_key_dtypes_name_feature_column_and_both_dtypes(
    tmp_path: Path, spine_dtype: Any, source_dtype: Any, reason: str
) -> None:
    value = {pl.String: "1", pl.Int32: 1, pl.Int64: 1, pl.Float64: 1.0}[source_dtype]
    path = _write(tmp_path / "ev.parquet", [{"k": value, "ts": T0}], {"k": source_dtype, "ts": TS})
    config = PipelineConfig.model_validate(
        {"pipeline": "k", "entity_keys": ["k"], "sources": {"ev": {"path": path, "timestamp": "ts"}},
         "features": [{"name": "n", "source": "ev", "agg": "count"}]}
    )  # fmt: skip
    spine = pl.DataFrame({"k": [None], "t": [T0]}, schema={"k": spine_dtype, "t": TS})
    with pytest.raises(InputError) as caught:
        compute_features(config, spine, timestamp="t")
    assert str(caught.value).startswith(
        f"feature 'n': spine column 'k' is {pl.DataFrame(schema={'k': spine_dtype}).schema['k']} "
        f"but source 'ev' key 'k' is {pl.DataFrame(schema={'k': source_dtype}).schema['k']}: {reason}"
    )
    assert caught.value.exit_code == 2


def test_key_dtype_rule_and_online_coercion() -> None:
    assert join_key_dtype(pl.Int32(), pl.UInt32()) == pl.Int64()
    assert join_key_dtype(pl.UInt64(), pl.UInt64()) == pl.UInt64()
    assert join_key_dtype(pl.UInt64(), pl.Int8()) == pl.Int128()
    assert join_key_dtype(pl.Null(), pl.Categorical()) == pl.String()
    assert join_key_dtype(pl.Date(), pl.Date()) == pl.Date()
    with pytest.raises(KeyTypeMismatch):
        join_key_dtype(pl.Int64(), pl.String())
    # online: request values are text; an int key takes the decimal text of an int, a string
    # key the text of an int, and nothing is guessed
    assert coerce_key_value("123", "int", "user_id") == 123
    assert coerce_key_value("-5", "int", "user_id") == -5
    assert coerce_key_value(7.0, "int", "user_id") == 7
    assert coerce_key_value(123, "str", "code") == "123"
    assert coerce_key_value("007", "str", "code") == "007"
    for bad in ["1.5", "0x1f", "", " 12", True, 7.5]:
        with pytest.raises(ValueError, match="user_id must be an integer"):
            coerce_key_value(bad, "int", "user_id")
    with pytest.raises(ValueError, match="code must be a string"):
        coerce_key_value(1.5, "str", "code")


def test_training_set_entity_keys_name_the_pipeline_keys_in_the_spine(tmp_path: Path) -> None:
    """`entity_keys` of the spine (training_set.entity_keys) say where the pipeline's keys are;
    a source keyed by the pipeline's keys follows them, others join by their own names."""
    config = _config(
        _flights(tmp_path),
        [
            {"name": "n_flights", "source": "flights", "agg": "count", "default": 0},
            {"name": "carrier_name", "source": "carriers", "kind": "attribute", "column": "name"},
        ],
    )
    spine = SPINE.rename({"tailnum": "plane"})
    out = compute_features(config, spine, entity_keys=["plane"], timestamp="t")
    assert out["n_flights"].to_list() == [2, 1, 1, 0, 1]
    assert out["carrier_name"].to_list() == ["United", "American", "American", None, "United"]
    with pytest.raises(ConfigError, match="must name one column per pipeline entity key"):
        compute_features(config, spine, entity_keys=["plane", "dest"], timestamp="t")


def test_derived_columns_and_null_created_never(tmp_path: Path) -> None:
    """A derived actual-departure instant (scheduled + delay) as the created time: a flight
    is visible once it departed; a null delay (cancelled) is never visible."""
    paths = _flights(tmp_path)
    features = [
        {"name": "n_departed", "source": "flights", "agg": "count", "default": 0},
        {"name": "last_delay_h", "source": "flights", "agg": "last", "column": "delay_h"},
    ]
    derived = {
        "departed": "sched + delay * INTERVAL '1 minute'",
        "delay_h": "CAST(delay AS DOUBLE) / 60",
    }
    config = _config(paths, features, flights={"derived": derived, "created_timestamp": "departed",
                                                "null_created": "never"})  # fmt: skip
    spine = pl.DataFrame(
        {"tailnum": ["N1", "N1", "N1", "N22", "N333"],
         "t": [T0 + timedelta(minutes=10), T0 + timedelta(minutes=11),
               T0 + 3 * H, T0 + 9 * H, T0 + 3 * H + timedelta(seconds=1)]},
        schema={"tailnum": pl.String, "t": TS},
    )  # fmt: skip
    out = compute_features(config, spine, timestamp="t")
    # N1: departed T0+10m (exactly at t: not yet visible), then T0+2h50m; N22 never departed
    assert out["n_departed"].to_list() == [0, 1, 2, 0, 1]
    assert out["last_delay_h"].to_list() == [None, 10 / 60, 50 / 60, None, 0.0]
    # the same derived columns, read anywhere through scan_source
    scanned = scan_source(config.sources["flights"], "flights").collect()
    assert scanned["delay_h"].to_list() == [10 / 60, 50 / 60, None, 0.0]
    # without `null_created: never` a null created time stays an error (exit 1), with a hint
    strict = _config(paths, features, flights={"derived": derived, "created_timestamp": "departed"})
    with pytest.raises(DataCheckFailed, match="null_created: never"):
        compute_features(strict, spine, timestamp="t")


@pytest.mark.parametrize(
    ("derived", "message"),
    [
        ({"x": "delay +* 2"}, r"sources\.flights\.derived\.x: 'delay \+\* 2' is not a Polars SQL expression"),
        ({"x": "nope + 1"}, r"sources\.flights\.derived\.x: cannot compute 'nope \+ 1': unable to find column"),
        ({"a": "delay + 1", "b": "a * 2", "c": "zz"}, r"sources\.flights\.derived\.c: cannot compute 'zz'"),
    ],
)  # fmt: skip
def test_derived_column_errors_name_the_key_path(
    tmp_path: Path, derived: dict, message: str
) -> None:
    config = _config(_flights(tmp_path), [], flights={"derived": derived})
    with pytest.raises(ConfigError, match=message):
        scan_source(config.sources["flights"], "flights")


def test_event_count_windows_and_lag_offsets_hand_worked(tmp_path: Path) -> None:
    rows = [
        {"k": "a", "ts": T0 + i * H, "x": x, "c": T0 + i * H + lag}
        for i, (x, lag) in enumerate([(1.0, 0 * H), (2.0, 5 * H), (None, 0 * H), (4.0, 0 * H)])
    ]
    path = _write(
        tmp_path / "ev.parquet", rows, {"k": pl.String, "ts": TS, "x": pl.Float64, "c": TS}
    )
    features = [
        {"name": "sum_2ev", "source": "ev", "agg": "sum", "column": "x", "window": "2 events"},
        {"name": "n_3ev", "source": "ev", "agg": "count", "column": "x", "window": "3 events"},
        {"name": "lag2", "source": "ev", "kind": "lag", "column": "x", "offset": 2},
        {
            "name": "lag3",
            "source": "ev",
            "kind": "lag",
            "column": "x",
            "offset": 3,
            "default": -1.0,
        },
    ]
    spine = pl.DataFrame({"k": ["a"] * 3, "t": [T0 + 3 * H, T0 + 4 * H, T0 + 9 * H]},
                         schema={"k": pl.String, "t": TS})  # fmt: skip
    for created in (False, True):
        source = {"path": path, "timestamp": "ts"} | ({"created_timestamp": "c"} if created else {})
        config = PipelineConfig.model_validate(
            {"pipeline": "w", "entity_keys": ["k"], "sources": {"ev": source}, "features": features}
        )
        out = compute_features(config, spine, timestamp="t")
        if not created:
            # at 3h: rows x=1,2,None visible; at 4h: +4; at 9h: the same four
            assert out["sum_2ev"].to_list() == [2.0, 4.0, 4.0]
            assert out["n_3ev"].to_list() == [2, 2, 2]
            assert out["lag2"].to_list() == [2.0, None, None]
            assert out["lag3"].to_list() == [1.0, 2.0, 2.0]
        else:
            # x=2 (event 1h) is created at 6h: invisible at 3h and 4h
            assert out["sum_2ev"].to_list() == [1.0, 4.0, 4.0]
            assert out["n_3ev"].to_list() == [1, 2, 2]
            assert out["lag2"].to_list() == [1.0, None, None]
            assert out["lag3"].to_list() == [-1.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"features": [{"name": "f", "source": "w", "agg": "count", "join": {"dest": "airport"}}]},
         "feature 'f': its join maps spine column 'dest' onto 'airport', which is not a key of source 'w'"),
        ({"features": [{"name": "f", "source": "d", "kind": "attribute", "ttl": "1h"}]},
         "feature 'f': ttl needs source 'd' to have a `timestamp`"),
        ({"features": [{"name": "f", "source": "w", "agg": "count", "offset": 2}]},
         "`offset` only applies to kind lag"),
        ({"features": [{"name": "f", "source": "w", "agg": "count", "window": "0 events"}]},
         "an event window needs at least 1 event"),
        ({"features": [{"name": "f", "source": "w", "kind": "lag", "column": "x", "offset": 0}]},
         "offset"),
        ({"features": [{"name": "f", "source": "w", "agg": "count", "min_match_rate": 1.5}]},
         "min_match_rate"),
        ({"sources": {"w": {"path": "w.parquet", "timestamp": "t", "derived": {"x": " "}}}},
         "derived column 'x': name and expression must be set"),
        ({"sources": {"w": {"path": "w.parquet", "timestamp": "t", "null_created": "sometimes"}}},
         "null_created"),
    ],
)  # fmt: skip
def test_config_errors(patch: dict[str, Any], message: str) -> None:
    raw: dict[str, Any] = {
        "pipeline": "c",
        "entity_keys": ["k"],
        "sources": {
            "w": {"path": "w.parquet", "timestamp": "t", "entity_keys": ["origin"]},
            "d": {"path": "d.parquet"},
        },
        "features": [],
    }
    for section, value in patch.items():
        raw[section] = raw[section] | value if isinstance(value, dict) else value
    import yaml

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config_text(yaml.safe_dump(raw), source_name="c.yaml", base_dir=Path("."))


def test_new_fields_at_their_defaults_leave_config_dumps_unchanged() -> None:
    """Hashes of existing configs (training-set config_hash, materialize feature_hash) must
    not move because fields were added."""
    config = PipelineConfig.model_validate(
        {"pipeline": "h", "entity_keys": ["k"], "sources": {"s": {"path": "s.parquet", "timestamp": "t"}},
         "features": [{"name": "f", "source": "s", "agg": "count"}]}
    )  # fmt: skip
    assert set(config.features[0].model_dump(mode="json")) == {
        "name", "source", "kind", "agg", "column", "window", "unit", "default", "inclusive",
    }  # fmt: skip
    dumped = config.sources["s"].model_dump(mode="json")
    assert not {"join", "derived", "null_created", "min_match_rate"} & set(dumped)
    with_ttl = config.features[0].model_copy(update={"ttl": timedelta(hours=1)})
    assert with_ttl.model_dump(mode="json")["ttl"] == "1h"
