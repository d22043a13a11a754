"""The store's encodings, shared by both backends: entity keys and packed values.

Entity key → store key
    The entity's key values, in the key order of its namespace, as compact JSON:
    ``user_id=123`` → ``[123]``; ``(user_id=123, country="DE")`` → ``[123,"DE"]``. The same
    string is the ``entity`` column of the serving log (docs/architecture.md §5). Integers stay
    integers (``[123]`` and ``["123"]`` are different entities); readers coerce a request
    value to the key column's kind (``features.keys.coerce_key_value``: ``"123"`` for an
    integer key is 123, ``123`` for a string key is ``"123"``). A version with several
    entity types has one namespace per key set; a lookup gives every key column once and
    reads one row per namespace.

Value encoding
    One packed value per entity: ``orjson`` of a JSON array holding the feature values of
    its namespace in the version's feature order, followed by one event time (epoch seconds, or null) per
    feature that has a ttl. Names, defaults and ttls live once in the version metadata.
    docs/materialize.md has the measurement behind choosing this over one hash per entity.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from mlpipe_cli.errors import UsageError
from mlpipe_cli.online.store import LookupResult, Namespace, StoreMetadata

if TYPE_CHECKING:
    import polars as pl


def entity_store_key(entity: Sequence[Any] | Any) -> str:
    """The store key of an entity: compact JSON of its key values (``[123]``)."""
    if not isinstance(entity, (list, tuple)):
        entity = (entity,)
    return orjson.dumps(list(entity)).decode()


class Decoder:
    """Turns packed rows of one namespace of a version into LookupResults (ttl enforced at
    read time). ``namespace`` defaults to the version's only one."""

    __slots__ = (
        "_as_of", "_as_of_epoch", "_defaults", "_meta", "_n", "_names", "_ttl_slots", "_version"
    )  # fmt: skip

    def __init__(self, meta: StoreMetadata, namespace: Namespace | None = None) -> None:
        names = namespace.features if namespace is not None else meta.features
        self._meta = meta
        self._names = names
        self._n = len(names)
        self._defaults = {name: meta.defaults.get(name) for name in names}
        self._as_of_epoch = meta.as_of.timestamp()
        self._version = meta.version
        self._as_of = meta.as_of
        # (feature name, ttl seconds, index of its event time in the packed row or -1)
        slots = []
        for j, name in enumerate(name for name in names if name in meta.ttls):
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
        # loads_row inlined: this runs once per entity served
        row = orjson.loads(packed) if packed[:1] != NON_FINITE_PREFIX else loads_row(packed)
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
        return LookupResult(True, values, expired, self._version, self._as_of)


class MultiDecoder:
    """One entity's rows from every namespace of a version → one LookupResult whose values
    are in the version's feature order; ``found`` only when every namespace had its row."""

    __slots__ = ("_decoders", "_features", "_meta", "_order", "_plain")

    def __init__(self, meta: StoreMetadata) -> None:
        self._meta = meta
        self._features = meta.features
        self._decoders = [Decoder(meta, ns) for ns in meta.key_sets()]
        self._order = {name: i for i, name in enumerate(meta.features)}
        # namespaces without ttl'd features: their packed row is just the values, in order
        self._plain = tuple(
            None if decoder._ttl_slots else decoder._names for decoder in self._decoders
        )

    @property
    def metadata(self) -> StoreMetadata:
        return self._meta

    def decode(self, rows: Sequence[bytes | None], now: float | None = None) -> LookupResult:
        merged: dict[str, Any] = {}
        expired: list[str] = []
        missing: list[str] = []
        loads = loads_row
        for decoder, names, packed in zip(self._decoders, self._plain, rows, strict=True):
            if packed is not None and names is not None:
                merged.update(zip(names, loads(packed), strict=False))
                continue
            part = decoder.decode(packed, now)
            merged.update(part.values)
            if not part.found:
                missing.extend(part.values)
            expired.extend(part.expired)
        values = {name: merged[name] for name in self._features}
        if expired:
            expired.sort(key=self._order.__getitem__)
        if missing:
            missing.sort(key=self._order.__getitem__)
        meta = self._meta
        return LookupResult(not missing, values, expired, meta.version, meta.as_of, missing)


# JSON has no NaN or infinity (orjson writes them as null, silently): a row holding one is
# packed with this prefix byte and each non-finite float as {"$f": "nan" | "inf" | "-inf"}, so
# the value served is the value trained on. Rows of finite values are unchanged (no prefix),
# and decoding them pays one byte comparison.
NON_FINITE_PREFIX = b"!"
_NON_FINITE_KEY = "$f"


def box_non_finite(value: Any) -> Any:
    """A float NaN/±inf as its JSON-safe box; any other value as is."""
    if isinstance(value, float) and value != value:
        return {_NON_FINITE_KEY: "nan"}
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return {_NON_FINITE_KEY: "inf" if value > 0 else "-inf"}
    return value


def loads_row(packed: bytes) -> list[Any]:
    """A packed row back to its values (non-finite floats restored)."""
    if packed[:1] != NON_FINITE_PREFIX:
        return orjson.loads(packed)
    row = orjson.loads(packed[1:])
    return [
        float(v[_NON_FINITE_KEY]) if isinstance(v, dict) and _NON_FINITE_KEY in v else v
        for v in row
    ]


def pack_row(values: Sequence[Any], event_times: Sequence[float | None] = ()) -> bytes:
    """The packed value of one entity (see the module docstring)."""
    row = [*values, *event_times]
    if any(isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))) for v in row):
        return NON_FINITE_PREFIX + orjson.dumps([box_non_finite(v) for v in row])
    return orjson.dumps(row)


class PackedChunk(Sequence[tuple[str, bytes]]):
    """One chunk's packed rows: a Polars frame of ``k`` (the store key) and ``v`` (the
    packed value as text: orjson's output is UTF-8), in entity order.

    It is a sequence of ``(key, value bytes)`` pairs like the lists the stores always took,
    so any store writes it; the single-node Redis store and SQLite take their fast paths
    (``set_commands``, ``sorted_rows``) and never make a Python object per row for Redis.
    """

    __slots__ = ("frame",)

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    @classmethod
    def from_items(cls, keys: Sequence[str], values: Sequence[bytes]) -> PackedChunk:
        import polars as pl

        return cls(
            pl.DataFrame(
                {"k": list(keys), "v": [v.decode() for v in values]},
                schema={"k": pl.String, "v": pl.String},
            )
        )

    def __len__(self) -> int:
        return self.frame.height

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        key, value = self.frame.row(index)
        return key, value.encode()

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self.rows())

    def rows(self) -> list[tuple[str, bytes]]:
        import polars as pl

        return list(
            zip(
                self.frame.get_column("k").to_list(),
                self.frame.get_column("v").cast(pl.Binary).to_list(),
                strict=True,
            )
        )

    def sorted_rows(self) -> list[tuple[str, bytes]]:
        """The rows by key (UTF-8 byte order = code point order = Python's ``sorted``)."""
        return PackedChunk(self.frame.sort("k")).rows()

    def set_commands(
        self, prefix: bytes, ttl_seconds: int | None, rows_per_payload: int = 5000
    ) -> Iterator[bytes]:
        """``SET <prefix><key> <value> [EX ttl]`` for every row, as RESP payloads of
        ``rows_per_payload`` commands each, built column-wise by Polars: together the same
        bytes as ``redis_store.set_command_batches``. One payload per slice, never one for
        the whole chunk: a Polars string holds at most 4 GiB (a chunk of wide rows reached
        it) and a whole-chunk string cost ~4× the payload in memory."""
        import polars as pl

        if ttl_seconds:
            ttl = str(ttl_seconds)
            head, tail = "*5\r\n$3\r\nSET\r\n$", f"\r\n$2\r\nEX\r\n${len(ttl)}\r\n{ttl}\r\n"
        else:
            head, tail = "*3\r\n$3\r\nSET\r\n$", "\r\n"
        key, value = pl.col("k"), pl.col("v")
        command = pl.concat_str(
            [
                pl.lit(head),
                (key.str.len_bytes() + len(prefix)).cast(pl.String),
                pl.lit("\r\n" + prefix.decode()),
                key,
                pl.lit("\r\n$"),
                value.str.len_bytes().cast(pl.String),
                pl.lit("\r\n"),
                value,
                pl.lit(tail),
            ]
        )
        joined = command.str.join("").cast(pl.Binary)
        for part in self.frame.iter_slices(max(1, rows_per_payload)):
            yield part.select(joined).item()


class KeyNormalizer:
    """Maps what a caller passes as an entity to its store key(s), for one version.

    An entity is a scalar (one key column), a list/tuple of values in ``entity_keys`` order,
    or a mapping by key name. Values are coerced to the stored key's kind by the rule the
    offline joins use (``features.keys.coerce_key_value``): an integer key accepts an int or
    its decimal text, a string key text or an int (as its decimal text); anything else is a
    UsageError, never a silent miss. ``key`` gives the store key of a single-namespace
    version, ``keys`` one store key per namespace.
    """

    __slots__ = ("_arity", "_coerce", "_kinds", "_names", "_slots", "signature")

    def __init__(self, meta: StoreMetadata) -> None:
        from mlpipe_cli.features.keys import coerce_key_value

        # the key columns and their kinds: store keys made for the same signature by
        # serving/keys.py are these keys (``_View.lookup_keys``)
        self.signature = (tuple(meta.entity_keys), tuple(meta.key_types))
        self._arity = len(meta.entity_keys)
        self._names = meta.entity_keys
        self._kinds = list(meta.key_types)
        self._coerce = coerce_key_value
        position = {name: i for i, name in enumerate(meta.entity_keys)}
        # per namespace: the positions of its key columns among entity_keys
        self._slots = [tuple(position[k] for k in ns.keys) for ns in meta.key_sets()]

    def values(self, entity: Sequence[Any] | Any) -> list[Any]:
        """The entity's key values in ``entity_keys`` order, each of its column's kind."""
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
        values = list(entity)
        for i, (value, kind) in enumerate(zip(values, self._kinds, strict=True)):
            if kind == "int":
                if type(value) is not int:
                    values[i] = self._as(value, kind, i)
            elif kind == "str" and type(value) is not str:
                values[i] = self._as(value, kind, i)
        return values

    def key(self, entity: Sequence[Any] | Any) -> str:
        return orjson.dumps(self.values(entity)).decode()

    def keys(self, entity: Sequence[Any] | Any) -> list[str]:
        values = self.values(entity)
        dumps = orjson.dumps
        out = []
        for slots in self._slots:
            if len(slots) == 1:
                value = values[slots[0]]
                # an int key is its digits; anything else goes through JSON
                out.append(
                    f"[{value}]" if type(value) is int else "[" + dumps(value).decode() + "]"
                )
            else:
                out.append(dumps([values[i] for i in slots]).decode())
        return out

    def _as(self, value: Any, kind: str, i: int) -> Any:
        if kind == "int" and not isinstance(value, (bool, int, str, float)):
            index = getattr(value, "__index__", None)  # numpy integers
            if index is not None:
                value = index()
        try:
            return self._coerce(value, kind, self._names[i])  # type: ignore[arg-type]  # kinds come from key_kind
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def utcnow() -> datetime:
    return datetime.now(UTC)
