"""`mlpipe materialize`: every entity's latest feature values into the online store.

A run: ping the store → list the entities (``online.materialize.list_entities``) → compute
the features a batch of chunks at a time with ``features.engine.compute_features`` (the
function `training-set` uses, so online values equal offline ones by construction) while a
writer thread packs and writes the previous batch, chunk by chunk of
``online_store.chunk_size`` entities, into a new version namespace, recording progress →
check every row arrived → flip the live pointer atomically → remove old versions → publish
a ``materialization`` artifact.

A run that dies leaves the live version untouched. Re-running with the same as-of (given,
or ``resume=True`` which adopts the as-of of the newest abandoned run) continues the
abandoned version after its last completed chunk instead of starting over. A run whose as-of
is older than the live version's (a backfill finishing after a newer run) is kept but not
made live (``online.store.OlderThanLive``, exit 1) unless ``allow_older=True``.

Messages name the arguments as the caller spells them: ``ArgNames()`` (the Python API's
parameters, ``as_of=``: ``API_ARGS``) by default, ``CLI_ARGS`` (``--as-of``) from the CLI.

``run_materialize`` works on an open store; ``materialize``, ``check_freshness`` and
``rollback`` take a Project, open its online store and close it again.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli import interrupts
from mlpipe_cli.documents import MaterializationRecord
from mlpipe_cli.errors import DataCheckFailed, UsageError
from mlpipe_cli.online.base import owner_alive
from mlpipe_cli.online.codec import utcnow
from mlpipe_cli.online.materialize import (
    AS_OF_COLUMN,
    _age_features,
    _entities_hash,
    _key_types,
    _pack_chunk,
    _spine_time,
    feature_hash,
    feature_ttls,
    given,
    key_set_entities,
    parse_as_of,
    plan_key_sets,
    select_features,
    union_keys,
)
from mlpipe_cli.online.store import (
    Namespace,
    OlderThanLive,
    OnlineStore,
    OnlineStoreWriter,
    RunProgress,
    StoreMetadata,
)
from mlpipe_cli.online.writer import (
    finish_version,
    new_version_id,
    release_version,
    resume_version,
    start_version,
)

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.ops.project import Project

ARTIFACT_KIND = "materialization"
ARTIFACT_FILE = "materialization.json"


@dataclass(frozen=True)
class ArgNames:
    """How messages name the arguments of a materialize call. The defaults are the Python
    API's parameter names (``mlpipe.Pipeline.materialize(as_of=...)``): a library user is
    never told to pass a flag. The CLI passes ``CLI_ARGS``."""

    as_of: str = "as_of"
    features: str = "features"
    resume: str = "resume=True"
    chunk_size: str = "chunk_size"
    max_age: str = "max_age"
    allow_older: str = "allow_older=True"
    separator: str = ", "  # between arguments of one suggested call

    def call(self, *parts: str) -> str:
        return self.separator.join(parts)


API_ARGS = ArgNames()
CLI_ARGS = ArgNames(
    as_of="--as-of",
    features="--features",
    resume="--resume",
    chunk_size="--chunk-size",
    max_age="--max-age",
    allow_older="--allow-older",
    separator=" ",
)


@dataclass(frozen=True)
class MaterializeResult:
    version: str
    as_of: datetime
    finished_at: datetime
    entity_count: int
    features: list[str]
    feature_hash: str
    store: str
    store_type: str
    removed_versions: list[str]
    resumed_chunks: int
    chunks: int
    seconds_total: float
    seconds_compute: float
    seconds_write: float
    artifact_version: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "as_of": self.as_of.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "entity_count": self.entity_count,
            "features": self.features,
            "feature_hash": self.feature_hash,
            "store": self.store,
            "store_type": self.store_type,
            "removed_versions": self.removed_versions,
            "resumed_chunks": self.resumed_chunks,
            "chunks": self.chunks,
            "seconds": {
                "total": round(self.seconds_total, 3),
                "compute": round(self.seconds_compute, 3),
                "write": round(self.seconds_write, 3),
            },
            "entities_per_second": round(self.entity_count / self.seconds_total, 1)
            if self.seconds_total > 0
            else None,
            "artifact_version": self.artifact_version,
            "notes": self.notes,
        }

    to_json = to_dict  # the name before the ops layer (benchmarks, scripts)


@dataclass(frozen=True)
class FreshnessResult:
    ok: bool
    version: str | None
    as_of: datetime | None
    finished_at: datetime | None
    age_seconds: float | None
    max_age_seconds: float
    entity_count: int | None
    store: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": self.version,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "age_seconds": round(self.age_seconds, 3) if self.age_seconds is not None else None,
            "max_age_seconds": self.max_age_seconds,
            "entity_count": self.entity_count,
            "store": self.store,
            "message": self.message,
        }

    to_json = to_dict  # the name before the ops layer (benchmarks, scripts)

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when the live version is stale or missing."""
        if not self.ok:
            raise DataCheckFailed(self.message, report=self.to_dict())


# -- batching ---------------------------------------------------------------------------
# One compute_features call per batch of whole chunks; the run reads each source once per key
# set while the sources fit SOURCE_CACHE_BYTES (``source_cache``), and each call keeps only its
# entities' source rows. A batch is written
# (on the writer thread) while the next one is computed, so only the first batch's compute
# and the last batch's write are not overlapped: batches start at one chunk and double (the
# first rows are written, and progress shows, right away), up to this many entities, and
# never take more than half of the chunks left, so the run also ends on small batches.
# Memory holds about three batches of feature rows (computing, queued, being written).

COMPUTE_BATCH_ENTITIES = 1_000_000

# Sources kept in memory across the batches of one key set. Past this, a source is re-read
# by each batch and freed after use instead (as when nothing is cached): a project with many
# or large sources must not hold all of them at once for the whole run.
SOURCE_CACHE_BYTES = 512 * 1024 * 1024


class SourceCache(dict[tuple[object, ...], "pl.DataFrame"]):
    """``compute_features``' ``source_cache`` with a byte budget: a loaded source that would
    take the cache past ``max_bytes`` is simply not kept."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.bytes = 0

    def __setitem__(self, key: tuple[object, ...], frame: pl.DataFrame) -> None:
        size = int(frame.estimated_size())
        if self.bytes + size > self.max_bytes:
            return
        self.bytes += size
        super().__setitem__(key, frame)

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


def compute_batches(
    first: int, key_sets_of_chunks: Sequence[int], size: int
) -> list[tuple[int, int]]:
    """(first chunk, end chunk) of each compute_features call from chunk ``first`` on; a
    batch never spans two key sets (``key_sets_of_chunks[i]``: the key set of chunk i)."""
    chunks = len(key_sets_of_chunks)
    max_batch = max(1, COMPUTE_BATCH_ENTITIES // size)
    batches = []
    batch = 1
    while first < chunks:
        want = min(batch, max(1, -(-(chunks - first) // 2)))
        last = first + 1
        while (
            last < chunks
            and last - first < want
            and key_sets_of_chunks[last] == key_sets_of_chunks[first]
        ):
            last += 1
        batches.append((first, last))
        first, batch = last, min(max_batch, batch * 2)
    return batches


# -- the run ----------------------------------------------------------------------------


def run_materialize(
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
    allow_older: bool | None = None,
    args: ArgNames = API_ARGS,
) -> MaterializeResult:
    """Compute and load one version; returns only after the live pointer moved to it.

    A version as of an earlier time than the live one is written but not made live
    (OlderThanLive) unless ``allow_older`` (None: the store's ``allow_older``)."""
    from mlpipe_cli.features.engine import compute_features

    started = time.perf_counter()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    selected = select_features(config, features, args.features)
    names = [f.name for f in selected]
    fhash = feature_hash(config, selected)
    ttls = feature_ttls(config, selected)
    size = chunk_size or config.online_store.chunk_size
    store.ping()

    abandoned = _abandoned_runs(store, fhash)
    pinned: str | None = None
    if resume:
        # --resume means exactly one run: the newest abandoned one, on its own terms. It never
        # falls back to a new run (that would publish an as-of nobody asked for).
        if not abandoned:
            raise UsageError(f"no abandoned run to resume; run without {args.resume}")
        newest, newest_progress = abandoned[-1]
        if chunk_size is not None and chunk_size != newest_progress.chunk_size:
            raise UsageError(
                f"the abandoned run {newest.version} uses "
                f"{given(args.chunk_size, newest_progress.chunk_size)}; drop {args.chunk_size} "
                "to resume it"
            )
        pinned, as_of = newest.version, newest.as_of
        note(f"resuming the abandoned run {pinned} (as of {as_of.isoformat()})")

    # One namespace per entity type (key set): rider_id, driver_id, pickup_zone, ...
    key_sets = plan_key_sets(config, selected)
    entity_frames = [key_set_entities(config, key_set, as_of) for key_set in key_sets]
    keys, key_types = union_keys(key_sets, entity_frames)
    total = sum(frame.height for frame in entity_frames)
    if total == 0:
        raise DataCheckFailed(
            f"no entity has a row at or before {as_of.isoformat()} in the feature sources; "
            "the live version was not changed"
        )
    ehash = _entities_hash(*entity_frames)
    if on_total is not None:
        on_total(total)

    meta: StoreMetadata | None = None
    progress: RunProgress | None = None
    for candidate, prog in reversed(abandoned):
        if pinned is not None and candidate.version != pinned:
            continue
        # A plain run with the same as-of and features continues an abandoned one too (cheap
        # re-runs after a crash), always with that run's chunk size.
        if candidate.as_of == as_of and prog.entities_hash == ehash and candidate.features == names:
            if not resume_version(store, prog):
                note(
                    f"cannot continue {candidate.version}: the store restarted since it was "
                    "written; starting a new version"
                )
                break
            size = prog.chunk_size  # chunk boundaries must match the ones already written
            meta, progress = candidate, prog
            note(
                f"continuing version {meta.version} after chunk {prog.chunks_done} "
                f"({prog.written} of {total} entities already written)"
            )
            break
    if pinned is not None and meta is None:
        raise UsageError(
            f"cannot resume {pinned}: its entities changed or the store restarted since it was "
            f"written; run without {args.resume}"
        )
    if meta is None or progress is None:
        meta = StoreMetadata(
            version=new_version_id(store),
            as_of=as_of,
            finished_at=None,
            entity_count=total,
            features=names,
            feature_hash=fhash,
            entity_keys=keys,
            key_types=key_types,
            defaults={f.name: f.default for f in selected},
            ttls=ttls,
            event_times=bool(ttls),
            status="building",
            namespaces=[
                Namespace(
                    list(key_set.columns),
                    _key_types(frame),
                    [f.name for f in key_set.features],
                    frame.height,
                )
                for key_set, frame in zip(key_sets, entity_frames, strict=True)
            ]
            if len(key_sets) > 1
            else [],
        )
        progress = start_version(store, meta, chunk_size=size, entities_hash=ehash)
    # From here until finish_version the version is marked as being written by this
    # process: any failure (a Ctrl-C included) must unmark it, or a long-lived Python
    # process would keep it from ever being resumed or removed.
    try:
        resumed_chunks = progress.chunks_done

        spine_time = _spine_time(config, selected, as_of)
        as_of_epoch = as_of.timestamp()
        # Per key set: the features to compute (with the ttl helpers), and how to pack them.
        plans = []
        for index, key_set in enumerate(key_sets):
            members = list(key_set.features)
            helpers, owner = _age_features(config, members, ttls, tag=f"{index}_")
            ns_names = [f.name for f in members]
            plans.append(
                (
                    config.model_copy(update={"features": [*config.features, *helpers]}),
                    ns_names + [h.name for h in helpers],
                    ns_names,
                    [owner[n] for n in ns_names if n in owner],  # event-time column per ttl feature
                )
            )

        # Chunks never span two key sets; they are numbered across key sets in order, which is
        # what progress.chunks_done counts (and a resume skips).
        chunk_list = [
            (index, start)
            for index, frame in enumerate(entity_frames)
            for start in range(0, frame.height, size)
        ]
        chunks = len(chunk_list)
        seconds_compute = seconds_write = 0.0
        if on_progress is not None and resumed_chunks:
            on_progress(
                sum(
                    min(size, entity_frames[i].height - at) for i, at in chunk_list[:resumed_chunks]
                )
            )
        batches = compute_batches(resumed_chunks, [index for index, _ in chunk_list], size)
        # Compute here, pack and write on the writer thread: batch n+1 is computed while batch n
        # is written (Polars and the socket both release the GIL). One thread writes every
        # chunk, in order, so progress and resume mean what they did when this ran serially.
        writer = _ChunkWriter(store, progress, as_of_epoch, on_progress)
        sources = SourceCache(SOURCE_CACHE_BYTES)  # each source read once per key set, if it fits
        cached_for: int | None = None
        try:
            for first, last in batches:
                writer.check()  # a failed write stops the run before more is computed
                t0 = time.perf_counter()
                index, start = chunk_list[first]
                if index != cached_for:  # another key set reads its sources its own way
                    sources.clear()
                    cached_for = index
                compute_config, compute_names, ns_names, event_cols = plans[index]
                spine = entity_frames[index].slice(start, (last - first) * size)
                computed = compute_features(
                    compute_config,
                    spine.with_columns(spine_time.alias(AS_OF_COLUMN)),
                    timestamp=AS_OF_COLUMN,
                    features=compute_names,
                    source_cache=sources,
                )
                del spine
                seconds_compute += time.perf_counter() - t0
                writer.submit(
                    _Batch(
                        computed, size, index, list(key_sets[index].columns), ns_names, event_cols
                    )
                )
                del computed
            del sources
            writer.finish()
        except BaseException as exc:
            writer.abort()
            release_version(meta.version)
            # A write that failed while this batch was computed is the run's first failure (a
            # ServiceUnavailable stays exit 4): report it, not the compute error that followed.
            failed_write = writer.failure
            if failed_write is not None and failed_write is not exc:
                raise failed_write from exc
            raise
        seconds_compute += writer.seconds_pack
        seconds_write += writer.seconds_write
        t1 = time.perf_counter()
        interrupts.check()  # a Ctrl-C that a finalizer swallowed: the live version stays as it was
    except BaseException:
        release_version(meta.version)
        raise
    final, removed = finish_version(store, meta, progress, expected=total, allow_older=allow_older)
    seconds_write += time.perf_counter() - t1

    result = MaterializeResult(
        version=final.version,
        as_of=as_of,
        finished_at=final.finished_at or utcnow(),
        entity_count=total,
        features=names,
        feature_hash=fhash,
        store=store.location,
        store_type=store.kind,
        removed_versions=removed,
        resumed_chunks=resumed_chunks,
        chunks=chunks,
        seconds_total=time.perf_counter() - started,
        seconds_compute=seconds_compute,
        seconds_write=seconds_write,
        notes=notes,
    )
    if artifact_store is not None:
        result = replace(
            result, artifact_version=_publish(artifact_store, config, final, result, ttls)
        )
    return result


@dataclass(frozen=True)
class _Batch:
    """One compute_features result: whole chunks of ``size`` entities of one key set."""

    computed: Any  # pl.DataFrame
    size: int
    namespace: int
    keys: list[str]
    names: list[str]
    event_cols: list[str]


class _ChunkWriter:
    """Packs and writes computed batches, chunk by chunk in order, on its own thread.

    At most one batch waits while one is written and the caller computes the next (memory:
    about three batches of feature rows). The first failure stops the thread; ``check``/``submit``/``finish`` raise it in
    the caller, unchanged (a ServiceUnavailable stays exit 4). ``abort`` stops after the
    chunk in flight: the version is then abandoned, never switched.
    """

    def __init__(
        self,
        store: OnlineStoreWriter,
        progress: RunProgress,
        as_of_epoch: float,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self._store = store
        self._progress = progress
        self._as_of_epoch = as_of_epoch
        self._on_progress = on_progress
        self._jobs: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self.seconds_pack = self.seconds_write = 0.0
        self._thread = threading.Thread(
            target=self._run, name="mlpipe-materialize-writer", daemon=True
        )
        self._thread.start()

    @property
    def failure(self) -> BaseException | None:
        """The write that stopped the thread, if one did."""
        return self._failure

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def submit(self, batch: _Batch | None) -> None:
        while True:
            self.check()
            try:
                self._jobs.put(batch, timeout=0.05)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    self.check()
                    raise RuntimeError("the materialize writer thread stopped") from None

    def finish(self) -> None:
        """Wait until every submitted batch is written; raise the writer's failure."""
        self.submit(None)
        self._thread.join()
        self.check()

    def abort(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
                self._jobs.task_done()
        with contextlib.suppress(queue.Full):
            self._jobs.put_nowait(None)
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._jobs.get()
            try:
                if batch is None:
                    return
                self._write(batch)
            except BaseException as exc:
                self._failure = exc
                return
            finally:
                self._jobs.task_done()  # (benchmarks/profile_materialize.py --serial waits on it)

    def _write(self, batch: _Batch) -> None:
        computed, size = batch.computed, batch.size
        for offset in range(0, computed.height, size):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            items = _pack_chunk(
                computed.slice(offset, size),
                batch.keys,
                batch.names,
                batch.event_cols,
                self._as_of_epoch,
            )
            t1 = time.perf_counter()
            self._store.write_chunk(self._progress, items, batch.namespace)
            self.seconds_write += time.perf_counter() - t1
            self.seconds_pack += t1 - t0
            if self._on_progress is not None:
                self._on_progress(len(items))


def _abandoned_runs(
    store: OnlineStoreWriter, fhash: str
) -> list[tuple[StoreMetadata, RunProgress]]:
    """Runs whose writer died, oldest first (by version sequence: Redis lists in no order)."""
    out = []
    for meta, progress in store.versions():
        if meta.status != "building" or progress is None or meta.feature_hash != fhash:
            continue
        if not owner_alive(progress):
            out.append((meta, progress))
    return sorted(out, key=lambda run: int(run[0].version.split("-", 1)[0]))


def _publish(
    artifact_store: ArtifactStore,
    config: PipelineConfig,
    meta: StoreMetadata,
    result: MaterializeResult,
    ttls: dict[str, float],
) -> str:
    doc = {
        "format_version": MaterializationRecord.FORMAT_VERSION,
        "pipeline": config.pipeline,
        "as_of": meta.as_of.isoformat(),
        "entity_count": meta.entity_count,
        "entity_keys": meta.entity_keys,
        "features": meta.features,
        "feature_hash": meta.feature_hash,
        "ttls": ttls,
        "store_type": result.store_type,
    }
    if meta.namespaces:  # several entity types (a single-entity document stays as it was)
        doc["namespaces"] = [ns.to_dict() for ns in meta.namespaces]

    def write(staging: Path) -> None:
        (staging / ARTIFACT_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    published = artifact_store.publish(
        ARTIFACT_KIND,
        write,
        config_hash=meta.feature_hash,
        params={"as_of": meta.as_of.isoformat(), "features": meta.features},
        extra={
            "store_version": meta.version,
            "store": result.store,
            "finished_at": meta.finished_at.isoformat() if meta.finished_at else None,
            "seconds": {
                "total": round(result.seconds_total, 3),
                "compute": round(result.seconds_compute, 3),
                "write": round(result.seconds_write, 3),
            },
        },
    )
    return published.version.version


# -- freshness and rollback -------------------------------------------------------------


def store_freshness(store: OnlineStore, max_age: timedelta) -> FreshnessResult:
    """Is the live version's as-of within ``max_age`` of now? (exit 1 from the CLI if not)."""
    store.ping()
    meta = store.live_metadata()
    limit = max_age.total_seconds()
    if meta is None:
        return FreshnessResult(
            False, None, None, None, None, limit, None, store.location,
            "no live version in the online store (run `mlpipe materialize`)",
        )  # fmt: skip
    age = (utcnow() - meta.as_of).total_seconds()
    ok = age <= limit
    verdict = "fresh" if ok else "STALE"
    message = (
        f"{verdict}: live version {meta.version} is as of {meta.as_of.isoformat()}, "
        f"{_human_seconds(age)} old (max {_human_seconds(limit)})"
    )
    return FreshnessResult(
        ok, meta.version, meta.as_of, meta.finished_at, age, limit, meta.entity_count,
        store.location, message,
    )  # fmt: skip


def store_rollback(store: OnlineStoreWriter) -> tuple[StoreMetadata, StoreMetadata]:
    """Make the previous version live again; returns (now live, now previous) metadata."""
    store.ping()
    live, previous = store.rollback()
    metas = {m.version: m for m, _ in store.versions()}
    return metas[live], metas[previous]


def _human_seconds(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


# -- over a project (what the CLI and mlpipe.Pipeline call) ------------------------------


@dataclass(frozen=True)
class RollbackResult:
    live: StoreMetadata
    previous: StoreMetadata
    store: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "live": {"version": self.live.version, "as_of": self.live.as_of.isoformat()},
            "previous": {
                "version": self.previous.version,
                "as_of": self.previous.as_of.isoformat(),
            },
            "store": self.store,
        }


def materialize(
    project: Project,
    *,
    as_of: str | datetime | None = None,
    features: Sequence[str] | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    engine: str | None = None,
    allow_older: bool = False,
    args: ArgNames = API_ARGS,
) -> MaterializeResult:
    """Materialize ``project``'s features as of ``as_of`` (ISO text, aware datetime, or
    None = now) into its online store; see `mlpipe materialize --help`.

    An as-of older than the live version's is written but not made live (OlderThanLive,
    a DataCheckFailed: exit 1) unless ``allow_older``; an equal as-of (a retry) goes live.
    ``args``: how messages name the arguments (the CLI passes ``CLI_ARGS``)."""
    from functools import partial

    from mlpipe_cli.engines import choose_engine
    from mlpipe_cli.online import open_store

    run: Callable[..., MaterializeResult] = partial(run_materialize, args=args)
    if choose_engine(project.config, engine) == "spark":
        from mlpipe_cli.engines.spark.materialize import run_materialize_on_spark

        run = partial(run_materialize_on_spark, make_result=MaterializeResult, publish=_publish)

    if resume and (as_of or features):
        raise UsageError(
            f"{args.resume} continues the newest abandoned run with its own as-of and "
            f"features; drop {args.as_of}/{args.features}, or run without {args.resume}"
        )
    when = as_of if isinstance(as_of, datetime) else parse_as_of(as_of, project.config, args.as_of)
    select_features(project.config, features, args.features)  # names it as the caller did
    store = open_store(project.config, project.artifact_dir)
    # the store's switch reads this (the Spark engine's run reaches it through the store)
    store.allow_older = allow_older
    try:
        return run(
            project.config,
            project.store,
            store,
            as_of=when,
            features=features,
            resume=resume,
            chunk_size=chunk_size,
            on_total=on_total,
            on_progress=on_progress,
            on_note=on_note,
        )
    except OlderThanLive as refused:
        again = args.call(given(args.as_of, refused.as_of.isoformat()), args.allow_older)
        raise refused.with_remedy(f"run it again with {again}") from None
    finally:
        store.close()


def check_freshness(
    project: Project,
    *,
    max_age: str | timedelta,
    args: ArgNames = API_ARGS,
) -> FreshnessResult:
    """Is the live version's as-of within ``max_age`` (``"1h"``, ``"30m"`` or a timedelta)?
    ``raise_for_status()`` on the result raises DataCheckFailed when it is not."""
    from mlpipe_cli.config.base import parse_duration
    from mlpipe_cli.online import open_store

    if isinstance(max_age, timedelta):
        limit = max_age
    else:
        try:
            limit = parse_duration(max_age)
        except ValueError as exc:
            raise UsageError(f"{args.max_age}: {exc}") from None
    store = open_store(project.config, project.artifact_dir)
    try:
        return store_freshness(store, limit)
    finally:
        store.close()


def rollback(project: Project) -> RollbackResult:
    """Make the previous version live again (atomic swap); --rollback again undoes it."""
    from mlpipe_cli.online import open_store

    store = open_store(project.config, project.artifact_dir)
    try:
        live, previous = store_rollback(store)
        return RollbackResult(live=live, previous=previous, store=store.location)
    finally:
        store.close()
