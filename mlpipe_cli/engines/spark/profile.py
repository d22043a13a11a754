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
    from mlpipe_cli.drift.profile import profile_document, profiled_columns

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
    names, numeric, categorical, unsupported_columns = profiled_columns(schema, columns)
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
            tallies = _tallies(frame, plan, max_categories)
            for index, name in enumerate(plan.categorical):
                out[name] = _categorical_entry(tallies, index, rows, str(schema[name]))
            if numeric:
                out.update(_numeric(frame, plan, rows, schema, bins, partitions, tallies))
    columns_out = {c: out[c] for c in names if c in out}
    return profile_document(rows, bins, max_categories, names, columns_out, unsupported_columns)


@dataclass(frozen=True)
class _TallyPlan:
    schema: pl.Schema  # the profiled columns with their Polars dtypes
    numeric: list[str]
    categorical: list[str]


# -- categorical ---------------------------------------------------------------------------


def _tallies(frame: Any, plan: _TallyPlan, max_categories: int) -> dict[tuple[int, int], Any]:
    """One Spark job: per categorical column its top categories, distinct count and
    null/non-null rows; per numeric column its null and NaN counts.

    Keys: (kind, column index) → for _CATEGORY a dict (top, distinct, present, nulls), for
    _NULL/_NAN the count."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    counted = (
        frame.mapInArrow(
            task_errors(lambda batches: _tally_task(batches, plan)),
            "kind int, col int, text string, count long",
        )
        .groupBy("kind", "col", "text")
        .agg(F.sum("count").alias("count"))
    )
    column = Window.partitionBy("kind", "col")
    # Polars' order: count descending, then the value (strings compare by UTF-8 bytes in
    # both engines); the null category (the missing rows) is not a category
    rank = F.row_number().over(
        column.orderBy(F.col("text").isNull(), F.col("count").desc(), F.col("text").asc())
    )
    rows = (
        counted.withColumn("distinct", F.count("text").over(column))
        .withColumn(
            "present", F.sum(F.when(F.col("text").isNotNull(), F.col("count"))).over(column)
        )
        .withColumn("rank", rank)
        .filter((F.col("rank") <= max_categories) | F.col("text").isNull())
        .collect()
    )
    out: dict[tuple[int, int], Any] = {}
    for row in rows:
        key = (row["kind"], row["col"])
        if row["kind"] != _CATEGORY:
            out[key] = int(row["count"])
            continue
        entry = out.setdefault(
            key,
            {"top": [], "distinct": int(row["distinct"]), "present": int(row["present"] or 0),
             "nulls": 0},
        )  # fmt: skip
        if row["text"] is None:
            entry["nulls"] = int(row["count"])
        else:
            entry["top"].append((row["rank"], row["text"], int(row["count"])))
    return out


def _categorical_entry(
    tallies: dict[tuple[int, int], Any], index: int, rows: int, dtype: str
) -> dict[str, Any]:
    from mlpipe_cli.drift.profile import categorical_entry

    found = tallies.get((_CATEGORY, index), {"top": [], "distinct": 0, "present": 0, "nulls": 0})
    top = sorted(found["top"])
    return categorical_entry(
        rows,
        found["nulls"],
        values=[text for _, text, _ in top],
        value_counts=[count for _, _, count in top],
        n_categories=found["distinct"],
        present_count=found["present"],
        dtype=dtype,
    )


def _tally_task(batches: Iterator[pa.RecordBatch], plan: _TallyPlan) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from mlpipe_cli.drift.profile import categorical_expr

    frame = frames.from_batches(batches)
    if frame is None:
        return
    restored = frames.restore(frame, plan.schema, "the profiled input")
    kinds: list[int] = []
    cols: list[int] = []
    texts: list[str | None] = []
    counts: list[int] = []
    for index, name in enumerate(plan.categorical):
        tally = (
            restored.select(categorical_expr(name, plan.schema[name]).alias("text"))
            .group_by("text")
            .agg(pl.len().alias("count"))
        )
        kinds += [_CATEGORY] * tally.height
        cols += [index] * tally.height
        texts += tally.get_column("text").to_list()
        counts += tally.get_column("count").to_list()
    for index, name in enumerate(plan.numeric):
        series = restored.get_column(name).cast(pl.Float64)
        kinds += [_NULL, _NAN]
        cols += [index, index]
        texts += [None, None]
        counts += [series.null_count(), int(series.is_nan().sum() or 0)]
    yield pa.RecordBatch.from_pydict(
        {"kind": kinds, "col": cols, "text": texts, "count": counts},
        schema=pa.schema(
            [
                ("kind", pa.int32()),
                ("col", pa.int32()),
                ("text", pa.string()),
                ("count", pa.int64()),
            ]
        ),
    )


# -- numeric -------------------------------------------------------------------------------


def _numeric(
    frame: Any,
    plan: _TallyPlan,
    rows: int,
    schema: pl.Schema,
    bins: int,
    partitions: int,
    tallies: dict[tuple[int, int], Any],
) -> dict[str, Any]:
    from mlpipe_cli.drift.profile import numeric_entry

    values = (
        frame.mapInArrow(
            task_errors(lambda batches: _values_task(batches, plan)), "col int, value double"
        )
        .repartitionByRange(partitions, "col", "value")
        .sortWithinPartitions("col", "value")
        .persist()
    )
    try:
        columns = _sorted_passes(values, bins)
    finally:
        values.unpersist()
    out = {}
    for index, name in enumerate(plan.numeric):
        nan_count = tallies.get((_NAN, index), 0)
        dtype = str(schema[name])
        if index in columns:
            out[name] = _numeric_entry(columns[index], rows, nan_count, dtype)
        else:  # no valid value
            out[name] = numeric_entry(rows, 0, nan_count, dtype=dtype)
    return out


def _sorted_passes(values: Any, bins: int) -> dict[int, dict[str, Any]]:
    """Passes A, B and C over the sorted values: per column index, what its entry needs."""
    from mlpipe_cli.drift.profile import (
        atom_probe_points,
        edge_probs,
        interpolate,
        quantile_ranks,
        sketch_probs,
    )

    # pass A: counts, ends and distinct-value steps of each partition's runs
    runs: dict[int, list[dict[str, Any]]] = {}
    for state in _run(values, _pass_a, bins):
        for col, run in state.items():
            runs.setdefault(col, []).append(run)
    columns = {col: _stitch(parts, bins) for col, parts in runs.items()}
    # pass B: order statistics and the finite sum
    for info in columns.values():
        wanted = [quantile_ranks(info["n"], sketch_probs())]
        if info["distinct"] is None:
            wanted.append(quantile_ranks(info["n"], edge_probs(bins)))
        info["wanted"] = wanted
        info["ranks"] = sorted({int(r) for lo, hi, _ in wanted for r in (*lo, *hi)})
    at_rank: dict[int, dict[int, float]] = {col: {} for col in columns}
    sums: dict[int, list[Any]] = {col: [] for col in columns}
    for state in _run(values, _pass_b, _plan_b(columns)):
        for col, (found, tree) in state.items():
            at_rank[col].update(found)
            sums[col].append(tree)
    for col, info in columns.items():
        wanted_ranks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = info["wanted"]
        info["quantiles"] = _quantiles(at_rank[col], wanted_ranks[0], interpolate)
        if info["distinct"] is None:
            info["deciles"] = _quantiles(at_rank[col], wanted_ranks[1], interpolate)
            info["probes"] = sorted(set(atom_probe_points(info["deciles"])))
        else:
            info["probes"] = list(info["edges"])
        finite = info["finite"]
        info["mean"] = _tree_sum(finite, sums[col]) / finite if finite else math.nan
    # pass C: counts below the probes and the squared deviations
    below: dict[int, Any] = {col: 0 for col in columns}
    squares: dict[int, list[Any]] = {col: [] for col in columns}
    for state in _run(values, _pass_c, _plan_c(columns)):
        for col, (counts, tree) in state.items():
            below[col] = below[col] + counts
            squares[col].append(tree)
    for col, info in columns.items():
        info["below"] = dict(zip(info["probes"], np.asarray(below[col]).tolist(), strict=True))
        finite = info["finite"]
        if finite > 1:
            info["std"] = math.sqrt(_tree_sum(finite, squares[col]) / (finite - 1))
        else:
            info["std"] = 0.0 if finite else math.nan
    return columns


def _numeric_entry(info: dict[str, Any], rows: int, nan_count: int, dtype: str) -> dict[str, Any]:
    from mlpipe_cli.drift.profile import numeric_entry, quantile_edges_from

    def count_below(points: list[float]) -> list[int]:
        return [info["below"][p] for p in points]

    edges = (
        info["edges"]
        if info["distinct"] is not None
        else quantile_edges_from(info["deciles"], count_below)
    )
    cuts = [0, *count_below(edges), info["n"]]
    return numeric_entry(
        rows,
        info["n"],
        nan_count,
        dtype=dtype,
        mean=info["mean"],
        std=info["std"],
        low=info["low"],
        high=info["high"],
        distinct=info["distinct"],
        edges=edges,
        counts=[cuts[i + 1] - cuts[i] for i in range(len(cuts) - 1)],
        quantiles=info["quantiles"],
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


def _stitch(parts: list[dict[str, Any]], bins: int) -> dict[str, Any]:
    """A column's global facts from its runs in partition (= sorted) order."""
    from mlpipe_cli.drift.profile import new_values, value_bins_from

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
    with np.errstate(over="ignore"):  # a sum beyond ±1.8e308 is ±inf, as on Polars
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
    with np.errstate(over="ignore", invalid="ignore"):  # as drift.profile.numeric_profile
        tree = _finite_tree(
            run, mine["offsets"][partition], mine, lambda finite: (finite - mean) ** 2
        )
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
    at_rank: dict[int, float],
    ranks: tuple[np.ndarray, np.ndarray, np.ndarray],
    interpolate: Any,
) -> list[float]:
    lo, hi, frac = ranks
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
