"""Temporal columns with a time zone: the online path computes exactly what the batch path does.

The batch path (Polars) is the reference — the model was trained on it. It works on instants:
a zoned column is UTC microseconds, the calendar parts are read from the wall clock of the
column's zone, and days_since is the difference of two instants (elapsed time). The online
path used to subtract two local wall-clock times instead, 1/24 day off across a
daylight-saving change, so `fit` failed its golden check on such rows.

Here, for zones with daylight-saving time (Europe/Berlin, America/New_York,
Australia/Sydney), UTC and a fixed-offset zone, and references in the same zone, another zone
or without a zone, hypothesis draws instants near every DST change from 1900 to 2150 (and
anywhere from 1850 to 2300), and wall-clock times inside the skipped and repeated hours with
fold 0 and 1, and hands them to the online path as aware datetimes in many zones, ISO
strings, pandas Timestamps and, where the batch path reads them as UTC, naive values. The
batch path gets the instants each value names (PEP 495: ``value - value.utcoffset()``);
``transform_one`` and the oracle (tests/transform_oracle.py) must both equal it, bit for bit (days_since:
see ``agree``), or both refuse a naive value batch has no reading for.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import DataCheckFailed, InputError
from mlpipe_cli.transforms import FittedTransform, fit_frame, load_transform
from tests.transform_oracle import oracle_function

DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney"]
FIXED = "Etc/GMT-5"  # UTC+05:00 all year: what Polars makes of the time zone "+05:00"
ZONES = [*DST_ZONES, "UTC", FIXED]
REFERENCES = ["same", "other", "naive"]  # the reference column: same zone, another, none
FEATURES = [
    "hour",
    "dow",
    "month",
    "is_weekend",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "month_sin",
    "month_cos",
    "days_since",
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


class MyDatetime(datetime):
    pass


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """Every instant (UTC) at which Python's zoneinfo changes the zone's offset, 1900-2150."""
    tz = ZoneInfo(zone)
    found = []
    t, end = datetime(1900, 1, 1, tzinfo=UTC), datetime(2150, 1, 1, tzinfo=UTC)
    before = t.astimezone(tz).utcoffset()
    while t < end:
        n = t + timedelta(days=1)
        if n.astimezone(tz).utcoffset() != before:
            lo, hi = t, n
            while hi - lo > US:
                mid = lo + (hi - lo) // 2
                lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == before else (lo, mid)
            found.append(hi)
            before = hi.astimezone(tz).utcoffset()
        t = n
    return tuple(found)


def other_zone(zone: str) -> str:
    return "America/New_York" if zone != "America/New_York" else "Australia/Sydney"


# -- fitting ----------------------------------------------------------------------------


def utc_column(name: str, instants: list[datetime | None]) -> pl.Series:
    """Instants as a Datetime('us', 'UTC') column, from exact epoch microseconds."""
    micros = [None if u is None else (u - EPOCH) // US for u in instants]
    return (
        pl.Series(name, micros, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )


def as_input(series: pl.Series, zone: str | None) -> pl.Series:
    """A UTC column as a column in ``zone``, or naive (its UTC wall clock) for None."""
    if zone is None:
        return series.dt.replace_time_zone(None)
    return series.dt.convert_time_zone(zone)


def training_frame(zone: str, reference: str) -> pl.DataFrame:
    """Rows whose timestamp and reference straddle DST changes (the first ones are the golden
    rows fit checks), then a year of timestamps five hours apart."""
    ts: list[datetime | None] = []
    ref: list[datetime | None] = []
    changes = sorted(c for z in DST_ZONES for c in transitions(z) if 2024 <= c.year <= 2026)
    for change in changes:
        ts.append(change + timedelta(hours=13))
        ref.append(change - timedelta(days=2, hours=1))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for h in range(0, 24 * 366, 5):
        ts.append(start + timedelta(hours=h))
        ref.append(start + timedelta(hours=h // 2))
    ts[7], ref[9] = None, None
    ref_zone = {"same": zone, "other": other_zone(zone), "naive": None}[reference]
    source = "+05:00" if zone == FIXED else zone  # Polars names the offset Etc/GMT-5
    return pl.DataFrame(
        [as_input(utc_column("ts", ts), source), as_input(utc_column("ref", ref), ref_zone)]
    )


def config(features: list[str] = FEATURES) -> TransformConfig:
    return TransformConfig.model_validate(
        {"columns": {"ts": [{"type": "temporal", "features": features, "reference": "ref"}]}}
    )


_FITTED: dict[tuple[str, str], FittedTransform] = {}


def fitted(zone: str, reference: str) -> FittedTransform:
    """Fitted once per (zone, reference); fitting re-runs the golden rows through both paths."""
    key = (zone, reference)
    if key not in _FITTED:
        transform = fit_frame(config(), training_frame(zone, reference)).transform
        assert transform.state["columns"][0]["state"]["time_zone"] == zone
        _FITTED[key] = transform
    return _FITTED[key]


_ORACLES: dict[int, tuple[FittedTransform, Any]] = {}


def oracle(transform: FittedTransform) -> Any:
    """The independent online reference (tests/transform_oracle.py) for ``transform``."""
    if id(transform) not in _ORACLES:
        fn = oracle_function(transform.state, transform.tables, transform.version)
        _ORACLES[id(transform)] = (transform, fn)  # the transform kept alive: ids not reused
    return _ORACLES[id(transform)][1]


# -- the instant a value names (independently of mlpipe_cli) ------------------------------


def instant_of(value: Any) -> datetime | None:
    """The UTC instant an online value names: aware -> value - utcoffset (PEP 495: fold picks
    the offset of a repeated or skipped wall-clock time); naive or a date -> read as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):  # pandas' own instant
        value = (value if value.tz is None else value.tz_convert("UTC")).to_pydatetime()
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    offset = value.utcoffset()
    wall = datetime(*value.timetuple()[:6], value.microsecond)  # plain, naive
    return (wall - (offset or timedelta(0))).replace(tzinfo=UTC)


def is_naive(value: Any) -> bool:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return not isinstance(value, datetime) or value.utcoffset() is None


# -- strategies ---------------------------------------------------------------------------

OTHER_TZINFOS = [
    UTC,
    ZoneInfo("UTC"),
    timezone(timedelta(hours=-3)),
    timezone(timedelta(hours=5, minutes=45)),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo(FIXED),
    *(ZoneInfo(z) for z in DST_ZONES),
]


@st.composite
def near_changes(draw: st.DrawFn) -> datetime:
    """An instant within three hours of a DST change of one of DST_ZONES (1900-2150)."""
    change = draw(st.sampled_from(transitions(draw(st.sampled_from(DST_ZONES)))))
    return change + timedelta(
        seconds=draw(st.integers(-3 * 3600, 3 * 3600)),
        microseconds=draw(st.sampled_from([0, 0, 1, 999_999, 500_000])),
    )


instants = st.one_of(
    near_changes(),
    near_changes(),
    st.datetimes(datetime(1850, 1, 1), datetime(2300, 1, 1), timezones=st.just(UTC)),
    # Polars stops changing offsets at 2100-01-01 UTC: both sides of that
    st.integers(-3 * 86400, 3 * 86400).map(
        lambda s: datetime(2100, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
    ),
)


@st.composite
def wall_times(draw: st.DrawFn) -> datetime:
    """A wall-clock time in a DST zone within 2.5 hours of a change of its offset: inside the
    hour a spring-forward change skips or the one a fall-back change repeats, often; fold 0
    or 1."""
    zone = draw(st.sampled_from(DST_ZONES))
    tz = ZoneInfo(zone)
    change = draw(st.sampled_from(transitions(zone)))
    before = (change - US).astimezone(tz).utcoffset()
    wall = change.replace(tzinfo=None) + before + timedelta(minutes=draw(st.integers(-150, 150)))
    return wall.replace(tzinfo=tz, fold=draw(st.sampled_from([0, 1])))


@st.composite
def aware_values(draw: st.DrawFn) -> Any:
    """An aware value: an instant in some zone, as a datetime, ISO string or Timestamp."""
    how = draw(st.sampled_from(["datetime", "datetime", "iso", "subclass", "pandas"]))
    if draw(st.integers(0, 3)) == 0:
        value = draw(wall_times())
    else:
        instant = draw(instants)
        tz = draw(st.sampled_from(OTHER_TZINFOS))
        if how == "pandas" and 1700 < instant.year < 2260:
            return pd.Timestamp(instant).tz_convert(tz)
        value = instant.astimezone(tz)
    if how == "iso":
        return value.isoformat()
    if how == "subclass":
        return MyDatetime.combine(value.date(), value.timetz())
    return value


@st.composite
def naive_values(draw: st.DrawFn) -> Any:
    """A naive value (read as UTC where that is what batch does): datetime, ISO, date."""
    value = draw(st.one_of(instants, wall_times())).astimezone(UTC).replace(tzinfo=None)
    how = draw(st.sampled_from(["datetime", "iso", "date", "pandas"]))
    if how == "iso":
        return value.isoformat()
    if how == "date":
        return value.date()
    if how == "pandas" and 1700 < value.year < 2260:
        return pd.Timestamp(value)
    return value


def timestamps(naive: bool) -> st.SearchStrategy[Any]:
    """Values for a column; ``naive``: naive values too (some refused, depending on column)."""
    parts = [st.none(), aware_values(), aware_values(), aware_values(), aware_values()]
    if naive:
        parts.append(naive_values())
    return st.one_of(*parts)


# -- comparison ---------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return type(a) is float and type(b) is float and struct.pack("<d", a) == struct.pack("<d", b)


def agree(
    transform: FittedTransform, record: dict[str, Any], got: list[Any], row: tuple[Any, ...]
) -> None:
    """``got`` (online) is the batch ``row``. days_since: online is the elapsed microseconds
    over 86_400_000_000, correctly rounded; batch divides so too, or multiplies by the
    reciprocal (1 ULP apart at most): Polars' kernel does one or the other depending on the
    row's position in the column, so no function of the row alone matches it bit for bit."""
    for name, a, b in zip(transform.output_columns, got, row, strict=True):
        if name.endswith("__days_since") and a is not None and b is not None:
            micros = float((instant_of(record["ts"]) - instant_of(record["ref"])) // US)  # type: ignore[operator]
            assert a == micros / 86_400_000_000, (name, a, record)
            assert b in (a, micros * (1 / 86_400_000_000)), (name, a, b, record)
        else:
            assert same(a, b), f"{name}: online {a!r} != batch {b!r} for {record}"


def batch_rows(
    transform: FittedTransform,
    records: list[dict[str, Any]],
    zone: str | None,
    ref_zone: str | None,
) -> list[tuple[Any, ...]]:
    """The batch path on the instants the records name; the timestamp column given in
    ``zone`` (any zone will do), the reference in ``ref_zone`` (None: naive, UTC wall clock)."""
    frame = pl.DataFrame(
        [
            as_input(utc_column("ts", [instant_of(r["ts"]) for r in records]), zone),
            as_input(utc_column("ref", [instant_of(r["ref"]) for r in records]), ref_zone),
        ]
    )
    out = transform.transform_batch(frame.lazy()).select(transform.output_columns).collect()
    return out.rows()


def expected_error(transform: FittedTransform, reference: str, record: dict[str, Any]) -> bool:
    """Whether the online path must refuse the record: a naive value where batch has no
    reading for one (only a UTC column, or a reference fitted naive, is read as UTC)."""
    utc = transform.state["columns"][0]["state"]["time_zone"] == "UTC"
    if record["ts"] is None:
        return False
    if is_naive(record["ts"]) and not utc:
        return True
    return (
        record["ref"] is not None and is_naive(record["ref"]) and not (utc or reference == "naive")
    )


def check(
    transform: FittedTransform, reference: str, records: list[dict[str, Any]], batch_zone: str
) -> None:
    ok = []
    for record in records:
        if expected_error(transform, reference, record):
            errors = []
            for fn in (transform.transform_one, oracle(transform)):
                with pytest.raises(InputError, match="has no UTC offset") as info:
                    fn(record)
                errors.append(str(info.value))
            assert errors[0] == errors[1]
        else:
            ok.append(record)
    if not ok:
        return
    ref_zone = None if reference == "naive" else batch_zone
    for record, row in zip(ok, batch_rows(transform, ok, batch_zone, ref_zone), strict=True):
        fast, slow = transform.transform_one(record), oracle(transform)(record)
        assert all(map(same, fast, slow)), (fast, slow, record)
        agree(transform, record, fast, row)


# -- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("zone", ZONES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_online_is_batch_across_dst_changes(zone: str, reference: str, data: st.DataObject) -> None:
    transform = fitted(zone, reference)
    naive_too = data.draw(st.integers(0, 4)) == 0
    records = data.draw(
        st.lists(
            st.fixed_dictionaries({"ts": timestamps(naive_too), "ref": timestamps(naive_too)}),
            min_size=1,
            max_size=8,
        )
    )
    # the batch input may be in any zone: it is converted to the fitted one
    check(transform, reference, records, data.draw(st.sampled_from([zone, *ZONES])))


@pytest.mark.parametrize("zone", DST_ZONES)
def test_every_dst_change_hour_by_quarter_hour(zone: str) -> None:
    """Around each change of the zone from 1970 to 2150: instants from 2 hours before to 2
    hours after in 15-minute steps, as the zone's own aware datetimes (so in the repeated hour
    with fold 1 half the time), against references on the other side of other changes."""
    transform = fitted(zone, "same")
    tz = ZoneInfo(zone)
    changes = [c for c in transitions(zone) if c.year >= 1970]
    records = []
    for i, change in enumerate(changes):
        for q in range(-8, 9):
            ts = (change + timedelta(minutes=15 * q)).astimezone(tz)
            ref = (changes[(i + q) % len(changes)] - timedelta(minutes=7 * q)).astimezone(tz)
            records.append({"ts": ts, "ref": ref})
    rows = batch_rows(transform, records, zone, zone)
    for record, row in zip(records, rows, strict=True):
        fast, slow = transform.transform_one(record), oracle(transform)(record)
        assert all(map(same, fast, slow)), (fast, slow, record)
        agree(transform, record, fast, row)


@pytest.mark.parametrize("zone", DST_ZONES)
def test_fit_with_golden_rows_across_dst_changes(zone: str) -> None:
    """The regression: fitting checks the golden rows through both paths; days_since is
    elapsed time, the calendar parts are the local wall clock."""
    tz = ZoneInfo(zone)
    spring, autumn = (c for c in transitions(zone) if c.year == 2025)
    if spring > autumn:  # southern hemisphere: the first change of the year ends DST
        spring, autumn = autumn, spring
    ts = [spring + timedelta(days=3), autumn + timedelta(days=3), spring + timedelta(hours=1)]
    ref = [spring - timedelta(days=10), autumn - timedelta(days=10), spring - timedelta(hours=1)]
    days = [13.0, 13.0, 2 / 24]  # elapsed, whatever the wall clocks say
    frame = pl.DataFrame(
        {
            "ts": [t.astimezone(tz) for t in ts],
            "ref": [r.astimezone(tz) for r in ref],
            "ref_naive": [r.replace(tzinfo=None) for r in ref],  # UTC wall clock
        },
        schema={
            "ts": pl.Datetime("us", zone),
            "ref": pl.Datetime("us", zone),
            "ref_naive": pl.Datetime("us"),
        },
    )
    features = ["days_since", "hour", "dow", "month"]
    for reference in ("ref", "ref_naive"):
        step = {"type": "temporal", "features": features, "reference": reference}
        cfg = TransformConfig.model_validate({"columns": {"ts": [step]}})
        outcome = fit_frame(cfg, frame.select("ts", reference))
        for row, t, d in zip(outcome.golden_expected, ts, days, strict=False):
            local = t.astimezone(tz)
            assert row == [d, float(local.hour), float(local.isoweekday()), float(local.month)]


def test_fit_publish_and_load_with_a_dst_zone(cli: Any, tmp_path: Path) -> None:
    """`mlpipe fit` publishes, and loading re-runs the golden rows (which span DST changes)."""
    frame = training_frame("Europe/Berlin", "same")
    frame.write_parquet(tmp_path / "train.parquet")
    (tmp_path / "mlpipe.yaml").write_text(
        yaml.safe_dump(
            {
                "pipeline": "dst",
                "artifact_dir": str(tmp_path / "artifacts"),
                "transforms": {
                    "golden_rows": 20,
                    "columns": {
                        "ts": [{"type": "temporal", "features": FEATURES, "reference": "ref"}]
                    },
                },
            }
        )
    )
    result = cli(
        "fit", "-c", tmp_path / "mlpipe.yaml", "--data", tmp_path / "train.parquet", "--json"
    )
    assert result.exit_code == 0, result.stderr
    transform = load_transform(
        ArtifactStore(tmp_path / "artifacts", "dst"), result.json()["version"]
    )
    records = frame.head(20).to_dicts()
    rows = batch_rows(transform, records, "Europe/Berlin", "Europe/Berlin")
    for record, row in zip(records, rows, strict=True):
        agree(transform, record, transform.transform_one(record), row)


def test_days_since_is_elapsed_time() -> None:
    """Berlin, 2025-03-30: 01:59:59 CET is followed by 03:00:00 CEST."""
    tz = ZoneInfo("Europe/Berlin")
    transform = fitted("Europe/Berlin", "same")
    days = transform.output_columns.index("ts__days_since")
    hour = transform.output_columns.index("ts__hour")
    before = datetime(2025, 3, 30, 1, 30, tzinfo=tz)
    after = datetime(2025, 3, 30, 3, 30, tzinfo=tz)
    for fn in (transform.transform_one, oracle(transform)):
        assert fn({"ts": after, "ref": before})[days] == 1 / 24
        # a day later on the wall clock is 23 hours later
        assert (
            fn(
                {
                    "ts": datetime(2025, 3, 30, 12, tzinfo=tz),
                    "ref": datetime(2025, 3, 29, 12, tzinfo=tz),
                }
            )[days]
            == 23 / 24
        )
        # 02:30 does not exist that night: with fold 0 it names 01:30 UTC = 03:30 CEST
        out = fn({"ts": datetime(2025, 3, 30, 2, 30, tzinfo=tz), "ref": before})
        assert (out[hour], out[days]) == (3.0, 1 / 24)
        # 02:30 happens twice on 2025-10-26: fold 0 is CEST (00:30 UTC), fold 1 CET (01:30)
        first = datetime(2025, 10, 26, 2, 30, tzinfo=tz)
        second = first.replace(fold=1)
        out = fn({"ts": second, "ref": first})
        assert (out[hour], out[days]) == (2.0, 1 / 24)
        # a string with an offset, a time in another zone: the instant
        out = fn(
            {"ts": "2025-10-26T02:30:00+01:00", "ref": datetime(2025, 10, 26, 0, 30, tzinfo=UTC)}
        )
        assert (out[hour], out[days]) == (2.0, 1 / 24)


def test_naive_values_are_utc_or_refused() -> None:
    """A naive value (datetime, ISO string without offset, date) is read as UTC where batch
    reads a naive column so: in a UTC column, and for a reference fitted naive. Anywhere else
    it names no instant, and both online paths refuse it loudly."""
    berlin = fitted("Europe/Berlin", "same")
    for value in (datetime(2025, 3, 30, 2, 30), "2025-03-30T02:30:00", date(2025, 3, 30)):
        for record in (
            {"ts": value, "ref": None},
            {"ts": datetime(2025, 3, 30, tzinfo=UTC), "ref": value},
        ):
            for fn in (berlin.transform_one, oracle(berlin)):
                with pytest.raises(InputError, match=r"fitted on timestamps in Europe/Berlin"):
                    fn(record)
    # no reference is read when there is no timestamp (nothing to refuse)
    assert berlin.transform_one({"ts": None, "ref": "2025-01-01"}) == [None] * len(FEATURES)
    # a reference fitted naive: its naive values are UTC, as in batch
    naive_ref = fitted("Europe/Berlin", "naive")
    utc = fitted("UTC", "same")
    ts = datetime(2025, 3, 31, 12, tzinfo=UTC)
    for value in (datetime(2025, 3, 30, 12), "2025-03-30T12:00:00", date(2025, 3, 30)):
        want = 1.5 if type(value) is date else 1.0  # a date is its midnight
        for transform in (naive_ref, utc):
            for fn in (transform.transform_one, oracle(transform)):
                assert fn({"ts": ts, "ref": value})[-1] == want
        # a UTC column reads its own naive values as UTC too
        assert utc.transform_one({"ts": value, "ref": ts})[-1] == -want
        check(naive_ref, "naive", [{"ts": ts, "ref": value}], "Europe/Berlin")


def test_fit_refuses_references_batch_cannot_subtract() -> None:
    zoned = pl.Series([datetime(2025, 3, 30, tzinfo=UTC)] * 3).dt.convert_time_zone("Europe/Berlin")
    cases = [
        (zoned, zoned.dt.date(), "has a time zone but its days_since reference 'ref' is a Date"),
        (zoned.dt.replace_time_zone(None), zoned, "has no time zone but its days_since reference"),
    ]
    for ts, ref, message in cases:
        with pytest.raises(DataCheckFailed, match=message):
            fit_frame(config(["days_since"]), pl.DataFrame({"ts": ts, "ref": ref}))
    # a date column with a zoned reference is fine: Polars reads the date as UTC midnight
    ok = fit_frame(config(["days_since"]), pl.DataFrame({"ts": zoned.dt.date(), "ref": zoned}))
    assert ok.golden_expected[0] == [0.0]


def test_the_generated_function_skips_conversions_only_where_they_change_nothing() -> None:
    """A UTC column: no zone conversion for values in datetime.UTC or ZoneInfo('UTC'); a DST
    zone: the wall clock from the zone, frozen at Polars' horizon."""
    source = fitted("UTC", "same").online_source
    assert "astimezone" not in source
    assert "tzinfo is not zone" in source
    source = fitted("Europe/Berlin", "same").online_source
    assert ".astimezone(zone)" in source
    assert "tz_horizon" in source


# -- `timezone`: calendar features on a local wall clock ---------------------------------------

LOCAL_FEATURES = ["hour", "dow", "month", "is_weekend", "hour_sin", "hour_cos", "dow_sin",
                  "month_cos"]  # fmt: skip
SOURCES = ["UTC", "naive", "Asia/Kolkata", "America/New_York"]  # the column's own dtype


def zoneinfo_calendar(instant: datetime, zone: str) -> list[float]:
    """The oracle: Python's zoneinfo wall clock of ``instant`` in ``zone``, by hand."""
    local = instant.astimezone(ZoneInfo(zone))
    hour, dow, month = local.hour, local.isoweekday(), local.month
    turn = 2 * math.pi
    return [
        float(hour), float(dow), float(month), 1.0 if dow >= 6 else 0.0,
        math.sin(turn * hour / 24), math.cos(turn * hour / 24), math.sin(turn * (dow - 1) / 7),
        math.cos(turn * (month - 1) / 12),
    ]  # fmt: skip


_LOCAL: dict[tuple[str, str], FittedTransform] = {}


def fitted_local(zone: str, source: str) -> FittedTransform:
    """``timezone: zone`` on a column in ``source`` (a zone, or naive: UTC wall clock)."""
    if (zone, source) not in _LOCAL:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        instants = [start + timedelta(hours=7 * h) for h in range(2000)]
        column = as_input(utc_column("ts", instants), None if source == "naive" else source)
        step = {"type": "temporal", "features": LOCAL_FEATURES, "timezone": zone}
        cfg = TransformConfig.model_validate({"columns": {"ts": [step]}})
        _LOCAL[(zone, source)] = fit_frame(cfg, pl.DataFrame([column])).transform
    return _LOCAL[(zone, source)]


def close_to(got: list[Any], want: list[float]) -> bool:
    return all(abs(g - w) <= 1e-12 for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("zone", DST_ZONES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_local_time_features_are_zoneinfo_across_dst_changes(
    zone: str, source: str, data: st.DataObject
) -> None:
    """Batch and online equal Python's zoneinfo wall clock, whatever zone the column is in, for
    instants around DST changes (before 2100, where Polars' zone data ends)."""
    transform = fitted_local(zone, source)
    before_2100 = st.one_of(near_changes(), near_changes(), instants).filter(
        lambda t: datetime(1901, 1, 1, tzinfo=UTC) < t < datetime(2099, 12, 31, tzinfo=UTC)
    )
    moments = data.draw(st.lists(before_2100, min_size=1, max_size=10))
    column = as_input(utc_column("ts", moments), None if source == "naive" else source)
    batch = transform.transform_batch(pl.DataFrame([column]).lazy()).collect().rows()
    for moment, row in zip(moments, batch, strict=True):
        want = zoneinfo_calendar(moment, zone)
        assert close_to(list(row), want), (moment, row, want)
        if source == "naive":  # a naive column's online values: naive UTC, or aware anywhere
            tz = data.draw(st.sampled_from([None, *OTHER_TZINFOS]))
            value = moment.replace(tzinfo=None) if tz is None else moment.astimezone(tz)
        else:
            value = moment.astimezone(data.draw(st.sampled_from(OTHER_TZINFOS)))
        for fn in (transform.transform_one, oracle(transform)):
            assert close_to(fn({"ts": value}), want), (fn, value, want)
        assert transform.transform_one({"ts": value}) == list(row)


def test_local_time_features_on_the_days_berlin_changes_its_clocks() -> None:
    """Worked by hand: 2025-03-30 Berlin skips 02:00-03:00; 2025-10-26 repeats 02:00-03:00."""
    cases = [  # UTC instant -> Berlin hour, ISO weekday (both days are Sundays)
        (datetime(2025, 3, 30, 0, 30, tzinfo=UTC), 1.0),  # 01:30 CET
        (datetime(2025, 3, 30, 1, 30, tzinfo=UTC), 3.0),  # 03:30 CEST: 02:xx never happens
        (datetime(2025, 10, 26, 0, 30, tzinfo=UTC), 2.0),  # 02:30 CEST
        (datetime(2025, 10, 26, 1, 30, tzinfo=UTC), 2.0),  # 02:30 CET, the second time
        (datetime(2025, 10, 25, 22, 30, tzinfo=UTC), 0.0),  # 00:30 on the Sunday
    ]
    for source in SOURCES:
        transform = fitted_local("Europe/Berlin", source)
        moments = [m for m, _ in cases]
        column = as_input(utc_column("ts", moments), None if source == "naive" else source)
        batch = transform.transform_batch(pl.DataFrame([column]).lazy()).collect()
        assert batch["ts__hour"].to_list() == [h for _, h in cases]
        assert batch["ts__dow"].to_list() == [7.0] * len(cases)
        assert batch["ts__is_weekend"].to_list() == [1.0] * len(cases)
        for moment, hour in cases:
            assert transform.transform_one({"ts": moment})[:2] == [hour, 7.0]


def test_timezone_is_validated_at_config_load(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "mlpipe.yaml").write_text(
        yaml.safe_dump(
            {
                "pipeline": "tz",
                "transforms": {
                    "columns": {
                        "ts": [
                            {"type": "temporal", "features": ["hour"], "timezone": "Europe/Berln"}
                        ]
                    }
                },
            }
        )
    )
    result = cli("fit", "-c", tmp_path / "mlpipe.yaml", "--data", tmp_path / "none.parquet")
    assert result.exit_code == 2
    assert "transforms.columns.ts[#1].timezone: unknown time zone 'Europe/Berln'" in (result.stderr)
    assert result.stderr.count("\n") == 1
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ValueError, match="unknown time zone"):
            TransformConfig.model_validate(
                {"columns": {"ts": [{"type": "temporal", "features": ["hour"], "timezone": bad}]}}
            )
    with pytest.raises(ValueError, match="calendar features only"):
        TransformConfig.model_validate({"columns": {"ts": [
            {"type": "temporal", "features": ["days_since"], "reference": "r",
             "timezone": "UTC"}]}})  # fmt: skip


def test_the_state_names_the_wall_clock_zone_only_when_configured() -> None:
    """An unconfigured step's state is what it was (unchanged configs, unchanged artifacts)."""
    assert "wall_clock_zone" not in fitted("Europe/Berlin", "same").state["columns"][0]["state"]
    state = fitted_local("Asia/Tokyo", "UTC").state["columns"][0]["state"]
    assert state["wall_clock_zone"] == "Asia/Tokyo"
    assert state["time_zone"] == "UTC"
