"""Rows in and out of Spark without losing their order or their Polars dtypes.

*Order.* Spark packs input files into tasks by size, not by name, so an input row carries
``ORDER = rank << 40 | row``: ``rank`` is the file's position in the order the Polars engine
reads files (``io.resolve_parquet_files``: sorted paths), ``row`` its index inside the file
(``_metadata.row_index``). Sorting by ``ORDER`` gives back exactly the row order a Polars
scan sees, which the point-in-time engine needs for ties and which outputs keep.

*Dtypes.* Spark has no unsigned integers, nanoseconds, time zone names, enums or fixed-size
arrays. The driver records each local input's Polars schema; a task casts the Arrow rows it
gets back to it (``restore``), so mlpipe's code sees the same dtypes as on the Polars engine.
Rows a task hands back to Spark are first ``encode``d into types Spark carries losslessly
(timestamps as their Int64 ticks, unsigned integers widened or reinterpreted) and
``decode``d by whoever writes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import polars as pl

from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

ORDER = "__mlpipe_order"
ROW_BITS = 40  # rows per file below 2**40 (1.1e12); files below 2**23
_RANK = "__mlpipe_rank"


def is_remote(path: Path | str) -> bool:
    """A URI Spark reads through Hadoop (s3a://, hdfs://, gs://); file:// counts as local."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: Path | str) -> Path:
    text = str(path)
    return Path(unquote(urlparse(text).path)) if text.startswith("file://") else Path(text)


@dataclass(frozen=True)
class SparkInput:
    """One input as a Spark DataFrame with an ``ORDER`` column, and its Polars schema."""

    frame: DataFrame
    schema: pl.Schema | None  # None for a remote input: dtypes are what Spark reads
    rows: int | None  # from the Parquet footers of local files; None when remote
    files: int


def read_input(spark: SparkSession, path: Path | str) -> SparkInput:
    """Read Parquet (a file, a directory, a glob or a URI) with each row's ``ORDER``."""
    from pyspark.sql import functions as F

    from mlpipe_cli.io import parquet_row_count, resolve_parquet_files, scan_parquet

    if is_remote(path):
        frame = (
            spark.read.option("pathGlobFilter", "*.parquet")
            .option("recursiveFileLookup", "true")
            .parquet(str(path))
        )
        uris = sorted(frame.inputFiles(), key=_canonical)
        schema, rows = None, None
    else:
        files = resolve_parquet_files(local_path(path))
        schema = scan_parquet(local_path(path)).collect_schema()
        rows = sum(parquet_row_count(f) for f in files)
        absolute = [os.path.abspath(f) for f in files]
        frame = spark.read.parquet(*absolute)
        by_path = {local_path(_canonical(u)): u for u in frame.inputFiles()}
        try:
            uris = [by_path[Path(p)] for p in absolute]
        except KeyError as exc:  # Spark listed other files than Polars would read
            raise InputError(f"Spark did not list {exc.args[0]} of input {path}") from None
    if len(uris) >= 1 << (63 - ROW_BITS):
        raise InputError(f"input {path} has {len(uris)} files; at most {1 << 23} are supported")
    ranks = spark.createDataFrame(
        [(_canonical(u), i) for i, u in enumerate(uris)], f"__mlpipe_file string, {_RANK} long"
    )
    canonical = F.regexp_replace(F.col("_metadata.file_path"), "^file:/+", "file:///")
    with_file = frame.select(
        "*",
        canonical.alias("__mlpipe_file"),
        F.col("_metadata.row_index").alias("__mlpipe_row"),
    )
    ordered = (
        with_file.join(F.broadcast(ranks), "__mlpipe_file", "left")
        .withColumn(ORDER, F.shiftleft(F.col(_RANK), ROW_BITS) + F.col("__mlpipe_row"))
        .drop("__mlpipe_file", "__mlpipe_row", _RANK)
    )
    return SparkInput(frame=ordered, schema=schema, rows=rows, files=len(uris))


def _canonical(uri: str) -> str:
    # Spark spells local files file:/x in _metadata and file:///x in inputFiles()
    if uri.startswith("file:"):
        return "file:///" + uri[len("file:") :].lstrip("/")
    return uri


# -- dtypes across Spark -------------------------------------------------------------------


def restore(frame: pl.DataFrame, schema: pl.Schema | None, what: str) -> pl.DataFrame:
    """Cast rows as Spark delivered them back to the input's recorded Polars dtypes."""
    if schema is None:
        return frame
    try:
        return frame.select(
            [_restore_expr(name, frame.schema[name], dtype) for name, dtype in schema.items()]
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(
            f"cannot restore the dtypes of {what} after Spark read it: {exc}"
        ) from None


def _restore_expr(name: str, got: pl.DataType, want: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if got == want:
        return column
    if isinstance(want, pl.Datetime) and isinstance(got, pl.Datetime):
        # an instant (Spark TIMESTAMP, tz UTC) or a wall-clock time (TIMESTAMP_NTZ)
        if want.time_zone is None:
            return column.dt.cast_time_unit(want.time_unit)
        return column.dt.convert_time_zone(want.time_zone).dt.cast_time_unit(want.time_unit)
    return column.cast(want)


def _transit_dtype(dtype: pl.DataType) -> pl.DataType:
    """The dtype a column of ``dtype`` crosses Spark in (lossless both ways)."""
    if isinstance(dtype, pl.Datetime | pl.Duration | pl.Time):
        return pl.Int64()
    if isinstance(dtype, pl.Date):
        return pl.Int32()
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    if dtype == pl.UInt8:
        return pl.Int16()
    if dtype == pl.UInt16:
        return pl.Int32()
    if dtype in (pl.UInt32, pl.UInt64):
        return pl.Int64()
    if isinstance(dtype, pl.Array | pl.List):
        # polars types `inner` as a class or an instance; in a schema it is an instance
        return pl.List(_transit_dtype(dtype.inner))  # type: ignore[arg-type]
    return dtype


def transit_schema(schema: pl.Schema) -> pl.Schema:
    return pl.Schema({name: _transit_dtype(dtype) for name, dtype in schema.items()})


def encode(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in the dtypes they cross Spark in (see ``transit_schema``)."""
    exprs = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime | pl.Duration | pl.Time | pl.Date):
            exprs.append(column.to_physical())
        elif dtype == pl.UInt64:
            exprs.append(column.reinterpret(signed=True))
        else:
            exprs.append(column.cast(_transit_dtype(dtype)))
    return frame.select(exprs)


def decode(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """The inverse of ``encode`` for rows whose original schema is ``schema``."""
    exprs = []
    for name, dtype in schema.items():
        column = pl.col(name)
        if dtype == pl.UInt64:
            exprs.append(column.reinterpret(signed=False))
        else:
            exprs.append(column.cast(dtype))
    return frame.select(exprs)


def spark_schema(schema: pl.Schema) -> StructType:
    """The Spark schema of rows ``encode``d from ``schema``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(arrow_schema(schema))


def arrow_schema(schema: pl.Schema) -> pa.Schema:
    empty = pl.DataFrame(schema=transit_schema(schema))
    return _arrow(empty).schema


def _arrow(frame: pl.DataFrame) -> pa.Table:
    import pyarrow as pa

    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    # Spark's Arrow reader wants 32-bit offsets (string, list), not large_*
    fields = [pa.field(f.name, _small(f.type), f.nullable) for f in table.schema]
    return table.cast(pa.schema(fields))


def _small(t: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_small(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _small(f.type), f.nullable) for f in t])
    return t


def to_batches(frame: pl.DataFrame) -> Iterator[pa.RecordBatch]:
    """``encode``d rows as Arrow batches for Spark (a task's output)."""
    yield from _arrow(encode(frame)).to_batches()


def from_batches(batches: Iterable[pa.RecordBatch]) -> pl.DataFrame | None:
    """A task's Arrow input as one Polars frame (None when the task got no rows)."""
    import pyarrow as pa

    collected = [b for b in batches if b.num_rows]
    if not collected:
        return None
    return pl.from_arrow(pa.Table.from_batches(collected)).rechunk()  # type: ignore[return-value]


def collect(frame: DataFrame) -> pl.DataFrame:
    """All rows of a Spark frame on the driver as one Polars frame (Arrow, no pandas)."""
    table = frame.toArrow()
    return pl.from_arrow(table).rechunk()  # type: ignore[return-value]


def part_name(order: int) -> str:
    """File name of a part whose first row has ``ORDER`` ``order``: names sort as rows do."""
    return f"part-{order >> ROW_BITS:05d}-{order & ((1 << ROW_BITS) - 1):013d}.parquet"


def row_count_hint(inputs: Iterable[SparkInput]) -> Any:
    counts = [i.rows for i in inputs]
    return None if any(c is None for c in counts) else sum(counts)


def replace_directory(staging: Path, out: Path) -> None:
    """Swap the finished ``staging`` directory in as ``out`` (renames on one filesystem);
    an existing output directory is moved aside first and removed after."""
    import secrets
    import shutil

    if out.exists():
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(4)}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
