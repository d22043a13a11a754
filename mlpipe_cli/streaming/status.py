"""How far behind the streamed state is: one reading per source, for every place that asks.

``source_status`` reads, from the stream's Redis: the consumer lag in events (pending +
not yet delivered) and seconds (age of the oldest entry not yet applied, from its stream id),
the counters every consumer adds to (applied, late, before_batch, malformed, duplicate), the
dead-letter stream's length and the newest applied event time. Three readers:

- ``mlpipe stream`` status lines and ``--json`` (``streaming.consumer.Consumer.status``);
- the feature server's ``/metrics`` (:class:`StreamMetrics`, Prometheus text);
- ``mlpipe slo``'s ``stream_lag`` objective (:func:`lag_readings`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlpipe_cli.streaming.source import group_lag

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.streaming.plan import StreamPlan
    from mlpipe_cli.streaming.state import StateStore

DEAD_REASONS = ("late", "before_batch", "malformed")


@dataclass(frozen=True)
class LagReading:
    """One source's lag, as ``mlpipe slo`` judges it."""

    source: str
    events: int
    seconds: float
    capped: bool  # Redis < 7: undelivered entries counted up to a cap (events is a floor)
    applied: int
    dead_lettered: int


def source_status(store: StateStore, now_ms: int | None = None) -> dict[str, Any]:
    """Lag, all-consumer counters and dead letters of one source (a few round trips)."""
    plan = store.plan
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    lag = group_lag(store.source, plan.stream.group, now_ms)
    with store.errors("reading the dead-letter stream"):
        dead = int(store.client.xlen(plan.stream.dead_letter_key))
    totals = store.stats()
    newest = totals.pop("newest_us", None)
    for name in ("applied", *DEAD_REASONS, "duplicate"):
        totals.setdefault(name, 0)
    totals["dead_lettered"] = sum(totals[r] for r in DEAD_REASONS)
    return {
        "all_consumers": totals,
        "lag_events": lag.events,
        "lag_events_capped": lag.capped,
        "lag_seconds": round(lag.seconds, 3),
        "dead_letter_length": dead,
        "newest_event_us": newest,
    }


def lag_readings(config: PipelineConfig, sources: Sequence[str] | None = None
                 ) -> list[LagReading]:  # fmt: skip
    """Every streamed source's lag now (ServiceUnavailable when its Redis is down)."""
    from mlpipe_cli.streaming.plan import build_plan, streamed_sources
    from mlpipe_cli.streaming.state import StateStore

    out = []
    for name in sources if sources is not None else streamed_sources(config):
        store = StateStore(build_plan(config, name))
        try:
            doc = source_status(store)
        finally:
            store.close()
        totals = doc["all_consumers"]
        out.append(LagReading(name, doc["lag_events"], doc["lag_seconds"],
                              doc["lag_events_capped"], totals["applied"],
                              totals["dead_lettered"]))  # fmt: skip
    return out


class StreamMetrics:
    """The streamed sources' lag and counters as Prometheus text, for the server's /metrics.

    The exposition runs on the server's event loop, so the readings use their own clients
    with a short timeout, are cached for ``refresh`` seconds, and after a failure are not
    retried for ``backoff`` seconds (``mlpipe_stream_up`` 0 meanwhile): a slow or down
    Redis never holds /metrics for long."""

    def __init__(self, plans: Sequence[StreamPlan], *, timeout: float = 0.5,
                 refresh: float = 1.0, backoff: float = 5.0) -> None:  # fmt: skip
        self.plans = list(plans)
        self.timeout, self.refresh, self.backoff = timeout, refresh, backoff
        self._stores: dict[str, StateStore] = {}
        self._cached: tuple[float, list[str]] | None = None
        self._failed_until: dict[str, float] = {}
        self._last_applied: dict[str, tuple[float, int]] = {}
        self._rate: dict[str, float] = {}

    def close(self) -> None:
        for store in self._stores.values():
            store.close()

    def _store(self, plan: StreamPlan) -> StateStore:
        from mlpipe_cli.streaming.state import StateStore

        store = self._stores.get(plan.source_name)
        if store is None:
            store = self._stores[plan.source_name] = StateStore(plan, timeout=self.timeout)
        return store

    def _read(self, plan: StreamPlan, now: float) -> dict[str, Any] | None:
        if now < self._failed_until.get(plan.source_name, 0.0):
            return None
        try:
            doc = source_status(self._store(plan))
        except Exception:  # any failure: reported as mlpipe_stream_up 0
            self._failed_until[plan.source_name] = now + self.backoff
            return None
        applied = int(doc["all_consumers"]["applied"])
        previous = self._last_applied.get(plan.source_name)
        if previous is not None and now > previous[0]:
            self._rate[plan.source_name] = max(applied - previous[1], 0) / (now - previous[0])
        self._last_applied[plan.source_name] = (now, applied)
        return doc

    def lines(self) -> list[str]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.refresh:
            return self._cached[1]
        families: dict[str, tuple[str, str, list[str]]] = {}

        def put(name: str, kind: str, help_text: str, labels: str, value: float) -> None:
            family = families.setdefault(name, (kind, help_text, []))
            family[2].append(f"{name}{{{labels}}} {_number(value)}")

        for plan in self.plans:
            label = f'source="{_escape(plan.source_name)}"'
            doc = self._read(plan, now)
            put("mlpipe_stream_up", "gauge",
                "1 when the streamed source's state and lag could be read.",
                label, 0 if doc is None else 1)  # fmt: skip
            if doc is None:
                continue
            totals = doc["all_consumers"]
            put("mlpipe_stream_lag_events", "gauge",
                "Stream entries not yet applied (pending + not yet delivered to the group).",
                label, doc["lag_events"])  # fmt: skip
            put("mlpipe_stream_lag_seconds", "gauge",
                "Age of the oldest stream entry not yet applied (0 when caught up).",
                label, doc["lag_seconds"])  # fmt: skip
            put("mlpipe_stream_events_applied_total", "counter",
                "Events applied to the streamed state, by every consumer.",
                label, totals["applied"])  # fmt: skip
            put("mlpipe_stream_events_per_second", "gauge",
                "Events applied per second between this server's last two readings.",
                label, round(self._rate.get(plan.source_name, 0.0), 3))  # fmt: skip
            for reason in DEAD_REASONS:
                put("mlpipe_stream_events_dead_lettered_total", "counter",
                    "Events the consumers dead-lettered, by reason.",
                    f'{label},reason="{reason}"', totals[reason])  # fmt: skip
            put("mlpipe_stream_events_duplicate_total", "counter",
                "Redelivered events recognised as applied already (not counted twice).",
                label, totals["duplicate"])  # fmt: skip
            put("mlpipe_stream_dead_letter_length", "gauge",
                "Entries in the dead-letter stream (push rejections included).",
                label, doc["dead_letter_length"])  # fmt: skip
            if doc["newest_event_us"] is not None:
                put("mlpipe_stream_newest_event_timestamp_seconds", "gauge",
                    "Event time of the newest applied event (Unix seconds).",
                    label, doc["newest_event_us"] / 1_000_000)  # fmt: skip
        out: list[str] = []
        for name, (kind, help_text, samples) in families.items():
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        self._cached = (now, out)
        return out


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
