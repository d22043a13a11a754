"""Temporal encoder: calendar parts, their cyclical encodings and days_since."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.base import Encoder
from mlpipe_cli.transforms.codegen import Source

if TYPE_CHECKING:
    import numpy as np


_TWO_PI = 2 * math.pi
_US_PER_DAY = 86_400_000_000
_PERIODS = {"hour": 24, "dow": 7, "month": 12}
_FIRST = {"hour": 0, "dow": 1, "month": 1}  # hour 0..23, ISO weekday 1..7, month 1..12


def cyclical_table(part: str, fn: str) -> list[float]:
    """sin/cos of every possible value, indexed by the raw value (hour, weekday, month).

    angle = 2*pi * (value - first) / period; both paths look values up in this one table, so
    batch and online agree exactly.
    """
    period, first = _PERIODS[part], _FIRST[part]
    func = math.sin if fn == "sin" else math.cos
    table = [0.0] * (first + period)
    for value in range(first, first + period):
        table[value] = func((value - first) * (_TWO_PI / period))
    return table


def parse_timestamp(value: Any, column: str) -> datetime | None:
    """Online input -> datetime (naive or aware) or None; a date is its midnight, naive."""
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


# Zones whose offset is zero at every instant (all links to Etc/UTC or Etc/GMT): a naive value
# names one instant in them, and the UTC wall clock is the local one.
_UTC_ZONES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
     "GMT", "Etc/GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT0", "GMT+0", "GMT-0",
     "Etc/Greenwich", "Greenwich"}
)  # fmt: skip
# Polars (chrono-tz) knows a zone's offset changes up to the end of 2099 only: from 2100-01-01
# UTC on, every zone keeps the offset it has then (no more daylight-saving changes), where
# Python's zoneinfo goes on applying the zone's rules. The online path does as Polars does
# (tests/test_transform_temporal_dst.py checks it against every instant it draws).
_TZ_HORIZON = datetime(2100, 1, 1, tzinfo=UTC)


def to_utc(ts: datetime, column: str, naive_ok: bool, zone: str) -> datetime:
    """The instant an online timestamp names, as an aware datetime in UTC, for a temporal
    column fitted with time zone ``zone``.

    An aware value names ``ts - ts.utcoffset()``: any zone, any offset; for a wall-clock time
    a daylight-saving change repeats or skips, ``fold`` picks the offset (PEP 495). A naive
    value (or a date: its midnight) is read as UTC where ``naive_ok`` (the batch path, which
    converts a naive column to a zone as if it were UTC, does the same); elsewhere it is an
    InputError, as the batch path refuses a naive column for a column fitted with a zone.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        if naive_ok:
            return ts.replace(tzinfo=UTC)
        raise InputError(
            f"column {column!r}: {ts.isoformat()} has no UTC offset (a date, or a timestamp "
            f"without one) but the transform was fitted on timestamps in {zone}, so which "
            "instant it means is ambiguous",
            hint="send it with its UTC offset (ISO 8601 '...+01:00' or an aware datetime)",
        )
    return ts.astimezone(UTC)


class Temporal(Encoder):
    """Calendar parts in the column's time zone; ISO weekday Mon=1..Sun=7.

    Cyclical encodings use fixed periods: hour/24, (dow-1)/7, (month-1)/12 of a full turn.
    days_since = (column - reference) in days (fractional).

    For a column with a time zone, batch works on instants (Polars stores UTC and converts to
    the zone for the calendar parts), and so does the online path: each value becomes its UTC
    instant (``to_utc``); the parts are the wall clock of that instant in the column's zone;
    days_since is the difference of the two instants — elapsed time, so 1/24 day less than
    the wall-clock difference across a spring-forward change. A naive online value is read
    as UTC where batch reads a naive column so (the zone is UTC, or the reference column was
    fitted naive: ``input_families``); elsewhere it raises InputError (batch refuses it).

    A column without a time zone works on wall-clock times as given; an aware online value is
    first converted to UTC and its zone dropped.

    ``timezone`` (the state's ``wall_clock_zone``) reads the calendar parts from the wall clock
    of another IANA zone instead: a zoned column's instants are converted to it, a naive
    column's values are read as UTC first. days_since is unaffected (elapsed time, or the
    wall-clock difference of a naive column).
    """

    kind = "temporal"
    type = "temporal"

    def __init__(
        self,
        column: str,
        params: Mapping[str, Any],
        input_families: Mapping[str, Any] | None = None,
    ) -> None:
        """``input_families``: the state's dtype families per input column (fitted.py), to
        know whether the reference column was fitted naive; None if unknown (a naive
        reference value is then read like a naive column value)."""
        super().__init__(column, params)
        self.input_families = input_families

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        dtype = frame.schema[self.column]
        tz = getattr(dtype, "time_zone", None) if isinstance(dtype, pl.Datetime) else None
        state = {
            "features": list(self.params.get("features") or []),
            "reference": self.params.get("reference"),
            "time_zone": tz,
        }
        wall = self.params.get("timezone")
        if wall is not None:
            try:  # the config checked Python's zone database; the batch path uses Polars'
                pl.Series([0], dtype=pl.Datetime("us")).dt.replace_time_zone(wall)
            except pl.exceptions.PolarsError:
                raise InputError(
                    f"column {self.column!r}: time zone {wall!r} is unknown to Polars "
                    f"{pl.__version__}",
                    hint="use a canonical IANA name such as 'Europe/Berlin'",
                ) from None
            state["wall_clock_zone"] = wall
        return state

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [f"{self.column}__{f}" for f in state["features"]]

    @staticmethod
    def _part(feature: str) -> str | None:
        if feature in _PERIODS:
            return feature
        if feature == "is_weekend":
            return "dow"
        base = feature.rsplit("_", 1)[0]
        return base if base in _PERIODS else None

    def _parts(self, state: Mapping[str, Any]) -> list[str]:
        return sorted({p for f in state["features"] if (p := self._part(f)) is not None})

    def _local(self, state: Mapping[str, Any], column: str) -> pl.Expr:
        """The column in its fitted zone (instants), or as given (naive wall-clock times)."""
        ts = pl.col(column)
        if state["time_zone"] is not None:
            ts = ts.dt.convert_time_zone(state["time_zone"])
        return ts

    @staticmethod
    def _calendar_zone(state: Mapping[str, Any]) -> str | None:
        """The zone whose wall clock the calendar parts are read from (None: as given)."""
        return state.get("wall_clock_zone") or state["time_zone"]

    def _wall_clock(self, state: Mapping[str, Any]) -> pl.Expr:
        """The column on the wall clock the calendar parts are read from."""
        wall = state.get("wall_clock_zone")
        if wall is None:
            return self._local(state, self.column)
        ts = pl.col(self.column)
        if state["time_zone"] is None:  # naive values (or dates) are UTC
            ts = ts.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return ts.dt.convert_time_zone(wall)

    def _naive_ok(self, state: Mapping[str, Any]) -> tuple[bool, bool]:
        """Whether a naive online value is taken (for a zoned column: read as UTC), for the
        column and for the reference."""
        if state["time_zone"] is None:
            return True, True
        utc = state["time_zone"] in _UTC_ZONES
        families = (self.input_families or {}).get(state["reference"])
        fitted_naive = families is not None and "datetime-tz" not in families
        return utc, utc or fitted_naive

    def _zone(self, state: Mapping[str, Any]) -> tuple[Any, timedelta | None]:
        """(ZoneInfo of the calendar zone or None, the zone's offset from _TZ_HORIZON on or
        None where the UTC wall clock is the local one: no zone, or a zone that is UTC)."""
        from zoneinfo import ZoneInfo

        zone = self._calendar_zone(state)
        if zone is None:
            return None, None
        tz = ZoneInfo(zone)
        if zone in _UTC_ZONES:
            return tz, None
        return tz, (_TZ_HORIZON - timedelta(microseconds=1)).astimezone(tz).utcoffset()

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        ts = self._wall_clock(state)
        calendar = {"hour": ts.dt.hour(), "dow": ts.dt.weekday(), "month": ts.dt.month()}
        if self._calendar_zone(state) in (None, "UTC"):
            # no zone offsets: hour and weekday by integer arithmetic on the epoch (4x faster);
            # floor division keeps pre-1970 values right; 1970-01-01 was a Thursday (ISO 4)
            epoch = pl.col(self.column).dt.epoch("us")
            calendar["hour"] = (epoch // 3_600_000_000) % 24
            calendar["dow"] = (epoch // _US_PER_DAY + 3) % 7 + 1
        return [calendar[p].cast(pl.UInt32).alias(self.helper(p)) for p in self._parts(state)]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        exprs = []
        for feature, name in zip(state["features"], self.outputs(state), strict=True):
            part = self._part(feature)
            if feature in _PERIODS:
                e = pl.col(self.helper(feature)).cast(pl.Float64)
            elif feature == "is_weekend":
                e = (pl.col(self.helper("dow")) >= 6).cast(pl.Float64)
            elif feature == "days_since":
                delta = self._local(state, self.column) - self._local(state, state["reference"])
                e = delta.dt.total_microseconds().cast(pl.Float64) / float(_US_PER_DAY)
            else:
                table = pl.Series(cyclical_table(part, feature.rsplit("_", 1)[1]), dtype=pl.Float64)  # type: ignore[arg-type]
                e = pl.lit(table).gather(pl.col(self.helper(part)))  # type: ignore[arg-type]
            exprs.append(e.alias(name))
        return exprs

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """Parse, convert and read each calendar part once; tables bound as globals."""
        zone = state["time_zone"]
        parts = {"hour": "{}.hour", "dow": "{}.isoweekday()", "month": "{}.month"}
        dt, utc = src.bind(datetime, "datetime"), src.bind(UTC, "UTC")
        tz, frozen = self._zone(state)
        naive_column, naive_reference = self._naive_ok(state)

        def parse(var: str, column: str) -> None:
            """``var = parse_timestamp(record[column], column)``, a datetime passed as is."""
            src.line(f"{var} = record[{column!r}]")
            with src.block(f"if {var}.__class__ is not {dt}:"):
                fn = src.bind(parse_timestamp, "parse_timestamp")
                src.line(f"{var} = {fn}({var}, {column!r})")

        def instant(var: str, column: str, naive_ok: bool) -> None:
            """``var`` (a datetime) -> without a zone, the wall-clock time (an aware value's in
            UTC, zone dropped); with one, the instant (``to_utc``)."""
            if zone is None:
                with src.block(f"if {var}.tzinfo is not None:"):
                    src.line(f"{var} = {var}.astimezone({utc}).replace(tzinfo=None)")
                return
            # A plain datetime in datetime.UTC (what the server stamps requests with) is its
            # instant already, and so is one in a UTC zone's ZoneInfo (what Polars gives):
            # to_utc would only swap the tzinfo for an equal one, which neither the calendar
            # parts nor a difference of two UTC times can see.
            convert = f"{var}.tzinfo is not {utc}"
            if frozen is None:
                convert = f"({convert} and {var}.tzinfo is not {src.bind(tz, 'zone')})"
            with src.block(f"if {convert} or {var}.__class__ is not {dt}:"):
                fn = src.bind(to_utc, "to_utc")
                src.line(f"{var} = {fn}({var}, {column!r}, {naive_ok!r}, {zone!r})")

        ts, out = src.name("ts"), src.name("t")
        src.line(f"# {self.column!r}: temporal {', '.join(state['features'])}")
        parse(ts, self.column)
        with src.block(f"if {ts} is None:"):
            src.line(f"{out} = {src.bind((None,) * len(state['features']), 'nones')}")
        with src.block("else:"):
            instant(ts, self.column, naive_column)
            wall = ts  # the wall clock the calendar parts are read from
            if frozen is not None and self._parts(state):
                wall = src.name("wall")
                if zone is None:  # naive values (UTC) on the wall clock of `timezone`
                    horizon = src.bind(_TZ_HORIZON.replace(tzinfo=None), "naive_horizon")
                    with src.block(f"if {ts} < {horizon}:"):
                        src.line(
                            f"{wall} = {ts}.replace(tzinfo={utc}).astimezone("
                            f"{src.bind(tz, 'zone')})"
                        )
                else:
                    with src.block(f"if {ts} < {src.bind(_TZ_HORIZON, 'tz_horizon')}:"):
                        src.line(f"{wall} = {ts}.astimezone({src.bind(tz, 'zone')})")
                with src.block("else:"):
                    src.line(f"{wall} = {ts} + {src.bind(frozen, 'frozen_offset')}")
            values: dict[str, str] = {}  # calendar part -> local variable

            def part(name: str) -> str:
                if name not in values:
                    values[name] = src.name(name)
                    src.line(f"{values[name]} = {parts[name].format(wall)}")
                return values[name]

            items = []
            for feature in state["features"]:
                if feature in _PERIODS:
                    items.append(f"float({part(feature)})")
                elif feature == "is_weekend":
                    items.append(f"(1.0 if {part('dow')} >= 6 else 0.0)")
                elif feature == "days_since":
                    ref, days = src.name("ref"), src.name("days")
                    parse(ref, state["reference"])
                    with src.block(f"if {ref} is None:"):
                        src.line(f"{days} = None")
                    with src.block("else:"):
                        instant(ref, state["reference"], naive_reference)
                        src.line(f"{ref} = {ts} - {ref}")
                        src.line(
                            f"{days} = float(({ref}.days * 86400 + {ref}.seconds) * 1000000"
                            f" + {ref}.microseconds) / {src.const(float(_US_PER_DAY))}"
                        )
                    items.append(days)
                else:
                    name = self._part(feature)
                    table = tuple(cyclical_table(name, feature.rsplit("_", 1)[1]))  # type: ignore[arg-type]
                    items.append(f"{src.bind(table, 'cyclical')}[{part(name)}]")  # type: ignore[arg-type]
            src.line(f"{out} = ({', '.join(items)}{',' if len(items) == 1 else ''})")
        return [f"*{out}"]
