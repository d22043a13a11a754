"""The online-store contracts: what `serve` reads and what `materialize` writes.

Two Protocols, so that neither side knows which backend it talks to (SQLite or Redis, each
in its own module, both built on ``online.base.BaseStore``):

- :class:`OnlineStore`, the read side (`serve`, freshness checks, tests);
- :class:`OnlineStoreWriter`, the write side (``online.writer`` and ``ops.materialize``):
  a version namespace is begun, filled chunk by chunk, verified and switched live in one
  atomic step.

and the records both sides exchange: :class:`StoreMetadata` (one version's facts),
:class:`LookupResult` (one entity's values) and :class:`RunProgress` (a version being
written, for resuming). docs/materialize.md documents the layouts and the atomic switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson

from mlpipe_cli.documents import StoreMetadataDocument, check
from mlpipe_cli.errors import DataCheckFailed

STORE_FORMAT_VERSION = StoreMetadataDocument.FORMAT_VERSION


class OlderThanLive(DataCheckFailed):
    """A finished version is as of an earlier time than the live one: it was not made live
    (serving is not rolled back in time) and its rows were removed, since nothing can make
    it live later (exit 1).

    Two runs that overlap (a backfill for yesterday finishing after today's run) would
    otherwise let whichever finishes last go live. The store checks the as-of in the same
    transaction / WATCHed MULTI that would flip the pointer, so no third run can slip in
    between; an equal as-of (a retry) goes live as always. ``remedy`` says how to make an
    older as-of live on purpose (the CLI names its flag, the Python API its parameter).
    """

    def __init__(
        self,
        version: str,
        as_of: datetime,
        live_version: str,
        live_as_of: datetime,
        remedy: str = "materialize it again with allow_older",
    ) -> None:
        self.version, self.as_of = version, as_of
        self.live_version, self.live_as_of = live_version, live_as_of
        super().__init__(
            f"version {version} (as of {as_of.isoformat()}) was written but not made live "
            "(and removed): "
            f"the live version {live_version} is as of {live_as_of.isoformat()}, which is "
            f"newer, and stays live; to serve the older values on purpose, {remedy}",
            report={
                "version": version,
                "as_of": as_of.isoformat(),
                "live_version": live_version,
                "live_as_of": live_as_of.isoformat(),
            },
        )

    def with_remedy(self, remedy: str) -> OlderThanLive:
        return OlderThanLive(self.version, self.as_of, self.live_version, self.live_as_of, remedy)


@dataclass(frozen=True)
class Namespace:
    """The rows of one entity type (one key set) in a version.

    ``keys`` are the request key columns identifying the entity (the spine's column names:
    ``[rider_id]``, ``[pickup_zone]``, ``[zone, driver_id]``), ``features`` the features
    stored per entity of this type, in the version's feature order. Each row's store key is
    the compact JSON of its ``keys`` values; its packed value holds ``features``.
    """

    keys: list[str]
    key_types: list[str]  # "int" | "str" | "other", per key
    features: list[str]
    entity_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "key_types": self.key_types,
            "features": self.features,
            "entity_count": self.entity_count,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Namespace:
        return cls(
            list(doc["keys"]),
            list(doc["key_types"]),
            list(doc["features"]),
            int(doc["entity_count"]),
        )


@dataclass(frozen=True)
class StoreMetadata:
    """Facts about one materialized version (stored next to its data).

    ``entity_keys``/``key_types`` are every key column a lookup needs (the union over the
    namespaces, in order of first appearance). ``namespaces`` lists the entity types when a
    version holds more than one (rider, driver, zone, ...); empty means one namespace with
    ``entity_keys`` holding every feature, the layout of every single-entity version.
    ``entity_count`` is the number of rows over all namespaces.
    """

    version: str
    as_of: datetime
    finished_at: datetime | None
    entity_count: int
    features: list[str]
    feature_hash: str
    entity_keys: list[str]
    key_types: list[str]  # "int" | "str" | "other", per entity key
    defaults: dict[str, Any] = field(default_factory=dict)
    ttls: dict[str, float] = field(default_factory=dict)  # feature -> ttl seconds (read-time)
    event_times: bool = False  # packed rows carry one event time per ttl feature
    status: str = "complete"  # "building" | "complete" | "dropping" (being removed)
    namespaces: list[Namespace] = field(default_factory=list)

    def key_sets(self) -> list[Namespace]:
        """The version's namespaces (one for a single-entity version)."""
        if self.namespaces:
            return self.namespaces
        return [Namespace(self.entity_keys, self.key_types, self.features, self.entity_count)]

    def to_json(self) -> bytes:
        doc = {
            "format_version": STORE_FORMAT_VERSION,
            "version": self.version,
            "as_of": self.as_of.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "entity_count": self.entity_count,
            "features": self.features,
            "feature_hash": self.feature_hash,
            "entity_keys": self.entity_keys,
            "key_types": self.key_types,
            "defaults": self.defaults,
            "ttls": self.ttls,
            "event_times": self.event_times,
            "status": self.status,
        }
        if self.namespaces:  # single-entity metadata stays as it always was
            doc["namespaces"] = [ns.to_dict() for ns in self.namespaces]
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, data: bytes | str, origin: str | None = None) -> StoreMetadata:
        """Parse and check stored metadata (ArtifactError, exit 3, for a format_version this
        mlpipe does not read); ``origin`` names where it was read (default: its version)."""
        doc = orjson.loads(data)
        if origin is None:
            version = doc.get("version") if isinstance(doc, dict) else None
            origin = f"online store metadata of version {version}"
        check(StoreMetadataDocument, doc, origin)
        finished = doc.get("finished_at")
        return cls(
            version=doc["version"],
            as_of=datetime.fromisoformat(doc["as_of"]),
            finished_at=datetime.fromisoformat(finished) if finished else None,
            entity_count=int(doc["entity_count"]),
            features=list(doc["features"]),
            feature_hash=doc["feature_hash"],
            entity_keys=list(doc["entity_keys"]),
            key_types=list(doc.get("key_types") or ["other"] * len(doc["entity_keys"])),
            defaults=dict(doc.get("defaults") or {}),
            ttls={k: float(v) for k, v in (doc.get("ttls") or {}).items()},
            event_times=bool(doc.get("event_times")),
            status=doc.get("status", "complete"),
            namespaces=[Namespace.from_dict(ns) for ns in doc.get("namespaces") or []],
        )

    def replace(self, **changes: Any) -> StoreMetadata:
        from dataclasses import replace

        return replace(self, **changes)


@dataclass(slots=True)
class LookupResult:
    """One entity's features from the live version.

    ``values`` always has every feature: defaults when the entity is missing (``found`` is
    False) or when a value is older than its feature ttl at read time (listed in
    ``expired``). ``version``/``as_of`` are None when no version is live.
    """

    found: bool
    values: dict[str, Any]
    expired: list[str]
    version: str | None
    as_of: datetime | None
    # Several entity types: the features holding defaults because their entity was not in
    # the store (``found`` is then False). Empty when ``found`` is False for the one entity.
    missing: list[str] = field(default_factory=list)
    # Streamed features (docs/streaming.md): feature -> how fresh its value is (newest event,
    # batch as-of); None when no feature of the lookup streams.
    freshness: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        if not self.found:
            return "missing"
        return "expired" if self.expired else "ok"


def no_live_version() -> LookupResult:
    return LookupResult(False, {}, [], None, None)


@dataclass
class RunProgress:
    """A version being written: how far it got, for resuming after a failure."""

    version: str
    chunk_size: int
    entities_hash: str
    chunks_done: int = 0
    written: int = 0
    owner: str = ""
    lease_until: float = 0.0
    backend: dict[str, Any] = field(default_factory=dict)  # e.g. the Redis server's run_id
    probes: list[str] = field(default_factory=list)  # first/last key of each written chunk

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes | str) -> RunProgress:
        return cls(**orjson.loads(data))


@runtime_checkable
class OnlineStore(Protocol):
    """The read side: what `serve` sees (docs/architecture.md §4)."""

    kind: str
    location: str  # where the store is, safe to print (password masked)
    async_reads: bool  # get_many_async does not block the event loop on a network round trip

    def ping(self) -> None: ...
    def live_metadata(self) -> StoreMetadata | None: ...
    def get(self, entity: Sequence[Any] | Any) -> LookupResult: ...
    # keys: (key signature, store keys) the caller already made (base._View.lookup_keys)
    def get_many(self, entities: Sequence[Any], *, keys: Any = None) -> list[LookupResult]: ...
    async def get_many_async(
        self, entities: Sequence[Any], deadline: float | None = None, *, keys: Any = None
    ) -> list[LookupResult]: ...
    def close(self) -> None: ...


@runtime_checkable
class OnlineStoreWriter(Protocol):
    """The write side: what ``online.writer`` and ``ops.materialize`` drive.

    A run: ``next_sequence`` → ``begin`` (status 'building', a lease; one namespace per entity
    type of ``meta.key_sets()``) → ``write_chunk`` per chunk of one namespace (progress
    recorded with it) → ``verify`` → ``switch`` (one transaction / MULTI:
    the version is marked complete and made live; stale versions are removed). ``claim``
    takes over an abandoned version to resume it; ``rollback`` swaps live and previous.
    ``switch`` refuses (``OlderThanLive``) a version as of an earlier time than the live
    one, keeping it complete but not live, unless ``allow_older`` (the argument, else the
    store's attribute, which ``ops.materialize`` sets for a run).
    """

    kind: str
    location: str
    allow_older: bool

    def ping(self) -> None: ...
    def live_metadata(self) -> StoreMetadata | None: ...
    def versions(self) -> list[tuple[StoreMetadata, RunProgress | None]]: ...
    def pointers(self) -> dict[str, str]: ...
    def next_sequence(self) -> int: ...
    def begin(self, meta: StoreMetadata, progress: RunProgress) -> None: ...
    def claim(self, progress: RunProgress) -> bool: ...
    def write_chunk(
        self, progress: RunProgress, items: Sequence[tuple[str, bytes]], namespace: int = 0
    ) -> None: ...
    def verify(self, meta: StoreMetadata, progress: RunProgress, expected: int) -> None: ...
    def count(self, version: str) -> int: ...
    def switch(self, meta: StoreMetadata, *, allow_older: bool | None = None) -> list[str]: ...
    def rollback(self) -> tuple[str, str]: ...
    def remove_stale(self) -> list[str]: ...
    def close(self) -> None: ...
