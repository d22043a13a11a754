"""`transform` on Spark: the published state applied per task, no refit, no shuffle.

The driver loads and verifies the version (hashes, golden example) as on the Polars engine
and ships its JSON state and tables to the tasks; each task rebuilds the same
``FittedTransform`` from them and calls ``transform_batch`` on its rows. Rows keep their
input ``ORDER`` (frames.py), so the output is in input order: one file collected on the
driver, or a directory of part files written by the tasks (one per contiguous run of input
rows, named so that sorted names give input order).
"""

from __future__ import annotations

import pickle
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.engines.spark import frames
from mlpipe_cli.engines.spark.session import spark_session, task_errors, translate_errors
from mlpipe_cli.errors import InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.transforms.fitted import FittedTransform
    from mlpipe_cli.transforms.report import TransformReport


@dataclass(frozen=True)
class _Plan:
    state: Any
    tables: dict[str, pl.DataFrame]
    version: str
    input_schema: pl.Schema | None
    output: pl.Schema  # transform output with ORDER last


def is_directory_output(out: Path | str) -> bool:
    return not str(out).endswith(".parquet")


def run(
    config: PipelineConfig, fitted: FittedTransform, *, data: Path | str, out: Path
) -> tuple[int, TransformReport]:
    """Transform ``data`` into ``out`` on Spark; the rows written and the value counts.

    As on the Polars engine, the null/NaN/inf counts are taken first (summed over the
    tasks) and a value the fitted policy refuses stops the run before anything is written.
    """
    from mlpipe_cli.io import sink_parquet_atomic
    from mlpipe_cli.transforms.report import TransformRun, count_exprs

    if frames.is_remote(out):
        raise UsageError(
            f"engine spark writes outputs to a local or shared filesystem path, not {out}"
        )
    spark = spark_session(config)
    spark_input = frames.read_input(spark, data)
    schema = spark_input.schema
    if schema is None:
        schema = frames.collect(spark_input.frame.drop(frames.ORDER).limit(0)).schema
    fitted.check_input_schema(schema)
    empty = pl.DataFrame(schema=schema)
    output = (
        fitted.transform_batch(empty.lazy())
        .collect()
        .with_columns(pl.lit(0, pl.Int64).alias(frames.ORDER))
    )
    plan = _Plan(
        state=fitted.state,
        tables=fitted.tables,
        version=fitted.version,
        input_schema=spark_input.schema,
        output=output.schema,
    )
    with translate_errors("counting the transform's input values"):
        payloads = [
            pickle.loads(row[0])
            for row in spark_input.frame.mapInArrow(
                task_errors(lambda batches: _count_task(batches, plan)), "payload binary"
            ).collect()
        ]
    counts = empty.lazy().select(count_exprs(fitted)).collect()
    if payloads:
        counts = pl.concat(payloads).select(pl.all().cast(pl.Int64).sum())
    report = TransformRun(fitted, empty.lazy(), empty.lazy()).report_from(counts)
    report.check()
    with translate_errors("transforming"):
        if not is_directory_output(out):
            computed = spark_input.frame.mapInArrow(
                task_errors(lambda batches: _transform_task(batches, plan)),
                frames.spark_schema(plan.output),
            )
            rows = frames.decode(frames.collect(computed), plan.output)
            rows = rows.sort(frames.ORDER).drop(frames.ORDER)
            # snappy, as the Polars engine: dense floats compress poorly, zstd is slower
            sink_parquet_atomic(rows.lazy(), out, compression="snappy")
            return rows.height, report
        return _write_directory(spark_input.frame, plan, Path(out)), report


def _rebuild(plan: _Plan) -> FittedTransform:
    from mlpipe_cli.transforms.fitted import FittedTransform

    return FittedTransform(plan.state, plan.tables, plan.version)


def _transform_rows(frame: pl.DataFrame, plan: _Plan, fitted: FittedTransform) -> pl.DataFrame:
    order = frame.get_column(frames.ORDER)
    rows = frames.restore(frame.drop(frames.ORDER), plan.input_schema, "the transform input")
    result = fitted.transform_batch(rows.lazy()).collect()
    return result.with_columns(order)


def _count_task(batches: Iterator[pa.RecordBatch], plan: _Plan) -> Iterator[pa.RecordBatch]:
    """The task's sums of ``count_exprs`` (rows; nulls, NaN, inf, missing outputs)."""
    import pyarrow as pa

    from mlpipe_cli.transforms.report import count_exprs

    frame = frames.from_batches(batches)
    if frame is None:
        return
    rows = frames.restore(frame.drop(frames.ORDER), plan.input_schema, "the transform input")
    counts = rows.lazy().select(count_exprs(_rebuild(plan))).collect()
    yield pa.RecordBatch.from_pydict({"payload": [pickle.dumps(counts)]})


def _transform_task(batches: Iterator[pa.RecordBatch], plan: _Plan) -> Iterator[pa.RecordBatch]:
    fitted = _rebuild(plan)
    for batch in batches:
        if batch.num_rows:
            frame = pl.from_arrow(batch)
            yield from frames.to_batches(_transform_rows(frame, plan, fitted))  # type: ignore[arg-type]


def _write_directory(frame: Any, plan: _Plan, out: Path) -> int:
    from mlpipe_cli.io import prepare_output_path

    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} is a file; give a directory (no .parquet suffix)")
    prepare_output_path(out / "x")
    staging = out.with_name(f".{out.name}.staging-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    try:
        stats = frame.mapInArrow(
            task_errors(lambda batches: _write_task(batches, plan, str(staging))),
            "file string, rows long",
        ).collect()
        frames.replace_directory(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sum(row["rows"] for row in stats)


def _write_task(
    batches: Iterator[pa.RecordBatch], plan: _Plan, staging: str
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    frame = frames.from_batches(batches)
    if frame is None:
        return
    result = _transform_rows(frame.sort(frames.ORDER), plan, _rebuild(plan))
    names, counts = [], []
    for run in split_runs(result):
        name = frames.part_name(int(run.get_column(frames.ORDER)[0]))
        run.drop(frames.ORDER).write_parquet(Path(staging) / name, compression="snappy")
        names.append(name)
        counts.append(run.height)
    yield pa.RecordBatch.from_pydict(
        {"file": names, "rows": counts},
        schema=pa.schema([("file", pa.string()), ("rows", pa.int64())]),
    )


def split_runs(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Rows sorted by ORDER cut where ORDER stops counting up by one (another file, or a
    split of the same file that Spark packed into the same task)."""
    order = frame.get_column(frames.ORDER)
    breaks = (order.diff().fill_null(1) != 1).cum_sum()
    return frame.with_columns(breaks.alias("__run")).partition_by(
        "__run", maintain_order=True, include_key=False
    )
