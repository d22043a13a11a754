"""A plain pure-Python oracle of every transformer's online path, written from the state.

The product has one online path: the function ``codegen.py`` generates from the fitted state
(``FittedTransform.transform_one``). This module is the independent reference it is tested
against: for each column, a closure written directly from the state document and the
documented semantics (docs/fit-transform.md), sharing no code with ``mlpipe_cli.transforms``
(only the exception type, ``InputError``, is imported). The generated function must give the
same result for every record, bit for bit and type for type, or raise the same exception
with the same message (tests/test_transform_online_fast.py); the batch path must agree with
both (tests/test_transform_conformance.py).

    oracle_function(state, tables) -> Callable[[Mapping], list]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from mlpipe_cli.errors import InputError

RecordFn = Callable[[Mapping[str, Any]], list[Any]]
NumFn = Callable[[float | None], float | None]

# -- values -------------------------------------------------------------------------------


def to_float(value: Any, column: str) -> float | None:
    """None is missing; numbers, bools and numeric strings are floats (NaN and ±inf kept:
    the column's policy decides)."""
    if value is None:
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, (bool, int)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"column {column!r}: expected a number, got {value!r}") from None


def to_category(value: Any) -> str | None:
    """A category as Polars ``cast(pl.String)`` spells it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else repr(value)
    return str(value)


# -- numeric steps ------------------------------------------------------------------------


def clip(x: float, lo: float | None, hi: float | None) -> float:
    if math.isnan(x):
        return x
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


def numeric_step(state: Mapping[str, Any]) -> NumFn:
    kind = state["type"]
    if kind == "fill_null":
        fill = float(state["value"])
        return lambda x: fill if x is None else x
    if kind == "standard":
        mean, scale = float(state["mean"]), float(state["scale"])
        return lambda x: None if x is None else (x - mean) / scale
    if kind == "robust":
        center, scale = float(state["center"]), float(state["scale"])
        return lambda x: None if x is None else (x - center) / scale
    if kind == "minmax":
        scale, offset = float(state["scale"]), float(state["min"])
        if state["clip"] is None:
            return lambda x: None if x is None else x * scale + offset
        lo, hi = (float(v) for v in state["clip"])
        return lambda x: None if x is None else clip(x * scale + offset, lo, hi)
    if kind == "clip":
        lo, hi = state["min"], state["max"]
        return lambda x: None if x is None else clip(x, lo, hi)
    if kind == "log1p":
        shift = float(state["shift"])

        def log1p(x: float | None) -> float | None:
            if x is None:
                return None
            arg = x + shift if shift else x
            if arg > -1:
                return math.log1p(arg)
            return arg if math.isnan(arg) else None  # below what training saw: missing

        return log1p
    raise AssertionError(f"the oracle has no numeric step {kind!r}")


# format-1 states have no policy: missing stayed missing, ±inf went through, nothing refused
LEGACY = {"null": "keep", "nan": "null", "inf": "keep", "inf_bounds": None}


def read_number(column: str, policy: Mapping[str, Any]) -> Callable[[Any], float | None]:
    """The raw value -> the chain's input, as the column's policy says."""
    nan, inf, bounds = policy["nan"], policy["inf"], policy.get("inf_bounds")

    def read(value: Any) -> float | None:
        x = to_float(value, column)
        if x is None or math.isfinite(x):
            return x
        if math.isnan(x):
            if nan == "error":
                raise InputError(
                    f"column {column!r}: NaN is refused (on_nan: error)",
                    hint="send null for a missing value",
                )
            return None
        if inf == "clip":
            return float(bounds[1]) if x > 0 else float(bounds[0])
        if inf == "error":
            raise InputError(
                f"column {column!r}: {x!r} is refused (on_inf: error)",
                hint="send a finite number; `on_inf: clip` maps ±inf to the training range",
            )
        return x

    return read


def refuse_missing(column: str, policy: Mapping[str, Any], value: Any) -> None:
    if policy["null"] == "fill":
        raise InputError(
            f"column {column!r}: {value!r} gives a missing value after fill_null (log1p of a "
            "value below the training range)",
            hint="put fill_null after log1p",
        )
    if policy["null"] == "error" and value is None:
        raise InputError(
            f"column {column!r}: None is missing and nothing fills it (on_null: error)",
            hint="send a number; or fit with a fill_null step or `on_null: keep`",
        )
    if policy["null"] == "error":
        raise InputError(
            f"column {column!r}: {value!r} gives a missing value (log1p of a value below the "
            "training range, or NaN) and nothing fills it (on_null: error)",
            hint="fit with a fill_null step or `on_null: keep`",
        )


def numeric_chain(column: str, state: Mapping[str, Any]) -> RecordFn:
    fns = [numeric_step(s) for s in state["steps"]]
    policy = state.get("policy", LEGACY)
    read = read_number(column, policy)

    def apply(record: Mapping[str, Any]) -> list[Any]:
        x = read(record[column])
        for fn in fns:
            x = fn(x)
        if x is None:
            refuse_missing(column, policy, record[column])
        return [x]

    return apply


def passthrough(column: str, state: Mapping[str, Any]) -> RecordFn:
    policy = state.get("policy", LEGACY)
    read = read_number(column, policy)

    def apply(record: Mapping[str, Any]) -> list[Any]:
        x = read(record[column])
        if x is None:
            refuse_missing(column, policy, record[column])
        return [x]

    return apply


# -- categorical --------------------------------------------------------------------------


def onehot(column: str, state: Mapping[str, Any]) -> RecordFn:
    index = {v: i for i, v in enumerate(state["vocabulary"])}
    width = len(state["names"])

    def apply(record: Mapping[str, Any]) -> list[Any]:
        out = [0.0] * width
        out[index.get(to_category(record[column]), width - 1)] = 1.0  # type: ignore[arg-type]
        return out

    return apply


def category_lookup(
    column: str, values: list[float], fallback: Any, vocabulary: list[str]
) -> RecordFn:
    mapping = dict(zip(vocabulary, values, strict=True))
    default = float(fallback)
    return lambda record: [mapping.get(to_category(record[column]), default)]  # type: ignore[arg-type]


def ordinal(column: str, state: Mapping[str, Any]) -> RecordFn:
    values = [float(i) for i in range(len(state["vocabulary"]))]
    return category_lookup(column, values, state["unknown_value"], state["vocabulary"])


def frequency(column: str, state: Mapping[str, Any]) -> RecordFn:
    return category_lookup(column, state["frequency"], state["unknown_value"], state["vocabulary"])


def target(column: str, state: Mapping[str, Any]) -> RecordFn:
    return category_lookup(column, state["encoding"], state["prior"], state["vocabulary"])


# -- temporal -----------------------------------------------------------------------------

UTC_ZONES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
     "GMT", "Etc/GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT0", "GMT+0", "GMT-0",
     "Etc/Greenwich", "Greenwich"}
)  # fmt: skip
# Polars' zone data ends at 2100: from then on every zone keeps the offset it has then
HORIZON = datetime(2100, 1, 1, tzinfo=UTC)
PERIOD = {"hour": 24, "dow": 7, "month": 12}
FIRST = {"hour": 0, "dow": 1, "month": 1}
GET = {"hour": lambda t: t.hour, "dow": lambda t: t.isoweekday(), "month": lambda t: t.month}


def cyclical(part: str, fn: str, value: int) -> float:
    angle = (value - FIRST[part]) * (2 * math.pi / PERIOD[part])
    return math.sin(angle) if fn == "sin" else math.cos(angle)


def parse_timestamp(value: Any, column: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise InputError(f"column {column!r}: expected a timestamp, got {value!r}")


def temporal(column: str, state: Mapping[str, Any], families: Mapping[str, Any]) -> RecordFn:
    reference, zone = state["reference"], state["time_zone"]
    features = list(state["features"])
    width = len(features)
    # calendar parts: the wall clock of `timezone` if configured, else of the column's zone
    calendar_zone = state.get("wall_clock_zone") or zone
    tz = ZoneInfo(calendar_zone) if calendar_zone is not None else None
    frozen = None
    if tz is not None and calendar_zone not in UTC_ZONES:
        frozen = (HORIZON - timedelta(microseconds=1)).astimezone(tz).utcoffset()
    utc_zone = zone in UTC_ZONES
    ref_families = families.get(reference)
    ref_fitted_naive = ref_families is not None and "datetime-tz" not in ref_families
    naive_ok = {
        column: zone is None or utc_zone,
        reference: zone is None or utc_zone or ref_fitted_naive,
    }

    def instant(value: Any, name: str) -> datetime | None:
        ts = parse_timestamp(value, name)
        if ts is None:
            return None
        if zone is None:  # a wall-clock column: an aware value is its UTC wall clock
            return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)
        if ts.tzinfo is None or ts.utcoffset() is None:
            if naive_ok[name]:
                return ts.replace(tzinfo=UTC)
            raise InputError(
                f"column {name!r}: {ts.isoformat()} has no UTC offset (a date, or a timestamp "
                f"without one) but the transform was fitted on timestamps in {zone}, so which "
                "instant it means is ambiguous",
                hint="send it with its UTC offset (ISO 8601 '...+01:00' or an aware datetime)",
            )
        return ts.astimezone(UTC)

    def wall(ts: datetime) -> datetime:
        if frozen is None:
            return ts
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)  # naive column: UTC
        return aware.astimezone(tz) if aware < HORIZON else aware + frozen

    calendar = any(f != "days_since" for f in features)

    def apply(record: Mapping[str, Any]) -> list[Any]:
        ts = instant(record[column], column)
        if ts is None:
            return [None] * width
        local = wall(ts) if calendar else ts
        out: list[Any] = []
        for feature in features:
            if feature in PERIOD:
                out.append(float(GET[feature](local)))
            elif feature == "is_weekend":
                out.append(1.0 if local.isoweekday() >= 6 else 0.0)
            elif feature == "days_since":
                ref = instant(record[reference], reference)
                if ref is None:
                    out.append(None)
                else:
                    delta = ts - ref
                    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
                    out.append(float(micros) / 86_400_000_000.0)
            else:
                part, fn = feature.rsplit("_", 1)
                out.append(cyclical(part, fn, GET[part](local)))
        return out

    return apply


# -- embedding ----------------------------------------------------------------------------


def embedding(
    column: str, state: Mapping[str, Any], tables: Mapping[str, pl.DataFrame]
) -> RecordFn:
    table = tables[state["file"]]
    vectors = dict(
        zip(table["key"].to_list(), (list(v) for v in table["vector"].to_list()), strict=True)
    )
    fallback = [float(v) for v in state["fallback"]]
    numeric_key = table.schema["key"].is_integer()

    def apply(record: Mapping[str, Any]) -> list[Any]:
        value = record[column]
        if numeric_key and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        elif not numeric_key and value is not None and not isinstance(value, str):
            value = to_category(value)
        vector = vectors.get(value) if not isinstance(value, (bool, float)) else None
        return list(vector if vector is not None else fallback)

    return apply


# -- a whole transform --------------------------------------------------------------------


def column_function(
    entry: Mapping[str, Any], families: Mapping[str, Any], tables: Mapping[str, pl.DataFrame]
) -> RecordFn:
    column, kind, state = entry["column"], entry["steps"][0]["type"], entry["state"]
    if "steps" in state:
        return numeric_chain(column, state)
    if kind == "temporal":
        return temporal(column, state, families)
    if kind == "embedding":
        return embedding(column, state, tables)
    if kind == "drop":
        return lambda record: []
    return {"passthrough": passthrough, "onehot": onehot, "ordinal": ordinal,
            "frequency": frequency, "target": target}[kind](column, state)  # fmt: skip


def oracle_function(
    state: Mapping[str, Any], tables: Mapping[str, pl.DataFrame], version: str = "unpublished"
) -> RecordFn:
    """One raw record -> the output vector, as ``FittedTransform.transform_one`` must give."""
    families = state["input_families"]
    fns = [column_function(entry, families, tables) for entry in state["columns"]]

    def transform_one(record: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        try:
            for fn in fns:
                out.extend(fn(record))
        except KeyError as exc:
            raise InputError(
                f"record has no column {exc.args[0]!r}, which transform {version} expects"
            ) from None
        return out

    return transform_one
