"""The online path as one generated function per fitted transform.

``FittedTransform.transform_one`` is called once per served request. Composing it from
per-transformer closures costs a Python call per column and per numeric step, a ``to_float``
call per value and a list per column; that overhead, not the arithmetic, was most of its
time. Here every transformer's ``emit`` method writes its part of the Python source of one
specialised function instead, and the function is compiled once, at load — the technique
``dataclasses`` and ``attrs`` use for ``__init__``.

Rules the emitters follow, so that the generated function is bit-for-bit the plain
per-transformer oracle in the tests (tests/transform_oracle.py; hypothesis compares them)
and the batch path:

* constants: finite floats and ints are written with ``repr`` (exact round trip, checked
  here); anything else (inf, NaN, lookup tables, helper functions) is passed in the
  function's globals under a generated name. User-controlled strings (column names,
  categories) never appear in the source except through ``repr`` (column names as record
  keys); category tables are dicts in the globals;
* fast paths only for exact builtin types (``v.__class__ is float``); every other value
  goes through the same helper the reference uses (``to_float``, ``to_category``, ...), so
  errors and odd types behave identically.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import linecache
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mlpipe_cli.errors import InputError

RecordFn = Callable[[Mapping[str, Any]], list[Any]]


class Source:
    """Lines of one generated function plus the globals its names refer to."""

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {}
        self._bound: dict[int, str] = {}  # id(object) -> its name in the namespace
        # every identifier in use, local or global (builtins too: the code calls type, float)
        self._names: set[str] = {*reserved, *dir(builtins)}
        self._next: dict[str, int] = {}  # prefix -> the next number to try
        self._level = 0

    def name(self, prefix: str) -> str:
        """A fresh identifier (local variable or global) starting with ``prefix``."""
        if not prefix.isidentifier() or keyword.iskeyword(prefix):
            prefix = "k"
        n = self._next.get(prefix, 0)
        while f"{prefix}{n}" in self._names:
            n += 1
        self._next[prefix] = n + 1
        self._names.add(f"{prefix}{n}")
        return f"{prefix}{n}"

    def bind(self, value: Any, prefix: str) -> str:
        """A global name for ``value`` (the same name each time for the same object)."""
        key = id(value)  # bound objects stay alive in the namespace: ids are not reused
        if key not in self._bound:
            usable = prefix.isidentifier() and not keyword.iskeyword(prefix)
            name = prefix if usable and prefix not in self._names else self.name(prefix)
            self._names.add(name)
            self.namespace[name] = value
            self._bound[key] = name
        return self._bound[key]

    def const(self, value: Any) -> str:
        """Source text for a constant: a literal when it round-trips exactly, else a global."""
        if value is None:
            return "None"
        if type(value) is int:
            return repr(value) if value >= 0 else f"({value!r})"
        if type(value) is float and math.isfinite(value):
            text = repr(value)
            back = float(text)
            if back == value and math.copysign(1.0, back) == math.copysign(1.0, value):
                return text if not text.startswith("-") else f"({text})"
        return self.bind(value, "c_")

    def line(self, text: str) -> None:
        self.lines.append("    " * self._level + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """``header`` (ending in a colon); lines emitted inside are indented under it."""
        self.line(header)
        self._level += 1
        start = len(self.lines)
        try:
            yield
            if len(self.lines) == start:  # nothing to do in this branch
                self.line("pass")
        finally:
            self._level -= 1


def _missing_column(version: str) -> Callable[[KeyError], InputError]:
    def error(exc: KeyError) -> InputError:
        return InputError(
            f"record has no column {exc.args[0]!r}, which transform {version} expects"
        )

    return error


def compile_record_function(
    transformers: list[tuple[Any, Mapping[str, Any]]],
    tables: Mapping[str, Any],
    version: str,
) -> tuple[RecordFn, str]:
    """(transform_one, its source) for fitted ``(transformer, state)`` pairs, in order."""
    src = Source(reserved=("record", "transform_one", "exc"))
    missing = src.bind(_missing_column(version), "missing_column")
    outputs: list[str] = []
    with src.block("def transform_one(record):"):
        src.line('"""One raw record -> the output vector (generated at load: see codegen.py)."""')
        with src.block("try:"):
            for transformer, state in transformers:
                outputs.extend(transformer.emit(state, tables, src))
            src.line(f"return [{', '.join(outputs)}]")
        with src.block("except KeyError as exc:"):
            src.line(f"raise {missing}(exc) from None")
    text = "\n".join(src.lines) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    filename = f"<mlpipe transform_one {digest}>"
    # registered like attrs does, so tracebacks and inspect show the generated lines
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace = dict(src.namespace)
    exec(compile(text, filename, "exec"), namespace)
    return namespace["transform_one"], text
