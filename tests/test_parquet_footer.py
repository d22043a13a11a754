"""The footer reader (mlpipe_cli/parquet_footer.py) against pyarrow's own metadata.

pyarrow is the oracle: it shares no code with the hand-written Thrift reader. Files come from
both writers (Polars and pyarrow), with nested and messy columns, statistics on and off,
key-value metadata, many row groups, and no rows at all.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.drift import report
from mlpipe_cli.errors import InputError
from mlpipe_cli.parquet_footer import FooterError, row_group_rows


def _pyarrow_groups(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _messy_frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": list(range(rows)),
            "key": [("ключ-" if i % 3 else "k") * (i % 4) + str(i) for i in range(rows)],
            "x": [
                [math.nan, math.inf, -math.inf, None, -0.0][i % 5] if i % 7 == 0 else i / 3
                for i in range(rows)
            ],
            "flag": [None if i % 5 == 0 else i % 2 == 0 for i in range(rows)],
            "ts": [
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
                for i in range(rows)
            ],
            "tags": [[f"t{j}" for j in range(i % 3)] for i in range(rows)],
            "point": [{"a": i, "b": None if i % 2 else "v"} for i in range(rows)],
        },
        schema_overrides={"ts": pl.Datetime("us", "Europe/Berlin")},
    )


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(0, 5000),
    group=st.integers(1, 2000),
    statistics=st.booleans(),
    compression=st.sampled_from(["zstd", "snappy", "uncompressed"]),
)
def test_polars_written_files_match_pyarrow(
    tmp_path_factory: pytest.TempPathFactory,
    rows: int,
    group: int,
    statistics: bool,
    compression: str,
) -> None:
    path = tmp_path_factory.mktemp("footer") / "p.parquet"
    _messy_frame(rows).write_parquet(
        path, row_group_size=group, statistics=statistics, compression=compression
    )
    assert row_group_rows(path) == _pyarrow_groups(path)
    assert sum(row_group_rows(path)) == rows


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(0, 4000), group=st.integers(1, 1500), dictionary=st.booleans())
def test_pyarrow_written_files_match_pyarrow(
    tmp_path_factory: pytest.TempPathFactory, rows: int, group: int, dictionary: bool
) -> None:
    path = tmp_path_factory.mktemp("footer") / "a.parquet"
    table = _messy_frame(rows).to_arrow()
    table = table.replace_schema_metadata({"mlpipe": "x" * 300, "ключ": "значение"})
    pq.write_table(
        table,
        path,
        row_group_size=group,
        use_dictionary=dictionary,
        write_statistics=True,
        write_page_index=True,
        compression="zstd",
    )
    assert row_group_rows(path) == _pyarrow_groups(path)


def test_many_row_groups_and_wide_files(tmp_path: Path) -> None:
    """A list header's long form (more than 14 row groups or columns)."""
    wide = pl.DataFrame({f"c{i}": list(range(3000)) for i in range(40)})
    path = tmp_path / "wide.parquet"
    wide.write_parquet(path, row_group_size=100)
    assert row_group_rows(path) == _pyarrow_groups(path) == [100] * 30


def test_a_file_with_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pl.DataFrame({"x": pl.Series([], dtype=pl.Float64)}).write_parquet(path)
    assert row_group_rows(path) == _pyarrow_groups(path)
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), path)
    assert row_group_rows(path) == _pyarrow_groups(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"PAR1", b"not parquet at all, but long enough", b"PAR1" + b"\x00" * 20 + b"PAR1"],
)
def test_what_is_not_a_footer_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(FooterError):
        row_group_rows(path)


def test_a_truncated_footer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pl.DataFrame({"x": list(range(100))}).write_parquet(path)
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    # the footer cut short, length field and magic kept: the reader runs out of bytes
    cut = data[:start] + data[start : start + length // 2] + (length // 2).to_bytes(4, "little")
    path.write_bytes(cut + b"PAR1")
    with pytest.raises(FooterError):
        row_group_rows(path)


def test_report_uses_the_footer_and_keeps_its_error(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pl.DataFrame({"x": list(range(2500))}).write_parquet(path, row_group_size=1000)
    assert report.parquet_row_groups(path) == [1000, 1000, 500]
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputError, match=r"^cannot read .*bad\.parquet as Parquet: "):
        report.parquet_row_groups(bad)
