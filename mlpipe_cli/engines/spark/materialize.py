"""`materialize` on Spark: entities and features computed per task, rows written in parallel.

The Polars run (``ops.materialize.run_materialize``) lists every entity with a row at or
before the as-of, computes its features with ``compute_features`` and packs one row per
entity. On Spark the same three functions run inside tasks, so the stored bytes are the
Polars run's by construction:

1. Per entity type (key set: ``online.materialize.plan_key_sets``), the sources its features
   read are stacked and shuffled by the key set's columns, cast to the type the entity list
   compares them as. Every row of an entity, from every source, lands in one task. A source
   read two ways by one entity type (transfers by sender and by receiver) is stacked once
   per way, so a row reaches both entities' tasks, and a task keeps only the entities
   hashed to it. A key computed by ``derived`` is computed per batch (``scan_source``)
   before the shuffle.
2. A task restores the Polars dtypes, writes its sources to temporary Parquet files and calls,
   unchanged: ``key_set_entities`` (the spine: its entities as of the as-of, the Polars
   run's rule), ``compute_features`` (with the ttl helper features of ``_age_features``)
   and ``_pack_chunk`` (store keys and packed values).
3. Writes. Redis and Redis Cluster: each task opens its own store connection and writes its
   rows, ``online_store.chunk_size`` at a time, into the version namespace the driver began
   (status 'building', invisible to readers); the task returns its row count and probe keys.
   SQLite (one file, one writer): tasks return their packed rows, the driver writes them
   through the store's ``write_chunk``.
4. Only when every task succeeded does the driver check the row count, ``verify`` and
   ``switch`` (``online.writer.finish_version``: the same atomic switch as the Polars run).
   A failed task fails the job; the version stays 'building' and is never made live (a
   later run removes it).

``--resume`` continues the newest abandoned Spark run (its writer died: the driver was
killed, a job failed) in the same version, with its as-of, never making a partial version
live. Everything is computed again (the tasks' inputs are the same rows, so their entities
and values are too); what is not written again:

* Redis: every task records each chunk it wrote in a ledger hash beside the version
  (``<prefix>:spark-ledger:<version>``: chunk ``namespace:partition:index`` -> its row count,
  first and last key, and the probes ``verify`` checks), after the store acknowledged it.
  The resumed run shuffles into the same number of partitions (recorded in the ledger when
  the run began), and a task skips a chunk whose ledger entry names the same rows; any other
  chunk is written again (rewriting a key is idempotent). The ledger is removed when the
  version goes live, and expires after 7 days otherwise.
* SQLite: the driver writes chunks in key order, and the store's own progress record says
  how many it wrote; those are skipped, as in a Polars resume.

A resumed run refuses (one line, exit 2) when the store restarted since (rows may be lost),
when the abandoned run was the Polars engine's (chunked in another order: resume it with
``--engine polars``), or when its chunk size differs from ``--chunk-size``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from mlpipe_cli.engines.spark import frames
from mlpipe_cli.engines.spark.session import (
    settled_on_failure,
    spark_session,
    task_errors,
    translate_errors,
)
from mlpipe_cli.errors import DataCheckFailed, InputError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig
    from mlpipe_cli.online.materialize import KeySet
    from mlpipe_cli.online.store import OnlineStoreWriter, RunProgress, StoreMetadata

R = TypeVar("R")
_INPUT = "__mlpipe_input"  # i = i-th source of the key set
# SQLite is one local file with one writer: the driver writes it
_STORES_WRITTEN_BY_TASKS = ("redis", "redis-cluster")
_LEDGER_SECONDS = 7 * 24 * 3600  # an abandoned run's ledger outlives any sensible resume
_PARTITIONS = "partitions"  # the ledger field holding the run's partition count per key set


@dataclass(frozen=True)
class _KeySetPlan:
    """What a task of one key set needs (pickled to the executors)."""

    config: PipelineConfig  # the compute config: the features plus their ttl helpers
    key_set: KeySet
    namespace: int
    as_of: datetime
    as_of_epoch: float
    spine_time: Any  # a Polars literal: as_of, naive or aware as the sources need
    compute_names: list[str]
    names: list[str]  # the namespace's features, in stored order
    event_columns: list[str]
    sources: list[str]  # the sources its features read
    # input i of the stacked frame: a source and the columns holding the key set's columns
    # there (a source its features join on two ways is two inputs: each row meets both
    # entities, and a task then keeps only the entities hashed to it)
    inputs: list[tuple[str, tuple[str, ...]]]
    schemas: list[pl.Schema]  # per input, its source's Polars dtypes
    columns: list[list[str]]  # per input, its columns in the stacked frame
    key_dtypes: list[pl.DataType]  # the dtype each key column is compared as
    # writes from the tasks (Redis): the store's config and the version being written
    progress: RunProgress | None
    chunk_size: int
    # a resumed run (Redis): the ledger's key, and its entries of chunks written before
    ledger: str | None = None
    written_before: dict[str, str] | None = None
    partitions: int | None = None  # the count the run began with (a resume reuses it)


def run_materialize_on_spark(
    config: PipelineConfig,
    artifact_store: ArtifactStore | None,
    store: OnlineStoreWriter,
    *,
    as_of: datetime,
    features: Sequence[str] | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    make_result: Callable[..., R],
    publish: Callable[[ArtifactStore, PipelineConfig, StoreMetadata, R, dict[str, float]], str],
) -> R:
    """``run_materialize`` with the features computed on Spark (see the module docstring).

    ``make_result`` builds the command's result from ``MaterializeResult``'s fields and
    ``publish`` records the materialization artifact (both ``ops.materialize``'s: an engine
    does not import the ops layer)."""
    from mlpipe_cli.online.codec import utcnow
    from mlpipe_cli.online.materialize import feature_hash, feature_ttls, select_features
    from mlpipe_cli.online.writer import finish_version

    started = time.perf_counter()
    selected = select_features(config, features)
    fhash = feature_hash(config, selected)
    ttls = feature_ttls(config, selected)
    size = chunk_size or config.online_store.chunk_size
    store.ping()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    abandoned: tuple[StoreMetadata, RunProgress] | None = None
    if resume:  # checked before Spark starts: a refusal costs no JVM
        abandoned = _abandoned_spark_run(store, fhash, chunk_size)
        as_of, size = abandoned[0].as_of, abandoned[1].chunk_size
        note(f"resuming the abandoned run {abandoned[0].version} (as of {as_of.isoformat()})")
    spark = spark_session(config)
    run = _plan_run(spark, config, selected, ttls, as_of, size)
    meta = run.metadata(store, fhash, version=abandoned[0].version if abandoned else None)
    if abandoned is not None:
        _check_same_run(abandoned[0], meta)
    in_tasks = store.kind in _STORES_WRITTEN_BY_TASKS
    t0 = time.perf_counter()
    if in_tasks:
        progress, counts, skipped = _write_in_tasks(
            spark, run, store, meta, on_total, on_progress, resumed=abandoned
        )
        seconds_compute, seconds_write = time.perf_counter() - t0, 0.0
    else:
        progress, counts, seconds_compute, skipped = _write_on_driver(
            spark, run, store, meta, on_total, on_progress, resumed=abandoned
        )
        seconds_write = time.perf_counter() - t0 - seconds_compute
    total = sum(counts)
    writer = "by the Spark tasks" if in_tasks else "by the driver"
    note(f"computed on Spark: {len(counts)} entity type(s), {total} entities, written {writer}")
    if abandoned is not None:
        note(f"{skipped} chunk(s) written before were kept, the others written again")
    meta = meta.replace(
        entity_count=total,
        namespaces=[
            replace(ns, entity_count=count)
            for ns, count in zip(meta.namespaces, counts, strict=False)
        ],
    )
    t1 = time.perf_counter()
    final, removed = finish_version(store, meta, progress, expected=total)
    if in_tasks:
        for version in [meta.version, *removed]:  # (removed: stale versions, abandoned runs)
            _drop_ledger(store, version)
    seconds_write += time.perf_counter() - t1
    result = make_result(
        version=final.version,
        as_of=as_of,
        finished_at=final.finished_at or utcnow(),
        entity_count=total,
        features=[f.name for f in selected],
        feature_hash=fhash,
        store=store.location,
        store_type=store.kind,
        removed_versions=removed,
        resumed_chunks=skipped,
        chunks=progress.chunks_done,
        seconds_total=time.perf_counter() - started,
        seconds_compute=seconds_compute,  # with the writes when the tasks write
        seconds_write=seconds_write,
        notes=notes,
    )
    if artifact_store is not None:
        result = replace(
            result,  # type: ignore[type-var]  # a dataclass: ops.materialize.MaterializeResult
            artifact_version=publish(artifact_store, config, final, result, ttls),
        )
    return result


@dataclass(frozen=True)
class _Run:
    """A planned run: one ``_KeySetPlan`` per entity type, and what the metadata needs."""

    config: PipelineConfig
    selected: list[FeatureConfig]
    ttls: dict[str, float]
    as_of: datetime
    inputs: dict[str, frames.SparkInput]
    plans: list[_KeySetPlan]
    empty_entities: list[pl.DataFrame]  # per entity type: zero rows, the entity dtypes

    def metadata(
        self, store: OnlineStoreWriter, fhash: str, *, version: str | None = None
    ) -> StoreMetadata:
        """The version's metadata (a new id unless ``version``, a resumed run's); counts are
        filled in when the tasks are done."""
        from mlpipe_cli.online.materialize import _key_types, union_keys
        from mlpipe_cli.online.store import Namespace, StoreMetadata
        from mlpipe_cli.online.writer import new_version_id

        key_sets = [plan.key_set for plan in self.plans]
        keys, key_types = union_keys(key_sets, self.empty_entities)
        return StoreMetadata(
            version=version or new_version_id(store),
            as_of=self.as_of,
            finished_at=None,
            entity_count=0,
            features=[f.name for f in self.selected],
            feature_hash=fhash,
            entity_keys=keys,
            key_types=key_types,
            defaults={f.name: f.default for f in self.selected},
            ttls=self.ttls,
            event_times=bool(self.ttls),
            status="building",
            namespaces=[
                Namespace(list(ks.columns), _key_types(frame), [f.name for f in ks.features], 0)
                for ks, frame in zip(key_sets, self.empty_entities, strict=True)
            ]
            if len(key_sets) > 1
            else [],
        )


def _plan_run(
    spark: Any,
    config: PipelineConfig,
    selected: list[FeatureConfig],
    ttls: dict[str, float],
    as_of: datetime,
    size: int,
) -> _Run:
    """Read the sources, plan every entity type, and run each plan once on zero rows: every
    check of the Polars run (key columns, dtypes, naive/aware times) before any Spark job."""
    from mlpipe_cli.online.materialize import _age_features, _spine_time, plan_key_sets

    spine_time = _spine_time(config, selected, as_of)
    used = sorted({f.source for f in selected})
    inputs = {name: frames.read_input(spark, config.sources[name].path) for name in used}
    schemas = {
        name: i.schema if i.schema is not None else _remote_schema(i) for name, i in inputs.items()
    }
    plans, empty_entities = [], []
    for index, key_set in enumerate(plan_key_sets(config, selected)):
        members = list(key_set.features)
        helpers, owner = _age_features(config, members, ttls, tag=f"{index}_")
        ns_names = [f.name for f in members]
        sources = sorted({f.source for f in members})
        key_inputs = _key_set_inputs(config, key_set)
        plan = _KeySetPlan(
            config=config.model_copy(update={"features": [*config.features, *helpers]}),
            key_set=key_set,
            namespace=index,
            as_of=as_of,
            as_of_epoch=as_of.timestamp(),
            spine_time=spine_time,
            compute_names=ns_names + [h.name for h in helpers],
            names=ns_names,
            event_columns=[owner[n] for n in ns_names if n in owner],
            sources=sources,
            inputs=key_inputs,
            schemas=[schemas[name] for name, _ in key_inputs],
            columns=[list(schemas[name].names()) for name, _ in key_inputs],
            key_dtypes=_key_dtypes(config, key_set, key_inputs, schemas),
            progress=None,
            chunk_size=size,
        )
        plans.append(plan)
        entities, _ = _compute(plan, {s: pl.DataFrame(schema=schemas[s]) for s in sources})
        empty_entities.append(entities)
    return _Run(config, selected, ttls, as_of, inputs, plans, empty_entities)


def _write_in_tasks(
    spark: Any,
    run: _Run,
    store: OnlineStoreWriter,
    meta: StoreMetadata,
    on_total: Callable[[int], None] | None,
    on_progress: Callable[[int], None] | None,
    *,
    resumed: tuple[StoreMetadata, RunProgress] | None = None,
) -> tuple[RunProgress, list[int], int]:
    """Begin the version (or take over the abandoned one), let every task write its rows
    into it, add up what they wrote; returns the chunks kept from before too."""
    from mlpipe_cli.online.writer import release_version, resume_version, start_version

    ledger = _ledger_key(store, meta.version)
    if resumed is None:
        # "spark:" never equals a Polars run's entity hash: a Polars run never continues a
        # version whose chunks were written by tasks in no particular order
        progress = start_version(
            store, meta, chunk_size=run.plans[0].chunk_size, entities_hash=f"spark:{meta.version}"
        )
        partitions = [_partition_count(spark, run.config, run.inputs, p) for p in run.plans]
        written_before: dict[str, str] = {}
        try:
            _record_partitions(store, ledger, partitions)
        except BaseException:
            release_version(meta.version)
            raise
    else:
        progress = resumed[1]
        if not resume_version(store, progress):
            raise UsageError(
                f"cannot resume {meta.version}: the online store restarted since it was "
                "written (rows may be lost); run without --resume"
            )
        try:
            partitions, written_before = _read_ledger(store, ledger, meta.version, len(run.plans))
        except BaseException:
            release_version(meta.version)
            raise
        # the tasks report every chunk, kept or written, so the totals are counted afresh
        progress.chunks_done = progress.written = 0
        progress.probes = []
    skipped = 0
    try:
        counts = []
        for plan, count in zip(run.plans, partitions, strict=True):
            task_plan = replace(
                plan,
                progress=progress,
                ledger=ledger,
                written_before=written_before,
                partitions=count,
            )
            stats = _run_key_set(spark, run.config, run.inputs, task_plan, write=True)
            counts.append(sum(row["rows"] for row in stats))
            for row in stats:
                progress.chunks_done += row["chunks"]
                progress.written += row["rows"]
                progress.probes.extend(row["probes"])
                skipped += row["kept"]
        if sum(counts) == 0:
            raise _no_entities(run.as_of)
    except BaseException:
        # the tasks' writes left their worker processes' lease on the version (and no task
        # writes any more: settled_on_failure): end it, so the run is resumable at once
        from mlpipe_cli.online.redis_store import RedisStore

        if isinstance(store, RedisStore):
            with contextlib.suppress(Exception):
                store.end_lease(meta.version)
        release_version(meta.version)
        raise
    if on_total is not None:
        on_total(sum(counts))
    if on_progress is not None:
        on_progress(sum(counts))
    return progress, counts, skipped


def _write_on_driver(
    spark: Any,
    run: _Run,
    store: OnlineStoreWriter,
    meta: StoreMetadata,
    on_total: Callable[[int], None] | None,
    on_progress: Callable[[int], None] | None,
    *,
    resumed: tuple[StoreMetadata, RunProgress] | None = None,
) -> tuple[RunProgress, list[int], float, int]:
    """Collect every task's packed rows, then write them through the store's writer (one
    SQLite file has one writer) in key order, chunk by chunk; a resumed run skips the
    chunks the store's progress record counts. Returns the seconds spent computing and the
    chunks skipped too."""
    from mlpipe_cli.online.codec import PackedChunk
    from mlpipe_cli.online.writer import release_version, resume_version, start_version

    t0 = time.perf_counter()
    packed = [
        _run_key_set(spark, run.config, run.inputs, plan, write=False).sort("key")
        for plan in run.plans
    ]
    counts = [rows.height for rows in packed]
    if sum(counts) == 0:
        raise _no_entities(run.as_of)
    if on_total is not None:
        on_total(sum(counts))
    seconds_compute = time.perf_counter() - t0
    size = run.plans[0].chunk_size
    # every packed row, so a resume continues only a run that was writing exactly these
    # rows ("spark:" never equals a Polars run's entity hash)
    rows_hash = "spark:" + _chunk_digest(
        pl.concat([rows.select("key", pl.col("value").cast(pl.String)) for rows in packed])
    )
    if resumed is None:
        progress = start_version(store, meta, chunk_size=size, entities_hash=rows_hash)
    else:
        progress = resumed[1]
        if progress.entities_hash != rows_hash:
            raise UsageError(
                f"cannot resume {meta.version}: the entities or feature values changed since "
                "the interrupted run",
                hint="run without --resume (a new version is built; the abandoned one is removed)",
            )
        if not resume_version(store, progress):
            raise UsageError(
                f"cannot resume {meta.version}: the online store changed since it was "
                "written; run without --resume"
            )
    skipped = progress.chunks_done
    try:
        chunk = 0
        for index, rows in enumerate(packed):
            for start in range(0, rows.height, size):
                chunk += 1
                if chunk <= skipped:  # written (and recorded) by the run that died
                    if on_progress is not None:
                        on_progress(min(size, rows.height - start))
                    continue
                part = rows.slice(start, size)
                items = PackedChunk(
                    part.select(
                        pl.col("key").alias("k"), pl.col("value").cast(pl.String).alias("v")
                    )
                )
                store.write_chunk(progress, items, index)
                if on_progress is not None:
                    on_progress(len(items))
    except BaseException:
        release_version(meta.version)
        raise
    return progress, counts, seconds_compute, skipped


# -- resuming ---------------------------------------------------------------------------------


def _abandoned_spark_run(
    store: OnlineStoreWriter, fhash: str, chunk_size: int | None
) -> tuple[StoreMetadata, RunProgress]:
    """The newest abandoned run of these features (its writer is gone), if Spark wrote it."""
    from mlpipe_cli.online.base import owner_alive

    building = [
        (meta, progress)
        for meta, progress in store.versions()
        if meta.status == "building" and progress is not None and meta.feature_hash == fhash
    ]
    runs = [(meta, progress) for meta, progress in building if not owner_alive(progress)]
    if not runs and building:
        # a killed driver's Python workers run on until they notice: the run's lease names
        # them (or a live run's driver) for a little longer
        meta, progress = building[-1]
        raise UsageError(
            f"run {meta.version} is still being written (by {progress.owner}); "
            "nothing to resume while it is",
            hint="a killed Spark driver's workers stop within a minute; retry then",
        )
    if not runs:
        raise UsageError("no abandoned run to resume; run without --resume")
    meta, progress = max(runs, key=lambda run: int(run[0].version.split("-", 1)[0]))
    if not progress.entities_hash.startswith("spark:"):
        raise UsageError(
            f"the abandoned run {meta.version} was written by the Polars engine; "
            "resume it with --engine polars"
        )
    if chunk_size is not None and chunk_size != progress.chunk_size:
        raise UsageError(
            f"the abandoned run {meta.version} uses --chunk-size {progress.chunk_size}; "
            "drop --chunk-size to resume it"
        )
    return meta, progress


def _check_same_run(before: StoreMetadata, now: StoreMetadata) -> None:
    """The resumed run stores the same entity types as the one that died (a config edit
    since would mix two layouts in one version)."""
    same = (
        before.features == now.features
        and before.entity_keys == now.entity_keys
        and [(ns.keys, ns.features) for ns in before.namespaces]
        == [(ns.keys, ns.features) for ns in now.namespaces]
    )
    if not same:
        raise UsageError(
            f"cannot resume {before.version}: its entity types or features differ from the "
            "config's now; run without --resume"
        )


def _ledger_key(store: OnlineStoreWriter, version: str) -> str:
    # beside the store's control keys (on a cluster: in their hash slot)
    return f"{store.prefix}:spark-ledger:{version}"  # type: ignore[attr-defined]


def _record_partitions(store: OnlineStoreWriter, ledger: str, partitions: list[int]) -> None:
    with _store_errors(store, "starting a version"):
        pipe = store.client.pipeline(transaction=True)  # type: ignore[attr-defined]
        pipe.hset(ledger, _PARTITIONS, json.dumps(partitions))
        pipe.expire(ledger, _LEDGER_SECONDS)
        pipe.execute()


def _read_ledger(
    store: OnlineStoreWriter, ledger: str, version: str, key_sets: int
) -> tuple[list[int], dict[str, str]]:
    with _store_errors(store, "resuming a version"):
        entries = store.client.hgetall(ledger)  # type: ignore[attr-defined]
    text = {_text(k): _text(v) for k, v in entries.items()}
    partitions = json.loads(text.pop(_PARTITIONS, "null"))
    if not isinstance(partitions, list) or len(partitions) != key_sets:
        raise UsageError(
            f"cannot resume {version}: its Spark ledger is missing or expired; run without --resume"
        )
    return [int(p) for p in partitions], text


def _drop_ledger(store: OnlineStoreWriter, version: str) -> None:
    with _store_errors(store, "removing the run's ledger"):
        store.client.delete(_ledger_key(store, version))  # type: ignore[attr-defined]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _store_errors(store: OnlineStoreWriter, what: str) -> Any:
    """The store's own error translation (a connection failure is exit 4, one line)."""
    return store._errors(what)  # type: ignore[attr-defined]


def _no_entities(as_of: datetime) -> DataCheckFailed:
    return DataCheckFailed(
        f"no entity has a row at or before {as_of.isoformat()} in the feature sources; "
        "the live version was not changed"
    )


def _remote_schema(spark_input: frames.SparkInput) -> pl.Schema:
    return frames.collect(spark_input.frame.drop(frames.ORDER).limit(0)).schema


def _run_key_set(
    spark: Any,
    config: PipelineConfig,
    inputs: dict[str, frames.SparkInput],
    plan: _KeySetPlan,
    *,
    write: bool,
) -> Any:
    """One shuffle and one job for one entity type: the tasks' stats (``write``) or their
    packed rows as one Polars frame (namespace, key, value)."""
    from mlpipe_cli.engines.spark.training_set import _stack, derived_key, with_derived_keys

    key_set = plan.key_set
    key_types = _key_spark_types(plan.key_dtypes)
    key_sources, sources = [], []
    for i, (name, side) in enumerate(plan.inputs):
        source = config.sources[name]
        computed = {c: d for c, d in zip(side, plan.key_dtypes, strict=True) if c in source.derived}
        frame = inputs[name].frame
        if computed:  # hashed on the value the entity list holds: computed before the shuffle
            frame = with_derived_keys(frame, source, name, plan.schemas[i], computed)
        sources.append(frame)
        key_sources.append([derived_key(c) if c in computed else c for c in side])
    stacked = _stack(sources, plan.columns, key_sources, key_types)
    partitions = plan.partitions or _partition_count(spark, config, inputs, plan)
    key_columns = [f"__mlpipe_k{j}" for j in range(len(key_set.columns))]
    shuffled = stacked.repartition(partitions, *key_columns)
    if write:
        schema = "rows long, chunks long, kept long, probes array<string>"
        task = task_errors(lambda batches: _write_task(batches, plan))
    else:
        schema = "key string, value binary"
        task = task_errors(lambda batches: _pack_task(batches, plan))
    with translate_errors("materializing features"):
        if write:
            # the driver takes the version back when the job fails: only once no task writes
            with settled_on_failure(spark, "mlpipe materialize"):
                return shuffled.mapInArrow(task, schema).collect()
        return frames.collect(shuffled.mapInArrow(task, schema))


def _partition_count(
    spark: Any, config: PipelineConfig, inputs: dict[str, frames.SparkInput], plan: _KeySetPlan
) -> int:
    import math

    total_rows = frames.row_count_hint([inputs[name] for name in plan.sources])
    return config.spark.partitions or max(
        spark.sparkContext.defaultParallelism,
        math.ceil((total_rows or 0) / config.spark.rows_per_partition),
    )


def _key_set_inputs(config: PipelineConfig, key_set: KeySet) -> list[tuple[str, tuple[str, ...]]]:
    """The key set's stacked inputs: each (source, its key columns) its features read."""
    from mlpipe_cli.features.keys import join_columns

    inputs = set()
    for feature in key_set.features:
        onto = dict(join_columns(config, feature))
        inputs.add((feature.source, tuple(onto[c] for c in key_set.columns)))
    return sorted(inputs)


def _key_dtypes(
    config: PipelineConfig,
    key_set: KeySet,
    inputs: list[tuple[str, tuple[str, ...]]],
    schemas: dict[str, pl.Schema],
) -> list[pl.DataType]:
    """The dtype each key column is compared as: the entity list's (``join_key_dtype`` over
    every input, derived columns included), which both sides are cast to before hashing."""
    from mlpipe_cli.engines import unsupported
    from mlpipe_cli.engines.spark.training_set import scanned_schema
    from mlpipe_cli.features.keys import join_key_dtype

    scanned = {name: scanned_schema(config, name, schemas[name]) for name, _ in inputs}
    dtypes: list[pl.DataType] = []
    for j, column in enumerate(key_set.columns):
        dtype: pl.DataType = pl.Null()
        for name, side in inputs:
            if side[j] not in scanned[name]:
                raise InputError(
                    f"source {name!r} has no entity key column {side[j]!r} "
                    f"(columns: {', '.join(scanned[name].names())})"
                )
            dtype = join_key_dtype(dtype, scanned[name][side[j]])
        dtypes.append(join_key_dtype(dtype, pl.Null()))
        del column
    plain = all(d in (pl.Int64(), pl.String()) for d in dtypes)
    sources = [name for name, _ in inputs]
    if not plain and len(set(sources)) < len(sources):
        raise unsupported(
            f"a source joined on different key columns by one entity type with keys of dtype "
            f"{', '.join(map(str, dtypes))} (integer and string keys are)"
        )
    for name, side in inputs:
        for column, dtype in zip(side, dtypes, strict=True):
            if column in config.sources[name].derived and dtype not in (pl.Int64(), pl.String()):
                raise unsupported(
                    f"a join key computed by `derived` as {dtype} ({name}.{column}; integer "
                    "and string ones are)"
                )
    return dtypes


def _key_spark_types(dtypes: list[pl.DataType]) -> list[str]:
    """The Spark type each key column is cast to before hashing."""
    try:
        key_schema = frames.spark_schema(pl.Schema({f"k{j}": d for j, d in enumerate(dtypes)}))
    except Exception:  # Int128 and other dtypes Spark has no type for
        from mlpipe_cli.engines import unsupported

        raise unsupported(f"entity keys of dtype {dtypes}") from None
    return [field.dataType.simpleString() for field in key_schema.fields]


# -- inside a task -----------------------------------------------------------------------------


def _task_sources(
    batches: Iterator[pa.RecordBatch], plan: _KeySetPlan
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
    """The task's rows per source (in source order), and, when a source came in two ways,
    the keys hashed to this task (its entities; the other rows brought others along)."""
    from mlpipe_cli.engines.spark.training_set import _input_rows

    frame = frames.from_batches(batches)
    if frame is None:
        return {}, None
    tags = frame.get_column(_INPUT)
    by_source: dict[str, list[pl.DataFrame]] = {}
    for i, (name, _) in enumerate(plan.inputs):
        rows = _input_rows(frame, tags, i, plan, f"source {name!r}")  # type: ignore[arg-type]
        by_source.setdefault(name, []).append(rows)
    sources = {}
    for name, parts in by_source.items():
        rows = parts[0] if len(parts) == 1 else pl.concat(parts).unique(frames.ORDER)
        sources[name] = rows.sort(frames.ORDER).drop(frames.ORDER)
    if len(plan.inputs) == len(by_source):
        return sources, None
    keys = [f"__mlpipe_k{j}" for j in range(len(plan.key_set.columns))]
    here = frame.select(
        pl.col(k).cast(dtype).alias(column)
        for k, dtype, column in zip(keys, plan.key_dtypes, plan.key_set.columns, strict=True)
    )
    return sources, here.drop_nulls().unique()


def _compute(
    plan: _KeySetPlan, sources: dict[str, pl.DataFrame], here: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The entities of these source rows as of the as-of, and their packed rows (``k`` the
    store key, ``v`` the packed value as text: ``online.codec.PackedChunk``'s frame): the
    Polars run's functions on the task's rows (sources go through temporary Parquet files
    because those functions read sources by path)."""
    from mlpipe_cli.features.engine import compute_features
    from mlpipe_cli.online.materialize import AS_OF_COLUMN, _pack_chunk, key_set_entities

    with tempfile.TemporaryDirectory(prefix="mlpipe-spark-") as tmp:
        replaced = {}
        for i, (name, rows) in enumerate(sorted(sources.items())):
            path = Path(tmp) / f"source-{i}.parquet"
            rows.write_parquet(path, compression="lz4", statistics=False)
            replaced[name] = plan.config.sources[name].model_copy(update={"path": path})
        local = plan.config.model_copy(update={"sources": {**plan.config.sources, **replaced}})
        entities = key_set_entities(local, plan.key_set, plan.as_of)
        if here is not None:  # in the order key_set_entities lists them
            entities = (
                entities.with_row_index("__mlpipe_at")
                .join(here, on=list(plan.key_set.columns), how="semi")
                .sort("__mlpipe_at")
                .drop("__mlpipe_at")
            )
        computed = compute_features(
            local,
            entities.with_columns(plan.spine_time.alias(AS_OF_COLUMN)),
            timestamp=AS_OF_COLUMN,
            features=plan.compute_names,
        )
    packed = _pack_chunk(
        computed, list(plan.key_set.columns), plan.names, plan.event_columns, plan.as_of_epoch
    )
    return entities, packed.frame


def _pack_task(batches: Iterator[pa.RecordBatch], plan: _KeySetPlan) -> Iterator[pa.RecordBatch]:

    sources, here = _task_sources(batches, plan)
    if not sources:
        return
    _, packed = _compute(plan, sources, here)
    if packed.height:
        rows = packed.select(pl.col("k").alias("key"), pl.col("v").cast(pl.Binary).alias("value"))
        yield from frames._arrow(rows).to_batches()


def _chunk_digest(chunk: pl.DataFrame) -> str:
    """SHA-256 of a packed chunk's keys and values (``k``/``v`` text columns, in order): a
    resumed run keeps a chunk only if it would write exactly these rows again."""
    import hashlib

    import orjson

    digest = hashlib.sha256(orjson.dumps(chunk.get_column(chunk.columns[0]).to_list()))
    digest.update(orjson.dumps(chunk.get_column(chunk.columns[1]).cast(pl.String).to_list()))
    return digest.hexdigest()


def _inputs_changed(plan: _KeySetPlan) -> UsageError:
    return UsageError(
        "cannot resume: the entities or feature values changed since the interrupted run "
        f"wrote its first chunks (entity type {plan.namespace})",
        hint="run without --resume (a new version is built; the abandoned one is removed)",
    )


def _write_task(batches: Iterator[pa.RecordBatch], plan: _KeySetPlan) -> Iterator[pa.RecordBatch]:
    """Compute, then write this task's rows into the version being built, over this task's
    own store connection, recording each chunk in the run's ledger once the store took it;
    a chunk the ledger holds already (a resumed run) is not written again. Returns (rows,
    chunks, chunks kept, probe keys) for the driver's checks."""
    import copy

    import pyarrow as pa
    from pyspark import TaskContext

    from mlpipe_cli.online import open_store
    from mlpipe_cli.online.codec import PackedChunk

    partition = TaskContext.get().partitionId()  # type: ignore[union-attr]
    before = plan.written_before or {}
    prefix = f"{plan.namespace}:{partition}:"
    recorded = {int(cid[len(prefix) :]) for cid in before if cid.startswith(prefix)}
    sources, here = _task_sources(batches, plan)
    packed = _compute(plan, sources, here)[1] if sources else None
    chunks_now = 0 if packed is None else -(-packed.height // plan.chunk_size)
    if recorded and max(recorded) >= chunks_now:
        raise _inputs_changed(plan)  # chunks written before no longer exist
    if packed is None or not packed.height:
        return
    assert plan.progress is not None
    assert plan.ledger is not None
    # a copy: write_chunk counts into it; the driver adds up what every task returns
    progress = copy.deepcopy(plan.progress)
    progress.chunks_done = progress.written = 0
    progress.probes = []
    keys = packed.get_column("k")
    kept = 0
    store = open_store(plan.config, Path(tempfile.gettempdir()))
    try:
        for index, start in enumerate(range(0, packed.height, plan.chunk_size)):
            chunk_id = f"{plan.namespace}:{partition}:{index}"
            rows = min(plan.chunk_size, packed.height - start)
            entry = {
                "rows": rows,
                "first": keys[start],
                "last": keys[start + rows - 1],
                "digest": _chunk_digest(packed.slice(start, rows)),
            }
            done = json.loads(before[chunk_id]) if chunk_id in before else None
            if done is not None:
                if any(done.get(k) != v for k, v in entry.items()):
                    # an entity added, removed or changed inside a chunk already written:
                    # rewriting it would leave the removed keys in the version
                    raise _inputs_changed(plan)
                progress.chunks_done += 1
                progress.written += rows
                progress.probes.extend(done["probes"])
                kept += 1
                continue
            chunk = PackedChunk(packed.slice(start, plan.chunk_size))
            store.write_chunk(progress, chunk, plan.namespace)
            entry["probes"] = progress.probes[-2:]
            with _store_errors(store, "recording a written chunk"):
                store.client.hset(plan.ledger, chunk_id, json.dumps(entry))  # type: ignore[union-attr]
    finally:
        store.close()
    yield pa.RecordBatch.from_pydict(
        {
            "rows": [progress.written],
            "chunks": [progress.chunks_done],
            "kept": [kept],
            "probes": [progress.probes],
        },
        schema=pa.schema(
            [
                ("rows", pa.int64()),
                ("chunks", pa.int64()),
                ("kept", pa.int64()),
                ("probes", pa.list_(pa.string())),
            ]
        ),
    )
