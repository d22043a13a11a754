"""The base class both backends share: the cached-pointer read path, leases, stale versions.

Versions: every `materialize` run writes a new version namespace (``0007-1a2b3c4d``), records
its progress as it goes, and only when every row is written flips the ``live`` pointer to it
in one atomic step (one SQLite transaction / one Redis MULTI). The version that was live
becomes ``previous`` (for ``--rollback``); every other finished version is removed.

Readers cache the live pointer and re-read it at most every ``pointer_refresh`` (1 s by
default) and whenever a lookup misses. Reading the pointer on every lookup would double the
Redis round trips; a cached pointer can only lag one switch behind, and the version it
points to is still there (it is kept as ``previous``), so a reader sees the old version or
the new one, never a mix. A ``get_many`` call reads all its entities from one version.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import Signal
from mlpipe_cli.io import pid_alive
from mlpipe_cli.online.codec import Decoder, KeyNormalizer, MultiDecoder
from mlpipe_cli.online.store import LookupResult, RunProgress, StoreMetadata, no_live_version

if TYPE_CHECKING:
    from mlpipe_cli.online.store import OnlineStoreWriter

# (key signature: (entity_keys, key_types) as tuples, the store key of each entity)
KnownKeys = tuple[tuple[tuple[str, ...], tuple[str, ...]], list[str]]


LEASE_SECONDS = 300.0
# Versions this process is writing right now: a version whose owner is this very process is
# alive only while it is in here (its lease may not have expired after a failed run).
# Changed only through the three functions below (online.writer calls them).
_active_writes: set[str] = set()


def mark_writing(version: str) -> None:
    _active_writes.add(version)


def done_writing(version: str) -> None:
    _active_writes.discard(version)


def is_writing(version: str) -> bool:
    return version in _active_writes


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_versions(store: OnlineStoreWriter) -> list[str]:
    """Versions that are neither live, previous, nor being written by a live writer.

    The versions are listed BEFORE the pointers are read: a run that switches in between
    (concurrent materialize runs) has its version listed as complete and is then seen as
    live, so it is kept. In the other order it was listed complete but missing from the
    older pointers, and its live version was dropped (readers then found no live version).
    A version stale when listed stays stale: only its own switch or a rollback between live
    and previous ever makes a version live.
    """
    versions = store.versions()
    pointers = store.pointers()
    keep = {pointers.get("live"), pointers.get("previous")}
    stale = []
    for meta, progress in versions:
        if meta.version in keep:
            continue
        if meta.status == "building" and progress is not None and owner_alive(progress):
            continue
        stale.append(meta.version)
    return stale


def removed_while_written(location: str, version: str) -> str:
    """The switch found its own version gone: another run took it for abandoned (its lease
    had lapsed: a chunk took longer than LEASE_SECONDS, or the writer runs on another host
    that stopped renewing) and removed it."""
    return (
        f"online store {location}: version {version} was removed by another run while this "
        "one was still writing it (its lease had lapsed); the live version was not changed: "
        "run again"
    )


def owner_alive(progress: RunProgress, now: float | None = None) -> bool:
    """Is the process that writes this version still running (or its lease still valid)?"""
    now = time.time() if now is None else now
    host, _, pid_text = progress.owner.rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return is_writing(progress.version)
        if not pid_alive(pid):
            return False
        return progress.lease_until > now
    return progress.lease_until > now


class _View:
    """One version as seen by a reader: its decoder, key mapping and key prefix(es).

    A version with several entity types (``multi``) has one prefix per namespace (a SQLite
    table / a Redis key prefix each); a lookup reads one row per namespace and decodes them
    into one result. A single-entity version keeps the one-key fast path.
    """

    __slots__ = ("decoder", "keys", "meta", "multi", "prefix", "prefixes", "version")

    def __init__(self, meta: StoreMetadata, prefix_of: Callable[[int], Any]) -> None:
        self.meta = meta
        self.version = meta.version
        namespaces = meta.key_sets()
        self.multi = len(namespaces) > 1
        self.decoder: Any = MultiDecoder(meta) if self.multi else Decoder(meta)
        self.keys = KeyNormalizer(meta)
        self.prefixes = [prefix_of(i) for i in range(len(namespaces))]
        self.prefix = self.prefixes[0]

    def lookup_keys(
        self, entities: Sequence[Any], known: KnownKeys | None = None
    ) -> list[list[str]]:
        """Per namespace, the store keys of ``entities`` (UsageError for a bad entity).

        ``known``: the store keys a caller already made from key values it parsed for key
        columns ``known[0]`` (serving/keys.py: the same compact JSON); used as they are when
        this version has one namespace with those key columns and types."""
        if known is not None and not self.multi and known[0] == self.keys.signature:
            return [known[1]]
        if not self.multi:
            key = self.keys.key
            return [[key(e) for e in entities]]
        per_entity = [self.keys.keys(e) for e in entities]
        return [list(column) for column in zip(*per_entity, strict=True)]

    def decode_all(self, rows: list[list[bytes | None]], now: float) -> list[LookupResult]:
        decode = self.decoder.decode
        if not self.multi:
            return [decode(row, now) for row in rows[0]]
        return [decode(parts, now) for parts in zip(*rows, strict=True)]


class BaseStore:
    """The cached-pointer read path; backends implement the four ``_``-methods."""

    kind = "base"
    location = ""
    # switch() makes a version live even when its as-of is older than the live one's
    # (``materialize --allow-older``); otherwise it raises store.OlderThanLive
    allow_older = False

    def __init__(self, pointer_refresh: float) -> None:
        self._refresh = pointer_refresh
        self._view: _View | None = None
        self._checked_at = -1e18
        self._views: dict[str, _View] = {}
        self._lock = threading.Lock()

    # -- backend hooks ------------------------------------------------------------------
    def _read_live(self) -> str | None:
        raise NotImplementedError

    def _read_metadata(self, version: str) -> StoreMetadata | None:
        raise NotImplementedError

    def _view_prefix(self, version: str, namespace: int = 0) -> Any:
        raise NotImplementedError

    def _fetch(self, view: _View, keys: list[str], namespace: int = 0) -> list[bytes | None]:
        """Packed rows for keys of one namespace of a version (None when absent); raises
        _Gone if the version was dropped."""
        raise NotImplementedError

    def _fetch_all(self, view: _View, keys: list[list[str]]) -> list[list[bytes | None]]:
        """Packed rows per namespace (``keys``: per namespace). One call per namespace;
        a backend that can batch namespaces into one round trip overrides this."""
        return [self._fetch(view, part, ns) for ns, part in enumerate(keys)]

    def _new_view(self, meta: StoreMetadata) -> _View:
        return _View(meta, partial(self._view_prefix, meta.version))

    # -- read path ----------------------------------------------------------------------
    def _current(self, force: bool = False) -> _View | None:
        now = time.monotonic()
        if not force and now - self._checked_at < self._refresh:
            return self._view
        version = self._read_live()
        view = self._view
        if version is None:
            view = None
        elif view is None or view.version != version:
            view = self._views.get(version)
            if view is None:
                meta = self._read_metadata(version)
                if meta is None:
                    view = None
                else:
                    view = self._new_view(meta)
                    with self._lock:
                        if len(self._views) > 8:
                            self._views.clear()
                        self._views[version] = view
        self._view = view
        self._checked_at = now
        return view

    def live_metadata(self) -> StoreMetadata | None:
        view = self._current(force=True)
        return view.meta if view is not None else None

    def get(self, entity: Sequence[Any] | Any) -> LookupResult:
        view = self._current()
        if view is None:
            view = self._current(force=True)
            if view is None:
                return no_live_version()
        if view.multi:
            try:
                rows = self._fetch_all(view, view.lookup_keys([entity]))
            except _Gone:
                rows = None
            return self._results(view, [entity], rows)[0]
        key = view.keys.key(entity)
        try:
            packed = self._fetch(view, [key])[0]
        except _Gone:
            packed = None
        if packed is None:
            # A miss may mean the pointer moved on (or our version was dropped): re-check once.
            fresh = self._current(force=True)
            if fresh is None:
                return no_live_version()
            if fresh is not view:
                if fresh.multi:
                    return self._results(fresh, [entity], None)[0]
                view = fresh
                packed = self._fetch(view, [view.keys.key(entity)])[0]
        return view.decoder.decode(packed)

    def get_many(
        self, entities: Sequence[Any], *, keys: KnownKeys | None = None
    ) -> list[LookupResult]:
        """Every entity's result from one version; ``keys``: store keys the caller already
        made (``_View.lookup_keys``)."""
        view = self._live_view()
        if view is None:
            return [no_live_version() for _ in entities]
        if not entities:
            return []
        try:
            rows = self._fetch_all(view, view.lookup_keys(entities, keys))
        except _Gone:
            rows = None
        return self._results(view, entities, rows)

    # Backends whose lookups wait on a network round trip set this and override
    # get_many_async, so that the feature server's event loop keeps serving meanwhile.
    async_reads = False

    async def get_many_async(
        self,
        entities: Sequence[Any],
        deadline: float | None = None,
        *,
        keys: KnownKeys | None = None,
    ) -> list[LookupResult]:
        """``get_many`` for an event loop: the round trip to the store does not block it
        (``deadline``, ``time.monotonic()`` seconds, bounds network stores' whole call)."""
        return self.get_many(entities, keys=keys)

    def _live_view(self) -> _View | None:
        view = self._current()
        if view is None:
            view = self._current(force=True)
        return view

    def _results(
        self,
        view: _View,
        entities: Sequence[Any],
        rows: list[list[bytes | None]] | None,
    ) -> list[LookupResult]:
        if rows is None or any(r is None for part in rows for r in part):
            # A miss may mean the pointer moved on (or our version was dropped): re-check once.
            fresh = self._current(force=True)
            if fresh is None:
                return [no_live_version() for _ in entities]
            if fresh is not view or rows is None:
                view = fresh
                rows = self._fetch_all(view, view.lookup_keys(entities))
        return view.decode_all(rows, time.time())


class _Gone(Signal):
    """The version a reader had cached was removed (only possible after two switches)."""
