"""`training-set` on Spark: co-partition spine and sources by entity, run the PIT engine per task.

1. The driver reads the spine and every used source through Spark, each row tagged with its
   input and its ``ORDER`` (frames.py), and stacks them into one frame (columns prefixed per
   input, so two sources may share column names with different dtypes).
2. One shuffle by the entity keys (cast to the spine's key types) puts all rows of an
   entity, from every input, into the same task. A spine row holding several entities
   (a flight's aircraft, airports, carrier) gets one such pass per entity: the features
   grouped by the engine's own join plan (the spine columns they join on), each pass
   shuffling the spine's keys and time with its own sources. A source key computed by
   ``derived`` is computed per batch (by ``scan_source``) before the shuffle.
3. Each task restores the Polars dtypes, sorts each input by ``ORDER`` (so ties between
   rows at the same time break exactly as in a Polars scan), writes its source rows to
   temporary Parquet files and calls ``features.engine.compute_features`` unchanged, with
   a copy of the config pointing at those files. Values are the engine's by construction.
4. The spine's ``ORDER`` rides through as a column; the passes' rows are stacked, and
   whoever writes them sorts each pass by ``ORDER`` and puts the passes side by side
   (columns in the engine's order). Outputs are in spine order: one file collected on the
   driver (byte-identical to the Polars engine's), or a directory of part files written
   by the tasks.

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
_PASS = "__mlpipe_pass"  # which pass (entity) computed a row's features
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
class _Pass:
    """One co-partitioned pass: the features whose entity sits in the same spine columns.

    A spine row may hold several entities (a flight's aircraft, origin airport and carrier);
    each needs its own shuffle, so each gets a pass that runs the engine on its features
    only. Pass 0 carries every spine column; the others only their keys and the time.
    """

    index: int
    features: list[str]  # in the selected order
    sources: list[str]  # used by this pass; input i + 1 is sources[i]
    spine_keys: list[str]  # the spine columns hashed
    source_keys: list[list[str]]  # per source, the columns hashed (see derived_key)
    key_types: list[str]  # the Spark type both sides are cast to
    key_dtypes: list[pl.DataType]  # the Polars dtype the engine compares them as
    derived: dict[str, list[str]]  # source -> its key columns computed by `derived`
    schemas: list[pl.Schema]  # per input (spine first), Polars dtypes
    columns: list[list[str]]  # per input: its columns in the stacked frame, unprefixed
    output: pl.Schema  # what a task yields besides _MATCH (pass 0: spine, ORDER, features)


@dataclass(frozen=True)
class _Plan:
    """Everything a task needs (pickled to the executors)."""

    config: PipelineConfig
    keys: list[str]
    timestamp: str
    features: list[str]
    passes: list[_Pass]
    output: pl.Schema  # the engine's output: spine columns, ORDER, features in config order
    stats: list[FeatureStats]  # the zero-row run's: per feature its source, keys, minimum


def _prefixed(i: int, column: str) -> str:
    return f"__in{i}__{column}"


def derived_key(column: str) -> str:
    return f"__mlpipe_dk__{column}"


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
    spine_input = frames.read_input(spark, spine)
    source_inputs = {name: frames.read_input(spark, config.sources[name].path) for name in used}
    spine_schema = _polars_schema(spine_input)
    source_schemas = {name: _polars_schema(source_inputs[name]) for name in used}
    names = [f.name for f in selected]

    # the engine on zero rows: every column/dtype check of the Polars engine, and the schema
    empty = _run_engine(
        config,
        pl.DataFrame(schema=spine_schema).with_columns(pl.lit(0, pl.Int64).alias(frames.ORDER)),
        {name: pl.DataFrame(schema=schema) for name, schema in source_schemas.items()},
        keys,
        timestamp,
        names,
        stats=True,
    )
    passes = _plan_passes(
        config, keys, timestamp, selected, spine_schema, source_schemas, empty.frame.schema
    )
    plan = _Plan(
        config=config,
        keys=list(keys),
        timestamp=timestamp,
        features=names,
        passes=passes,
        output=empty.frame.schema,
        stats=empty.stats,
    )

    spine_frame = spine_input.frame
    with translate_errors("checking the spine"):
        nulls = spine_frame.filter(F.col(timestamp).isNull()).count()
    if nulls:
        total = spine_input.rows if spine_input.rows is not None else spine_frame.count()
        raise DataCheckFailed(
            f"spine column {timestamp!r} has {nulls} null timestamp(s) of {total} rows",
            hint="drop or fill them; a row without a time has no point-in-time features",
        )

    total_rows = frames.row_count_hint([spine_input, *source_inputs.values()])
    partitions = config.spark.partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil((total_rows or 0) / config.spark.rows_per_partition),
    )
    computed = None
    for one in passes:
        inputs = [spine_input.frame]
        for name in one.sources:
            frame = source_inputs[name].frame
            if one.derived.get(name):
                frame = with_derived_keys(
                    frame,
                    config.sources[name],
                    name,
                    source_schemas[name],
                    _derived_columns(one, name),
                )
            inputs.append(frame)
        stacked = _stack(inputs, one.columns, [one.spine_keys, *one.source_keys], one.key_types)
        key_columns = [f"__mlpipe_k{j}" for j in range(len(one.spine_keys))]
        result = (
            stacked.repartition(partitions, *key_columns)
            .mapInArrow(
                task_errors(lambda batches, one=one: _compute_task(batches, plan, one)),
                frames.spark_schema(pl.Schema({**one.output, _MATCH: pl.String()})),
            )
            .withColumn(_PASS, F.lit(one.index).cast("int"))
        )
        computed = result if computed is None else computed.unionByName(result, True)
    if progress:
        progress("computing features on Spark")
    with translate_errors("computing features"):
        if is_directory_output(out):
            return _write_directory(computed, plan, out)
        return _write_file(computed, plan, out)


def _polars_schema(spark_input: frames.SparkInput) -> pl.Schema:
    """An input's Polars dtypes: recorded for a local input; for a remote one, what Spark's
    Arrow rows turn into."""
    if spark_input.schema is not None:
        return spark_input.schema
    frame = frames.collect(spark_input.frame.drop(frames.ORDER).limit(0))
    return frame.schema


def _plan_passes(
    config: PipelineConfig,
    keys: Sequence[str],
    timestamp: str,
    selected: Sequence[FeatureConfig],
    spine_schema: pl.Schema,
    source_schemas: dict[str, pl.Schema],
    output: pl.Schema,
) -> list[_Pass]:
    """Group the features into passes by the engine's own join plan: one pass per set of
    spine columns (and key dtypes) they join on, split further where one source is joined
    on different key columns (airports by origin and by destination are two passes anyway;
    one source keyed two ways on the same spine columns needs two as well)."""
    from mlpipe_cli.engines import unsupported
    from mlpipe_cli.features import engine as fe

    default_keys = fe._default_key_map(config, keys)
    # the source as the engine reads it (derived columns included) decides the join
    scanned = {
        name: scanned_schema(config, name, schema) for name, schema in source_schemas.items()
    }
    joins = {
        f.name: fe._plan_join(config, f, default_keys, spine_schema, scanned[f.source])
        for f in selected
    }
    groups: list[tuple[tuple[str, ...], tuple[pl.DataType, ...], dict[str, tuple[str, ...]]]] = []
    members: list[list[FeatureConfig]] = []
    for feature in selected:
        join = joins[feature.name]
        for i, (spine_side, dtypes, sides) in enumerate(groups):
            same_entity = spine_side == join.spine and dtypes == join.dtypes
            if same_entity and sides.get(feature.source, join.source) == join.source:
                sides[feature.source] = join.source
                members[i].append(feature)
                break
        else:
            groups.append((join.spine, join.dtypes, {feature.source: join.source}))
            members.append([feature])

    passes = []
    for index, ((spine_side, dtypes, sides), features) in enumerate(
        zip(groups, members, strict=True)
    ):
        key_schema = frames.spark_schema(
            pl.Schema({f"k{j}": dtype for j, dtype in enumerate(dtypes)})
        )
        key_types = [field.dataType.simpleString() for field in key_schema.fields]
        sources = sorted(sides)
        derived: dict[str, list[str]] = {}
        source_keys = []
        for name in sources:
            computed = [c for c in sides[name] if c in config.sources[name].derived]
            if computed:
                # hashed on the value the engine joins on: computed before the shuffle
                join_dtypes = {c: d for c, d in zip(sides[name], dtypes, strict=True)}
                odd = [c for c in computed if join_dtypes[c] not in (pl.Int64(), pl.String())]
                if odd:
                    raise unsupported(
                        f"a join key computed by `derived` as {join_dtypes[odd[0]]} "
                        f"({name}.{odd[0]}; integer and string ones are)"
                    )
                derived[name] = computed
            source_keys.append([derived_key(c) if c in computed else c for c in sides[name]])
        if index == 0:
            spine_columns = list(spine_schema.names())
        else:
            wanted = {*spine_side, timestamp}
            spine_columns = [c for c in spine_schema.names() if c in wanted]
        names = [f.name for f in features]
        schemas = [pl.Schema({c: spine_schema[c] for c in spine_columns})]
        schemas += [source_schemas[name] for name in sources]
        carried = [*spine_columns, frames.ORDER] if index == 0 else [frames.ORDER]
        passes.append(
            _Pass(
                index=index,
                features=names,
                sources=sources,
                spine_keys=list(spine_side),
                source_keys=source_keys,
                key_types=key_types,
                key_dtypes=list(dtypes),
                derived=derived,
                schemas=schemas,
                columns=[list(s.names()) for s in schemas],
                output=pl.Schema({c: output[c] for c in [*carried, *names]}),
            )
        )
    return passes


def scanned_schema(config: PipelineConfig, name: str, schema: pl.Schema) -> pl.Schema:
    """Source ``name``'s columns as ``scan_source`` gives them (its ``derived`` ones too),
    from its recorded schema: zero rows through a temporary file, so a source Spark reads
    from object storage needs no second reader on the driver."""
    from mlpipe_cli.features.scan import scan_source

    with tempfile.TemporaryDirectory(prefix="mlpipe-spark-") as tmp:
        path = Path(tmp) / "empty.parquet"
        pl.DataFrame(schema=schema).write_parquet(path)
        local = config.sources[name].model_copy(update={"path": path})
        try:
            return scan_source(local, name).collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot read source {name!r}: {exc}") from None


def _derived_columns(one: _Pass, name: str) -> dict[str, pl.DataType]:
    """Source ``name``'s key columns computed by ``derived``, with the dtype they join as."""
    side = one.source_keys[one.sources.index(name)]
    dtypes = dict(zip(side, one.key_dtypes, strict=True))
    return {c: dtypes[derived_key(c)] for c in one.derived[name]}


def with_derived_keys(
    frame: Any, source: Any, name: str, schema: pl.Schema, columns: dict[str, pl.DataType]
) -> Any:
    """The source's rows with its derived key ``columns`` added (as ``derived_key(c)``, in
    the dtype they join as: Int64 or String), computed per batch by ``scan_source`` itself,
    so the hash sees the joined value. Derived columns are row-wise SQL expressions: a batch
    computes what the whole would."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    fields = list(frame.schema.fields)
    for column, dtype in columns.items():
        spark_type = StringType() if dtype == pl.String() else LongType()
        fields.append(StructField(derived_key(column), spark_type))
    return frame.mapInArrow(
        task_errors(lambda batches: _derive_keys(batches, source, name, schema, columns)),
        StructType(fields),
    )


def _derive_keys(
    batches: Iterator[pa.RecordBatch],
    source: Any,
    name: str,
    schema: pl.Schema,
    columns: dict[str, pl.DataType],
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from mlpipe_cli.features.scan import scan_source

    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        rows = pl.from_arrow(table).drop(frames.ORDER)  # type: ignore[union-attr]
        restored = frames.restore(rows, schema, f"source {name!r}")
        with tempfile.TemporaryDirectory(prefix="mlpipe-spark-") as tmp:
            path = Path(tmp) / "rows.parquet"
            restored.write_parquet(path, compression="uncompressed", statistics=False)
            local = source.model_copy(update={"path": path})
            keys = scan_source(local, name).select(list(columns)).collect()
        for column, dtype in columns.items():
            # cast as the engine casts a source key (a value it cannot cast never matches)
            values = keys.get_column(column).cast(dtype, strict=False)
            array = values.to_arrow(compat_level=pl.CompatLevel.oldest())
            if pa.types.is_large_string(array.type):
                array = array.cast(pa.string())
            table = table.append_column(derived_key(column), array)
        yield from table.to_batches()


def _stack(
    inputs: list[Any], columns: list[list[str]], key_sources: list[list[str]], key_types: list[str]
) -> Any:
    """One frame of every input's rows (Spark frames with ORDER): prefixed columns, the
    input tag, ORDER, and the entity keys ``key_sources[i]`` cast to ``key_types``."""
    from pyspark.sql import functions as F

    parts = []
    for i, frame in enumerate(inputs):
        selects = [F.col(f"`{c}`").alias(_prefixed(i, c)) for c in columns[i]]
        selects += [F.lit(i).cast("int").alias(_INPUT), F.col(frames.ORDER)]
        # an entity's rows meet in one task only if their key values hash alike: both sides
        # are cast to the type the engine compares them as
        for j, (column, spark_type) in enumerate(zip(key_sources[i], key_types, strict=True)):
            selects.append(F.expr(f"try_cast(`{column}` AS {spark_type})").alias(f"__mlpipe_k{j}"))
        parts.append(frame.select(selects))
    stacked = parts[0]
    for part in parts[1:]:
        stacked = stacked.unionByName(part, allowMissingColumns=True)
    return stacked


def _compute_task(
    batches: Iterator[pa.RecordBatch], plan: _Plan, one: _Pass
) -> Iterator[pa.RecordBatch]:
    frame = frames.from_batches(batches)
    if frame is None:
        return
    tags = frame.get_column(_INPUT)
    spine = _input_rows(frame, tags, 0, one, "the spine")
    if spine.height == 0:
        return
    sources = {
        name: _input_rows(frame, tags, i, one, f"source {name!r}").drop(frames.ORDER)
        for i, name in enumerate(one.sources, start=1)
    }
    del frame, tags
    first = int(spine.get_column(frames.ORDER).min())  # type: ignore[arg-type]
    result = _run_engine(
        plan.config, spine, sources, plan.keys, plan.timestamp, one.features, stats=True
    )
    rows = result.frame.select(one.output.names())
    yield from frames.to_batches(rows.with_columns(pl.lit(None, pl.String).alias(_MATCH)))
    counts = {
        s.feature: [s.rows, s.matched, list(s.spine_examples), list(s.source_examples)]
        for s in result.stats
    }
    match_row = pl.DataFrame({name: [None] for name in one.output}, schema=one.output).with_columns(
        pl.lit(_MATCH_ORDER, pl.Int64).alias(frames.ORDER),
        pl.lit(json.dumps({"first": first, "counts": counts})).alias(_MATCH),
    )
    yield from frames.to_batches(match_row)


def _input_rows(
    frame: pl.DataFrame, tags: pl.Series, i: int, one: _Pass, what: str
) -> pl.DataFrame:
    rows = frame.filter(tags == i).sort(frames.ORDER)
    renamed = rows.select(
        *[pl.col(_prefixed(i, c)).alias(c) for c in one.columns[i]], pl.col(frames.ORDER)
    )
    restored = frames.restore(renamed.drop(frames.ORDER), one.schemas[i], what)
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
    rows = _assemble(rows.filter(~is_match), plan).drop(frames.ORDER)
    write_parquet_atomic(rows, out)
    return WrittenOutput(
        rows=rows.height,
        columns=rows.columns,
        dtypes={name: str(dtype) for name, dtype in rows.schema.items()},
        nulls={name: rows.get_column(name).null_count() for name in plan.features},
        parts=0,
        match_rates=match_rates,
    )


def _assemble(rows: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """Rows as tasks returned them (encoded, every pass's stacked) as output rows in spine
    order, with ORDER: each pass's rows sorted by ORDER, then side by side, then the
    columns in the engine's order (spine, features in config order) and dtypes."""
    from mlpipe_cli.features.engine import PointInTimeInvariantError

    tags = rows.get_column(_PASS)
    pieces = []
    order: pl.Series | None = None
    for one in plan.passes:
        piece = rows.filter(tags == one.index).select(one.output.names()).sort(frames.ORDER)
        if order is None:
            order = piece.get_column(frames.ORDER)
        elif not piece.get_column(frames.ORDER).equals(order):
            raise PointInTimeInvariantError(
                f"internal error: pass {one.index} computed {piece.height} rows that are not "
                f"the {order.len()} spine rows of pass 0 (please report)"
            )
        pieces.append(piece if one.index == 0 else piece.drop(frames.ORDER))
    return frames.decode(pl.concat(pieces, how="horizontal"), plan.output)


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
            if template.feature not in doc["counts"]:
                continue  # another pass's task
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
    files: list[str | None] = []
    counts: list[int] = []
    nulls: list[list[int] | None] = []
    for part in parts.unique().sort():
        chunk = _assemble(frame.filter(parts == part), plan)
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
