"""The serving core without HTTP: look features up, transform them, score them, log them.

`FeatureService` is what the ASGI app calls and what the in-process benchmark measures. It is
built once at start by :func:`build_service`, which loads and verifies every artifact and
refuses to start (ArtifactError, exit 3) when the transform, the online store's live version
and the model do not fit together.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import (
    ArtifactError,
    ConfigError,
    MlpipeError,
    ServiceUnavailable,
    UsageError,
)

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.online import OnlineStore
    from mlpipe_cli.serving.featurelog import FeatureLogger
    from mlpipe_cli.serving.metrics import Metrics
    from mlpipe_cli.serving.model import RegisteredModel
    from mlpipe_cli.serving.shadow import Shadow


class StoreIncompatible(MlpipeError):
    """The store's live version changed to one the pinned transform cannot read (HTTP 503)."""


class NoLiveVersion(ServiceUnavailable):
    """The store answers but has no live materialized version (HTTP 503, not ready)."""


class StoreHealth:
    """Logs the online store's down / recovered transitions on the server's stderr.

    Clients only ever read "store unavailable"; the details (which host, what failed) go
    here, once when the store goes down, then at most every ``repeat`` seconds while it stays
    down (with the count of failed calls), and once when a call succeeds again.
    """

    def __init__(self, write: Callable[[str], Any] | None = None, repeat: float = 10.0) -> None:
        self._write = write or sys.stderr.write
        self.repeat = repeat
        self.down_since: float | None = None
        self.failures = 0
        self._logged_at = 0.0
        self.transitions = 0

    def failed(self, detail: str) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.failures = 1
            self.transitions += 1
            self._log(f"online store down: {detail}")
            self._logged_at = now
            return
        self.failures += 1
        if now - self._logged_at >= self.repeat:
            self._log(
                f"online store still down after {now - self.down_since:.1f} s "
                f"({self.failures} failed calls): {detail}"
            )
            self._logged_at = now

    def ok(self) -> None:
        if self.down_since is None:
            return
        self._log(
            f"online store recovered after {time.monotonic() - self.down_since:.1f} s "
            f"({self.failures} failed calls)"
        )
        self.down_since = None
        self.failures = 0
        self.transitions += 1

    def _log(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._write(f"{stamp} mlpipe serve: {text}\n")
        with contextlib.suppress(Exception):
            sys.stderr.flush()


@dataclass(slots=True)
class Served:
    """One entity as served: raw values, transformed vector, versions, cold-start flag."""

    entity: list[Any]
    entity_key: str
    cold_start: bool
    values: dict[str, Any]
    expired: list[str]
    vector: list[float]
    store_version: str | None
    as_of: datetime | None
    prediction: float | None = None
    # The service that produced this (its transform made the vector): a response, its log row
    # and its score name that version even when `mlpipe promote` switched the live service
    # while the request was waiting for the store.
    origin: FeatureService | None = None
    # streamed features: feature -> newest event time and batch as-of (docs/streaming.md)
    freshness: dict[str, Any] | None = None

    def to_dict(self, transform_version: str) -> dict[str, Any]:
        if self.origin is not None:
            transform_version = self.origin.transform_version
        doc: dict[str, Any] = {
            "entity": self.entity[0] if len(self.entity) == 1 else self.entity,
            "cold_start": self.cold_start,
            "features": self.values,
            "vector": self.vector,
            "expired": self.expired,
            "transform_version": transform_version,
            "store_version": self.store_version,
            "as_of": self.as_of,
        }
        if self.prediction is not None:
            doc["prediction"] = self.prediction
        if self.freshness is not None:
            doc["freshness"] = self.freshness
        return doc


@dataclass
class ServiceInfo:
    pipeline: str
    transform_version: str
    store_version: str | None
    store_type: str
    model_version: str | None
    entity_keys: list[str]
    input_columns: list[str]
    output_columns: list[str]
    cold_start_defaults: dict[str, Any] = field(default_factory=dict)


class FeatureService:
    """Lookup + transform (+ score) for single entities and batches."""

    def __init__(
        self,
        *,
        store: OnlineStore,
        transform: Any,
        metadata: Any,
        store_type: str,
        pipeline: str,
        cold_start: Mapping[str, Any] | None = None,
        request_time_columns: Sequence[str] = (),
        model: RegisteredModel | None = None,
        metrics: Metrics | None = None,
        logger: FeatureLogger | None = None,
        streaming: Any = None,
    ) -> None:
        from mlpipe_cli.serving.keys import KeyParser

        self.store = store
        self.transform = transform
        self.transform_version: str = transform.version
        self.input_columns: list[str] = list(transform.input_columns)
        self.output_columns: list[str] = list(transform.output_columns)
        # raw values each log row carries: the inputs, then a shadow transform's extra inputs
        self._log_columns: list[str] = list(self.input_columns)
        self._reply: Any = None  # hotpath.compile_reply, built on first use
        self.model = model
        self.metrics = metrics
        self.logger = logger
        self.store_type = store_type
        self.pipeline = pipeline
        self.cold_start_overrides = dict(cold_start or {})
        # Input columns that are the prediction time (the spine timestamp at training time).
        self.request_time_columns = [c for c in request_time_columns if c in self.input_columns]
        self._metadata = metadata
        self._checked_version: str | None = metadata.version
        self._keys = KeyParser(metadata.entity_keys, metadata.key_types)
        self._transform_one = transform.transform_one
        self._incompatible: str | None = None
        self.health = StoreHealth()
        # streamed sources: their windowed features are evaluated at request time from the
        # state `mlpipe stream` keeps (a StreamingFeatureReader), over the batch values
        self.streaming = streaming

    @property
    def log_columns(self) -> list[str]:
        return self._log_columns

    @log_columns.setter
    def log_columns(self, columns: list[str]) -> None:
        self._log_columns = list(columns)
        self._reply = None  # the generated reply bakes the columns in

    @property
    def reply(self) -> Any:
        """``reply(endpoint, served, scored) -> body``: logs one entity this version served
        and encodes its answer (serving/hotpath.py; generated once per version)."""
        reply = self._reply
        if reply is None:
            from mlpipe_cli.serving.hotpath import compile_reply

            reply = self._reply = compile_reply(self)[0]
        return reply

    # -- info -----------------------------------------------------------------------------

    @property
    def store_version(self) -> str | None:
        return self._checked_version

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            pipeline=self.pipeline,
            transform_version=self.transform_version,
            store_version=self._checked_version,
            store_type=self.store_type,
            model_version=self.model.binding.model_version if self.model else None,
            entity_keys=list(self._metadata.entity_keys),
            input_columns=self.input_columns,
            output_columns=self.output_columns,
            cold_start_defaults=self.cold_start_defaults(),
        )

    def cold_start_defaults(self) -> dict[str, Any]:
        values = {name: self._metadata.defaults.get(name) for name in self._metadata.features}
        values.update(self.cold_start_overrides)
        return values

    # -- the hot path -----------------------------------------------------------------------

    def parse_entity(self, entity: Any, *, from_path: bool = False) -> tuple[list[Any], str]:
        """(key values, store key JSON) for what a caller sent; UsageError (HTTP 400) when
        it is not a valid key of the live version (serving/keys.py has the rules)."""
        return self._keys.parse(entity, from_path=from_path)

    def lookup(self, entity: Any) -> Served:
        parsed = self.parse_entity(entity)
        result = self._store_call(self.store.get, parsed[0])
        if self.streaming is not None:
            self._overlay_streamed([parsed], [result])
        return self._serve(parsed, result)

    def lookup_many(self, entities: Sequence[Any]) -> list[Served]:
        parsed = [self.parse_entity(e) for e in entities]
        results = self.fetch_many(parsed)
        return [self._serve(p, r) for p, r in zip(parsed, results, strict=True)]

    async def lookup_many_async(self, entities: Sequence[Any]) -> list[Served]:
        """``lookup_many`` that does not block the event loop on the store's round trip."""
        parsed = [self.parse_entity(e) for e in entities]
        results = await self.fetch_many_async(parsed)
        return [self._serve(p, r) for p, r in zip(parsed, results, strict=True)]

    @property
    def async_reads(self) -> bool:
        """Whether the store's lookups wait on the network (and have an async path)."""
        return bool(self.store.async_reads)

    def fetch_many(self, parsed: Sequence[tuple[list[Any], str]]) -> list[Any]:
        """Raw store results for parsed entities, in one store round trip (plus one per
        streamed source)."""
        keys = (self._keys.signature, [p[1] for p in parsed])
        results = self._store_call(
            lambda entities: self.store.get_many(entities, keys=keys), [p[0] for p in parsed]
        )
        if self.streaming is not None:
            self._overlay_streamed(parsed, results)
        return results

    def _overlay_streamed(
        self, parsed: Sequence[tuple[list[Any], str]], results: list[Any]
    ) -> None:
        """Streamed features evaluated now replace their batch values (a window decays with
        no new events; lag/last see the newest event); each result says how fresh they are."""
        names = self._keys._names
        entities = [dict(zip(names, p[0], strict=True)) for p in parsed]
        try:
            streamed = self.streaming.read(entities)
        except MlpipeError:
            raise
        except Exception as exc:
            raise self._store_failure(exc) from None
        for result, fresh in zip(results, streamed, strict=True):
            result.values.update(fresh.values)
            result.freshness = fresh.freshness

    async def ping_async(self) -> None:
        """``ping`` that does not block the event loop on a network store."""
        store = self.store
        if not store.async_reads:
            self.ping()
            return
        network: Any = store  # async_reads: a network store, which has the async pair
        try:
            await network.ping_async()
            meta = await network.live_metadata_async()
        except Exception as exc:
            raise self._store_failure(exc) from None
        self.health.ok()
        self._check_live(meta)

    def serve_result(self, parsed: tuple[list[Any], str], result: Any) -> Served:
        """Turn one raw store result into a Served (cold-start defaults, transform)."""
        return self._serve(parsed, result)

    def predict(self, served: list[Served]) -> None:
        """Fill ``prediction`` for each served entity (one model call for the batch)."""
        origin = served[0].origin if served else None
        if origin is not None and origin is not self:  # scored by the version that served it
            origin.predict(served)
            return
        if self.model is None:
            raise UsageError("no model registered")
        import numpy as np

        matrix = np.asarray([s.vector for s in served], dtype=np.float64)
        scores = self.model.score_matrix(matrix)
        for s, score in zip(served, scores, strict=True):
            s.prediction = score
        if self.metrics is not None:
            self.metrics.predictions += len(served)

    def log(self, endpoint: str, served: list[Served]) -> None:
        origin = served[0].origin if served else None
        if origin is not None and origin is not self:  # logged by the version that served it
            origin.log(endpoint, served)
            return
        logger = self.logger
        if logger is None:
            return
        now_us = time.time_ns() // 1000
        cols = self.log_columns
        keep = logger.keep
        for s in served:
            if not keep():
                continue
            values = s.values
            # Tuples of plain values only: the garbage collector stops tracking such a row at
            # its first collection. A list inside (the vector) kept every queued row tracked,
            # and rows waiting for the writer were what made gen-1/gen-2 collections take
            # 1-13 ms / up to 190 ms under load (measured with gc.callbacks).
            logger.log(
                endpoint,
                s.entity_key,
                s.store_version,
                s.cold_start,
                tuple(map(values.get, cols)),
                tuple(s.vector),
                s.prediction,
                now_us,
            )

    # -- internals ------------------------------------------------------------------------

    def _store_call(self, fn: Any, arg: Any) -> Any:
        if self._incompatible is not None:
            # Re-check: a new live version may have been published that fits again.
            self._recheck(None)
        try:
            result = fn(arg)
        except Exception as exc:
            raise self._store_failure(exc) from None
        if self.health.down_since is not None:
            self.health.ok()
        return result

    async def fetch_many_async(
        self, parsed: Sequence[tuple[list[Any], str]], deadline: float | None = None
    ) -> list[Any]:
        """``fetch_many`` that does not block the event loop on the store's round trip;
        ``deadline`` (``time.monotonic()``) bounds it, default ``online_store.timeout``."""
        if self._incompatible is not None:
            self._recheck(None)
        try:
            result = await self.store.get_many_async(
                [p[0] for p in parsed],
                deadline,
                keys=(self._keys.signature, [p[1] for p in parsed]),
            )
        except Exception as exc:
            raise self._store_failure(exc) from None
        if self.health.down_since is not None:
            self.health.ok()
        if self.streaming is not None:
            # the reader is blocking redis-py: off the event loop, in the default executor
            import asyncio

            await asyncio.get_running_loop().run_in_executor(
                None, self._overlay_streamed, parsed, result
            )
        return result

    def _store_failure(self, exc: Exception) -> Exception:
        """The exception to raise for a failed store call (counted and logged)."""
        if isinstance(exc, UsageError):  # the input, not the store (keys are parsed first)
            return exc
        if isinstance(exc, ServiceUnavailable):
            detail = str(exc)
        elif isinstance(exc, MlpipeError):
            detail = str(exc)
            exc = ServiceUnavailable(detail)
        else:
            # a bug or a client library error the store did not wrap
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            detail = f"online store error: {type(exc).__name__}: {text}"
            exc = ServiceUnavailable(detail)
        self._store_error(detail)
        return exc

    def _store_error(self, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.store_errors += 1
        self.health.failed(detail)

    def _serve(self, parsed: tuple[list[Any], str], result: Any) -> Served:
        version = result.version
        if version is None:
            raise NoLiveVersion(
                "the online store has no live materialized version",
                hint="run `mlpipe materialize`",
            )
        if version != self._checked_version:
            self._recheck(version)
        values = result.values
        if self.request_time_columns:
            now = datetime.now(UTC)
            for column in self.request_time_columns:
                values[column] = now
        cold = not result.found
        if cold:
            if self.cold_start_overrides:
                missing = result.missing  # several entity types: only the missing ones' features
                overrides = (
                    {k: v for k, v in self.cold_start_overrides.items() if k in missing}
                    if missing
                    else self.cold_start_overrides
                )
                values = {**values, **overrides}
            if self.metrics is not None:
                self.metrics.cold_starts += 1
        try:
            vector = self._transform_one(values)
        except MlpipeError:
            raise
        except Exception as exc:
            raise TransformFailed(
                f"transform {self.transform_version} failed on entity {parsed[1]}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if self.metrics is not None:
            self.metrics.entities_served += 1
        return Served(
            parsed[0],
            parsed[1],
            cold,
            values,
            result.expired,
            vector,
            version,
            result.as_of,
            None,
            self,
            getattr(result, "freshness", None),
        )

    def _recheck(self, version: str | None) -> None:
        """The live store version changed: make sure the transform can still read it."""
        meta = self._store_call_raw(self.store.live_metadata)
        if meta is None:
            raise NoLiveVersion("the online store has no live materialized version")
        try:
            check_compatibility(
                self.transform, meta, self.cold_start_overrides, self.request_time_columns
            )
        except (ArtifactError, ConfigError) as exc:
            self._incompatible = str(exc)
            raise StoreIncompatible(str(exc)) from None
        from mlpipe_cli.serving.keys import KeyParser

        self._incompatible = None
        self._metadata = meta
        self._checked_version = meta.version
        self._keys = KeyParser(meta.entity_keys, meta.key_types)

    def _store_call_raw(self, fn: Any) -> Any:
        try:
            result = fn()
        except Exception as exc:
            raise self._store_failure(exc) from None
        if self.health.down_since is not None:
            self.health.ok()
        return result

    def ping(self) -> None:
        """Ready = the store answers AND has a live version this transform can read.

        ServiceUnavailable when the store is down or reachable but empty (e.g. Redis
        restarted without persistence); StoreIncompatible when the live version cannot be read.
        """
        self._store_call_raw(self.store.ping)
        self._check_live(self._store_call_raw(self.store.live_metadata))

    def _check_live(self, meta: Any) -> None:
        if meta is None:
            raise NoLiveVersion(
                "the online store has no live materialized version",
                hint="run `mlpipe materialize`",
            )
        if self._incompatible is not None or meta.version != self._checked_version:
            self._recheck(None)


class TransformFailed(MlpipeError):
    """transform_one raised on stored values (a server-side data problem, HTTP 500 JSON)."""


def check_compatibility(
    transform: Any,
    metadata: Any,
    cold_start: Mapping[str, Any],
    request_time_columns: Sequence[str] = (),
) -> None:
    """Refuse (ArtifactError, exit 3) a transform that cannot read the store's live features."""
    features = list(metadata.features)
    missing = [
        c for c in transform.input_columns if c not in features and c not in request_time_columns
    ]
    if missing:
        raise ArtifactError(
            f"transform {transform.version} needs input column(s) {', '.join(missing)} that "
            f"online-store version {metadata.version} does not have "
            f"(it has: {', '.join(features) or 'none'})",
            hint="materialize the features the transform was fitted on, or serve a transform "
            "version fitted on these features (--artifact VERSION)",
        )
    unknown = [name for name in cold_start if name not in features]
    if unknown:
        raise ConfigError(
            f"serving.cold_start names unknown feature(s) {', '.join(unknown)} "
            f"(online features: {', '.join(features) or 'none'})"
        )
    # Types: the cold-start record holds one value per feature in its stored type; the
    # transform must accept it (a string where a number is expected fails here, not later).
    record = {name: metadata.defaults.get(name) for name in features}
    record.update(cold_start)
    now = datetime.now(UTC)
    record.update({column: now for column in request_time_columns})
    try:
        vector = transform.transform_one(record)
    except MlpipeError as exc:
        raise ArtifactError(
            f"transform {transform.version} rejects the online features of store version "
            f"{metadata.version}: {exc}"
        ) from None
    except Exception as exc:
        raise ArtifactError(
            f"transform {transform.version} cannot transform the cold-start record of store "
            f"version {metadata.version}: {type(exc).__name__}: {exc}",
            hint="set serving.cold_start values of the right type, or check the feature defaults",
        ) from None
    if len(vector) != len(transform.output_columns):
        raise ArtifactError(
            f"transform {transform.version} returned {len(vector)} values for "
            f"{len(transform.output_columns)} output columns"
        )


# -- building everything at start -------------------------------------------------------------


@dataclass
class ServingRuntime:
    service: FeatureService
    logger: FeatureLogger | None
    metrics: Metrics
    log_dir: Path | None
    shadow: Shadow | None = None
    # feature logs of versions this process served before a switch (`mlpipe promote`)
    retired_loggers: list[FeatureLogger] = field(default_factory=list)

    def log_total(self, attribute: str) -> int:
        """A feature-log counter (``written``, ``dropped``...) summed over every log this
        process has had; ``shadow.<counter>`` sums the shadow scorers' counters."""
        loggers = [*self.retired_loggers, *([self.logger] if self.logger is not None else [])]
        if attribute.startswith("shadow."):
            name = attribute.removeprefix("shadow.")
            return sum(getattr(lg.shadow, name) for lg in loggers if lg.shadow is not None)
        return sum(getattr(lg, attribute) for lg in loggers)


def request_time_columns(
    config: PipelineConfig, metadata: Any, transform: Any | None = None
) -> list[str]:
    """The transform inputs set to the request time (serving.request_time_columns; default
    the training spine's timestamp when the transform uses it and it is not stored); every
    such column when ``transform`` is None."""
    request_time = config.serving.request_time_columns
    if request_time is None:
        spine_time = config.training_set.timestamp if config.training_set else None
        request_time = [spine_time] if spine_time and spine_time not in metadata.features else []
    if transform is None:
        return list(request_time)
    return [c for c in request_time if c in transform.input_columns]


def new_feature_logger(
    config: PipelineConfig, log_dir: Path, transform: Any, shadow: Shadow | None
) -> FeatureLogger:
    """The feature log of one live transform version (and the shadow, if any)."""
    from mlpipe_cli.serving.featurelog import FeatureLogger
    from mlpipe_cli.serving.shadow import ShadowScorer, log_columns

    raw_columns, raw_dtypes = log_columns(transform, shadow)
    logging = config.serving.logging
    return FeatureLogger(
        log_dir,
        transform_version=transform.version,
        raw_columns=raw_columns,
        raw_dtypes=raw_dtypes,
        vec_columns=list(transform.output_columns),
        queue_rows=logging.queue_rows,
        segment_rows=logging.segment_rows,
        flush_interval=logging.flush_interval.total_seconds(),
        sample_rate=logging.sample_rate,
        shadow=ShadowScorer(shadow, raw_columns) if shadow is not None else None,
    )


def build_runtime(
    config: PipelineConfig,
    artifact_dir: Path,
    *,
    transform_ref: str = "latest",
    model_ref: str | None = "latest",
    log_dir: Path | None = None,
    logging_enabled: bool | None = None,
    shadow_ref: str | None = None,
    shadow_model_ref: str | None = None,
) -> ServingRuntime:
    """Load and verify everything once; raise ArtifactError (3) / ServiceUnavailable (4)."""
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.online import open_store
    from mlpipe_cli.serving.metrics import Metrics
    from mlpipe_cli.serving.model import load_model, resolve_model
    from mlpipe_cli.transforms import load_transform

    serving = config.serving
    artifacts = ArtifactStore(artifact_dir, config.pipeline)
    transform = load_transform(artifacts, transform_ref)  # sha256 + golden example, exit 3
    transform_artifact = artifacts.get("transform", transform.version, verify=False)

    store = open_store(config, Path(artifact_dir))
    store.ping()  # ServiceUnavailable (exit 4) when unreachable
    metadata = store.live_metadata()
    if metadata is None:
        raise ArtifactError(
            "the online store has no live materialized version", hint="run `mlpipe materialize`"
        )
    request_time = request_time_columns(config, metadata, transform)
    check_compatibility(transform, metadata, serving.cold_start, request_time)

    model = None
    model_version = resolve_model(artifacts, model_ref)
    if model_version is not None:
        model = load_model(
            artifacts,
            model_version,
            transform_version=transform.version,
            transform_content_hash=transform_artifact.content_hash,
            output_columns=list(transform.output_columns),
        )

    shadow = None
    if shadow_ref is not None:
        from mlpipe_cli.serving.shadow import load_shadow

        shadow = load_shadow(
            artifacts, metadata, transform_ref=shadow_ref, model_ref=shadow_model_ref,
            cold_start=serving.cold_start,
            request_time_columns=request_time_columns(config, metadata),
        )  # fmt: skip

    metrics = Metrics()
    enabled = serving.logging.enabled if logging_enabled is None else logging_enabled
    if shadow is not None and not enabled:
        raise UsageError(
            "--shadow writes the shadow's vectors to the feature log, which is off",
            hint="set serving.logging.enabled: true to run a shadow",
        )
    logger = None
    resolved_log_dir = None
    if enabled:
        resolved_log_dir = Path(
            log_dir or serving.log_dir or Path(artifact_dir) / config.pipeline / "serving-logs"
        )
        try:
            resolved_log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the feature-log directory {resolved_log_dir}: "
                f"{exc.strerror or exc}",
                hint="pass --log-dir DIR, or set serving.logging.enabled: false",
            ) from None
        logger = new_feature_logger(config, resolved_log_dir, transform, shadow)
    service = FeatureService(
        store=store,
        transform=transform,
        metadata=metadata,
        store_type=config.online_store.type,
        pipeline=config.pipeline,
        cold_start=serving.cold_start,
        request_time_columns=request_time,
        model=model,
        metrics=metrics,
        logger=logger,
        streaming=_streaming_reader(config),
    )
    if logger is not None:
        service.log_columns = list(logger.raw_columns)
    metrics.info = {
        "pipeline": config.pipeline,
        "transform_version": transform.version,
        "model_version": model.binding.model_version if model else "",
        "store_type": config.online_store.type,
    }
    runtime = ServingRuntime(
        service=service, logger=logger, metrics=metrics, log_dir=resolved_log_dir, shadow=shadow
    )
    total = runtime.log_total
    if logger is not None:
        metrics.gauges["mlpipe_serve_log_queue_depth"] = (
            "Feature-log rows waiting for the writer thread.",
            lambda: total("depth"),
        )
        metrics.counters["mlpipe_serve_log_rows_dropped_total"] = (
            "Feature-log rows dropped because the queue was full.",
            lambda: total("dropped"),
        )
        metrics.counters["mlpipe_serve_log_rows_sampled_out_total"] = (
            "Served entities left out of the feature log by serving.logging.sample_rate.",
            lambda: total("sampled_out"),
        )
        metrics.counters["mlpipe_serve_log_rows_written_total"] = (
            "Feature-log rows written to Parquet segments.",
            lambda: total("written"),
        )
        metrics.counters["mlpipe_serve_log_rows_failed_total"] = (
            "Feature-log rows lost because a segment could not be written.",
            lambda: total("failed"),
        )
        metrics.counters["mlpipe_serve_log_segments_total"] = (
            "Feature-log Parquet segments written.",
            lambda: total("segments"),
        )
    if shadow is not None:
        from mlpipe_cli.serving.shadow import register_metrics

        register_metrics(metrics, lambda name: total("shadow." + name))
        metrics.info["shadow_transform_version"] = shadow.transform_version
    if service.streaming is not None:  # consumer lag and counters (docs/streaming.md)
        metrics.sections.append(service.streaming.metrics_lines)
    return runtime


def _streaming_reader(config: PipelineConfig) -> Any:
    """A StreamingFeatureReader when a source streams (docs/streaming.md), else None."""
    if not any(source.stream is not None for source in config.sources.values()):
        return None
    from mlpipe_cli.streaming.reader import StreamingFeatureReader

    return StreamingFeatureReader(config)
