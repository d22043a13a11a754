"""The `mlpipe stream` loop: bootstrap once, then apply batches until stopped.

Each round calls the apply script once per source (read, apply and ack in one atomic step;
see ``streaming.lua``), twice in one round trip while batches come back full; when every
stream is drained it blocks on XREAD for the next entry instead of polling. Several consumers (processes, machines) may run at once with
different names: the consumer group hands each entry to one of them. Startup first takes
this consumer's own pending entries, then claims entries idle on other consumers for
longer than ``stream.claim_idle`` (XAUTOCLAIM); claiming repeats every half of that.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlpipe_cli.streaming.plan import StreamPlan
from mlpipe_cli.streaming.state import ApplyResult, StateStore
from mlpipe_cli.streaming.status import source_status

if TYPE_CHECKING:
    from datetime import datetime

    from mlpipe_cli.config import PipelineConfig

IDLE_SLEEP = 0.005  # seconds between polls when drained streams live on several servers
MAX_BLOCK = 0.1  # longest XREAD BLOCK when drained (stop requests are checked this often)
COUNTERS = ("entries", "applied", "late", "before_batch", "malformed", "duplicate")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class SourceProgress:
    """Counters of one source for this consumer's run."""

    entries: int = 0
    applied: int = 0
    late: int = 0
    before_batch: int = 0
    malformed: int = 0
    duplicate: int = 0

    def add(self, result: ApplyResult) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(result, name))

    @property
    def dead_lettered(self) -> int:
        return self.late + self.before_batch + self.malformed

    def to_dict(self) -> dict[str, int]:
        doc = {name: getattr(self, name) for name in COUNTERS}
        doc["dead_lettered"] = self.dead_lettered
        return doc


@dataclass
class Consumer:
    """One consumer over one or more streamed sources."""

    config: PipelineConfig
    plans: list[StreamPlan]
    name: str = field(default_factory=default_consumer_name)
    stores: dict[str, StateStore] = field(init=False)
    progress: dict[str, SourceProgress] = field(init=False)

    def __post_init__(self) -> None:
        self.stores = {p.source_name: StateStore(p) for p in self.plans}
        self.progress = {p.source_name: SourceProgress() for p in self.plans}
        # each source's stream head when its last read found nothing (None: not drained)
        self.heads: dict[str, str | None] = {p.source_name: None for p in self.plans}
        self._full: dict[str, bool] = {}  # the source's last batch was full: read ahead

    def close(self) -> None:
        for store in self.stores.values():
            store.close()

    def bootstrap(self, *, as_of: datetime, batch_version: str | None) -> list[str]:
        """Build each source's state from the batch unless it exists; returns those built."""
        return [
            name
            for name, store in self.stores.items()
            if store.bootstrap(self.config, as_of=as_of, batch_version=batch_version)
        ]

    def recover(self) -> int:
        """Apply this consumer's own pending entries, then claim idle ones of others."""
        total = 0
        for mode in ("own", "claim"):
            total += self._drain(mode)
        return total

    def _drain(self, mode: str) -> int:
        total = 0
        for name, store in self.stores.items():
            while True:
                result = store.apply(self.name, mode=mode)
                if result is None or result.entries == 0:
                    break
                self.progress[name].add(result)
                total += result.entries
        return total

    def round(self) -> int:
        """One batch per source; returns the entries taken."""
        taken = 0
        for name, store in self.stores.items():
            # two batches in flight while the last round found a full batch (a backlog):
            # the server starts the second without waiting for this process
            depth = 2 if self._full.get(name) else 1
            results = store.apply_ahead(self.name, depth)
            last = results[-1]
            self.heads[name] = last.stream_head if last is not None else None
            self._full[name] = last is not None and last.entries >= store.plan.stream.batch
            for result in results:
                if result is not None:
                    self.progress[name].add(result)
                    taken += result.entries
        return taken

    def wait_for_entries(self, seconds: float) -> None:
        """Drained: block until a new entry arrives (XREAD BLOCK, so an event is applied
        within a round trip of its XADD, not after a polling sleep), at most ``seconds``.
        Streams on several servers, or a source still bootstrapping: a short sleep."""
        heads = self.heads
        urls = {store.plan.url for store in self.stores.values()}
        if len(urls) != 1 or any(h is None for h in heads.values()):
            time.sleep(min(IDLE_SLEEP, seconds))
            return
        store = next(iter(self.stores.values()))
        after = {s.plan.stream.key: heads[n] for n, s in self.stores.items()}
        store.source.wait_for_entries(after, int(max(seconds, 0.001) * 1000))  # type: ignore[arg-type]

    def run(
        self,
        *,
        once: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        status_interval: float = 10.0,
        max_seconds: float | None = None,
    ) -> str:
        """Consume until stopped; returns why it stopped (drained | signal | time limit)."""
        started = last_status = time.monotonic()
        claim_every = min(p.stream.claim_idle.total_seconds() for p in self.plans) / 2
        last_claim = started
        seen_at_status = self.total_entries()
        self.recover()
        while True:
            if should_stop():
                return "signal"
            now = time.monotonic()
            if max_seconds is not None and now - started >= max_seconds:
                return "time limit"
            if now - last_claim >= claim_every:
                self._drain("claim")
                last_claim = now
            taken = self.round()
            if on_status is not None and now - last_status >= status_interval:
                total = self.total_entries()
                on_status(self.status(rate=(total - seen_at_status) / (now - last_status)))
                seen_at_status, last_status = total, now
            if taken == 0:
                if once:
                    return "drained"
                until_claim = claim_every - (time.monotonic() - last_claim)
                until_status = (status_interval - (time.monotonic() - last_status)
                                if on_status is not None else MAX_BLOCK)  # fmt: skip
                self.wait_for_entries(max(min(MAX_BLOCK, until_claim, until_status), 0.001))

    def total_entries(self) -> int:
        return sum(p.entries for p in self.progress.values())

    def status(self, *, rate: float | None = None) -> dict[str, Any]:
        """Counters, lag (events and seconds) and the rate, per source and in total."""
        now_ms = int(time.time() * 1000)
        sources: dict[str, Any] = {}
        for name, store in self.stores.items():
            reading = source_status(store, now_ms)
            sources[name] = {"this_consumer": self.progress[name].to_dict(), **reading}
        doc: dict[str, Any] = {"consumer": self.name, "sources": sources}
        if rate is not None:
            doc["events_per_second"] = round(rate, 1)
        return doc
