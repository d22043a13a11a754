"""`psi-report --current` on Spark: the accumulators of ``drift.compare`` filled per task and
merged exactly on the driver.

``compare_to_profile`` builds one accumulator per compared column (``_NumericAcc``: the exact
histogram of the current values on the PSI edges and the KS sketch points, null/NaN counts,
per-block sums for the mean and std; ``_CategoricalAcc``: counts per category) and feeds them
the current rows. ``spark_scan`` is that feeding step on Spark:

* Spark reads the current Parquet files; every row carries its position in the order a
  Polars scan reads them (``frames.ORDER``) and the number of its *block*: blocks are
  ``SORT_BLOCK`` consecutive rows of that order, as the Polars pass cuts them.
* Rows are shuffled by block, so every block lands whole in one task. A task restores the
  Polars dtypes, sorts by ``ORDER``, evaluates the same column expressions and feeds copies
  of the driver's (empty) accumulators: the same blocks, so the same per-block sums.
* The driver adds the tasks' counts (integers: exact) and concatenates their per-block sums in
  partition order; ``math.fsum`` of the same multiset of block sums is the same float whatever
  the order. So bin counts, null/NaN counts, the KS statistic (computed from the exact counts
  on the sketch points) and mean/std equal the Polars engine's, bit for bit.

One documented difference: a categorical column with more than 10,000 distinct values the
reference never saw lists a different sample of them under ``unseen`` (the counts of
``__other__`` are exact).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.engines.spark import frames
from mlpipe_cli.engines.spark.session import spark_session, task_errors, translate_errors

if TYPE_CHECKING:
    import pyarrow as pa

    from mlpipe_cli.config import PipelineConfig

_BLOCK = "__mlpipe_block"


@dataclass(frozen=True)
class _ScanPlan:
    exprs: list[pl.Expr]
    schema: pl.Schema  # the columns the expressions read, with their Polars dtypes
    accumulators: dict[str, Any]  # key -> an empty _NumericAcc / _CategoricalAcc


def spark_scan(config: PipelineConfig, current: Path) -> Callable[..., None]:
    """A ``scan`` for ``compare_to_profile`` that reads ``current`` on Spark."""

    def scan(
        parts: Sequence[Any],
        exprs: list[pl.Expr],
        numeric: dict[str, Any],
        categorical: dict[str, Any],
        chunk_rows: int,
        rows: int | None = None,
    ) -> None:
        del parts, chunk_rows, rows  # Spark reads the files itself
        _scan_on_spark(config, current, exprs, numeric, categorical)

    return scan


def _scan_on_spark(
    config: PipelineConfig,
    current: Path,
    exprs: list[pl.Expr],
    numeric: dict[str, Any],
    categorical: dict[str, Any],
) -> None:
    from pyspark.sql import functions as F

    from mlpipe_cli.io import parquet_row_count, resolve_parquet_files

    spark = spark_session(config)
    source = frames.read_input(spark, current)
    assert source.schema is not None  # a local path (psi-report takes no URIs)
    needed = sorted({name for e in exprs for name in e.meta.root_names()})
    schema = pl.Schema({name: source.schema[name] for name in needed})
    accumulators = {**numeric, **categorical}
    block = _block_size(accumulators)
    # the first row of each file in the order a Polars scan reads them
    offsets: list[tuple[int, int]] = []
    at = 0
    for path in resolve_parquet_files(current):
        offsets.append((len(offsets), at))
        at += parquet_row_count(path)
    starts = spark.createDataFrame(offsets, "__mlpipe_rank long, __mlpipe_first long")
    mask = (1 << frames.ROW_BITS) - 1
    rows = (
        source.frame.select(*[F.col(f"`{c}`") for c in needed], F.col(frames.ORDER))
        .withColumn("__mlpipe_rank", F.shiftright(F.col(frames.ORDER), frames.ROW_BITS))
        .join(F.broadcast(starts), "__mlpipe_rank")
        .withColumn(
            _BLOCK,
            F.floor(
                (F.col("__mlpipe_first") + F.col(frames.ORDER).bitwiseAND(F.lit(mask))) / block
            ).cast("long"),
        )
        .drop("__mlpipe_rank", "__mlpipe_first")
    )
    partitions = config.spark.partitions or max(
        spark.sparkContext.defaultParallelism, math.ceil(at / config.spark.rows_per_partition)
    )
    plan = _ScanPlan(exprs=exprs, schema=schema, accumulators=_portable(accumulators))
    with translate_errors("comparing the current data with the profile"):
        results = (
            rows.repartition(partitions, _BLOCK)
            .mapInArrow(task_errors(lambda batches: _scan_task(batches, plan)), "state binary")
            .collect()
        )
    # partition order: the tasks' block sums are appended in a fixed order
    for row in results:
        for key, filled in pickle.loads(row["state"]).items():
            _merge(accumulators[key], filled)


def _block_size(accumulators: dict[str, Any]) -> int:
    from mlpipe_cli.drift.compare import SORT_BLOCK

    sizes = {getattr(acc, "block", SORT_BLOCK) for acc in accumulators.values()}
    return sizes.pop() if len(sizes) == 1 else SORT_BLOCK


def _portable(accumulators: dict[str, Any]) -> dict[str, Any]:
    """Copies without their scratch buffers (pickled to every task)."""
    import copy

    import numpy as np

    out = {}
    for key, acc in accumulators.items():
        clone = copy.copy(acc)
        if hasattr(clone, "_buf"):
            clone._buf = np.empty(0)
            clone._tmp = np.empty(0)
        out[key] = clone
    return out


def _scan_task(batches: Iterator[pa.RecordBatch], plan: _ScanPlan) -> Iterator[pa.RecordBatch]:
    import copy

    import pyarrow as pa

    frame = frames.from_batches(batches)
    if frame is None:
        return
    frame = frame.sort(frames.ORDER)  # blocks in order, rows in scan order inside each
    restored = frames.restore(frame, plan.schema, "the current data")
    selected = restored.select(plan.exprs)
    filled = {}
    for key, empty in plan.accumulators.items():
        acc = copy.deepcopy(empty)
        series = selected.get_column(key)
        if hasattr(acc, "update_series"):
            acc.update_series(series)
            acc.flush()  # the last block of the data is the only short one
            acc._buf = acc._tmp = None
        else:
            acc.update(series)
        filled[key] = acc
    yield pa.RecordBatch.from_pydict(
        {"state": [pickle.dumps(filled, protocol=pickle.HIGHEST_PROTOCOL)]},
        schema=pa.schema([("state", pa.binary())]),
    )


def _merge(into: Any, part: Any) -> None:
    """Add one task's accumulator into the driver's (integer counts; block sums appended)."""
    if hasattr(into, "update_series"):  # numeric
        into.below += part.below
        into.valid += part.valid
        into.missing += part.missing
        into.posinf += part.posinf
        into.rows += part.rows
        into.finite += part.finite
        into.s1.extend(part.s1)
        into.s2.extend(part.s2)
        return
    into.rows += part.rows
    into.missing += part.missing
    into.other += part.other
    into.counts = [a + b for a, b in zip(into.counts, part.counts, strict=True)]
    for value, count in part.unseen.items():
        if len(into.unseen) < 10_000:  # drift.compare's cap, applied in partition order
            into.unseen[value] = into.unseen.get(value, 0) + count


# -- psi-report --serving-log: the Polars engine's parts, one Spark task each ---------------


def spark_serving_log(
    config: PipelineConfig, log_dir: Path, start: Any, end: Any
) -> tuple[list[pl.LazyFrame], int, Callable[..., None]]:
    """The serving-log window as ``drift.report.serving_log_parts`` cuts it, its row count
    (counted by Spark tasks) and a ``scan`` for ``compare_to_profile`` that feeds each part's
    rows to the accumulators in a Spark task.

    The parts are the Polars engine's own lazy scans (row-group slices of each segment, cast
    to the union schema of all segments, filtered to the window), pickled to the tasks: the
    same rows in the same dtypes. Blocks (``SORT_BLOCK`` consecutive window rows, as the
    Polars pass cuts them) may straddle parts: a task feeds the blocks that lie wholly in its
    part and hands back the rows before the first and after the last block boundary; those
    rows, put together in window order on the driver, are exactly the remaining blocks.
    """
    from mlpipe_cli.drift.report import (
        scan_parts,
        scan_serving_log,
        serving_log_files,
        window_predicate,
    )

    scan_serving_log(log_dir, start, end)  # the checks: segments, their layout, served_at
    parts = scan_parts(serving_log_files(log_dir), predicate=window_predicate(start, end))
    spark = spark_session(config)
    context = spark.sparkContext
    with translate_errors("counting the serving-log window"):
        counts = (
            context.parallelize(list(enumerate(parts)), max(1, len(parts)))
            .mapPartitions(task_errors(_count_parts))
            .collect()
        )
    rows_per_part = [count for _, count in sorted(counts)]

    def scan(
        parts: Sequence[Any],
        exprs: list[pl.Expr],
        numeric: dict[str, Any],
        categorical: dict[str, Any],
        chunk_rows: int,
        rows: int | None = None,
    ) -> None:
        del chunk_rows, rows
        _scan_parts_on_spark(context, list(parts), rows_per_part, exprs, numeric, categorical)

    return parts, sum(rows_per_part), scan


def _count_parts(items: Iterator[tuple[int, pl.LazyFrame]]) -> Iterator[tuple[int, int]]:
    from mlpipe_cli.drift.report import count_rows

    for index, part in items:
        yield index, count_rows(part)


def _scan_parts_on_spark(
    context: Any,
    parts: list[pl.LazyFrame],
    rows_per_part: list[int],
    exprs: list[pl.Expr],
    numeric: dict[str, Any],
    categorical: dict[str, Any],
) -> None:
    import copy

    accumulators = {**numeric, **categorical}
    block = _block_size(accumulators)
    plan = _ScanPlan(exprs=exprs, schema=pl.Schema(), accumulators=_portable(accumulators))
    # empty copies for the rows between blocks (taken now: merging fills the originals)
    blanks = {key: copy.deepcopy(plan.accumulators[key]) for key in numeric}
    work, at = [], 0
    for index, (part, count) in enumerate(zip(parts, rows_per_part, strict=True)):
        work.append((index, at, part))
        at += count
    with translate_errors("comparing the serving log with the profile"):
        results = (
            context.parallelize(work, max(1, len(work)))
            .mapPartitions(task_errors(lambda items: _part_task(items, plan, block)))
            .collect()
        )
    fragments = []
    for _, payload in sorted(results, key=lambda result: result[0]):
        filled, pieces = pickle.loads(payload)
        for key, acc in filled.items():
            _merge(accumulators[key], acc)
        fragments += pieces
    if not fragments or not numeric:
        return
    fragments.sort(key=lambda piece: piece[0])
    rest = pl.concat([frame for _, frame in fragments])  # whole blocks, and the last one
    for key, acc in blanks.items():
        acc.update_series(rest.get_column(key))
        acc.flush()
        _merge(numeric[key], acc)


def _part_task(
    items: Iterator[tuple[int, int, pl.LazyFrame]], plan: _ScanPlan, block: int
) -> Iterator[tuple[int, bytes]]:
    import copy

    from mlpipe_cli.errors import InputError

    for index, first, part in items:
        try:
            selected = part.select(plan.exprs).collect()
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None
        count = selected.height
        head = min(count, (-first) % block)
        whole = (count - head) // block * block
        numeric_keys = [k for k, acc in plan.accumulators.items() if hasattr(acc, "update_series")]
        filled = {}
        for key, empty in plan.accumulators.items():
            acc = copy.deepcopy(empty)
            series = selected.get_column(key)
            if key in numeric_keys:
                acc.update_series(series.slice(head, whole))  # whole blocks: nothing carried
                acc.flush()
                acc._buf = acc._tmp = None
            else:
                acc.update(series)
            filled[key] = acc
        pieces = []
        if numeric_keys:
            numbers = selected.select(numeric_keys)
            if head:
                pieces.append((first, numbers.slice(0, head)))
            if head + whole < count:
                pieces.append((first + head + whole, numbers.slice(head + whole)))
        yield index, pickle.dumps((filled, pieces), protocol=pickle.HIGHEST_PROTOCOL)
