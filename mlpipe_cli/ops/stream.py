"""`mlpipe stream`: keep the streamed sources' per-entity state current.

The state continues the live materialized version: it is bootstrapped from the source
files as of that version's as-of ``T_b`` (once; later consumers reuse it) and then takes
every stream event at or after ``T_b``. See docs/streaming.md.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import spelled
from mlpipe_cli.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class StreamResult:
    consumer: str
    sources: list[str]
    bootstrapped: list[str]
    batch_version: str | None
    batch_as_of: str
    stopped: str  # drained | signal | time limit
    seconds: float
    status: dict[str, Any]

    @property
    def entries(self) -> int:
        return sum(s["this_consumer"]["entries"] for s in self.status["sources"].values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "sources": self.sources,
            "bootstrapped": self.bootstrapped,
            "batch_version": self.batch_version,
            "batch_as_of": self.batch_as_of,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.entries / self.seconds, 1) if self.seconds else None,
            **{k: v for k, v in self.status.items() if k != "consumer"},
        }


def stream(
    project: Project,
    *,
    sources: Sequence[str] | None = None,
    consumer: str | None = None,
    once: bool = False,
    reset: bool = False,
    max_seconds: float | None = None,
    status_interval: float = 10.0,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    handle_signals: bool = True,
) -> StreamResult:
    """Bootstrap (if needed) and consume until drained (``once``), a signal or the limit."""
    from mlpipe_cli.online import open_store
    from mlpipe_cli.streaming.consumer import Consumer, default_consumer_name
    from mlpipe_cli.streaming.plan import build_plan, streamed_sources

    config = project.config
    names = list(sources) if sources else streamed_sources(config)
    if not names:
        raise UsageError(
            "no streamed source in the config",
            hint="add sources.<name>.stream: {key: <stream key>} (docs/streaming.md)",
        )
    plans = [build_plan(config, name) for name in names]
    store = open_store(config, project.artifact_dir)
    try:
        store.ping()
        meta = store.live_metadata()
    finally:
        store.close()
    if meta is None:
        raise UsageError(
            "nothing is materialized yet: the stream continues the live batch version",
            hint="run mlpipe materialize first",
        )
    note = on_note or (lambda _text: None)
    worker = Consumer(config, plans, name=consumer or default_consumer_name())
    started = time.monotonic()
    try:
        if reset:
            for store_ in worker.stores.values():
                store_.reset()
                note(f"reset the streamed state of {store_.plan.source_name}")
        rebuild = spelled(cli="mlpipe stream --reset", python="Pipeline.stream(reset=True)")
        for name, state in worker.stores.items():
            existing = state.meta()
            if existing is None or existing.state != "ready":
                note(f"bootstrapping {name} from the batch as of {meta.as_of.isoformat()} "
                     f"(version {meta.version})")  # fmt: skip
            elif existing.batch_version != meta.version:
                note(f"{name}: the streamed state continues batch version "
                     f"{existing.batch_version}; live is now {meta.version} "
                     f"({rebuild} rebuilds it from the live version)")  # fmt: skip
        built = worker.bootstrap(as_of=meta.as_of, batch_version=meta.version)
        with _stop_on_signals(handle_signals) as stopped:
            why = worker.run(
                once=once,
                should_stop=stopped.is_set,
                on_status=on_status,
                status_interval=status_interval,
                max_seconds=max_seconds,
            )
        elapsed = time.monotonic() - started
        status = worker.status()
    finally:
        worker.close()
    return StreamResult(
        consumer=worker.name,
        sources=names,
        bootstrapped=built,
        batch_version=meta.version,
        batch_as_of=meta.as_of.isoformat(),
        stopped=why,
        seconds=elapsed,
        status=status,
    )


@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[threading.Event]:
    """SIGTERM / SIGINT stop the loop after the current batch (batches are atomic, so an
    immediate kill loses nothing either; this only makes the exit clean)."""
    event = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: event.set())
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
