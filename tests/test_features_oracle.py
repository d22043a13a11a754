"""The point-in-time engine against a brute-force oracle (plain Python loops over raw rows).

The oracle below is the executable statement of the rules in docs/training-set.md; the
hypothesis tests generate sources and spines with ties, duplicates, entities without
history, rows exactly on window/ttl boundaries, created-time cutoffs and type-2 validity,
and require the engine to agree with it on every row and feature.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.base import parse_duration
from mlpipe_cli.config.features import UNIT_SECONDS
from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.features import compute_features

BASE = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


# -- the oracle -------------------------------------------------------------------------


def _key(row: dict[str, Any], keys: list[str]) -> tuple:
    return tuple(row[k] for k in keys)


def oracle(
    config: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    spine: list[dict[str, Any]],
    *,
    keys: list[str],
    timestamp: str,
) -> list[dict[str, Any]]:
    """Every feature for every spine row, by looping over every source row."""
    # index each table by each feature's key columns once (a plain dict of lists)
    by_entity: dict[tuple[str, tuple[str, ...]], dict[tuple, list[dict[str, Any]]]] = {}
    for feature in config["features"]:
        name, src_keys = feature["source"], tuple(_feature_keys(config, feature, keys))
        if (name, src_keys) in by_entity:
            continue
        index: dict[tuple, list[dict[str, Any]]] = {}
        for i, r in enumerate(tables[name]):
            if None not in _key(r, list(src_keys)):
                index.setdefault(_key(r, list(src_keys)), []).append(dict(r, _idx=i))
        by_entity[(name, src_keys)] = index
    out = []
    for srow in spine:
        t = srow[timestamp]
        result = dict(srow)
        for feature in config["features"]:
            index = by_entity[(feature["source"], tuple(_feature_keys(config, feature, keys)))]
            rows = index.get(_key(srow, _spine_columns(config, feature, keys)), [])
            result[feature["name"]] = _oracle_value(config, rows, feature, t)
        out.append(result)
    return out


def _feature_keys(config: dict[str, Any], feature: dict[str, Any], keys: list[str]) -> list[str]:
    """The source columns identifying a feature's entity."""
    source = config["sources"][feature["source"]]
    pipeline = config.get("entity_keys") or keys
    return feature.get("entity_keys") or source.get("entity_keys") or pipeline


def _spine_columns(config: dict[str, Any], feature: dict[str, Any], keys: list[str]) -> list[str]:
    """The spine columns a feature's source keys are read from: the same names, or the
    feature's / source's `join` (spine column -> key), or where `keys` (the spine's entity
    keys) put the pipeline's keys."""
    source = config["sources"][feature["source"]]
    pipeline = config.get("entity_keys") or keys
    join = feature["join"] if feature.get("join") is not None else (source.get("join") or {})
    onto = {key: spine for spine, key in join.items()}
    positional = dict(zip(pipeline, keys, strict=True))
    return [onto.get(k) or positional.get(k, k) for k in _feature_keys(config, feature, keys)]


def _oracle_value(config, rows, feature, t):  # type: ignore[no-untyped-def]
    """One feature for one spine row at time t, from the entity's raw rows."""
    source = config["sources"][feature["source"]]
    default = feature.get("default")
    kind = feature.get("kind", "aggregate")
    column = feature.get("column") or (feature["name"] if kind == "attribute" else None)
    ts, created = source.get("timestamp"), source.get("created_timestamp")
    vfrom, vto = source.get("valid_from"), source.get("valid_to")
    incl = feature.get("inclusive", False)

    def before(x: datetime | None) -> bool:
        if x is None:  # only a created time can be null, with `null_created: never`
            assert source.get("null_created") == "never"
            return False
        return x <= t if incl else x < t

    if ts is None and vfrom is None:  # plain dimension table
        value = rows[0][column] if rows else None
        return default if value is None else value
    if vfrom is not None:
        vis = [r for r in rows if r[vfrom] <= t and (created is None or before(r[created]))]
        etime = vfrom
    else:
        vis = [r for r in rows if before(r[ts]) and (created is None or before(r[created]))]
        etime = ts
    if not vis:
        return default

    def order(r):  # type: ignore[no-untyped-def]
        return (r[etime], r[created] if created else 0, r["_idx"])

    newest = max(r[etime] for r in vis)
    ttl = feature.get("ttl") or source.get("ttl")
    if ttl is not None and vfrom is None and t - newest > parse_duration(ttl):
        return default
    unit = timedelta(seconds=UNIT_SECONDS[feature.get("unit", "d")])
    window = feature.get("window", "lifetime")
    ranked = sorted(vis, key=order)  # oldest first
    if kind == "lag" and feature.get("offset", 1) > 1:
        offset = feature["offset"]
        value = ranked[-offset][column] if len(ranked) >= offset else None
        return default if value is None else value
    if kind in ("lag", "attribute"):
        best = ranked[-1]
        value = best[column]
        if vto is not None and best[vto] is not None and best[vto] <= t:
            value = None
        return default if value is None else value
    if kind == "time_since_last":
        return (t - newest) / unit
    if window == "lifetime":
        win = vis
    elif window.endswith(("events", "event")):
        win = ranked[-int(window.split()[0]) :]  # the last N visible rows
    else:
        win = [r for r in vis if r[etime] >= t - parse_duration(window)]
    value: Any
    if kind == "mean_interval":
        times = sorted(r[etime] for r in win)
        value = (times[-1] - times[0]) / unit / (len(times) - 1) if len(times) >= 2 else None
        return default if value is None else value
    agg = feature["agg"]
    if agg == "count" and column is None:
        return len(win)
    xs = [r[column] for r in win if r[column] is not None]
    if agg == "count":
        value = len(xs)
    elif agg == "sum":
        value = sum(xs) if xs else 0
    elif agg == "mean":
        value = statistics.fmean(xs) if xs else None
    elif agg == "min":
        value = min(xs) if xs else None
    elif agg == "max":
        value = max(xs) if xs else None
    elif agg == "std":
        value = statistics.stdev(xs) if len(xs) >= 2 else None
    elif agg == "count_distinct":
        value = len(set(xs))
    elif agg == "last":
        nonnull = [r for r in win if r[column] is not None]
        value = max(nonnull, key=order)[column] if nonnull else None
    else:
        raise AssertionError(agg)
    return default if value is None else value


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-7)
    return a == b


def assert_matches_oracle(
    out: pl.DataFrame, expected: list[dict[str, Any]], names: list[str]
) -> None:
    assert out.height == len(expected)
    got = out.to_dicts()
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        for name in names:
            assert same(g[name], e[name]), (
                f"row {i} feature {name}: engine {g[name]!r} != oracle {e[name]!r} ({e})"
            )
        for col in e:
            if col not in names:
                assert g[col] == e[col], f"row {i} spine column {col} changed"


# -- helpers to run the engine on python rows --------------------------------------------


def write_table(path: Path, rows: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> Path:
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(path)
    return path


def run_engine(config: dict[str, Any], spine: list[dict[str, Any]], spine_schema, **kw):  # type: ignore[no-untyped-def]
    model = PipelineConfig.model_validate(config)
    frame = pl.DataFrame(spine, schema=spine_schema, orient="row")
    return compute_features(model, frame, **kw)


TS = pl.Datetime("us", "UTC")

EVENT_FEATURES: list[dict[str, Any]] = [
    {"name": "cnt_life", "agg": "count"},
    {"name": "cnt_3h", "agg": "count", "window": "3h", "default": 0},
    {"name": "cntx_5h", "agg": "count", "column": "x", "window": "5h"},
    {"name": "sum_life", "agg": "sum", "column": "x", "default": 0},
    {"name": "sum_3h", "agg": "sum", "column": "x", "window": "3h"},
    {"name": "mean_life", "agg": "mean", "column": "x"},
    {"name": "mean_5h", "agg": "mean", "column": "x", "window": "5h", "default": -1.0},
    {"name": "min_life", "agg": "min", "column": "x"},
    {"name": "min_3h", "agg": "min", "column": "x", "window": "3h"},
    {"name": "max_life", "agg": "max", "column": "x"},
    {"name": "max_5h", "agg": "max", "column": "x", "window": "5h"},
    {"name": "std_life", "agg": "std", "column": "x"},
    {"name": "std_5h", "agg": "std", "column": "x", "window": "5h"},
    {"name": "cd_life", "agg": "count_distinct", "column": "p"},
    {"name": "cd_4h", "agg": "count_distinct", "column": "p", "window": "4h"},
    {"name": "last_x", "agg": "last", "column": "x"},
    {"name": "last_p_3h", "agg": "last", "column": "p", "window": "3h", "default": -7},
    {"name": "lag_x", "kind": "lag", "column": "x"},
    {"name": "tsl_h", "kind": "time_since_last", "unit": "h", "default": 999},
    {"name": "mi_life", "kind": "mean_interval", "unit": "h", "default": 999},
    {"name": "mi_6h", "kind": "mean_interval", "unit": "m", "window": "6h"},
    {"name": "cnt_3h_incl", "agg": "count", "window": "3h", "inclusive": True},
    {"name": "sum_life_incl", "agg": "sum", "column": "x", "inclusive": True},
    {"name": "last_x_incl", "agg": "last", "column": "x", "inclusive": True},
    {"name": "tsl_incl", "kind": "time_since_last", "unit": "h", "inclusive": True},
    {"name": "std_4h_incl", "agg": "std", "column": "x", "window": "4h", "inclusive": True},
]

X_VALUES = [None, 1.5, 2.0, -3.25, 10.0, 100.5, 2.0]


def _ts(hours: int, us: int = 0) -> datetime:
    return BASE + hours * HOUR + timedelta(microseconds=us)


hours = st.integers(min_value=0, max_value=16)
entities = st.one_of(st.integers(min_value=1, max_value=4), st.just(None))


@st.composite
def scenario(draw):  # type: ignore[no-untyped-def]
    created = draw(st.booleans())
    ttl = draw(st.sampled_from([None, "2h", "5h"]))
    n_events = draw(st.integers(0, 30))
    events = []
    for _ in range(n_events):
        e = _ts(draw(hours), draw(st.sampled_from([0, 0, 0, 1, -1])))
        row = {
            "user_id": draw(entities),
            "ts": e,
            "x": draw(st.sampled_from(X_VALUES)),
            "p": draw(st.integers(1, 4)),
        }
        if created:
            row["created"] = e + draw(st.sampled_from([0, 0, 1, 3, 8, -1])) * HOUR
        events.append(row)
    # type-2 dimension: per entity a chain of versions, sometimes with gaps / open end
    versions = []
    for uid in range(1, 5):
        start = draw(st.integers(0, 8))
        for _ in range(draw(st.integers(0, 3))):
            length = draw(st.integers(1, 6))
            end = None if draw(st.integers(0, 4)) == 0 else start + length
            versions.append(
                {
                    "user_id": uid,
                    "plan": draw(st.sampled_from(["free", "pro", None])),
                    "valid_from": _ts(start),
                    "valid_to": None if end is None else _ts(end),
                    "loaded": _ts(start + draw(st.sampled_from([0, 0, 2, -1]))),
                }
            )
            start = (end if end is not None else start + length) + draw(st.integers(0, 2))
    dim_created = draw(st.booleans())
    plain = [
        {"user_id": uid, "country": draw(st.sampled_from(["DE", "US", None]))} for uid in (1, 2, 3)
    ]
    spine = [
        {
            # (null keys only in the sources: a null spine key is refused, exit 2)
            "user_id": draw(st.integers(1, 5)),
            "label_ts": _ts(draw(hours), draw(st.sampled_from([0, 0, 1, -1]))),
            "label": draw(st.integers(0, 1)),
        }
        for _ in range(draw(st.integers(1, 25)))
    ]
    if spine and draw(st.booleans()):
        spine.append(dict(spine[0]))  # an exact duplicate row
    return created, ttl, events, versions, dim_created, plain, spine


def build(tmp: Path, created, ttl, events, versions, dim_created, plain):  # type: ignore[no-untyped-def]
    ev_schema = {"user_id": pl.Int64, "ts": TS, "x": pl.Float64, "p": pl.Int64}
    if created:
        ev_schema["created"] = TS
    write_table(tmp / "ev.parquet", events, ev_schema)
    write_table(
        tmp / "t2.parquet",
        versions,
        {"user_id": pl.Int64, "plan": pl.String, "valid_from": TS, "valid_to": TS, "loaded": TS},
    )
    write_table(tmp / "plain.parquet", plain, {"user_id": pl.Int64, "country": pl.String})
    ev_source: dict[str, Any] = {"path": str(tmp / "ev.parquet"), "timestamp": "ts"}
    if created:
        ev_source["created_timestamp"] = "created"
    if ttl:
        ev_source["ttl"] = ttl
    t2_source: dict[str, Any] = {
        "path": str(tmp / "t2.parquet"),
        "valid_from": "valid_from",
        "valid_to": "valid_to",
    }
    if dim_created:
        t2_source["created_timestamp"] = "loaded"
    features = [dict(f, source="ev") for f in EVENT_FEATURES] + [
        {"name": "plan", "source": "t2", "kind": "attribute", "default": "none"},
        {
            "name": "plan_incl",
            "source": "t2",
            "kind": "attribute",
            "column": "plan",
            "inclusive": True,
        },
        {"name": "country", "source": "plain", "kind": "attribute"},
        {"name": "plan_asof", "source": "t2ts", "kind": "attribute", "column": "plan"},
    ]
    config = {
        "pipeline": "t",
        "entity_keys": ["user_id"],
        "sources": {
            "ev": ev_source,
            "t2": t2_source,
            "plain": {"path": str(tmp / "plain.parquet")},
            # the same versions read as a plain timestamped table: latest loaded row as of t
            "t2ts": {"path": str(tmp / "t2.parquet"), "timestamp": "loaded"},
        },
        "features": features,
    }
    tables = {"ev": events, "t2": versions, "plain": plain, "t2ts": versions}
    return config, tables


SPINE_SCHEMA = {"user_id": pl.Int64, "label_ts": TS, "label": pl.Int64}


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_engine_equals_oracle(case) -> None:  # type: ignore[no-untyped-def]
    created, ttl, events, versions, dim_created, plain, spine = case
    with tempfile.TemporaryDirectory() as tmp:
        config, tables = build(Path(tmp), created, ttl, events, versions, dim_created, plain)
        out = run_engine(config, spine, SPINE_SCHEMA, entity_keys=["user_id"], timestamp="label_ts")
        expected = oracle(config, tables, spine, keys=["user_id"], timestamp="label_ts")
        assert_matches_oracle(out, expected, [f["name"] for f in config["features"]])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(1, 10))
def test_appending_future_rows_changes_nothing(case, n_future) -> None:  # type: ignore[no-untyped-def]
    """Leakage: rows stamped after every spine row (and created later) change no value."""
    created, ttl, events, versions, dim_created, plain, spine = case
    latest = max(r["label_ts"] for r in spine)
    future = []
    for i in range(n_future):
        e = latest + timedelta(microseconds=1) + i * HOUR
        row = {"user_id": 1 + i % 5, "ts": e, "x": 1e6 + i, "p": 99}
        if created:
            row["created"] = e
        future.append(row)
    future_versions = [
        {"user_id": 1 + i % 4, "plan": "future", "valid_from": latest + timedelta(microseconds=1),
         "valid_to": None, "loaded": latest + timedelta(microseconds=1)}
        for i in range(n_future)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        config, _ = build(Path(tmp), created, ttl, events, versions, dim_created, plain)
        before = run_engine(
            config, spine, SPINE_SCHEMA, entity_keys=["user_id"], timestamp="label_ts"
        )
    with tempfile.TemporaryDirectory() as tmp:
        config, _ = build(
            Path(tmp), created, ttl, events + future, versions + future_versions, dim_created, plain
        )
        after = run_engine(
            config, spine, SPINE_SCHEMA, entity_keys=["user_id"], timestamp="label_ts"
        )
    assert before.equals(after)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_partitioned_engine_equals_oracle(case) -> None:  # type: ignore[no-untyped-def]
    """Large inputs are hashed into entity partitions; force that path on small data."""
    import mlpipe_cli.features.engine as engine

    created, ttl, events, versions, dim_created, plain, spine = case
    saved = engine.PARTITION_ROWS
    engine.PARTITION_ROWS = 7
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, tables = build(Path(tmp), created, ttl, events, versions, dim_created, plain)
            out = run_engine(
                config, spine, SPINE_SCHEMA, entity_keys=["user_id"], timestamp="label_ts"
            )
            expected = oracle(config, tables, spine, keys=["user_id"], timestamp="label_ts")
    finally:
        engine.PARTITION_ROWS = saved
    assert_matches_oracle(out, expected, [f["name"] for f in config["features"]])


# -- every key type: the engine must never depend on Polars' group output order -----------

KEY_KINDS = ["string", "categorical", "int", "composite"]


@st.composite
def key_mapping(draw, kind: str):  # type: ignore[no-untyped-def]
    """Distinct key values for entity ids 1..5: strings of random lengths (empty, non-ASCII),
    categoricals, ints, or a composite (string, int) key."""
    if kind == "int":
        values = draw(st.lists(st.integers(-(2**62), 2**62), min_size=5, max_size=5, unique=True))
        return {i + 1: (v,) for i, v in enumerate(values)}
    text = st.text(alphabet=st.sampled_from("aZ9_ éß東😀-"), min_size=0, max_size=7)
    if kind == "composite":
        pairs = draw(
            st.lists(st.tuples(text, st.integers(0, 2)), min_size=5, max_size=5, unique=True)
        )
        return {i + 1: p for i, p in enumerate(pairs)}
    values = draw(st.lists(text, min_size=5, max_size=5, unique=True))
    return {i + 1: (v,) for i, v in enumerate(values)}


def _rekey(rows: list[dict[str, Any]], mapping, names: list[str]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = []
    for r in rows:
        r = dict(r)
        uid = r.pop("user_id")
        values = (None,) * len(names) if uid is None else mapping[uid]
        out.append({**dict(zip(names, values, strict=True)), **r})
    return out


@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_equals_oracle_for_every_key_type(kind: str, data) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.1: string keys of different lengths crashed every windowed feature."""
    created, ttl, events, versions, dim_created, plain, spine = data.draw(scenario())
    mapping = data.draw(key_mapping(kind))
    names = ["region", "uid"] if kind == "composite" else ["entity"]
    dtypes: list[pl.DataType] = {
        "string": [pl.String()],
        "categorical": [pl.Categorical()],
        "int": [pl.Int64()],
        "composite": [pl.String(), pl.Int64()],
    }[kind]
    key_schema = dict(zip(names, dtypes, strict=True))
    with tempfile.TemporaryDirectory() as tmp:
        config, tables = build(Path(tmp), created, ttl, events, versions, dim_created, plain)
        tables = {name: _rekey(rows, mapping, names) for name, rows in tables.items()}
        # rewrite every source file with the new keys, keeping the other columns' dtypes
        for name, source in config["sources"].items():
            path = Path(source["path"])
            schema = {k: v for k, v in pl.read_parquet_schema(path).items() if k != "user_id"}
            if name == "t2ts":
                continue  # the same file as t2
            write_table(path, tables[name], {**key_schema, **schema})
        config["entity_keys"] = names
        spine_rows = _rekey(spine, mapping, names)
        spine_schema = {**key_schema, "label_ts": TS, "label": pl.Int64}
        out = run_engine(config, spine_rows, spine_schema, entity_keys=names, timestamp="label_ts")
        if kind == "categorical":
            out = out.with_columns(pl.col("entity").cast(pl.String))
        expected = oracle(config, tables, spine_rows, keys=names, timestamp="label_ts")
        assert_matches_oracle(out, expected, [f["name"] for f in config["features"]])


def test_string_keys_of_different_lengths_regression(tmp_path: Path) -> None:
    """The issue's minimal repro: ['AA', 'B'] came back from the rolling pass reordered."""
    day = datetime(2024, 1, 1, tzinfo=UTC)
    write_table(
        tmp_path / "ev.parquet",
        [{"k": "AA", "ts": day}, {"k": "B", "ts": day}],
        {"k": pl.String, "ts": TS},
    )
    config = {
        "pipeline": "repro",
        "entity_keys": ["k"],
        "sources": {"ev": {"path": str(tmp_path / "ev.parquet"), "timestamp": "ts"}},
        "features": [
            {"name": "n_7d", "source": "ev", "agg": "count", "window": "7d", "default": 0},
            {"name": "mi_7d", "source": "ev", "kind": "mean_interval", "window": "7d"},
        ],
    }
    spine = [{"k": "AA", "ts": day + timedelta(days=1)}, {"k": "B", "ts": day + timedelta(days=1)}]
    out = run_engine(config, spine, {"k": pl.String, "ts": TS}, entity_keys=["k"], timestamp="ts")
    assert out["k"].to_list() == ["AA", "B"]
    assert out["n_7d"].to_list() == [1, 1]


# -- several entities per spine row (issue 12.3) ------------------------------------------

ENTITY_KINDS = ["string", "categorical", "int"]
SPINE_DTYPE = {"string": pl.String(), "categorical": pl.Categorical(), "int": pl.Int64()}
# sources store some keys in another compatible dtype, which the engine must normalise
SOURCE_DTYPE = {"string": pl.Categorical(), "categorical": pl.String(), "int": pl.Int64()}

TRIP_FEATURES: list[dict[str, Any]] = [
    {"name": "t_cnt", "agg": "count", "default": 0},
    {"name": "t_cnt_3ev", "agg": "count", "window": "3 events", "default": 0},
    {"name": "t_cntx_3ev", "agg": "count", "column": "x", "window": "3 events"},
    {"name": "t_sum_2ev", "agg": "sum", "column": "x", "window": "2 events"},
    {"name": "t_mean_4ev", "agg": "mean", "column": "x2", "window": "4 events", "default": -1.0},
    {"name": "t_max_3ev", "agg": "max", "column": "x", "window": "3 events"},
    {"name": "t_min_1ev", "agg": "min", "column": "x2", "window": "1 event"},
    {"name": "t_std_3ev", "agg": "std", "column": "x", "window": "3 events"},
    {"name": "t_cd_3ev", "agg": "count_distinct", "column": "p", "window": "3 events"},
    {"name": "t_last_3ev", "agg": "last", "column": "x", "window": "3 events", "default": 0.5},
    {"name": "t_mi_3ev", "kind": "mean_interval", "unit": "h", "window": "3 events"},
    {"name": "t_lag1", "kind": "lag", "column": "x"},
    {"name": "t_lag2", "kind": "lag", "column": "x", "offset": 2},
    {"name": "t_lag3", "kind": "lag", "column": "p", "offset": 3, "default": -1},
    {"name": "t_sum_3h", "agg": "sum", "column": "x2", "window": "3h"},
    {"name": "t_last", "agg": "last", "column": "x2"},
    {"name": "t_cnt_2ev_incl", "agg": "count", "window": "2 events", "inclusive": True},
    {"name": "t_lag2_incl", "kind": "lag", "column": "p", "offset": 2, "inclusive": True},
    {"name": "t_cnt_ttl1h", "agg": "count", "ttl": "1h", "default": 0},
    {"name": "t_tsl_ttl5h", "kind": "time_since_last", "unit": "h", "ttl": "5h"},
    # the same trips, keyed by the driver instead of the rider (feature-level entity_keys)
    {"name": "t_drv_cnt", "agg": "count", "entity_keys": ["driver"], "default": 0},
    {"name": "t_drv_sum_2ev", "agg": "sum", "column": "x", "window": "2 events",
     "entity_keys": ["driver"]},
]  # fmt: skip
DRIVER_FEATURES: list[dict[str, Any]] = [
    {"name": "s_last", "agg": "last", "column": "y"},
    {"name": "s_last_ttl2h", "agg": "last", "column": "y", "ttl": "2h", "default": -9.0},
    {"name": "s_tsl_ttl8h", "kind": "time_since_last", "unit": "h", "ttl": "8h"},
    {"name": "s_cnt_2ev", "agg": "count", "window": "2 events", "default": 0},
    {"name": "s_shift", "kind": "attribute", "column": "y"},
]
ZONE_FEATURES: list[dict[str, Any]] = [  # one source read at the pickup and at the dropoff
    {"name": "z_pick_cnt", "agg": "count", "join": {"pickup": "zone"}, "default": 0},
    {"name": "z_drop_cnt", "agg": "count", "join": {"dropoff": "zone"}, "default": 0},
    {"name": "z_drop_last_2ev", "agg": "last", "column": "z", "window": "2 events",
     "join": {"dropoff": "zone"}},
    {"name": "z_pick_sum_4h", "agg": "sum", "column": "z", "window": "4h",
     "join": {"pickup": "zone"}},
]  # fmt: skip
PAIR_FEATURES: list[dict[str, Any]] = [  # a composite key (zone, driver), zone from the pickup
    {"name": "dz_lag", "kind": "lag", "column": "w"},
    {"name": "dz_cnt_3ev", "agg": "count", "window": "3 events", "default": 0},
]


def _one_key(draw, kind: str):  # type: ignore[no-untyped-def]
    mapping = draw(key_mapping(kind))
    return {i: v[0] for i, v in mapping.items()}


@st.composite
def multi_entity_scenario(draw):  # type: ignore[no-untyped-def]
    kinds = {e: draw(st.sampled_from(ENTITY_KINDS)) for e in ("rider", "driver", "zone")}
    maps = {e: _one_key(draw, kind) for e, kind in kinds.items()}
    created = draw(st.booleans())
    ids = st.one_of(st.integers(1, 4), st.just(None))

    def key(entity: str) -> Any:
        i = draw(ids)
        return None if i is None else maps[entity][i]

    def spine_key(entity: str) -> Any:  # never null: a null spine key is refused (exit 2)
        return maps[entity][draw(st.integers(1, 4))]

    def when() -> datetime:
        return _ts(draw(hours), draw(st.sampled_from([0, 0, 0, 1, -1])))

    trips = [
        {"rider": key("rider"), "driver": key("driver"), "ts": when(),
         "delay": draw(st.sampled_from([0, 0, 30, 90, 400, None])),
         "x": draw(st.sampled_from(X_VALUES)), "p": draw(st.integers(1, 4))}
        for _ in range(draw(st.integers(0, 30)))
    ]  # fmt: skip
    shifts = [
        {"driver": key("driver"), "ts": when(), "y": draw(st.sampled_from(X_VALUES))}
        for _ in range(draw(st.integers(0, 20)))
    ]
    zones = [
        {"zone": key("zone"), "ts": when(), "z": draw(st.sampled_from([None, 1, 2, 5, 7]))}
        for _ in range(draw(st.integers(0, 20)))
    ]
    few = st.integers(1, 2)  # composite keys match rarely otherwise
    pairs = [
        {"zone": maps["zone"][draw(few)], "driver": maps["driver"][draw(few)], "ts": when(),
         "w": draw(st.integers(0, 9))}
        for _ in range(draw(st.integers(0, 25)))
    ]  # fmt: skip
    spine = [
        {"rider": spine_key("rider"), "driver": spine_key("driver"), "pickup": spine_key("zone"),
         "dropoff": spine_key("zone"), "label_ts": when(), "label": draw(st.integers(0, 1))}
        for _ in range(draw(st.integers(1, 20)))
    ]  # fmt: skip
    return kinds, created, trips, shifts, zones, pairs, spine


def build_multi(tmp: Path, kinds, created, trips, shifts, zones, pairs):  # type: ignore[no-untyped-def]
    src = {e: SOURCE_DTYPE[k] for e, k in kinds.items()}
    write_table(
        tmp / "trips.parquet",
        trips,
        {
            "rider": src["rider"],
            "driver": src["driver"],
            "ts": TS,
            "delay": pl.Int64,
            "x": pl.Float64,
            "p": pl.Int64,
        },
    )
    write_table(
        tmp / "shifts.parquet", shifts, {"driver": src["driver"], "ts": TS, "y": pl.Float64}
    )
    write_table(tmp / "zones.parquet", zones, {"zone": src["zone"], "ts": TS, "z": pl.Int64})
    write_table(tmp / "pairs.parquet", pairs,
                {"zone": src["zone"], "driver": src["driver"], "ts": TS, "w": pl.Int64})  # fmt: skip
    # derived columns: a value column, and (when `created`) the instant the trip's row became
    # available, as its start plus a delay; a null delay means it never did
    trip_source: dict[str, Any] = {
        "path": str(tmp / "trips.parquet"),
        "timestamp": "ts",
        "derived": {"x2": "x * 2 + 1", "avail": "ts + delay * INTERVAL '1 minute'"},
    }
    if created:
        trip_source |= {"created_timestamp": "avail", "null_created": "never"}
    config = {
        "pipeline": "multi",
        "entity_keys": ["rider"],
        "sources": {
            "trips": trip_source,
            "shifts": {"path": str(tmp / "shifts.parquet"), "timestamp": "ts",
                       "entity_keys": ["driver"], "ttl": "4h"},
            "zones": {"path": str(tmp / "zones.parquet"), "timestamp": "ts", "entity_keys": ["zone"]},
            "pairs": {"path": str(tmp / "pairs.parquet"), "timestamp": "ts",
                      "entity_keys": ["zone", "driver"], "join": {"pickup": "zone"}},
        },
        "features": [dict(f, source="trips") for f in TRIP_FEATURES]
        + [dict(f, source="shifts") for f in DRIVER_FEATURES]
        + [dict(f, source="zones") for f in ZONE_FEATURES]
        + [dict(f, source="pairs") for f in PAIR_FEATURES],
    }  # fmt: skip
    # the oracle gets the derived values computed here, in plain Python
    trip_rows = [
        dict(
            r,
            x2=None if r["x"] is None else r["x"] * 2 + 1,
            avail=None if r["delay"] is None else r["ts"] + timedelta(minutes=r["delay"]),
        )
        for r in trips
    ]
    tables = {"trips": trip_rows, "shifts": shifts, "zones": zones, "pairs": pairs}
    return config, tables


def _multi_spine_schema(kinds: dict[str, str]) -> dict[str, pl.DataType]:
    return {
        "rider": SPINE_DTYPE[kinds["rider"]], "driver": SPINE_DTYPE[kinds["driver"]],
        "pickup": SPINE_DTYPE[kinds["zone"]], "dropoff": SPINE_DTYPE[kinds["zone"]],
        "label_ts": TS, "label": pl.Int64,
    }  # fmt: skip


def _run_multi(case, partition_rows: int | None = None) -> None:  # type: ignore[no-untyped-def]
    import mlpipe_cli.features.engine as engine

    kinds, created, trips, shifts, zones, pairs, spine = case
    saved = engine.PARTITION_ROWS
    if partition_rows is not None:
        engine.PARTITION_ROWS = partition_rows
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config, tables = build_multi(Path(tmp), kinds, created, trips, shifts, zones, pairs)
            result = run_engine(
                config, spine, _multi_spine_schema(kinds), timestamp="label_ts", stats=True
            )
    finally:
        engine.PARTITION_ROWS = saved
    out = result.frame
    expected = oracle(config, tables, spine, keys=["rider"], timestamp="label_ts")
    assert_matches_oracle(out, expected, [f["name"] for f in config["features"]])
    # match rates: spine rows whose entity has a visible source row, by brute force
    by_name = {f["name"]: f for f in config["features"]}
    for item in result.stats:
        feature = by_name[item.feature]
        source = config["sources"][feature["source"]]
        cols = _spine_columns(config, feature, ["rider"])
        src_keys = _feature_keys(config, feature, ["rider"])
        created_col = source.get("created_timestamp")
        incl = feature.get("inclusive", False)

        def visible(r: dict[str, Any], t: datetime, created_col=created_col, incl=incl) -> bool:  # type: ignore[no-untyped-def]
            times = [r["ts"]] + ([r[created_col]] if created_col else [])
            return all(x is not None and (x <= t if incl else x < t) for x in times)

        matched = sum(
            any(
                None not in _key(s, cols)
                and _key(r, src_keys) == _key(s, cols)
                and visible(r, s["label_ts"])
                for r in tables[feature["source"]]
            )
            for s in spine
        )
        assert (item.rows, item.matched) == (len(spine), matched), item
        assert item.keys == dict(zip(cols, src_keys, strict=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multi_entity_scenario())
def test_several_entities_per_spine_row_equal_oracle(case) -> None:  # type: ignore[no-untyped-def]
    """Issue 12.3: rider, driver, pickup and dropoff zone (one source read at two spine
    columns) and a composite (zone, driver) key in one run, every key kind, derived columns,
    event-count windows, lag offsets, per-feature ttl, against the brute-force oracle."""
    _run_multi(case)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multi_entity_scenario())
def test_several_entities_partitioned_equal_oracle(case) -> None:  # type: ignore[no-untyped-def]
    _run_multi(case, partition_rows=7)
