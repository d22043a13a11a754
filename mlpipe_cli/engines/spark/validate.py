"""`validate` on Spark: the contract's checks per task, counts and examples merged.

The driver builds the checks exactly as the Polars engine does (``validation.engine``: the
schema checks on the recorded schema, the row checks compiled to the same Polars
predicates). Each task evaluates every predicate on its rows with the same fused plan
(``_counts_plan``) and returns its counts and its first failing rows; the driver adds the
counts (so the row-count identity ``rows = passing + failed`` holds over the whole input),
keeps the globally first examples (row numbers as a Polars scan numbers them), and judges
tolerances and the source SLO on the totals.

Uniqueness (``unique``, ``primary_key``) is the one check that is not per-row: Spark finds
the rows that repeat an earlier key (a window over the key, ordered by input order) and the
tasks get their row ids as an ``is_in`` predicate, as the Polars engine does with its hash
buckets. With ``--quarantine``/``--out`` the tasks also write the failing and the passing
rows (a ``.parquet`` path: one file, collected on the driver; any other path: a directory of
part files in input order).
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
    from mlpipe_cli.validation.report import SourceReport

_ROW = "__mlpipe_row"  # the Polars engine's row-number column (validation.engine.ROW)


@dataclass(frozen=True)
class _Plan:
    schema: pl.Schema | None  # recorded Polars dtypes of the input (None: remote)
    effective: pl.Schema  # the dtypes the checks see
    fails: list[pl.Expr]  # per row check: True where the row fails
    values: list[pl.Expr]  # per row check: the example value
    severities: list[str]
    own_tolerance: list[bool]
    ids: list[str]
    nullable: list[str]
    offsets: dict[int, int]  # file rank -> rows in the files before it


def check_source(
    config: PipelineConfig,
    source_name: str,
    data_path: Path | str | None = None,
    *,
    quarantine_path: Path | None = None,
    out_path: Path | None = None,
) -> SourceReport:
    """``validation.validate_source`` without a reference, on Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from mlpipe_cli.validation import engine as E
    from mlpipe_cli.validation.report import SourceReport

    source = config.source(source_name)
    if source.derived:
        from mlpipe_cli.engines import unsupported

        raise unsupported("validate of a source with `derived` columns")
    path = data_path if data_path is not None else source.path
    for target in (quarantine_path, out_path):
        if target is not None and frames.is_remote(target):
            raise UsageError(f"engine spark writes outputs to a local or shared path, not {target}")
    spark = spark_session(config)
    spark_input = frames.read_input(spark, path)
    schema = spark_input.schema
    if schema is None:
        schema = frames.collect(spark_input.frame.drop(frames.ORDER).limit(0)).schema
    report = SourceReport(
        source=source_name, path=str(path), max_failure_rate=source.max_failure_rate
    )
    bad_columns = E._schema_checks(report, source, schema)
    row_checks = E._compile_row_checks(report, source, schema, bad_columns)
    frame = spark_input.frame

    with translate_errors(f"validating {source_name}"):
        for check in row_checks:
            if check.key is None:
                continue
            columns = (
                [check.result.column]
                if check.result.kind == "unique"
                else list((check.result.details or {})["columns"])
            )
            keyed = frame.select(*[F.col(f"`{c}`") for c in columns], frames.ORDER)
            if check.result.kind == "unique":
                keyed = keyed.filter(F.col(f"`{columns[0]}`").isNotNull())
            rank = F.row_number().over(
                Window.partitionBy(*[F.col(f"`{c}`") for c in columns]).orderBy(frames.ORDER)
            )
            repeats = [
                r[0]
                for r in keyed.select(frames.ORDER, rank.alias("n"))
                .filter(F.col("n") > 1)
                .select(frames.ORDER)
                .collect()
            ]
            check.fail = pl.col(frames.ORDER).is_in(pl.Series(repeats, dtype=pl.Int64).implode())

        plan = _Plan(
            schema=spark_input.schema,
            effective=schema,
            fails=[c.fail for c in row_checks],
            values=[c.value for c in row_checks],
            severities=[c.result.severity for c in row_checks],
            own_tolerance=[c.own_tolerance for c in row_checks],
            ids=[c.result.id for c in row_checks],
            nullable=[
                c
                for c, contract in source.columns.items()
                if contract.nullable and c in schema.names()
            ],
            offsets=_offsets(spark_input, path),
        )
        payloads = [
            pickle.loads(row[0])
            for row in frame.mapInArrow(
                task_errors(lambda batches: _count_task(batches, plan, row_checks)),
                "payload binary",
            ).collect()
        ]
    _merge(report, source, row_checks, payloads, plan)
    if quarantine_path is not None or out_path is not None:
        _split(report, frame, plan, row_checks, quarantine_path, out_path)
    return report


def _offsets(spark_input: frames.SparkInput, path: Path | str) -> dict[int, int]:
    """Rows before each file, to number rows as one Polars scan over the files does."""
    from mlpipe_cli.io import parquet_row_count, resolve_parquet_files

    if spark_input.schema is not None:
        counts = [parquet_row_count(f) for f in resolve_parquet_files(frames.local_path(path))]
    else:
        from pyspark.sql import functions as F

        file_rank = F.shiftright(F.col(frames.ORDER), frames.ROW_BITS)
        by_rank: dict[int, int] = dict(
            spark_input.frame.groupBy(file_rank.alias("r")).count().collect()  # (r, count) rows
        )
        counts = [by_rank.get(r, 0) for r in range(spark_input.files)]
    offsets: dict[int, int] = {}
    total = 0
    for rank, count in enumerate(counts):
        offsets[rank] = total
        total += count
    return offsets


def _global_rows(order: pl.Expr, offsets: dict[int, int]) -> pl.Expr:
    rank = (order // (1 << frames.ROW_BITS)).cast(pl.Int64)
    offset = rank.replace_strict(offsets, return_dtype=pl.Int64)
    return offset + (order % (1 << frames.ROW_BITS))


def _with_rows(frame: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """A task's rows in their Polars dtypes, plus ORDER and the global row number."""
    rows = frames.restore(frame.drop(frames.ORDER), plan.schema, "the validated input")
    return rows.with_columns(frame.get_column(frames.ORDER)).with_columns(
        _global_rows(pl.col(frames.ORDER), plan.offsets).alias(_ROW)
    )


def _count_task(
    batches: Iterator[pa.RecordBatch], plan: _Plan, row_checks: list[Any]
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from mlpipe_cli.validation import engine as E

    frame = frames.from_batches(batches)
    if frame is None:
        return
    lazy = _with_rows(frame, plan).lazy()
    extra = [pl.col(c).null_count().cast(pl.Int64).alias(f"n:{c}") for c in plan.nullable]
    indices = list(range(len(row_checks)))
    crashed: dict[int, str] = {}
    try:
        counts = E._counts_plan(lazy, row_checks, indices, extra).collect().row(0, named=True)
    except Exception:
        for i in indices:
            try:
                lazy.select(plan.fails[i].sum()).collect()
            except Exception as exc:
                crashed[i] = f"check crashed: {E._first_line(exc)}"
        healthy = [i for i in indices if i not in crashed]
        counts = E._counts_plan(lazy, row_checks, healthy, extra).collect().row(0, named=True)
    examples: dict[int, list[tuple[int, Any]]] = {}
    failing = [i for i in indices if i not in crashed and counts.get(f"c{i}")]
    if failing:
        exprs = []
        for i in failing:
            flag = plan.fails[i]
            exprs.append(pl.col(_ROW).filter(flag).head(E.EXAMPLES).implode().alias(f"r{i}"))
            exprs.append(plan.values[i].filter(flag).head(E.EXAMPLES).implode().alias(f"v{i}"))
        got = lazy.select(exprs).collect().row(0, named=True)
        examples = {i: list(zip(got[f"r{i}"], got[f"v{i}"], strict=True)) for i in failing}
    payload = {"counts": counts, "crashed": crashed, "examples": examples}
    yield pa.RecordBatch.from_pydict({"payload": [pickle.dumps(payload)]})


def _merge(
    report: SourceReport,
    source: Any,
    row_checks: list[Any],
    payloads: list[dict[str, Any]],
    plan: _Plan,
) -> None:
    """Totals over the tasks, then the Polars engine's judging (validation.engine)."""
    from mlpipe_cli.validation import engine as E
    from mlpipe_cli.validation.report import ERROR, FAIL, WARN, CheckResult

    def total(key: str) -> int:
        return sum(int(p["counts"].get(key) or 0) for p in payloads)

    rows = total("__len")
    report.rows = rows
    name = report.source
    for i, check in enumerate(row_checks):
        result = check.result
        messages = [p["crashed"][i] for p in payloads if i in p["crashed"]]
        if messages:
            result.status = ERROR
            result.message = messages[0]
            continue
        if result.status == ERROR:
            continue
        result.failures = total(f"c{i}")
        result.rows = rows
        found = sorted(
            (example for p in payloads for example in p["examples"].get(i, [])),
            key=lambda example: example[0],
        )[: E.EXAMPLES]
        result.examples = [{"row": int(r), "value": v} for r, v in found]
        E._judge(result, check, result.failures, rows, source.max_failure_rate)
    report.failed_rows = total("__failed")
    slo = CheckResult(
        f"{name}.table.row_failure_rate", name, None, "row_failure_rate", "error",
        failures=total("__slo"), rows=rows, threshold=source.max_failure_rate,
    )  # fmt: skip
    slo.statistic = slo.rate if rows else 0.0
    if rows and slo.failures / rows > source.max_failure_rate:  # type: ignore[operator]
        slo.status = FAIL
        slo.message = (
            f"{slo.failures} of {rows} rows ({E._pct(slo.rate)}) fail row checks; "
            f"max_failure_rate is {E._pct(source.max_failure_rate)}"
        )
    report.checks.append(slo)
    E._row_count_checks(report, source, rows)
    for column in plan.nullable:
        nulls = total(f"n:{column}")
        if rows and nulls == rows:
            report.checks.append(
                CheckResult(
                    f"{name}.{column}.all_null",
                    name,
                    column,
                    "all_null",
                    "warn",
                    status=WARN,
                    failures=nulls,
                    rows=rows,
                    message=f"column {column!r} is null in every row",
                )
            )


# -- quarantine / out ---------------------------------------------------------------------


def _split(
    report: SourceReport,
    frame: Any,
    plan: _Plan,
    row_checks: list[Any],
    quarantine_path: Path | None,
    out_path: Path | None,
) -> None:
    """Failing rows (with ``_row`` and ``_failed_checks``) to quarantine, the rest to out."""
    from mlpipe_cli.validation import engine as E
    from mlpipe_cli.validation.report import ERROR

    if not report.schema_ok or any(c.result.status == ERROR for c in row_checks):
        note = {"path": None, "rows": None, "written": False,
                "reason": "not written: the schema check or a check failed to run"}  # fmt: skip
        if quarantine_path is not None:
            report.quarantine = dict(note)
        if out_path is not None:
            report.out = dict(note)
        return
    for side, target in (("quarantine", quarantine_path), ("out", out_path)):
        if target is None:
            continue
        with translate_errors(f"writing {side}"):
            rows = _write_side(frame, plan, side, Path(target), E)
        setattr(report, side, {"path": str(target), "rows": rows})


def _side_rows(frame: pl.DataFrame, plan: _Plan, side: str, E: Any) -> pl.DataFrame:
    """The task's rows of one side, in input order, with ORDER still attached."""
    with_row = _with_rows(frame, plan)
    columns = [c for c in with_row.columns if c not in (frames.ORDER, _ROW)]
    flags = with_row.with_columns([fail.alias(f"__f{i}") for i, fail in enumerate(plan.fails)])
    errors = [i for i, s in enumerate(plan.severities) if s == "error"]
    is_bad = pl.any_horizontal([pl.col(f"__f{i}") for i in errors]) if errors else pl.lit(False)
    if side == "out":
        return flags.filter(~is_bad).select(*columns, frames.ORDER)
    failed = (
        pl.concat_list(
            [pl.when(pl.col(f"__f{i}")).then(pl.lit(cid)) for i, cid in enumerate(plan.ids)]
        ).list.drop_nulls()
        if plan.ids
        else pl.lit([], dtype=pl.List(pl.String))
    )
    return flags.filter(is_bad).select(
        *columns,
        pl.col(_ROW).cast(pl.Int64).alias(E.ROW_COLUMN),
        failed.alias(E.FAILED_CHECKS_COLUMN),
        frames.ORDER,
    )


def _write_side(frame: Any, plan: _Plan, side: str, target: Path, E: Any) -> int:
    from mlpipe_cli.engines.spark.transform import split_runs
    from mlpipe_cli.io import prepare_output_path, sink_parquet_atomic

    if str(target).endswith(".parquet"):
        sample = pl.DataFrame(schema=plan.effective)  # the output schema from zero rows
        empty = _side_rows(
            sample.with_columns(pl.lit(0, pl.Int64).alias(frames.ORDER)), plan, side, E
        )
        computed = frame.mapInArrow(
            task_errors(lambda batches: _side_task(batches, plan, side, E)),
            frames.spark_schema(empty.schema),
        )
        rows = frames.decode(frames.collect(computed), empty.schema)
        rows = rows.sort(frames.ORDER).drop(frames.ORDER)
        sink_parquet_atomic(rows.lazy(), target)
        return rows.height
    if target.exists() and not target.is_dir():
        raise InputError(f"output path {target} is a file; give a directory or a .parquet file")
    prepare_output_path(target / "x")
    staging = target.with_name(f".{target.name}.staging-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        got = frames.from_batches(batches)
        if got is None:
            return
        part = _side_rows(got.sort(frames.ORDER), plan, side, E)
        names, counts = [], []
        for run in split_runs(part) if part.height else []:
            name = frames.part_name(int(run.get_column(frames.ORDER)[0]))
            run.drop(frames.ORDER).write_parquet(Path(staging) / name)
            names.append(name)
            counts.append(run.height)
        yield pa.RecordBatch.from_pydict(
            {"file": names, "rows": counts},
            schema=pa.schema([("file", pa.string()), ("rows", pa.int64())]),
        )

    try:
        stats = frame.mapInArrow(task_errors(write), "file string, rows long").collect()
        frames.replace_directory(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sum(row["rows"] for row in stats)


def _side_task(
    batches: Iterator[pa.RecordBatch], plan: _Plan, side: str, E: Any
) -> Iterator[pa.RecordBatch]:
    frame = frames.from_batches(batches)
    if frame is None:
        return
    yield from frames.to_batches(_side_rows(frame, plan, side, E))
