"""`training-set` on Spark: co-partition spine and sources by entity, run the PIT engine per task.

1. The driver reads the spine and every used source through Spark, each row tagged with its
   input and its ``ORDER`` (frames.py), and stacks them into one frame (columns prefixed per
   input, so two sources may share column names with different dtypes).
2. One shuffle by the entity keys (cast to the spine's key types) puts all rows of an
   entity, from every input, into the same task.
3. Each task restores the Polars dtypes, sorts each input by ``ORDER`` (so ties between
   rows at the same time break exactly as in a Polars scan), writes its source rows to
   temporary Parquet files and calls ``features.engine.compute_features`` unchanged, with
   a copy of the config pointing at those files. Values are the engine's by construction.
4. The spine's ``ORDER`` rides through as a column; outputs are written in spine order:
   one file collected on the driver (byte-identical to the Polars engine's), or a directory
   of part files written by the tasks.

The engine runs once on the driver with zero rows first: that checks columns, key and
time dtypes exactly as the Polars engine does, before any Spark job, and gives the output
schema.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.engines.spark import frames
from mlpipe_cli.engines.spark.session import spark_session, task_errors, translate_errors
from mlpipe_cli.errors import DataCheckFailed, InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig
    from mlpipe_cli.features.engine import FeatureStats

_INPUT = "__mlpipe_input"  # 0 = spine, i = i-th used source
_PART = "__mlpipe_part"
# A task's match counts travel as one extra row: ORDER -1, this column holding them as JSON
_MATCH = "__mlpipe_match"
_MATCH_ORDER = -1


@dataclass(frozen=True)
class WrittenOutput:
    """What the manifest needs to know about a written training set."""

    rows: int
    columns: list[str]
    dtypes: dict[str, str]
    nulls: dict[str, int]
    parts: int  # 0 for a single file
    # per feature: FeatureStats.to_json() summed over the tasks (the manifest's match_rates)
    match_rates: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """Everything a task needs (pickled to the executors)."""

    config: PipelineConfig
    keys: list[str]
    timestamp: str
    features: list[str]
    sources: list[str]  # used sources; input i + 1 is sources[i]
    schemas: list[pl.Schema]  # per input (spine first), Polars dtypes
    columns: list[list[str]]  # per input: its columns in the stacked frame, unprefixed
    output: pl.Schema  # the engine's output, with ORDER last
    stats: list[FeatureStats]  # the zero-row run's: per feature its source, keys, minimum


def _prefixed(i: int, column: str) -> str:
    return f"__in{i}__{column}"


def is_directory_output(out: Path | str) -> bool:
    """With the Spark engine ``--out x.parquet`` is one file, anything else a directory."""
    return not str(out).endswith(".parquet")


def build(
    config: PipelineConfig,
    *,
    spine: Path | str,
    out: Path,
    keys: Sequence[str],
    timestamp: str,
    selected: Sequence[FeatureConfig],
    progress: Callable[[str], None] | None = None,
) -> WrittenOutput:
    """Compute the training set on Spark and write ``out``; see the module docstring."""
    from pyspark.sql import functions as F

    if frames.is_remote(out):
        raise UsageError(
            f"engine spark writes outputs to a local or shared filesystem path, not {out}",
            hint="write to a path every executor and the driver see (NFS, a mounted bucket)",
        )
    spark = spark_session(config)
    used = sorted({f.source for f in selected})
    if progress:
        progress("reading inputs on Spark")
    inputs = [frames.read_input(spark, spine)]
    inputs += [frames.read_input(spark, config.sources[name].path) for name in used]
    schemas = [i.schema if i.schema is not None else _spark_polars_schema(i) for i in inputs]
    columns = [list(s.names()) for s in schemas]
    names = [f.name for f in selected]

    # the engine on zero rows: every column/dtype check of the Polars engine, and the schema
    empty_sources = {name: pl.DataFrame(schema=schemas[i]) for i, name in enumerate(used, 1)}
    empty = _run_engine(
        config,
        pl.DataFrame(schema=schemas[0]).with_columns(pl.lit(0, pl.Int64).alias(frames.ORDER)),
        empty_sources,
        keys,
        timestamp,
        names,
        stats=True,
    )
    spine_keys, source_keys, key_types = _partition_keys(config, keys, selected, schemas, used)
    plan = _Plan(
        config=config,
        keys=list(keys),
        timestamp=timestamp,
        features=names,
        sources=used,
        schemas=schemas,
        columns=columns,
        output=empty.frame.schema,
        stats=empty.stats,
    )

    spine_frame = inputs[0].frame
    with translate_errors("checking the spine"):
        nulls = spine_frame.filter(F.col(timestamp).isNull()).count()
    if nulls:
        total = inputs[0].rows if inputs[0].rows is not None else spine_frame.count()
        raise DataCheckFailed(
            f"spine column {timestamp!r} has {nulls} null timestamp(s) of {total} rows",
            hint="drop or fill them; a row without a time has no point-in-time features",
        )

    stacked = _stack(inputs, plan, [spine_keys, *source_keys], key_types)
    total_rows = frames.row_count_hint(inputs)
    partitions = config.spark.partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil((total_rows or 0) / config.spark.rows_per_partition),
    )
    key_columns = [f"__mlpipe_k{j}" for j in range(len(spine_keys))]
    computed = stacked.repartition(partitions, *key_columns).mapInArrow(
        task_errors(lambda batches: _compute_task(batches, plan)),
        frames.spark_schema(pl.Schema({**plan.output, _MATCH: pl.String()})),
    )
    if progress:
        progress("computing features on Spark")
    with translate_errors("computing features"):
        if is_directory_output(out):
            return _write_directory(computed, plan, out)
        return _write_file(computed, plan, out)


def _spark_polars_schema(spark_input: frames.SparkInput) -> pl.Schema:
    """The Polars dtypes of a remote input: what Spark's Arrow rows turn into."""
    frame = frames.collect(spark_input.frame.drop(frames.ORDER).limit(0))
    return frame.schema


def _partition_keys(
    config: PipelineConfig,
    keys: Sequence[str],
    selected: Sequence[FeatureConfig],
    schemas: list[pl.Schema],
    used: list[str],
) -> tuple[list[str], list[list[str]], list[str]]:
    """The columns that put an entity's rows into one task: the spine's, each source's, and
    the Spark type both sides are cast to (the engine's own join plan decides them).

    One shuffle co-locates one entity per row: features joined on different spine columns
    (several entities per spine row) would need one shuffle each, which is not built yet.
    """
    from mlpipe_cli.engines import unsupported
    from mlpipe_cli.features import engine as fe

    default_keys = fe._default_key_map(config, keys)
    source_schemas = {name: fe._source_schema(config, name) for name in used}
    joins = {
        f.name: fe._plan_join(config, f, default_keys, schemas[0], source_schemas[f.source])
        for f in selected
    }
    spine_sides = {join.spine for join in joins.values()}
    if len(spine_sides) > 1:
        raise unsupported(
            "features joined on different spine columns (several entities per spine row: "
            + ", ".join("/".join(side) for side in sorted(spine_sides))
            + ")"
        )
    (spine_side,) = spine_sides
    dtypes = next(iter(joins.values())).dtypes
    source_keys = []
    for i, name in enumerate(used, start=1):
        sides = {joins[f.name].source for f in selected if f.source == name}
        if len(sides) > 1:
            raise unsupported(f"source {name!r} joined on different key columns by its features")
        (side,) = sides
        derived = [c for c in side if c not in schemas[i]]
        if derived:
            raise unsupported(f"a join key computed by `derived` ({name}.{derived[0]})")
        source_keys.append(list(side))
    key_schema = frames.spark_schema(pl.Schema({f"k{j}": dtype for j, dtype in enumerate(dtypes)}))
    key_types = [field.dataType.simpleString() for field in key_schema.fields]
    return list(spine_side), source_keys, key_types


def _stack(
    inputs: list[frames.SparkInput],
    plan: _Plan,
    key_sources: list[list[str]],
    key_types: list[str],
) -> Any:
    """One frame of every input's rows: prefixed columns, the input tag, ORDER, entity keys."""
    from pyspark.sql import functions as F

    parts = []
    for i, spark_input in enumerate(inputs):
        selects = [F.col(f"`{c}`").alias(_prefixed(i, c)) for c in plan.columns[i]]
        selects += [F.lit(i).cast("int").alias(_INPUT), F.col(frames.ORDER)]
        # an entity's rows meet in one task only if their key values hash alike: both sides
        # are cast to the type the engine compares them as
        for j, (column, spark_type) in enumerate(zip(key_sources[i], key_types, strict=True)):
            selects.append(F.expr(f"try_cast(`{column}` AS {spark_type})").alias(f"__mlpipe_k{j}"))
        parts.append(spark_input.frame.select(selects))
    stacked = parts[0]
    for part in parts[1:]:
        stacked = stacked.unionByName(part, allowMissingColumns=True)
    return stacked


def _compute_task(batches: Iterator[pa.RecordBatch], plan: _Plan) -> Iterator[pa.RecordBatch]:
    frame = frames.from_batches(batches)
    if frame is None:
        return
    tags = frame.get_column(_INPUT)
    spine = _input_rows(frame, tags, 0, plan, "the spine")
    if spine.height == 0:
        return
    sources = {
        name: _input_rows(frame, tags, i, plan, f"source {name!r}").drop(frames.ORDER)
        for i, name in enumerate(plan.sources, start=1)
    }
    del frame, tags
    first = int(spine.get_column(frames.ORDER).min())  # type: ignore[arg-type]
    result = _run_engine(
        plan.config, spine, sources, plan.keys, plan.timestamp, plan.features, stats=True
    )
    yield from frames.to_batches(result.frame.with_columns(pl.lit(None, pl.String).alias(_MATCH)))
    counts = {
        s.feature: [s.rows, s.matched, list(s.spine_examples), list(s.source_examples)]
        for s in result.stats
    }
    match_row = pl.DataFrame(
        {name: [None] for name in plan.output}, schema=plan.output
    ).with_columns(
        pl.lit(_MATCH_ORDER, pl.Int64).alias(frames.ORDER),
        pl.lit(json.dumps({"first": first, "counts": counts})).alias(_MATCH),
    )
    yield from frames.to_batches(match_row)


def _input_rows(
    frame: pl.DataFrame, tags: pl.Series, i: int, plan: _Plan, what: str
) -> pl.DataFrame:
    rows = frame.filter(tags == i).sort(frames.ORDER)
    renamed = rows.select(
        *[pl.col(_prefixed(i, c)).alias(c) for c in plan.columns[i]], pl.col(frames.ORDER)
    )
    restored = frames.restore(renamed.drop(frames.ORDER), plan.schemas[i], what)
    return restored.with_columns(renamed.get_column(frames.ORDER))


def _run_engine(
    config: PipelineConfig,
    spine: pl.DataFrame,
    sources: dict[str, pl.DataFrame],
    keys: Sequence[str],
    timestamp: str,
    features: Sequence[str],
    *,
    stats: bool = False,
) -> Any:
    """``compute_features`` on in-memory rows: the sources go through temporary Parquet
    files because the engine reads sources by path (its code stays untouched). With
    ``stats`` a ``FeatureFrame`` (the frame and each feature's match counts)."""
    from mlpipe_cli.features.engine import compute_features

    with tempfile.TemporaryDirectory(prefix="mlpipe-spark-") as tmp:
        replaced = {}
        for i, (name, rows) in enumerate(sorted(sources.items())):
            path = Path(tmp) / f"source-{i}.parquet"
            rows.write_parquet(path, compression="lz4", statistics=False)
            replaced[name] = config.sources[name].model_copy(update={"path": path})
        local = config.model_copy(update={"sources": {**config.sources, **replaced}})
        if stats:
            return compute_features(
                local, spine, entity_keys=keys, timestamp=timestamp, features=features, stats=True
            )
        return compute_features(
            local, spine, entity_keys=keys, timestamp=timestamp, features=features
        )


# -- writing ---------------------------------------------------------------------------------


def _write_file(computed: Any, plan: _Plan, out: Path) -> WrittenOutput:
    """Collect on the driver, put rows back in spine order, write like the Polars engine."""
    from mlpipe_cli.io import write_parquet_atomic

    rows = frames.collect(computed)
    is_match = rows.get_column(frames.ORDER) == _MATCH_ORDER
    match_rates = _match_rates(plan, rows.filter(is_match).get_column(_MATCH).to_list())
    rows = rows.filter(~is_match).drop(_MATCH)
    rows = frames.decode(rows, plan.output).sort(frames.ORDER).drop(frames.ORDER)
    write_parquet_atomic(rows, out)
    return WrittenOutput(
        rows=rows.height,
        columns=rows.columns,
        dtypes={name: str(dtype) for name, dtype in rows.schema.items()},
        nulls={name: rows.get_column(name).null_count() for name in plan.features},
        parts=0,
        match_rates=match_rates,
    )


def _match_rates(plan: _Plan, payloads: list[str]) -> dict[str, dict[str, Any]]:
    """Every task's match counts added up, then the Polars engine's check: a feature that
    matched no spine row (or fewer than its min_match_rate) fails the run, before the
    output is published. Examples in the error come from the task holding the earliest
    spine row among those that have some."""
    from dataclasses import replace

    from mlpipe_cli.features.engine import check_match_rates

    docs = sorted((json.loads(p) for p in payloads), key=lambda doc: doc["first"])
    merged = []
    for template in plan.stats:
        rows = matched = 0
        tried: tuple[str, ...] = ()
        has: tuple[str, ...] = ()
        for doc in docs:
            n, m, spine_examples, source_examples = doc["counts"][template.feature]
            rows, matched = rows + n, matched + m
            tried = tried or tuple(spine_examples)
            has = has or tuple(source_examples)
        merged.append(
            replace(
                template,
                rows=rows,
                matched=matched,
                spine_examples=tried if matched == 0 else (),
                source_examples=has if matched == 0 else (),
            )
        )
    check_match_rates(merged)
    return {s.feature: s.to_json() for s in merged}


def _write_directory(computed: Any, plan: _Plan, out: Path) -> WrittenOutput:
    """Tasks write part files of ``rows_per_file`` spine rows into a staging directory that
    the driver renames into place: names sort in spine order, contents are deterministic."""
    from pyspark.sql import functions as F

    from mlpipe_cli.io import prepare_output_path

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} is a file; give a directory (no .parquet suffix)")
    existed = out.exists()
    prepare_output_path(out / "x")  # the parent is creatable (this creates `out` itself)
    staging = out.with_name(f".{out.name}.staging-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    per_file = plan.config.spark.rows_per_file
    mask = (1 << frames.ROW_BITS) - 1
    chunk = (
        F.shiftleft(F.shiftright(F.col(frames.ORDER), frames.ROW_BITS), frames.ROW_BITS)
        + F.floor((F.col(frames.ORDER).bitwiseAND(F.lit(mask))) / per_file) * per_file
    )
    stats_schema = "file string, rows long, nulls array<long>, match string"
    try:
        with_part = computed.withColumn(_PART, chunk.cast("long"))
        n_parts = max(1, computed.rdd.getNumPartitions())
        stats = (
            with_part.repartition(n_parts, _PART)
            .mapInArrow(
                task_errors(lambda batches: _write_parts(batches, plan, str(staging))),
                stats_schema,
            )
            .collect()
        )
        match_rates = _match_rates(plan, [row["match"] for row in stats if row["match"]])
        stats = [row for row in stats if row["file"] is not None]
        frames.replace_directory(staging, out)
    except BaseException:
        if not existed:  # a failed run (a match-rate check, say) leaves no output behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    nulls = [0] * len(plan.features)
    for row in stats:
        nulls = [a + b for a, b in zip(nulls, row["nulls"], strict=True)]
    output = plan.output.copy()
    del output[frames.ORDER]
    return WrittenOutput(
        rows=sum(row["rows"] for row in stats),
        columns=list(output.names()),
        dtypes={name: str(dtype) for name, dtype in output.items()},
        nulls=dict(zip(plan.features, nulls, strict=True)),
        parts=len(stats),
        match_rates=match_rates,
    )


def _write_parts(
    batches: Iterator[pa.RecordBatch], plan: _Plan, staging: str
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    frame = frames.from_batches(batches)
    if frame is None:
        return
    is_match = frame.get_column(frames.ORDER) == _MATCH_ORDER
    matches = frame.filter(is_match).get_column(_MATCH).to_list()
    frame = frame.filter(~is_match)
    parts = frame.get_column(_PART)
    rows = frames.decode(frame.drop(_PART, _MATCH), plan.output)
    files: list[str | None] = []
    counts: list[int] = []
    nulls: list[list[int] | None] = []
    for part in parts.unique().sort():
        chunk = rows.filter(parts == part).sort(frames.ORDER)
        name = frames.part_name(int(chunk.get_column(frames.ORDER)[0]))
        chunk = chunk.drop(frames.ORDER)
        chunk.write_parquet(Path(staging) / name, compression="zstd", statistics=True)
        files.append(name)
        counts.append(chunk.height)
        nulls.append([chunk.get_column(f).null_count() for f in plan.features])
    yield pa.RecordBatch.from_pydict(
        {
            "file": [*files, *[None] * len(matches)],
            "rows": [*counts, *[0] * len(matches)],
            "nulls": [*nulls, *[None] * len(matches)],
            "match": [*[None] * len(files), *matches],
        },
        schema=pa.schema(
            [
                ("file", pa.string()),
                ("rows", pa.int64()),
                ("nulls", pa.list_(pa.int64())),
                ("match", pa.string()),
            ]
        ),
    )
