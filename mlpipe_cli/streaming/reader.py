"""Serving's entry point: streamed features of entities, evaluated at the request time.

    reader = StreamingFeatureReader(config)          # no I/O yet
    reader.features                                  # the feature names it answers
    [hit] = reader.read([123], t=None)               # t: a datetime; None = now
    hit.values     {"orders_30d": 4, "days_since_last_order": 0.42, ...}
    hit.freshness  {"orders_30d": {"source": "orders", "newest_event": "2026-...",
                                    "batch_as_of": "2026-...", "batch_version": "0003-..."}}

One MULTI/EXEC round trip per streamed source per call, whatever the number of entities.
Features of sources without a stream are not this reader's: they stay batch lookups
(``online.open_store``). docs/streaming.md describes the merge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import ServiceUnavailable, UsageError
from mlpipe_cli.streaming.evaluate import features_at
from mlpipe_cli.streaming.plan import StreamPlan, build_plan, streamed_sources
from mlpipe_cli.streaming.state import StateMeta, StateStore, to_epoch_us

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig

META_REFRESH = 1.0  # seconds a reader trusts its copy of a source's state metadata
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StreamStateMissing(ServiceUnavailable):
    """A streamed source has no state yet (`mlpipe stream` has not bootstrapped it)."""


@dataclass(frozen=True)
class StreamedFeatures:
    """Streamed feature values of one entity at time ``t`` and how fresh each one is."""

    entity: str  # store key, e.g. [123]
    t: datetime
    values: dict[str, Any]
    freshness: dict[str, dict[str, Any]]


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return (_EPOCH + timedelta(microseconds=us)).isoformat()


class StreamingFeatureReader:
    """Evaluates every streamed source's features from the state `mlpipe stream` keeps."""

    def __init__(self, config: PipelineConfig, *, sources: Sequence[str] | None = None) -> None:
        names = list(sources) if sources is not None else streamed_sources(config)
        self.plans: list[StreamPlan] = [build_plan(config, name) for name in names]
        self.stores = {p.source_name: StateStore(p) for p in self.plans}
        self.features = [f.name for p in self.plans for f in p.features]
        self._meta: dict[str, tuple[float, StateMeta]] = {}
        self._metrics: Any = None
        self._names = {p.source_name: [f.name for f in p.features] for p in self.plans}
        self._as_of_iso: tuple[int, str] = (-1, "")

    def _batch_as_of_iso(self, meta: StateMeta) -> str:
        if self._as_of_iso[0] != meta.batch_as_of_us:  # changes only with a new bootstrap
            self._as_of_iso = (meta.batch_as_of_us, meta.batch_as_of.isoformat())
        return self._as_of_iso[1]

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        if self._metrics is not None:
            self._metrics.close()

    def metrics_lines(self) -> list[str]:
        """Consumer lag, events applied and dead-lettered per source, as Prometheus text
        lines (the server's /metrics; ``streaming.status.StreamMetrics``)."""
        if self._metrics is None:
            from mlpipe_cli.streaming.status import StreamMetrics

            self._metrics = StreamMetrics(self.plans)
        return self._metrics.lines()

    def _state_meta(self, plan: StreamPlan) -> StateMeta:
        cached = self._meta.get(plan.source_name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < META_REFRESH:
            return cached[1]
        store = self.stores[plan.source_name]
        meta = store.meta()
        if meta is None or meta.state != "ready":
            raise StreamStateMissing(
                f"streamed source {plan.source_name!r} has no state yet",
                hint="start the consumer: mlpipe stream (it bootstraps from the batch)",
            )
        store.check_compatible(meta)
        self._meta[plan.source_name] = (now, meta)
        return meta

    def store_key(self, plan: StreamPlan, entity: Any) -> str:
        """An entity (scalar, list/tuple, or mapping by key name) as its store key."""
        keys = plan.entity_keys
        if type(entity) is int and len(keys) == 1 and -(2**63) <= entity < 2**64:
            return f"[{entity}]"  # one integer key: orjson's compact JSON, without the call
        from mlpipe_cli.online.codec import entity_store_key
        from mlpipe_cli.schema.dtypes import INTEGER

        if isinstance(entity, Mapping):
            try:
                values = [entity[k] for k in keys]
            except KeyError as exc:
                raise UsageError(f"entity {dict(entity)!r} has no key {exc.args[0]!r}") from None
        elif isinstance(entity, list | tuple):
            values = list(entity)
        else:
            values = [entity]
        if len(values) != len(keys):
            raise UsageError(f"entity {entity!r} needs {len(keys)} key value(s) {keys}")
        for i, key in enumerate(keys):
            contract = plan.source.columns.get(key)
            value = values[i]
            if contract is not None and contract.dtype in INTEGER and isinstance(value, str):
                try:
                    values[i] = int(value)
                except ValueError:
                    raise UsageError(f"entity key {key} must be an integer, got {value!r}"
                                     ) from None  # fmt: skip
        return entity_store_key(values)

    def read(self, entities: Sequence[Any], t: datetime | None = None) -> list[StreamedFeatures]:
        """Every streamed feature of each entity at ``t`` (default: now), with freshness."""
        moment = t if t is not None else datetime.now(UTC)
        t_us = to_epoch_us(moment)
        values: list[dict[str, Any]] = [{} for _ in entities]
        freshness: list[dict[str, dict[str, Any]]] = [{} for _ in entities]
        keys_out: list[str] = []
        for plan in self.plans:
            meta = self._state_meta(plan)
            keys = [self.store_key(plan, e) for e in entities]
            if not keys_out:
                keys_out = keys
            default_horizon = meta.batch_as_of_us - plan.horizon_lag_us
            batch_as_of = self._batch_as_of_iso(meta)
            names = self._names[plan.source_name]
            for n, state in enumerate(self.stores[plan.source_name].read(keys)):
                values[n].update(features_at(plan, state, t_us,
                                             default_horizon_us=default_horizon))  # fmt: skip
                fresh = {
                    "source": plan.source_name,
                    "newest_event": _iso(state.newest_us),
                    "batch_as_of": batch_as_of,
                    "batch_version": meta.batch_version,
                }
                freshness[n].update(dict.fromkeys(names, fresh))
        return [
            StreamedFeatures(
                entity=keys_out[n] if keys_out else "",
                t=moment,
                values=values[n],
                freshness=freshness[n],
            )
            for n in range(len(entities))
        ]

    def read_one(self, entity: Any, t: datetime | None = None) -> StreamedFeatures:
        return self.read([entity], t)[0]
