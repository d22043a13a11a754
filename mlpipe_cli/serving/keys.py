"""Strict parsing of the entity keys clients send, before anything touches the online store.

A key either parses to exactly the value the store holds or is refused (UsageError → HTTP 400
``bad_entity``); it is never coerced to a *different* entity and never reaches the store in
a form the store cannot handle (so it can neither count as a store error nor fail the other
requests of a coalesced batch).

Integer key columns accept a JSON integer, or text in canonical decimal: ASCII digits, an
optional leading ``-``, no leading zeros, no sign ``+``, no spaces, no other digit scripts
(``３``), at most 20 characters; the value must fit in 64 bits (Int64, or UInt64 up to
2**64 - 1: the keys a store can hold). String key columns accept a string of at most
``MAX_KEY_BYTES`` UTF-8 bytes that is valid Unicode (no lone surrogates; in a URL path, no
U+FFFD, which is what the HTTP server makes of bytes that are not UTF-8). Error messages
show at most ``_SHOWN`` characters of what was sent.

Named keys (``GET /features?rider_id=r1&driver_id=drv-2``, or a JSON object
``{"rider_id": "r1", "driver_id": "drv-2"}``) give every key column of the live version by
name, once each: a missing, unknown or repeated name is refused. A query string is
percent-encoded ASCII (``application/x-www-form-urlencoded``: ``+`` is a space, ``%2B`` a
plus) whose values decode to valid UTF-8; its values are text, parsed by the rules above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from mlpipe_cli.errors import UsageError
from mlpipe_cli.online.keylimits import MAX_KEY_BYTES  # the writers refuse longer keys

INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1  # UInt64 key columns reach this; orjson encodes the whole range
_MAX_INT_CHARS = 20  # len("-9223372036854775808") == len("18446744073709551615")
_SHOWN = 40
_DIGITS = frozenset("0123456789")
MAX_QUERY_PARAMS = 64


class KeyParser:
    """Parses one entity (a scalar, a list in ``entity_keys`` order, or a mapping) into
    ``(key values, store key JSON)`` for the key columns and types of one store version."""

    __slots__ = ("_arity", "_names", "_single_int", "_types", "signature")

    def __init__(self, entity_keys: Sequence[str], key_types: Sequence[str]) -> None:
        self._names = list(entity_keys)
        self._types = list(key_types)
        # the store keys this parser makes are the online store's own for a version of this
        # signature (online/codec.py KeyNormalizer.signature): the store uses them as given
        self.signature = (tuple(self._names), tuple(self._types))
        self._arity = len(self._names)
        self._single_int = self._types == ["int"]

    def parse(self, entity: Any, *, from_path: bool = False) -> tuple[list[Any], str]:
        if self._single_int:  # the common case, kept short
            kind = type(entity)
            if kind is int:
                if INT_MIN <= entity <= INT_MAX:
                    return [entity], f"[{entity}]"
            elif (
                kind is str
                and 0 < len(entity) < _MAX_INT_CHARS
                and entity.isascii()
                and entity.isdigit()
                and (entity[0] != "0" or len(entity) == 1)
            ):
                return [int(entity)], f"[{entity}]"  # < 20 digits: always in range
        if isinstance(entity, Mapping):
            missing = [name for name in self._names if name not in entity]
            if missing:
                raise UsageError(f"entity is missing key column {missing[0]!r}")
            extra = [name for name in entity if name not in self._names]
            if extra:
                raise UsageError(f"entity has unknown key column {_shown(extra[0])}")
            values = [entity[name] for name in self._names]
        elif isinstance(entity, (list, tuple)):
            values = list(entity)
        else:
            values = [entity]
        if len(values) != self._arity:
            raise UsageError(
                f"entity has {len(values)} key value(s); expected {self._arity} "
                f"({', '.join(self._names)})"
            )
        parsed = [
            self._value(value, kind, name, from_path)
            for value, kind, name in zip(values, self._types, self._names, strict=True)
        ]
        try:
            key = orjson.dumps(parsed).decode()
        except (TypeError, orjson.JSONEncodeError):
            raise UsageError(f"entity {_shown(entity)} is not a valid key") from None
        return parsed, key

    @staticmethod
    def _value(value: Any, kind: str, name: str, from_path: bool) -> Any:
        if kind == "int":
            return parse_int_key(value, name)
        if kind == "str":
            if type(value) is not str:
                raise UsageError(f"entity key {name} must be a string, got {_shown(value)}")
            return check_str_key(value, name, from_path=from_path)
        # Other key dtypes (dates, floats...): scalars only, bounded like strings.
        if isinstance(value, str):
            return check_str_key(value, name, from_path=from_path)
        if value is None or isinstance(value, (bool, int, float)):
            if isinstance(value, int) and not isinstance(value, bool):
                return parse_int_key(value, name)
            return value
        raise UsageError(f"entity key {name} must be a scalar, got {_shown(value)}")


def parse_query(query: str) -> dict[str, str]:
    """The named keys of a URL query string (``a=1&b=x``); UsageError when it is not
    ``name=value`` pairs of percent-encoded UTF-8 with each name once."""
    from urllib.parse import unquote_plus

    if not query:
        raise UsageError("expected the entity's keys as query parameters, e.g. /features?user_id=3")
    if not query.isascii():
        raise UsageError("the query string must be percent-encoded (ASCII only)")
    parts = query.split("&")
    if len(parts) > MAX_QUERY_PARAMS:
        raise UsageError(f"more than {MAX_QUERY_PARAMS} query parameters")
    named: dict[str, str] = {}
    for part in parts:
        raw_name, sep, raw_value = part.partition("=")
        try:
            name = unquote_plus(raw_name, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise UsageError(
                f"query parameter {_shown(raw_name)} is not valid percent-encoded UTF-8"
            ) from None
        if not sep or not name:
            raise UsageError(f"query parameter {_shown(part)} is not name=value")
        if name in named:
            raise UsageError(f"query parameter {_shown(name)} is given twice")
        named[name] = value
    return named


def parse_int_key(value: Any, name: str) -> int:
    """A JSON integer or canonical decimal text within 64 bits; UsageError otherwise."""
    kind = type(value)
    if kind is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise UsageError(f"entity key {name} is out of the 64-bit integer range: {_shown(value)}")
    if kind is not str:
        raise UsageError(f"entity key {name} must be an integer, got {_shown(value)}")
    text = value
    digits = text[1:] if text[:1] == "-" else text
    if (
        not digits
        or len(text) > _MAX_INT_CHARS
        or not _DIGITS.issuperset(digits)
        or (digits[0] == "0" and (len(digits) > 1 or text[0] == "-"))
    ):
        raise UsageError(
            f"entity key {name} must be an integer in canonical decimal form "
            f"(ASCII digits, optional '-', no leading zeros or spaces), got {_shown(text)}"
        )
    number = int(text)
    if not INT_MIN <= number <= INT_MAX:
        raise UsageError(f"entity key {name} is out of the 64-bit integer range: {_shown(text)}")
    return number


def check_str_key(value: str, name: str, *, from_path: bool = False) -> str:
    """``value`` when it is a bounded, valid-Unicode string key; UsageError otherwise."""
    if len(value) > MAX_KEY_BYTES:
        raise UsageError(f"entity key {name} is longer than {MAX_KEY_BYTES} bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"entity key {name} is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise UsageError(f"entity key {name} is longer than {MAX_KEY_BYTES} bytes")
    if from_path and "\ufffd" in value:
        raise UsageError(f"entity key {name} is not valid UTF-8 (percent-encode UTF-8 bytes)")
    return value


def _shown(value: Any) -> str:
    """What the client sent, cut short: error messages never echo a whole payload."""
    if isinstance(value, str):
        text = repr(value[: _SHOWN + 1])
    elif isinstance(value, int) and not isinstance(value, bool):
        # str() of an int over 4,300 digits raises; a huge number is described, not shown
        text = f"a {value.bit_length()}-bit integer" if value.bit_length() > 128 else str(value)
    else:
        try:
            text = repr(value)
        except ValueError:  # holds an int too long to print
            text = f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
