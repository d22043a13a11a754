"""What both online stores share: entity keys, the value codec, metadata, the read path.

Entity key → store key
    The entity's key values, in ``entity_keys`` order, as compact JSON:
    ``user_id=123`` → ``[123]``; ``(user_id=123, country="DE")`` → ``[123,"DE"]``. The same
    string is the ``entity`` column of the serving log (docs/architecture.md §5). Integers stay
    integers (``[123]`` and ``["123"]`` are different entities); readers coerce a numeric
    string to int when the version's metadata says the key column is an integer.

Value encoding
    One packed value per entity: ``orjson`` of a JSON array holding the feature values in
    the version's feature order, followed by one event time (epoch seconds, or null) per
    feature that has a ttl. Names, defaults and ttls live once in the version metadata.
    docs/materialize.md has the measurement behind choosing this over one hash per entity.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from mlpipe_cli.documents import StoreMetadataDocument, check
from mlpipe_cli.errors import UsageError


def entity_store_key(entity: Sequence[Any] | Any) -> str:
    """The store key of an entity: compact JSON of its key values (``[123]``)."""
    if not isinstance(entity, (list, tuple)):
        entity = (entity,)
    return orjson.dumps(list(entity)).decode()


@dataclass(frozen=True)
class StoreMetadata:
    """Facts about one materialized version (stored next to its data)."""

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
    status: str = "complete"  # "building" | "complete"

    def to_json(self) -> bytes:
        doc = {
            "format_version": StoreMetadataDocument.FORMAT_VERSION,
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
        )

    def replace(self, **changes: Any) -> StoreMetadata:
        from dataclasses import replace

        return replace(self, **changes)


@dataclass
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

    @property
    def status(self) -> str:
        if not self.found:
            return "missing"
        return "expired" if self.expired else "ok"


class Decoder:
    """Turns packed rows of one version into LookupResults (ttl enforced at read time)."""

    __slots__ = ("_as_of_epoch", "_defaults", "_meta", "_n", "_names", "_ttl_slots")

    def __init__(self, meta: StoreMetadata) -> None:
        self._meta = meta
        self._names = meta.features
        self._n = len(meta.features)
        self._defaults = {name: meta.defaults.get(name) for name in meta.features}
        self._as_of_epoch = meta.as_of.timestamp()
        # (feature name, ttl seconds, index of its event time in the packed row or -1)
        slots = []
        for j, name in enumerate(name for name in meta.features if name in meta.ttls):
            slots.append((name, meta.ttls[name], self._n + j if meta.event_times else -1))
        self._ttl_slots = tuple(slots)

    @property
    def metadata(self) -> StoreMetadata:
        return self._meta

    def missing(self) -> LookupResult:
        return LookupResult(False, dict(self._defaults), [], self._meta.version, self._meta.as_of)

    def decode(self, packed: bytes | None, now: float | None = None) -> LookupResult:
        if packed is None:
            return self.missing()
        row = orjson.loads(packed)
        values = dict(zip(self._names, row, strict=False))
        expired: list[str] = []
        if self._ttl_slots:
            if now is None:
                now = time.time()
            for name, ttl, slot in self._ttl_slots:
                event = row[slot] if slot >= 0 else self._as_of_epoch
                if event is None:
                    continue  # no event: the value already is the default
                if now - event > ttl:
                    values[name] = self._defaults[name]
                    expired.append(name)
        return LookupResult(True, values, expired, self._meta.version, self._meta.as_of)


def no_live_version() -> LookupResult:
    return LookupResult(False, {}, [], None, None)


def pack_row(values: Sequence[Any], event_times: Sequence[float | None] = ()) -> bytes:
    """The packed value of one entity (see the module docstring)."""
    if event_times:
        return orjson.dumps([*values, *event_times])
    return orjson.dumps(list(values))


class KeyNormalizer:
    """Maps what a caller passes as an entity to the store key, for one version."""

    __slots__ = ("_arity", "_int_slots", "_names")

    def __init__(self, meta: StoreMetadata) -> None:
        self._arity = len(meta.entity_keys)
        self._names = meta.entity_keys
        self._int_slots = tuple(i for i, t in enumerate(meta.key_types) if t == "int")

    def key(self, entity: Sequence[Any] | Any) -> str:
        if isinstance(entity, Mapping):
            try:
                entity = [entity[name] for name in self._names]
            except KeyError as exc:
                raise UsageError(f"entity is missing key column {exc.args[0]!r}") from None
        elif not isinstance(entity, (list, tuple)):
            entity = [entity]
        if len(entity) != self._arity:
            raise UsageError(
                f"entity {list(entity)!r} has {len(entity)} key value(s); expected "
                f"{self._arity} ({', '.join(self._names)})"
            )
        if self._int_slots:
            entity = list(entity)
            for i in self._int_slots:
                value = entity[i]
                if type(value) is not int:
                    entity[i] = _as_int(value, self._names[i])
        return orjson.dumps(list(entity)).decode()


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"entity key {name} must be an integer, got {value!r}")
    try:
        return (
            int(value)
            if isinstance(value, (int, str)) or hasattr(value, "__index__")
            else int(_strict_float_int(value))
        )
    except (TypeError, ValueError):
        raise UsageError(f"entity key {name} must be an integer, got {value!r}") from None


def _strict_float_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(value)


def utcnow() -> datetime:
    return datetime.now(UTC)
