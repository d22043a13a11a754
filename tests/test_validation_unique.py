"""`unique` on increasing keys: the one-pass order test agrees with a brute-force loop.

validate skips the hash passes of a ``unique`` check when the column's non-null values
strictly increase in row order (#19). These tests hold the whole check — failures, example
rows, quarantine — to a Python loop over the rows, for keys that increase, that increase
but for one repeat (at a file or row-group boundary too), and that do not increase, over
several dtypes, with nulls, read from a multi-file Parquet directory.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.validation import engine, validate_source

DTYPES = {
    "int64": (pl.Int64, "int64", lambda v: v),
    "int32": (pl.Int32, "int32", lambda v: v),
    "uint8": (pl.UInt8, "uint8", lambda v: v % 256),
    "date": (pl.Date, "date", lambda v: date(2020, 1, 1) + timedelta(days=v)),
    "datetime": (
        pl.Datetime("us", "UTC"),
        "datetime",
        lambda v: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=v),
    ),
}


def _repeats(values: list) -> list[int]:
    """Rows whose non-null value appeared in an earlier row (the oracle)."""
    seen, out = set(), []
    for row, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            out.append(row)
        seen.add(value)
    return out


def _write_parts(directory: Path, values: list, dtype: pl.DataType, cuts: list[int]) -> Path:
    """Several Parquet files (small row groups) holding ``values`` in order."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(values)}), len(values)]
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        frame = pl.DataFrame({"k": pl.Series("k", values[lo:hi], dtype=dtype)})
        frame.write_parquet(directory / f"part-{i:03d}.parquet", row_group_size=7)
    return directory


@st.composite
def key_columns(draw: st.DrawFn) -> tuple[str, list, list[int]]:
    name = draw(st.sampled_from(sorted(DTYPES)))
    convert = DTYPES[name][2]
    n = draw(st.integers(0, 120))
    limit = 255 if name == "uint8" else 10_000
    distinct = sorted(draw(st.sets(st.integers(0, limit), min_size=n, max_size=n)))
    shape = draw(st.sampled_from(["increasing", "one repeat", "one tie", "shuffled"]))
    values: list = list(distinct)
    if shape == "one repeat" and values:
        at = draw(st.integers(0, len(values) - 1))
        values.insert(at + 1, values[at])  # the same key again right after (any boundary)
    elif shape == "one tie" and len(values) > 2:
        at = draw(st.integers(1, len(values) - 1))
        values[at] = values[at - 1] - 1 if values[at - 1] > 0 else values[at - 1]
    elif shape == "shuffled":
        values = draw(st.permutations(values))
    nulls = draw(st.lists(st.integers(0, max(len(values), 1)), max_size=10))
    for at in sorted(nulls, reverse=True):
        values.insert(min(at, len(values)), None)
    cuts = draw(st.lists(st.integers(1, max(len(values), 1)), max_size=4))
    return name, [None if v is None else convert(v) for v in values], cuts


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key_columns())
def test_unique_matches_a_brute_force_loop(tmp_path_factory: pytest.TempPathFactory, case) -> None:  # type: ignore[no-untyped-def]
    name, values, cuts = case
    dtype, contract_dtype, _ = DTYPES[name]
    tmp = tmp_path_factory.mktemp("unique")
    data = _write_parts(tmp / "data", values, dtype, cuts)
    contract = {"dtype": contract_dtype, "nullable": True, "unique": True}
    if name == "datetime":
        contract["timezone"] = "UTC"
    text = yaml.safe_dump(
        {"pipeline": "t", "sources": {"s": {"path": str(data), "columns": {"k": contract}}}}
    )
    config = load_config_text(text, source_name="t.yaml", base_dir=tmp)
    report = validate_source(config, "s", quarantine_path=tmp / "q.parquet")
    check = next(c for c in report.checks if c.id == "s.k.unique")
    repeats = _repeats(values)
    assert check.failures == len(repeats)
    assert [e["row"] for e in check.examples] == repeats[:5]
    assert report.schema_ok
    assert pl.read_parquet(tmp / "q.parquet")["_row"].to_list() == repeats


@pytest.mark.parametrize(
    ("values", "increasing"),
    [
        ([1, 2, 3], True),
        ([None, 1, None, 5, 9, None], True),
        ([], True),
        ([None, None], True),
        ([1, 2, 2], False),  # a repeat
        ([3, 2, 5], False),  # distinct but not in order: the hash passes decide
        ([1, None, 1], False),  # a repeat across a null
    ],
)
def test_keys_increase_answers_only_for_strictly_increasing_keys(
    tmp_path: Path, values: list, increasing: bool
) -> None:
    path = tmp_path / "k.parquet"
    pl.DataFrame({"k": pl.Series("k", values, dtype=pl.Int64)}).write_parquet(path)
    check = _unique_check("k")
    assert engine._keys_increase(pl.scan_parquet(path), check) is increasing


@pytest.mark.parametrize(
    "series",
    [
        pl.Series("k", [1.0, 2.0, 3.0]),  # floats: NaN and -0.0 break "<" as a total order
        pl.Series("k", ["a", "b", "c"]),  # strings: decoding them costs more than it saves
    ],
)
def test_keys_increase_leaves_other_dtypes_to_the_hash_passes(
    tmp_path: Path, series: pl.Series
) -> None:
    path = tmp_path / "k.parquet"
    series.to_frame().write_parquet(path)
    assert engine._keys_increase(pl.scan_parquet(path), _unique_check("k")) is False


def _unique_check(column: str) -> engine._RowCheck:
    from mlpipe_cli.validation.report import CheckResult

    result = CheckResult(f"s.{column}.unique", "s", column, "unique", "error")
    return engine._RowCheck(result, pl.lit(False), pl.col(column), None, None, key=pl.col(column))
