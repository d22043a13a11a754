"""Naive timestamps read as wall-clock time in the config's ``timezone:``, the one home.

A naive time names an instant only if that wall-clock time happened exactly once in the
zone. In the spring-forward gap (02:30 on 2026-03-29 in Europe/Berlin) it never happened;
in the fall-back hour (02:30 on 2026-10-25) it happened twice. The docs define no rule for
either, so both are refused (exit 2) naming the column, the value, the zone and the
candidate instants, rather than shifted silently (Polars' ``ambiguous="earliest"``, Python's
``fold=0``) or reported as a bug. Offset (or UTC) timestamps avoid the question.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import polars as pl

_FIX = "give UTC or offset timestamps (e.g. 2026-03-29T01:30:00Z) for such times"


def localize(expr: pl.Expr, zone: str) -> pl.Expr:
    """A naive datetime column as instants in ``zone``; call ``check_naive_times`` first."""
    return expr.dt.replace_time_zone(zone, ambiguous="raise", non_existent="raise")


def check_naive_times(
    frame: pl.LazyFrame | pl.DataFrame, column: str, zone: str, what: str
) -> None:
    """Raise InputError when a value of naive ``column`` is skipped or repeated in ``zone``."""
    import polars as pl

    col = pl.col(column)
    bad = (
        frame.lazy()
        .select(col)
        .filter(
            col.is_not_null()
            & col.dt.replace_time_zone(zone, ambiguous="null", non_existent="null").is_null()
        )
        .head(1)
        .collect()
    )
    if bad.height:
        value = bad.item(0, 0)
        local_time(value, zone, f"{what} column {column!r}")  # raises, naming the problem


def local_time(value: datetime, zone: str, what: str) -> datetime:
    """The instant of naive ``value`` in ``zone`` (UTC); refuses skipped and repeated times."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    earlier = value.replace(tzinfo=tz, fold=0)
    later = value.replace(tzinfo=tz, fold=1)
    text = value.isoformat(sep=" ")
    if earlier.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != value.replace(tzinfo=None):
        raise InputError(
            f"{what}: {text} does not exist in time zone {zone} (the clocks skip that hour)",
            hint=_FIX,
        )
    if earlier.utcoffset() != later.utcoffset():
        first = earlier.astimezone(UTC).isoformat().replace("+00:00", "Z")
        second = later.astimezone(UTC).isoformat().replace("+00:00", "Z")
        raise InputError(
            f"{what}: {text} is ambiguous in time zone {zone} (it happens twice: {first} "
            f"and {second})",
            hint=_FIX,
        )
    return earlier.astimezone(UTC)
