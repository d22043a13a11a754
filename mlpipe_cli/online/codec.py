"""The store's encodings, shared by both backends: entity keys and packed values.

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
from datetime import UTC, datetime
from typing import Any

import orjson

from mlpipe_cli.errors import UsageError
from mlpipe_cli.online.store import LookupResult, StoreMetadata


def entity_store_key(entity: Sequence[Any] | Any) -> str:
    """The store key of an entity: compact JSON of its key values (``[123]``)."""
    if not isinstance(entity, (list, tuple)):
        entity = (entity,)
    return orjson.dumps(list(entity)).decode()


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
