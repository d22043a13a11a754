"""The reference profile on Spark (`validate --save-profile`): the Polars engine's bytes.

A numeric profile entry is a function of the *sorted* non-missing values of the column
(``drift.profile``): order statistics (the decile edges, the 1,001 KS quantiles), counts
below points (bin counts, the atom checks), the distinct values of a low-cardinality column,
and two float sums (``np.sum`` of the finite values, then of their squared deviations).
Spark computes each exactly, so the profile equals the Polars engine's byte for byte — no
sketch, no tolerance (``drift.sketch`` is the mergeable fallback, not needed here):

* Tasks restore the Polars dtypes, cast each numeric column with the same Polars cast, drop
  nulls and NaN (counting them) and emit ``(column, value)`` rows; Spark range-partitions and
  sorts them, so partition ``p`` holds a contiguous run of the sorted values of each column.
* Pass A (per sorted partition): value counts, ±inf counts, first/last value and where a new
  distinct value starts. The driver turns the counts into each partition's global rank
  offset and stitches the distinct-value steps across partition boundaries.
* Pass B: the values at the ranks the quantiles need, and the float sum of the finite values
  as numpy computes it: ``np.sum`` is a pairwise sum whose tree depends only on the length
  (halves rounded to multiples of 8, leaves of at most 128 values). A task sums every tree
  node that lies wholly inside its run and hands back the few values of the leaves cut by
  its run's ends; the driver walks the same tree and adds the same numbers in the same order.
* Pass C: counts below the bin edges and atom probes, and the squared-deviation sum (needs
  the mean of pass B), the same way.

Categorical counts are Polars ``group_by`` counts per task, added by Spark; the top
``max_categories`` are chosen by Spark in the Polars order (count descending, then value
in byte order), so only they reach the driver.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mlpipe_cli.engines.spark import frames
from mlpipe_cli.engines.spark.session import spark_session, task_errors, translate_errors
from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlpipe_cli.config import PipelineConfig

_LEAF = 128  # numpy's PW_BLOCKSIZE: the largest pairwise-sum leaf
_CATEGORY, _NULL, _NAN = 0, 1, 2  # kinds of tally rows


def spark_profile(
    config: PipelineConfig,
    path: Path | str,
    columns: list[str] | None = None,
    *,
    bins: int = 10,
    max_categories: int = 1000,
) -> dict:
    """``drift.profile.build_profile`` of the Parquet input ``path``, computed on Spark."""
    from mlpipe_cli.documents import DriftProfile
    from mlpipe_cli.drift.profile import SKETCH_SIZE, column_kind

    if bins < 2:
        raise InputError(f"bins must be at least 2, got {bins}")
    if max_categories < 1:
        raise InputError(f"max_categories must be at least 1, got {max_categories}")
    spark = spark_session(config)
    source = frames.read_input(spark, path)
    if source.schema is None:
        from mlpipe_cli.engines import unsupported

        raise unsupported(f"a reference profile of a remote input ({path})")
    schema = source.schema
    names = list(schema.names()) if columns is None else list(columns)
    missing = [c for c in names if c not in schema]
    if missing:
        raise InputError(f"cannot profile: column(s) {', '.join(missing)} not in the data")
    numeric = [c for c in names if column_kind(schema[c]) == "numeric"]
    categorical = [c for c in names if column_kind(schema[c]) == "categorical"]
    unsupported_columns = {c: str(schema[c]) for c in names if column_kind(schema[c]) is None}
    rows = int(source.rows or 0)
    out: dict[str, Any] = {}
    partitions = config.spark.partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil(rows / config.spark.rows_per_partition),
    )
    if numeric or categorical:
        plan = _TallyPlan(
            schema=pl.Schema({c: schema[c] for c in [*numeric, *categorical]}),
            numeric=numeric,
            categorical=categorical,
        )
        frame = source.frame.select(*[f"`{c}`" for c in plan.schema.names()])
        with translate_errors("profiling the input"):
            if categorical:
                out.update(_categorical(frame, plan, rows, schema, max_categories))
            if numeric:
                out.update(_numeric(frame, plan, rows, schema, bins, partitions))
    return {
        "format_version": DriftProfile.FORMAT_VERSION,
        "kind": DriftProfile.KIND,
        "rows": rows,
        "bins": bins,
        "sketch_size": SKETCH_SIZE,
        "max_categories": max_categories,
        "column_order": [c for c in names if c not in unsupported_columns],
        "columns": {c: out[c] for c in names if c in out},
        "unsupported": unsupported_columns,
    }


@dataclass(frozen=True)
class _TallyPlan:
    schema: pl.Schema  # the profiled columns with their Polars dtypes
    numeric: list[str]
    categorical: list[str]


# -- categorical ---------------------------------------------------------------------------


def _categorical(
    frame: Any, plan: _TallyPlan, rows: int, schema: pl.Schema, max_categories: int
) -> dict[str, Any]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from mlpipe_cli.drift.profile import categorical_entry

    tallies = (
        frame.mapInArrow(
            task_errors(lambda batches: _category_task(batches, plan)),
            "col int, text string, count long",
        )
        .groupBy("col", "text")
        .agg(F.sum("count").alias("count"))
        .cache()
    )
    try:
        totals = {
            r["col"]: r
            for r in tallies.groupBy("col")
            .agg(
                F.count("text").alias("distinct"),  # non-null texts
                F.sum(F.when(F.col("text").isNotNull(), F.col("count"))).alias("present"),
                F.sum(F.when(F.col("text").isNull(), F.col("count"))).alias("nulls"),
            )
            .collect()
        }
        # Polars' order: count descending, then the value (strings compare by UTF-8 bytes
        # in both engines)
        rank = F.row_number().over(
            Window.partitionBy("col").orderBy(F.col("count").desc(), F.col("text").asc())
        )
        top = (
            tallies.filter(F.col("text").isNotNull())
            .withColumn("rank", rank)
            .filter(F.col("rank") <= max_categories)
            .select("col", "rank", "text", "count")
            .collect()
        )
    finally:
        tallies.unpersist()
    out = {}
    for index, name in enumerate(plan.categorical):
        chosen = sorted((r["rank"], r["text"], r["count"]) for r in top if r["col"] == index)
        total = totals.get(index)
        out[name] = categorical_entry(
            rows,
            int((total["nulls"] if total else None) or 0),
            values=[text for _, text, _ in chosen],
            value_counts=[int(count) for _, _, count in chosen],
            n_categories=int(total["distinct"]) if total else 0,
            present_count=int((total["present"] if total else None) or 0),
            dtype=str(schema[name]),
        )
    return out


def _category_task(batches: Iterator[pa.RecordBatch], plan: _TallyPlan) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from mlpipe_cli.drift.profile import categorical_expr

    frame = frames.from_batches(batches)
    if frame is None:
        return
    restored = frames.restore(frame, plan.schema, "the profiled input")
    for index, name in enumerate(plan.categorical):
        counts = (
            restored.select(categorical_expr(name, plan.schema[name]).alias("text"))
            .group_by("text")
            .agg(pl.len().cast(pl.Int64).alias("count"))
        )
        yield pa.RecordBatch.from_pydict(
            {
                "col": [index] * counts.height,
                "text": counts.get_column("text").to_list(),
                "count": counts.get_column("count").to_list(),
            },
            schema=pa.schema([("col", pa.int32()), ("text", pa.string()), ("count", pa.int64())]),
        )


# -- numeric -------------------------------------------------------------------------------


def _numeric(
    frame: Any, plan: _TallyPlan, rows: int, schema: pl.Schema, bins: int, partitions: int
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from mlpipe_cli.drift.profile import (
        atom_probe_points,
        edge_probs,
        interpolate,
        numeric_entry,
        quantile_edges_from,
        quantile_ranks,
        sketch_probs,
        value_bins_from,
    )

    missing: dict[tuple[int, int], int] = {}
    for row in frame.mapInArrow(
        task_errors(lambda batches: _missing_task(batches, plan)), "col int, kind int, count long"
    ).groupBy("col", "kind").agg(F.sum("count").alias("count")).collect():
        missing[(row["col"], row["kind"])] = int(row["count"])
    values = (
        frame.mapInArrow(
            task_errors(lambda batches: _values_task(batches, plan)), "col int, value double"
        )
        .repartitionByRange(partitions, "col", "value")
        .sortWithinPartitions("col", "value")
        .persist()
    )
    try:
        # pass A: counts, ends and distinct-value steps of each partition's runs
        runs: dict[int, list[dict[str, Any]]] = {}
        for state in _run(values, _pass_a, bins):
            for col, run in state.items():
                runs.setdefault(col, []).append(run)
        columns: dict[int, dict[str, Any]] = {}
        for col, parts in runs.items():
            parts.sort(key=lambda run: run["partition"])
            columns[col] = _stitch(parts, bins, value_bins_from)
        # pass B: order statistics and the finite sum
        for col, info in columns.items():
            n = info["n"]
            wanted = [quantile_ranks(n, sketch_probs())]
            if info["distinct"] is None:
                wanted.append(quantile_ranks(n, edge_probs(bins)))
            info["wanted"] = wanted
            info["ranks"] = sorted({int(r) for lo, hi, _ in wanted for r in (*lo, *hi)})
        at_rank: dict[int, dict[int, float]] = {col: {} for col in columns}
        sums: dict[int, list[Any]] = {col: [] for col in columns}
        for state in _run(values, _pass_b, _plan_b(columns)):
            for col, (found, tree) in state.items():
                at_rank[col].update(found)
                sums[col].append(tree)
        for col, info in columns.items():
            lo, hi, frac = info["wanted"][0]
            info["quantiles"] = _quantiles(at_rank[col], lo, hi, frac, interpolate)
            if info["distinct"] is None:
                lo, hi, frac = info["wanted"][1]
                info["deciles"] = _quantiles(at_rank[col], lo, hi, frac, interpolate)
                info["probes"] = sorted(set(atom_probe_points(info["deciles"])))
            else:
                info["probes"] = list(info["edges"])
            finite = info["finite"]
            info["mean"] = _tree_sum(finite, sums[col]) / finite if finite else math.nan
        # pass C: counts below the probes and the squared deviations
        below: dict[int, np.ndarray] = {}
        squares: dict[int, list[Any]] = {col: [] for col in columns}
        for state in _run(values, _pass_c, _plan_c(columns)):
            for col, (counts, tree) in state.items():
                below[col] = below.get(col, 0) + counts
                squares[col].append(tree)
    finally:
        values.unpersist()

    out = {}
    for index, name in enumerate(plan.numeric):
        nan_count = missing.get((index, _NAN), 0)
        info = columns.get(index)
        dtype = str(schema[name])
        if info is None:  # no valid value
            out[name] = numeric_entry(rows, 0, nan_count, dtype=dtype)
            continue
        probes = dict(zip(info["probes"], below[index].tolist(), strict=True))

        def count_below(points: list[float], probes: dict[float, int] = probes) -> list[int]:
            return [probes[p] for p in points]

        edges = (
            info["edges"]
            if info["distinct"] is not None
            else quantile_edges_from(info["deciles"], count_below)
        )
        cuts = [0, *count_below(edges), info["n"]]
        finite = info["finite"]
        if finite > 1:
            std = math.sqrt(_tree_sum(finite, squares[index]) / (finite - 1))
        else:
            std = 0.0 if finite else math.nan
        out[name] = numeric_entry(
            rows,
            info["n"],
            nan_count,
            dtype=dtype,
            mean=info["mean"],
            std=std,
            low=info["low"],
            high=info["high"],
            distinct=info["distinct"],
            edges=edges,
            counts=[cuts[i + 1] - cuts[i] for i in range(len(cuts) - 1)],
            quantiles=info["quantiles"],
        )
    return out


def _missing_task(batches: Iterator[pa.RecordBatch], plan: _TallyPlan) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    frame = frames.from_batches(batches)
    if frame is None:
        return
    restored = frames.restore(frame, plan.schema, "the profiled input")
    cols, kinds, counts = [], [], []
    for index, name in enumerate(plan.numeric):
        series = restored.get_column(name).cast(pl.Float64)
        cols += [index, index]
        kinds += [_NULL, _NAN]
        counts += [series.null_count(), int(series.is_nan().sum() or 0)]
    yield pa.RecordBatch.from_pydict(
        {"col": cols, "kind": kinds, "count": counts},
        schema=pa.schema([("col", pa.int32()), ("kind", pa.int32()), ("count", pa.int64())]),
    )


def _values_task(batches: Iterator[pa.RecordBatch], plan: _TallyPlan) -> Iterator[pa.RecordBatch]:
    """Each numeric column's valid values, as the Polars engine casts them."""
    import pyarrow as pa

    frame = frames.from_batches(batches)
    if frame is None:
        return
    restored = frames.restore(frame, plan.schema, "the profiled input")
    arrow = pa.schema([("col", pa.int32()), ("value", pa.float64())])
    for index, name in enumerate(plan.numeric):
        values = restored.get_column(name).cast(pl.Float64).to_numpy()  # nulls → NaN
        # -0.0 → 0.0: equal values must be equal bits, whichever order the sort leaves them in
        valid = values[~np.isnan(values)] + 0.0
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.full(len(valid), index, dtype=np.int32)), pa.array(valid)], schema=arrow
        )


def _run(values: Any, task: Any, plan: Any) -> list[dict[int, Any]]:
    """One pass over the sorted partitions: each task's per-column state, in partition order."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyspark import TaskContext

        partition = TaskContext.get().partitionId()  # type: ignore[union-attr]
        frame = frames.from_batches(batches)
        state: dict[int, Any] = {}
        if frame is not None:
            cols = frame.get_column("col").to_numpy()
            vals = frame.get_column("value").to_numpy()
            # sorted by (col, value) already; a stable sort keeps that and makes it certain
            order = np.lexsort((vals, cols))
            cols, vals = cols[order], vals[order]
            bounds = np.flatnonzero(np.diff(cols)) + 1
            for start, end in zip([0, *bounds], [*bounds, len(cols)], strict=True):
                col = int(cols[start])
                state[col] = task(col, partition, vals[start:end], plan)
        yield pa.RecordBatch.from_pydict(
            {"partition": [partition], "state": [pickle.dumps(state)]},
            schema=pa.schema([("partition", pa.int64()), ("state", pa.binary())]),
        )

    results = values.mapInArrow(task_errors(run), "partition long, state binary").collect()
    return [pickle.loads(r["state"]) for r in sorted(results, key=lambda r: r["partition"])]


def _pass_a(col: int, partition: int, run: np.ndarray, bins: int) -> dict[str, Any]:
    from mlpipe_cli.drift.profile import new_values

    starts = np.flatnonzero(new_values(run[:-1], run[1:])) + 1
    return {
        "partition": partition,
        "n": len(run),
        "neginf": int(np.searchsorted(run, -np.inf, side="right")),
        "posinf": len(run) - int(np.searchsorted(run, np.inf, side="left")),
        "first": float(run[0]),
        "last": float(run[-1]),
        # more than ``bins`` distinct values in the run alone: not binned by value
        "steps": [(float(run[i - 1]), float(run[i])) for i in starts[:bins]],
        "too_many": len(starts) > bins,
    }


def _stitch(parts: list[dict[str, Any]], bins: int, value_bins_from: Any) -> dict[str, Any]:
    """A column's global facts from its runs in partition (= sorted) order."""
    from mlpipe_cli.drift.profile import new_values

    offsets, at = {}, 0
    for run in parts:
        offsets[run["partition"]] = at
        at += run["n"]
    neginf = sum(run["neginf"] for run in parts)
    posinf = sum(run["posinf"] for run in parts)
    steps: list[tuple[float, float]] = []
    by_value = True
    previous = None
    for run in parts:
        if previous is not None and bool(
            new_values(np.asarray([previous]), np.asarray([run["first"]]))[0]
        ):
            steps.append((previous, run["first"]))
        steps += run["steps"]
        previous = run["last"]
        if run["too_many"] or len(steps) + 1 > bins:
            by_value = False
            break
    distinct, edges = value_bins_from(parts[0]["first"], steps) if by_value else (None, None)
    return {
        "n": at,
        "offsets": offsets,
        "finite_start": neginf,
        "finite": at - neginf - posinf,
        "low": parts[0]["first"],
        "high": parts[-1]["last"],
        "distinct": distinct,
        "edges": edges,
    }


def _plan_b(columns: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        col: {
            "offsets": info["offsets"],
            "ranks": np.asarray(info["ranks"], dtype=np.int64),
            "finite_start": info["finite_start"],
            "finite": info["finite"],
        }
        for col, info in columns.items()
    }


def _pass_b(col: int, partition: int, run: np.ndarray, plan: dict[int, Any]) -> Any:
    mine = plan[col]
    offset = mine["offsets"][partition]
    ranks = mine["ranks"]
    inside = ranks[(ranks >= offset) & (ranks < offset + len(run))]
    found = {int(r): float(run[r - offset]) for r in inside}
    return found, _finite_tree(run, offset, mine, lambda finite: finite)


def _plan_c(columns: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        col: {
            "offsets": info["offsets"],
            "probes": np.asarray(info["probes"], dtype=np.float64),
            "finite_start": info["finite_start"],
            "finite": info["finite"],
            "mean": info["mean"],
        }
        for col, info in columns.items()
    }


def _pass_c(col: int, partition: int, run: np.ndarray, plan: dict[int, Any]) -> Any:
    mine = plan[col]
    counts = np.searchsorted(run, mine["probes"], side="left").astype(np.int64)
    mean = mine["mean"]
    tree = _finite_tree(run, mine["offsets"][partition], mine, lambda finite: (finite - mean) ** 2)
    return counts, tree


def _finite_tree(run: np.ndarray, offset: int, plan: dict[str, Any], transform: Any) -> Any:
    """This run's share of the pairwise sum over the column's finite values."""
    lo = int(np.searchsorted(run, -np.inf, side="right"))
    hi = int(np.searchsorted(run, np.inf, side="left"))
    start = offset + lo - plan["finite_start"]  # index among the finite values
    return tree_parts(transform(run[lo:hi]), max(start, 0), plan["finite"])


# -- numpy's pairwise sum, split over runs --------------------------------------------------


def _halves(length: int) -> int:
    half = length // 2
    return half - half % 8


def tree_parts(
    values: np.ndarray, start: int, total: int
) -> tuple[dict[tuple[int, int], float], list[tuple[int, np.ndarray]]]:
    """``values`` are elements ``[start, start + len)`` of an array of ``total`` elements.

    Returns the sums of the largest nodes of numpy's pairwise-summation tree over that array
    that lie wholly inside, keyed by (first element, length), and the values of each leaf
    that is only partly inside (keyed by the first element held)."""
    sums: dict[tuple[int, int], float] = {}
    fragments: list[tuple[int, np.ndarray]] = []
    end = start + len(values)
    if not len(values):
        return sums, fragments

    def visit(first: int, length: int) -> None:
        if first >= end or first + length <= start:
            return
        if start <= first and first + length <= end:
            sums[(first, length)] = float(np.sum(values[first - start : first - start + length]))
        elif length <= _LEAF:
            lo, hi = max(first, start), min(first + length, end)
            fragments.append((lo, values[lo - start : hi - start].copy()))
        else:
            half = _halves(length)
            visit(first, half)
            visit(first + half, length - half)

    visit(0, total)
    return sums, fragments


def _tree_sum(total: int, parts: list[Any]) -> float:
    """``np.sum`` of the whole array, from every run's ``tree_parts``: the same additions
    in the same order as numpy's pairwise sum."""
    sums: dict[tuple[int, int], float] = {}
    fragments: list[tuple[int, np.ndarray]] = []
    for node_sums, node_fragments in parts:
        sums.update(node_sums)
        fragments += node_fragments
    fragments.sort(key=lambda fragment: fragment[0])

    def node(first: int, length: int) -> float:
        if (first, length) in sums:
            return sums[(first, length)]
        if length <= _LEAF:
            pieces = [v for at, v in fragments if first <= at < first + length]
            leaf = np.concatenate(pieces) if pieces else np.empty(0)
            if len(leaf) != length:
                raise AssertionError(f"pairwise leaf at {first}: {len(leaf)} of {length} values")
            return float(np.sum(leaf))
        half = _halves(length)
        return node(first, half) + node(first + half, length - half)

    return node(0, total) if total else 0.0


def _quantiles(
    at_rank: dict[int, float], lo: np.ndarray, hi: np.ndarray, frac: np.ndarray, interpolate: Any
) -> list[float]:
    a = np.asarray([at_rank[int(r)] for r in lo], dtype=np.float64)
    b = np.asarray([at_rank[int(r)] for r in hi], dtype=np.float64)
    return interpolate(a, b, frac)


def distribution_checks_on_spark(
    config: PipelineConfig,
    source_name: str,
    data_path: Path | str | None,
    report: Any,
    reference: dict[str, Any],
    reference_version: str | None,
) -> None:
    """``validate --reference`` on Spark: the Polars engine's distribution checks, with the
    current batch read by ``engines/spark/drift.py`` (per-task accumulators merged exactly)."""
    from mlpipe_cli.engines.spark.drift import spark_scan
    from mlpipe_cli.io import scan_parquet
    from mlpipe_cli.progress import note as progress_note
    from mlpipe_cli.validation.distribution import distribution_checks

    source = config.source(source_name)
    path = data_path if data_path is not None else source.path
    if frames.is_remote(path):
        from mlpipe_cli.engines import unsupported

        raise unsupported(f"validate --reference of a remote input ({path})")
    local = frames.local_path(path)
    report.reference = reference_version
    progress_note(f"{source_name}: distribution")
    report.checks.extend(
        distribution_checks(
            source_name,
            source,
            scan_parquet(local),
            reference,
            schema_ok=report.schema_ok,
            scan=spark_scan(config, local),
        )
    )
