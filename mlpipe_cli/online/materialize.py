"""`mlpipe materialize`: every entity's latest feature values into the online store.

The values come from ``mlpipe_cli.features.engine.compute_features`` — the function
`training-set` uses — called with a spine of (every entity, as_of), chunk by chunk, so the
online values equal the offline ones by construction and memory stays bounded by one chunk.

A run: ping the store → list the entities (distinct keys of the sources the selected
features read, with a row at or before as_of) → sort them → compute the features a batch
of chunks at a time (one ``compute_features`` call per COMPUTE_BATCH_ENTITIES entities) → for
each chunk of ``online_store.chunk_size`` entities pack one row per entity and write it into
a new version namespace, recording progress → check every row arrived → flip the live
pointer atomically → remove old versions → publish a ``materialization`` artifact.

A run that dies leaves the live version untouched. Re-running with the same as-of (``--as-of``
given, or ``--resume`` which adopts the as-of of the newest abandoned run) continues the
abandoned version after its last completed chunk instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlpipe_cli.errors import ConfigError, DataCheckFailed, InputError, UsageError
from mlpipe_cli.online.base import StoreMetadata, utcnow
from mlpipe_cli.online.store import ACTIVE_WRITES, RunProgress, owner_alive
from mlpipe_cli.online.writer import finish_version, new_version_id, resume_version, start_version

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig

AS_OF_COLUMN = "__mlpipe_as_of"
_AGE_PREFIX = "__mlpipe_age__"
ARTIFACT_KIND = "materialization"
ARTIFACT_FILE = "materialization.json"


@dataclass
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

    def to_json(self) -> dict[str, Any]:
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


@dataclass
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

    def to_json(self) -> dict[str, Any]:
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


# -- planning ---------------------------------------------------------------------------


def select_features(config: PipelineConfig, names: Sequence[str] | None) -> list[FeatureConfig]:
    if not config.features:
        raise ConfigError(
            "the config defines no features to materialize",
            hint="add a `features:` section (see configs/example.yaml)",
        )
    if not config.entity_keys:
        raise ConfigError("materialize needs `entity_keys` in the config")
    if not names:
        return list(config.features)
    by_name = {f.name: f for f in config.features}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(
            f"unknown feature {unknown[0]!r} in --features (defined: {', '.join(by_name)})"
        )
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return [by_name[n] for n in seen]


def feature_hash(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> str:
    """sha256 of what defines the values: entity keys, the features, their sources' time rules."""
    from mlpipe_cli.config.loader import config_section_hash

    sources = {}
    for name in sorted({f.source for f in selected}):
        src = config.sources[name]
        sources[name] = {
            "timestamp": src.timestamp,
            "created_timestamp": src.created_timestamp,
            "valid_from": src.valid_from,
            "valid_to": src.valid_to,
            "entity_keys": src.entity_keys,
            "ttl": src.ttl.total_seconds() if src.ttl is not None else None,
        }
    return config_section_hash(
        {
            "entity_keys": config.entity_keys,
            "timezone": config.timezone,
            "features": [f.model_dump(mode="json") for f in selected],
            "sources": sources,
        }
    )


def feature_ttls(config: PipelineConfig, selected: Sequence[FeatureConfig]) -> dict[str, float]:
    """Feature name → the ttl governing it in seconds: the engine's rule (features/ttl.py)."""
    from mlpipe_cli.features.ttl import feature_ttls as governed

    return governed(config, selected)


def parse_as_of(text: str | None, config: PipelineConfig) -> datetime:
    """ISO 8601 (naive = the config's timezone, else UTC) or 'now'; never in the future."""
    now = utcnow()
    if text is None or text.strip().lower() == "now":
        return now.replace(microsecond=0)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--as-of {text!r} is not a timestamp", hint="use ISO 8601, e.g. 2026-07-01T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        if config.timezone:
            from zoneinfo import ZoneInfo

            value = value.replace(tzinfo=ZoneInfo(config.timezone))
        else:
            value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > now + timedelta(minutes=1):
        raise UsageError(
            f"--as-of {value.isoformat()} is in the future; the online store serves values "
            "as of a time that has passed"
        )
    return value


def _source_keys(config: PipelineConfig, name: str) -> list[str]:
    source = config.sources[name]
    keys = list(source.entity_keys or config.entity_keys)
    if len(keys) != len(config.entity_keys):
        raise ConfigError(
            f"source {name!r} has {len(keys)} entity key(s) {keys} but the pipeline has "
            f"{len(config.entity_keys)} {config.entity_keys}"
        )
    return keys


def _visible_before(dtype: Any, column: str, as_of: datetime, zone: str | None) -> pl.Expr:
    import polars as pl

    naive_utc = as_of.astimezone(UTC).replace(tzinfo=None)
    expr = pl.col(column)
    if isinstance(dtype, pl.Date):
        return expr <= pl.lit(naive_utc.date())
    if dtype.time_zone is not None:
        expr = expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    elif zone is not None:
        expr = expr.dt.replace_time_zone(zone, ambiguous="earliest").dt.convert_time_zone("UTC")
        expr = expr.dt.replace_time_zone(None)
    return expr.dt.cast_time_unit("us") <= pl.lit(naive_utc).dt.cast_time_unit("us")


def list_entities(
    config: PipelineConfig, selected: Sequence[FeatureConfig], as_of: datetime
) -> pl.DataFrame:
    """Distinct entity keys (pipeline key names) with a row at or before as_of, sorted."""
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    keys = list(config.entity_keys)
    frames = []
    for name in sorted({f.source for f in selected}):
        source = config.sources[name]
        src_keys = _source_keys(config, name)
        lazy = scan_parquet(source.path)
        schema = lazy.collect_schema()
        missing = [k for k in src_keys if k not in schema]
        if missing:
            raise InputError(
                f"source {name!r} has no entity key column {missing[0]!r} "
                f"(columns: {', '.join(schema.names())})"
            )
        time_col = source.valid_from or source.timestamp
        if time_col is not None and time_col in schema:
            lazy = lazy.filter(_visible_before(schema[time_col], time_col, as_of, config.timezone))
        frames.append(
            lazy.select([pl.col(s).alias(k) for s, k in zip(src_keys, keys, strict=True)])
            .drop_nulls()
            .unique()
        )
    try:
        first = frames[0].collect_schema()
        casted = [f.cast(dict(first)) for f in frames]  # type: ignore[arg-type]
        entities = pl.concat(casted).unique().sort(keys).collect()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot list entities: {str(exc).strip().splitlines()[0]}") from None
    return entities


def _key_types(frame: pl.DataFrame) -> list[str]:
    import polars as pl

    out = []
    for dtype in frame.dtypes:
        if dtype.is_integer():
            out.append("int")
        elif isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
            out.append("str")
        else:
            out.append("other")
    return out


def _entities_hash(frame: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(",".join(f"{n}:{d}" for n, d in frame.schema.items()).encode())
    digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()


def _spine_time(config: PipelineConfig, selected: Sequence[FeatureConfig], as_of: datetime) -> Any:
    """as_of as a Polars literal whose zone-awareness matches the sources (the engine refuses
    to compare naive with aware timestamps)."""
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    aware = False
    for name in sorted({f.source for f in selected}):
        source = config.sources[name]
        schema = scan_parquet(source.path).collect_schema()
        for col in (source.timestamp, source.created_timestamp, source.valid_from):
            if col and col in schema:
                dtype = schema[col]
                if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
                    aware = True
    if aware:
        return pl.lit(as_of.astimezone(UTC)).dt.cast_time_unit("us")
    if config.timezone:
        from zoneinfo import ZoneInfo

        local = as_of.astimezone(ZoneInfo(config.timezone)).replace(tzinfo=None)
        return pl.lit(local).dt.cast_time_unit("us")
    return pl.lit(as_of.astimezone(UTC).replace(tzinfo=None)).dt.cast_time_unit("us")


def _age_features(
    config: PipelineConfig, selected: Sequence[FeatureConfig], ttls: dict[str, float]
) -> tuple[list[FeatureConfig], dict[str, str]]:
    """One `time_since_last` helper feature (seconds) per (source, boundary) with a ttl.

    ``t - age`` is the newest visible event the ttl is measured from, exactly as the engine
    sees it; readers expire the value once ``now - event > ttl``.
    """
    from mlpipe_cli.config.features import FeatureConfig

    helpers: dict[tuple[str, bool], FeatureConfig] = {}
    owner: dict[str, str] = {}
    for feature in selected:
        if feature.name not in ttls:
            continue
        group = (feature.source, feature.inclusive)
        if group not in helpers:
            helpers[group] = FeatureConfig(
                name=f"{_AGE_PREFIX}{feature.source}__{int(feature.inclusive)}",
                source=feature.source,
                kind="time_since_last",
                unit="s",
                inclusive=feature.inclusive,
            )
        owner[feature.name] = helpers[group].name
    return list(helpers.values()), owner


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store a {type(value).__name__} feature value")


def _pack_chunk(
    out: pl.DataFrame,
    keys: list[str],
    names: list[str],
    event_cols: list[str],
    as_of_epoch: float,
) -> list[tuple[str, bytes]]:
    import polars as pl

    # Event times (epoch seconds) next to the values, built vectorised in Polars.
    events = [(pl.lit(as_of_epoch) - pl.col(c)).alias(f"__ev{i}") for i, c in enumerate(event_cols)]
    values = out.select([pl.col(n) for n in names] + events)
    key_frame = out.select(keys)
    dumps = orjson.dumps
    if len(keys) == 1 and key_frame.dtypes[0].is_integer():
        store_keys = [f"[{k}]" for k in key_frame.to_series()]
    else:
        store_keys = [dumps(list(k)).decode() for k in key_frame.iter_rows()]
    option = orjson.OPT_SERIALIZE_NUMPY
    try:
        rows = [dumps(r, option=option) for r in values.iter_rows()]
    except TypeError:
        rows = [dumps(r, default=_json_default, option=option) for r in values.iter_rows()]
    return list(zip(store_keys, rows, strict=True))


# -- batching ---------------------------------------------------------------------------
# One compute_features call per batch of whole chunks: the engine scales linearly with the
# entities in a call and keeps only the batch's entities' source rows, so few large calls
# beat many small ones (each call reads the sources once). Batches start at one chunk and
# double (the first rows are written, and progress shows, right away) up to this many
# entities; memory holds one batch's feature rows.

COMPUTE_BATCH_ENTITIES = 1_000_000


# -- the run ----------------------------------------------------------------------------


def materialize(
    config: PipelineConfig,
    artifact_store: ArtifactStore | None,
    store: Any,
    *,
    as_of: datetime,
    features: Sequence[str] | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> MaterializeResult:
    """Compute and load one version; returns only after the live pointer moved to it."""
    from mlpipe_cli.features.engine import compute_features

    started = time.perf_counter()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if on_note is not None:
            on_note(text)

    selected = select_features(config, features)
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
            raise UsageError("no abandoned run to resume; run without --resume")
        newest, newest_progress = abandoned[-1]
        if chunk_size is not None and chunk_size != newest_progress.chunk_size:
            raise UsageError(
                f"the abandoned run {newest.version} uses --chunk-size "
                f"{newest_progress.chunk_size}; drop --chunk-size to resume it"
            )
        pinned, as_of = newest.version, newest.as_of
        note(f"resuming the abandoned run {pinned} (as of {as_of.isoformat()})")

    keys = list(config.entity_keys)
    entities = list_entities(config, selected, as_of)
    total = entities.height
    if total == 0:
        raise DataCheckFailed(
            f"no entity has a row at or before {as_of.isoformat()} in the feature sources; "
            "the live version was not changed"
        )
    ehash = _entities_hash(entities)
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
            "written; run without --resume"
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
            key_types=_key_types(entities),
            defaults={f.name: f.default for f in selected},
            ttls=ttls,
            event_times=bool(ttls),
            status="building",
        )
        progress = start_version(store, meta, chunk_size=size, entities_hash=ehash)
    resumed_chunks = progress.chunks_done

    helpers, owner = _age_features(config, selected, ttls)
    compute_config = config.model_copy(update={"features": [*config.features, *helpers]})
    compute_names = names + [h.name for h in helpers]
    event_cols = [owner[n] for n in names if n in owner]
    as_of_epoch = as_of.timestamp()
    spine_time = _spine_time(config, selected, as_of)

    chunks = (total + size - 1) // size
    seconds_compute = seconds_write = 0.0
    if on_progress is not None and resumed_chunks:
        on_progress(min(total, resumed_chunks * size))
    max_batch = max(1, COMPUTE_BATCH_ENTITIES // size)  # chunks per compute_features call
    batches = []
    first, batch = resumed_chunks, 1
    while first < chunks:
        batches.append((first, min(chunks, first + batch)))
        first, batch = first + batch, min(max_batch, batch * 2)
    try:
        for first, last in batches:
            t0 = time.perf_counter()
            spine = entities.slice(first * size, (last - first) * size)
            computed = compute_features(
                compute_config,
                spine.with_columns(spine_time.alias(AS_OF_COLUMN)),
                entity_keys=keys,
                timestamp=AS_OF_COLUMN,
                features=compute_names,
            )
            del spine
            seconds_compute += time.perf_counter() - t0
            for index in range(first, last):
                t0 = time.perf_counter()
                out = computed.slice((index - first) * size, size)
                items = _pack_chunk(out, keys, names, event_cols, as_of_epoch)
                del out
                t1 = time.perf_counter()
                store.write_chunk(progress, items)
                seconds_write += time.perf_counter() - t1
                seconds_compute += t1 - t0
                if on_progress is not None:
                    on_progress(len(items))
                del items
            del computed
    except BaseException:
        ACTIVE_WRITES.discard(meta.version)
        raise
    t1 = time.perf_counter()
    final, removed = finish_version(store, meta, progress, expected=total)
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
        result.artifact_version = _publish(artifact_store, config, final, result, ttls)
    return result


def _abandoned_runs(store: Any, fhash: str) -> list[tuple[StoreMetadata, RunProgress]]:
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
        "format_version": 1,
        "pipeline": config.pipeline,
        "as_of": meta.as_of.isoformat(),
        "entity_count": meta.entity_count,
        "entity_keys": meta.entity_keys,
        "features": meta.features,
        "feature_hash": meta.feature_hash,
        "ttls": ttls,
        "store_type": result.store_type,
    }

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


def check_freshness(store: Any, max_age: timedelta) -> FreshnessResult:
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


def rollback(store: Any) -> tuple[StoreMetadata, StoreMetadata]:
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
