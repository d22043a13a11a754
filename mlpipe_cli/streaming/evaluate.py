"""Feature values at a request time ``t`` from an entity's streamed state (pure Python).

The same rules as the batch engine (docs/training-set.md): rows visible when ``e < t``
(``e <= t`` inclusive), windows ``[t - w, t)``, ttl from the newest visible event, defaults
for no history, ties by (event time, arrival order). A windowed value is computed at ``t``
from the raw events, so a 7-day count shrinks as time passes with no new event.

Exactness: the raw events of an entity reach back to its fold horizon ``H``; older ones
live only in the running aggregates. So a lifetime, lag, last or time-since value is exact
for any ``t >= H`` and a windowed one for ``t >= H + w``; earlier request times raise
:class:`RequestTimeTooEarly` instead of returning an approximation. ``H`` trails the
entity's newest event by the longest window plus ``max_lateness``, so any ``t`` from the
newest event minus ``max_lateness`` on is answerable.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any, NamedTuple

from mlpipe_cli.config.features import UNIT_SECONDS
from mlpipe_cli.errors import UsageError
from mlpipe_cli.streaming.plan import US, to_us
from mlpipe_cli.streaming.state import decode_value, encode_value

if TYPE_CHECKING:
    from mlpipe_cli.streaming.plan import StreamPlan
    from mlpipe_cli.streaming.state import EntityState


class RequestTimeTooEarly(UsageError):
    """The request time is before the range the streamed state answers exactly."""


def exact_from_us(plan: StreamPlan, state: EntityState, default_horizon_us: int) -> int:
    """The earliest request time (us) at which every feature of ``plan`` is exact."""
    horizon = state.horizon_us if state.horizon_us is not None else default_horizon_us
    return horizon + plan.window_us


class _Feature(NamedTuple):
    """One feature with everything its evaluation needs precomputed from the plan (the
    config objects' properties parse durations on every access)."""

    name: str
    kind: str
    agg: str | None
    inclusive: bool
    column: str | None
    column_index: int | None  # 1-based column index in the plan (agg hash fields), None: no column
    is_int: bool
    window_us: int | None
    ticks: float  # microseconds per unit
    default: Any
    as_int: bool  # count / count_distinct: an int


class _Compiled(NamedTuple):
    features: tuple[_Feature, ...]
    ttl_us: int | None


_COMPILED: dict[int, tuple[StreamPlan, _Compiled]] = {}


def _compiled(plan: StreamPlan) -> _Compiled:
    """The plan's features precomputed once (keyed by the plan object; plans are few)."""
    hit = _COMPILED.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    index = {c: i for i, c in enumerate(plan.columns, start=1)}
    features = []
    for feature in plan.features:
        column = feature.source_column
        i = index.get(column) if column else None
        window = feature.window_delta
        features.append(_Feature(
            name=feature.name, kind=feature.kind, agg=feature.agg,
            inclusive=feature.inclusive, column=column, column_index=i,
            is_int=plan.int_columns[i - 1] if i else False,
            window_us=to_us(window) if window is not None else None,
            ticks=float(UNIT_SECONDS[feature.unit] * US), default=feature.default,
            as_int=feature.kind == "aggregate" and feature.agg in ("count", "count_distinct"),
        ))  # fmt: skip
    ttl_us = to_us(plan.source.ttl) if plan.source.ttl is not None else None
    compiled = _Compiled(tuple(features), ttl_us)
    if len(_COMPILED) > 256:  # a process building plans over and over (tests): stay bounded
        _COMPILED.clear()
    _COMPILED[id(plan)] = (plan, compiled)
    return compiled


def features_at(
    plan: StreamPlan, state: EntityState, t_us: int, *, default_horizon_us: int
) -> dict[str, Any]:
    """Every feature of the plan's source at time ``t_us`` (epoch microseconds).

    One pass: the visible prefix of the (time-sorted) raw events is found once per
    inclusiveness by bisection, a window's start by bisection within it, and each column's
    present values of a slice are gathered once and shared by the features reading them."""
    horizon = state.horizon_us if state.horizon_us is not None else default_horizon_us
    earliest = horizon + plan.window_us
    if t_us < earliest:
        raise RequestTimeTooEarly(
            f"request time {t_us} us is before {earliest} us, the earliest time the streamed "
            f"state of source {plan.source_name!r} answers exactly (its newest event minus "
            "max_lateness)",
            hint="ask for a later time, or use training-set for past times",
        )
    compiled = _compiled(plan)
    ttl_us = compiled.ttl_us
    agg = state.agg
    raw = state.raw
    folded = int(agg.get("n", "0"))
    times = [r[0] for r in raw]
    cut_exclusive = bisect.bisect_left(times, t_us)
    cut_inclusive = bisect.bisect_right(times, t_us)
    slices = _Slices(raw, times)
    out: dict[str, Any] = {}
    for feature in compiled.features:
        cut = cut_inclusive if feature.inclusive else cut_exclusive
        total = folded + cut
        newest = raw[cut - 1][0] if cut else (int(agg["e1"]) if folded else None)
        stale = total == 0 or (ttl_us is not None and newest is not None and t_us - newest > ttl_us)
        value = None if stale else _value(feature, state, slices, cut, folded, newest, t_us)
        if feature.as_int:
            value = None if value is None else int(value)
        out[feature.name] = feature.default if value is None else value
    return out


class _Slices:
    """Per call: the present (non-null) values of a column over raw[lo:hi], gathered once."""

    __slots__ = ("cache", "raw", "times")

    def __init__(self, raw: list[tuple[int, str, dict[str, Any]]], times: list[int]) -> None:
        self.raw = raw
        self.times = times
        self.cache: dict[tuple[str, int, int], list[Any]] = {}

    def present(self, column: str, lo: int, hi: int) -> list[Any]:
        key = (column, lo, hi)
        hit = self.cache.get(key)
        if hit is None:
            values = [r[2].get(column) for r in self.raw[lo:hi]]
            hit = self.cache[key] = [v for v in values if v is not None]
        return hit


def _value(
    feature: _Feature,
    state: EntityState,
    slices: _Slices,
    cut: int,
    folded: int,
    newest: int | None,
    t_us: int,
) -> Any:
    agg = state.agg
    ticks = feature.ticks
    kind = feature.kind
    if kind == "time_since_last":
        return (t_us - newest) / ticks  # type: ignore[operator]
    column = feature.column
    i = feature.column_index
    is_int = feature.is_int
    raw = slices.raw
    if kind == "lag":
        assert column is not None  # a lag names its column
        if cut:
            return raw[cut - 1][2].get(column)
        return decode_value(agg.get(f"G{i}"), is_int)
    if feature.window_us is not None:
        # rows with start <= e among the visible ones: times are sorted, so a slice
        lo = bisect.bisect_left(slices.times, t_us - feature.window_us, 0, cut)
        return _windowed_slice(feature, slices, lo, cut)
    if kind == "mean_interval":
        total = folded + cut
        if total < 2:
            return None
        oldest = int(agg["e0"]) if folded else raw[0][0]
        return (newest - oldest) / ((total - 1) * ticks)  # type: ignore[operator]
    name = feature.agg
    if name == "count" and column is None:
        return folded + cut
    assert column is not None  # every aggregate but count(*) names its column
    present = slices.present(column, 0, cut)
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


def _windowed_slice(feature: _Feature, slices: _Slices, lo: int, hi: int) -> Any:
    if feature.kind == "mean_interval":
        if hi - lo < 2:
            return None
        raw = slices.raw
        return (raw[hi - 1][0] - raw[lo][0]) / ((hi - lo - 1) * feature.ticks)
    name = feature.agg
    column = feature.column
    if name == "count" and column is None:
        return hi - lo
    assert column is not None  # every aggregate but count(*) names its column
    return _reduce(name, slices.present(column, lo, hi))


def _reduce(name: str | None, present: list[Any]) -> Any:
    """A windowed aggregate over the window's present values (exact: fsum)."""
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
