"""The one-pass evaluator and the struct member decoder equal the code they replaced.

``streaming.evaluate.features_at`` was rewritten for serving latency (features precompiled
per plan, windows found by bisection, column slices shared) and raw members of numbers
are decoded by one struct (``state.MemberDecoder``). The oracles here are the previous
implementations, kept verbatim: ``reference_features_at`` (and its helpers) is the
evaluator as of commit 0c2706b, ``unpack_values`` the general decoder. Equal means the
same ``repr`` (same types, same float bits, NaN included). The hypothesis parity with the
batch engine (test_streaming_parity.py) still checks the values themselves.

No Redis here: states are built the way the bootstrap builds them (``state.fold_rows``)
and read back through ``state.parse_state`` with ZRANGE's ordering.
"""

from __future__ import annotations

import bisect
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config import load_config
from mlpipe_cli.config.features import UNIT_SECONDS, FeatureConfig
from mlpipe_cli.streaming.evaluate import RequestTimeTooEarly, features_at
from mlpipe_cli.streaming.plan import US, StreamPlan, build_plan, to_us
from mlpipe_cli.streaming.state import (
    TIE_LEN,
    EntityState,
    MemberDecoder,
    decode_value,
    encode_value,
    fold_rows,
    pack_values,
    parse_state,
    unpack_values,
)

HOUR = 3_600_000_000
CHANNELS = ["web", "app", "Zürich-東京", ""]
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
    {"name": "last_flag", "agg": "last", "column": "flag"},
    {"name": "lag_channel", "kind": "lag", "column": "channel"},
    {"name": "lag_flag", "kind": "lag", "column": "flag"},
    {"name": "hours_since", "kind": "time_since_last", "unit": "h", "default": 9999},
    {"name": "gap_days", "kind": "mean_interval", "unit": "d"},
    {"name": "orders_7d", "agg": "count", "window": "7d", "default": 0},
    {"name": "revenue_7d", "agg": "sum", "column": "revenue", "window": "7d"},
    {"name": "units_7d", "agg": "sum", "column": "product_id", "window": "7d"},
    {"name": "mean_7d", "agg": "mean", "column": "revenue", "window": "7d"},
    {"name": "max_30d", "agg": "max", "column": "revenue", "window": "30d"},
    {"name": "min_30d", "agg": "min", "column": "product_id", "window": "30d"},
    {"name": "min_channel_30d", "agg": "min", "column": "channel", "window": "30d"},
    {"name": "std_30d", "agg": "std", "column": "revenue", "window": "30d"},
    {"name": "channels_30d", "agg": "count_distinct", "column": "channel", "window": "30d"},
    {"name": "last_30d", "agg": "last", "column": "channel", "window": "30d"},
    {"name": "gap_30d", "kind": "mean_interval", "unit": "h", "window": "30d"},
    {"name": "count_1h", "agg": "count", "column": "revenue", "window": "1h"},
    {"name": "orders_7d_incl", "agg": "count", "window": "7d", "inclusive": True},
    {"name": "value_incl", "agg": "sum", "column": "revenue", "inclusive": True},
    {"name": "last_incl", "agg": "last", "column": "channel", "inclusive": True},
]


def make_plan(tmp: Path, *, ttl: str | None, lateness: str) -> StreamPlan:
    source: dict[str, Any] = {
        "path": str(tmp / "orders.parquet"),
        "timestamp": "order_ts",
        "columns": {
            "user_id": {"dtype": "int64"},
            "order_ts": {"dtype": "datetime", "timezone": "UTC"},
            "revenue": {"dtype": "float64", "nullable": True},
            "product_id": {"dtype": "int64", "nullable": True},
            "channel": {"dtype": "string", "nullable": True},
            "flag": {"dtype": "bool", "nullable": True},
        },
        # no connection is made: a plan is built from the config alone
        "stream": {"key": "ev", "url": "redis://127.0.0.1:1/0", "max_lateness": lateness},
    }
    if ttl:
        source["ttl"] = ttl
    doc = {
        "pipeline": "fastread",
        "entity_keys": ["user_id"],
        "sources": {"orders": source},
        "features": [{"source": "orders", **f} for f in FEATURES],
    }
    path = tmp / f"fastread-{ttl}-{lateness}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return build_plan(load_config(path), "orders")


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str | None, str], StreamPlan]:
    tmp = tmp_path_factory.mktemp("fastread")
    return {(ttl, lateness): make_plan(tmp, ttl=ttl, lateness=lateness)
            for ttl in (None, "10d") for lateness in ("0s", "6h")}  # fmt: skip


def old_state(plan: StreamPlan, pairs: list[tuple[bytes, bytes]], agg: dict[bytes, bytes],
              sets: dict[int, set[str]]) -> EntityState:  # fmt: skip
    """parse_state as it was: every member through unpack_values."""
    text = {k.decode(): v.decode() for k, v in agg.items()}
    raw = [(int(float(score)), member[:TIE_LEN].decode(),
            unpack_values(member, plan.columns, plan.int_columns, TIE_LEN))
           for member, score in pairs]  # fmt: skip
    horizon = text.get("H")
    return EntityState(raw=raw, agg=text, sets=sets,
                       horizon_us=int(float(horizon)) if horizon is not None else None,
                       newest_us=int(float(text["nw"])) if "nw" in text else None)  # fmt: skip


NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1000, 1000, allow_nan=False).map(lambda x: round(x, 2)),
)
INTS = st.one_of(st.none(), st.integers(-(2**60), 2**60), st.integers(0, 50))


@st.composite
def entity_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One entity's rows in (event time, file order) order, as the bootstrap sees them."""
    hours = draw(st.lists(st.integers(0, 24 * 50), max_size=30))
    rows = []
    for n, hour in enumerate(sorted(hours)):
        rows.append({
            "__e": hour * HOUR + draw(st.sampled_from([0, 0, 1, 999_999])),
            "__row": n,
            "revenue": draw(NUMBERS),
            "product_id": draw(INTS),
            "channel": draw(st.one_of(st.none(), st.sampled_from(CHANNELS))),
            "flag": draw(st.one_of(st.none(), st.booleans())),
        })  # fmt: skip
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=entity_rows(), horizon_hours=st.integers(-24 * 40, 24 * 50),
       probes=st.lists(st.integers(-24 * 31, 24 * 60), min_size=1, max_size=8),
       config=st.sampled_from([(None, "0s"), (None, "6h"), ("10d", "0s"), ("10d", "6h")]),
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_one_pass_evaluator_and_struct_decoder_equal_the_previous_code(
    plans: dict[tuple[str | None, str], StreamPlan],
    rows: list[dict[str, Any]],
    horizon_hours: int,
    probes: list[int],
    config: tuple[str | None, str],
    seed: int,
) -> None:
    plan = plans[config]
    if rows:
        fields, raw, sets = fold_rows(plan, rows, horizon_hours * HOUR)
    else:  # an entity with no state at all (nothing in Redis)
        fields, raw, sets = {}, {}, {}
    # ZRANGE WITHSCORES: by score, ties by member bytes
    pairs = [(m, str(e).encode()) for m, e in sorted(raw.items(), key=lambda kv: (kv[1], kv[0]))]
    agg = {k.encode(): v.encode() for k, v in fields.items()}
    set_values = {i: set(values) for i, values in sets.items()}
    new = parse_state(plan, pairs, agg, set_values)
    old = old_state(plan, pairs, agg, set_values)
    assert repr(new) == repr(old)
    default_horizon = -24 * 30 * HOUR
    horizon = new.horizon_us if new.horizon_us is not None else default_horizon
    earliest = horizon + plan.window_us
    # the boundaries: an event's own time and just after, a window's start at an event
    # (t = e + w: e is in [t - w, t)) and just past it, the exact range's edge
    windows = sorted({to_us(f.window_delta) for f in plan.features if f.window_delta})
    times = [earliest, earliest - 1, *(earliest + p * HOUR for p in probes)]
    for e, _, _ in new.raw:
        times += [e, e + 1, *(e + w for w in windows), *(e + w + 1 for w in windows)]
    random.Random(seed).shuffle(times)
    for t_us in times:
        if t_us < earliest:
            with pytest.raises(RequestTimeTooEarly):
                features_at(plan, new, t_us, default_horizon_us=default_horizon)
            with pytest.raises(RequestTimeTooEarly):
                reference_features_at(plan, old, t_us, default_horizon_us=default_horizon)
            continue
        got = outcome(features_at, plan, new, t_us, default_horizon)
        want = outcome(reference_features_at, plan, old, t_us, default_horizon)
        assert got == want, t_us


def outcome(evaluate: Any, plan: StreamPlan, state: EntityState, t_us: int,
            default_horizon: int) -> str:  # fmt: skip
    """The values' repr (names in order, types, float bits), or the error raised: math.fsum
    of huge doubles overflows, and both evaluators must do so alike."""
    try:
        return repr(evaluate(plan, state, t_us, default_horizon_us=default_horizon))
    except (OverflowError, ValueError) as exc:
        return f"raises {type(exc).__name__}: {exc}"


VALUES = {
    "float": NUMBERS,
    "int": st.one_of(INTS, NUMBERS),  # the Lua script packs doubles: any may arrive
    "string": st.one_of(st.none(), st.text(max_size=12)),
    "bool": st.one_of(st.none(), st.booleans()),
}


@settings(max_examples=200, deadline=None)
@given(data=st.data(), kinds=st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=5))
def test_member_decoder_equals_unpack_values(data: st.DataObject, kinds: list[str]) -> None:
    columns = [f"c{n}_{kind}" for n, kind in enumerate(kinds)]
    int_columns = [kind == "int" for kind in kinds]
    decoder = MemberDecoder(columns, int_columns)
    for _ in range(5):
        values = [data.draw(VALUES[kind]) for kind in kinds]
        tie = data.draw(st.sampled_from(["s" + "1" * 25, "b" + "0" * 25]))
        member = tie.encode() + pack_values(values)
        got = decoder(member)
        want = (member[:TIE_LEN].decode(), unpack_values(member, columns, int_columns, TIE_LEN))
        assert repr(got) == repr(want)


def test_member_decoder_takes_the_struct_path_only_for_all_number_members() -> None:
    """A string of exactly 4 bytes after a number has the all-numbers length; its tags are
    not all ``n``, so the general decoder reads it (worked by hand)."""
    decoder = MemberDecoder(["a", "b"], [True, False])
    tie = "s" + "2" * 25
    numbers = tie.encode() + pack_values([7, 2.5])
    assert len(numbers) == decoder.fixed
    assert decoder(numbers) == (tie, {"a": 7, "b": 2.5})
    assert type(decoder(numbers)[1]["a"]) is int
    mixed = tie.encode() + pack_values(["abcd", 2.5])  # s + 4-byte length + 4 bytes = 9
    assert len(mixed) == decoder.fixed
    assert decoder(mixed) == (tie, {"a": "abcd", "b": 2.5})
    inf = tie.encode() + pack_values([float("inf"), -0.0])  # an integer column stays inf
    assert repr(decoder(inf)) == repr((tie, {"a": float("inf"), "b": -0.0}))


# -- the evaluator before the one-pass rewrite (verbatim, commit 0c2706b) -----------------


def reference_features_at(
    plan: StreamPlan, state: EntityState, t_us: int, *, default_horizon_us: int
) -> dict[str, Any]:
    horizon = state.horizon_us if state.horizon_us is not None else default_horizon_us
    earliest = horizon + plan.window_us
    if t_us < earliest:
        raise RequestTimeTooEarly(
            f"request time {t_us} us is before {earliest} us, the earliest time the streamed "
            f"state of source {plan.source_name!r} answers exactly (its newest event minus "
            "max_lateness)",
            hint="ask for a later time, or use training-set for past times",
        )
    agg = state.agg
    folded = int(agg.get("n", "0"))
    times = [r[0] for r in state.raw]
    cut = {False: bisect.bisect_left(times, t_us), True: bisect.bisect_right(times, t_us)}
    ttl_us = to_us(plan.source.ttl) if plan.source.ttl is not None else None
    index = {c: i for i, c in enumerate(plan.columns, start=1)}
    out: dict[str, Any] = {}
    for feature in plan.features:
        visible = state.raw[: cut[feature.inclusive]]
        total = folded + len(visible)
        newest = visible[-1][0] if visible else (int(agg["e1"]) if folded else None)
        stale = total == 0 or (ttl_us is not None and newest is not None and t_us - newest > ttl_us)
        value = None if stale else _value(plan, feature, state, visible, folded, newest,
                                          t_us, index)  # fmt: skip
        if feature.kind == "aggregate" and feature.agg in ("count", "count_distinct"):
            value = None if value is None else int(value)
        out[feature.name] = feature.default if value is None else value
    return out


def _value(  # noqa: C901  # verbatim
    plan: StreamPlan,
    feature: FeatureConfig,
    state: EntityState,
    visible: list[tuple[int, str, dict[str, Any]]],
    folded: int,
    newest: int | None,
    t_us: int,
    index: dict[str, int],
) -> Any:
    agg = state.agg
    ticks = float(UNIT_SECONDS[feature.unit] * US)
    if feature.kind == "time_since_last":
        return (t_us - newest) / ticks  # type: ignore[operator]
    column = feature.source_column
    i = index.get(column) if column else None
    is_int = plan.int_columns[i - 1] if i else False
    window = feature.window_delta
    if feature.kind == "lag":
        assert column is not None  # a lag names its column
        if visible:
            return visible[-1][2].get(column)
        return decode_value(agg.get(f"G{i}"), is_int)
    if window is not None:
        start = t_us - to_us(window)
        rows = [r for r in visible if r[0] >= start]
        return _windowed(feature, rows, column, ticks)
    if feature.kind == "mean_interval":
        total = folded + len(visible)
        if total < 2:
            return None
        oldest = int(agg["e0"]) if folded else visible[0][0]
        return (newest - oldest) / ((total - 1) * ticks)  # type: ignore[operator]
    name = feature.agg
    if name == "count" and column is None:
        return folded + len(visible)
    assert column is not None  # every aggregate but count(*) names its column
    values = [r[2].get(column) for r in visible]
    present = [v for v in values if v is not None]
    count = int(agg.get(f"N{i}", "0")) + len(present)
    if name == "count":
        return count
    if name == "sum":
        total_sum: Any = decode_value("n" + agg[f"S{i}"], is_int) if f"S{i}" in agg else 0
        for v in present:
            total_sum += v
        return total_sum
    if name == "mean":
        if count == 0:
            return None
        running = float(agg.get(f"S{i}", "0"))
        for v in present:
            running += float(v)
        return running / count
    if name in ("min", "max"):
        best = decode_value(agg.get(f"m{i}" if name == "min" else f"M{i}"), is_int)
        for v in present:
            if best is None or (_less(v, best) if name == "min" else _less(best, v)):
                best = v
        return best
    if name == "std":
        if count < 2:
            return None
        centre = float(agg[f"C{i}"]) if f"C{i}" in agg else float(present[0])
        s1, s2 = float(agg.get(f"P{i}", "0")), float(agg.get(f"Q{i}", "0"))
        for v in present:
            dx = float(v) - centre
            s1 += dx
            s2 += dx * dx
        var = (s2 - s1 * s1 / count) / (count - 1)
        return math.sqrt(max(var, 0.0))
    if name == "count_distinct":
        seen = set(state.sets.get(i, set()))  # type: ignore[arg-type]
        seen.update(encode_value(v) for v in present)
        return len(seen)
    if name == "last":
        if present:
            return present[-1]
        return decode_value(agg.get(f"L{i}"), is_int)
    raise AssertionError(f"unsupported aggregation {name!r}")


def _windowed(
    feature: FeatureConfig, rows: list[tuple[int, str, dict[str, Any]]], column: str | None,
    ticks: float,
) -> Any:  # fmt: skip
    if feature.kind == "mean_interval":
        if len(rows) < 2:
            return None
        return (rows[-1][0] - rows[0][0]) / ((len(rows) - 1) * ticks)
    name = feature.agg
    if name == "count" and column is None:
        return len(rows)
    assert column is not None  # every aggregate but count(*) names its column
    present: list[Any] = [r[2].get(column) for r in rows if r[2].get(column) is not None]
    if name == "count":
        return len(present)
    if name == "sum":
        return math.fsum(present) if any(isinstance(v, float) for v in present) else sum(present)
    if name == "mean":
        return math.fsum(float(v) for v in present) / len(present) if present else None
    if name == "min":
        return _extreme(present, lowest=True)
    if name == "max":
        return _extreme(present, lowest=False)
    if name == "std":
        if len(present) < 2:
            return None
        xs = [float(v) for v in present]
        mean = math.fsum(xs) / len(xs)
        return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    if name == "count_distinct":
        return len({encode_value(v) for v in present})
    if name == "last":
        return present[-1] if present else None
    raise AssertionError(f"unsupported aggregation {name!r}")


def _extreme(values: list[Any], *, lowest: bool) -> Any:
    best = None
    for v in values:
        if best is None or (_less(v, best) if lowest else _less(best, v)):
            best = v
    return best


def _less(a: Any, b: Any) -> bool:
    if isinstance(a, str):
        return a.encode() < b.encode()
    return a < b
