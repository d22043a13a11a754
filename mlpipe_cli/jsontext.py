"""``json.dumps(doc, sort_keys=True, indent=n, allow_nan=False)``, byte for byte, faster.

With ``indent`` set the standard library encodes in pure Python, one generator per nesting
level for every value; a drift profile (tens of thousands of floats) took ~40 ms of each
`mlpipe fit` that way (#19). Its bytes are hashed into version ids, so the text must not
change: this writes the same text by joining ``float.__repr__`` / ``int.__repr__`` /
``encode_basestring_ascii`` pieces, which are exactly what the standard encoder emits.
Anything outside plain JSON data (a non-str key, NaN or ±inf, a type ``json`` would refuse
or hand to ``default``, a subclass) goes to ``json.dumps`` itself, so its text or its error
is the standard library's. tests/test_jsontext.py compares the two on random documents.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from mlpipe_cli.errors import Signal


class _Unusual(Signal):
    """Something the fast path does not write itself: json.dumps writes (or refuses) it."""


def dumps_sorted(doc: Any, indent: int) -> str:
    """The text of ``json.dumps(doc, sort_keys=True, indent=indent, allow_nan=False)``."""
    try:
        return _Writer(indent).value(doc, 0)
    except (_Unusual, RecursionError):
        return json.dumps(doc, sort_keys=True, indent=indent, allow_nan=False)


def _float(value: float) -> str:
    text = float.__repr__(value)
    if text[-1] in "nf":  # nan, inf, -inf: json raises (allow_nan=False)
        raise _Unusual
    return text


def _null(value: None) -> str:
    return "null"


def _bool(value: bool) -> str:
    return "true" if value else "false"


_SCALARS: dict[type, Any] = {
    str: encode_basestring_ascii,
    float: _float,
    int: int.__repr__,
    bool: _bool,
    type(None): _null,
}


class _Writer:
    __slots__ = ("indent",)

    def __init__(self, indent: int) -> None:
        self.indent = indent

    def value(self, value: Any, level: int) -> str:
        kind = type(value)
        scalar = _SCALARS.get(kind)
        if scalar is not None:
            return scalar(value)
        if kind is list or kind is tuple:
            return self.array(value, level)
        if kind is dict:
            return self.object(value, level)
        raise _Unusual

    def array(self, items: list[Any] | tuple[Any, ...], level: int) -> str:
        if not items:
            return "[]"
        inner = "\n" + " " * (self.indent * (level + 1))
        kinds = set(map(type, items))
        if kinds == {float}:  # the common case in a profile: a column of floats, in C
            text = ("," + inner).join(map(float.__repr__, items))
            if "n" in text:  # a finite float's repr has no 'n' (nan, inf)
                raise _Unusual
        elif kinds <= {str}:
            text = ("," + inner).join(map(encode_basestring_ascii, items))
        else:
            text = ("," + inner).join([self.value(item, level + 1) for item in items])
        return "[" + inner + text + "\n" + " " * (self.indent * level) + "]"

    def object(self, mapping: dict[Any, Any], level: int) -> str:
        if not mapping:
            return "{}"
        if set(map(type, mapping)) != {str}:
            raise _Unusual  # json converts or refuses other keys, and sorts before that
        inner = "\n" + " " * (self.indent * (level + 1))
        parts = [
            encode_basestring_ascii(key) + ": " + self.value(mapping[key], level + 1)
            for key in sorted(mapping)
        ]
        return "{" + inner + ("," + inner).join(parts) + "\n" + " " * (self.indent * level) + "}"
