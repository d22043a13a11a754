"""The small contract every transformer follows, and what the families share.

A transformer is written once per family module (numeric.py, categorical.py, temporal.py,
embedding.py); registry.py maps step types to classes. Each has two paths driven by the same
fitted state:

A *numeric step* maps one float (or None) to one float (or None) and chains with others:

    fit(values: np.ndarray) -> state        values: float64, NaN marks a missing value
    expr(e: pl.Expr, state) -> pl.Expr      the batch path (Polars expression)
    emit(state, src, x, may_be_none) -> bool   the online path: source lines (codegen.py)

An *encoder* owns a whole input column and produces one or more outputs:

    fit(frame: pl.DataFrame, target: np.ndarray | None) -> state
    outputs(state) -> list[str]             deterministic output column names
    helpers(state, tables) -> list[pl.Expr] intermediate columns computed once (optional)
    exprs(state, tables) -> list[pl.Expr]   batch path, one aliased expression per output
    emit(state, tables, src) -> list[str]   online path: source lines of the generated
                                            ``transform_one``, returning output expressions

The online path exists only as generated source: an independent pure-Python oracle of every
transformer lives in the tests (tests/transform_oracle.py), and every loaded artifact
re-runs its stored golden example through both paths.

The fitted state is plain JSON (floats round-trip exactly through ``repr``); the only
non-JSON state is an embedding table, stored as Parquet next to it. Missing values: a null
or NaN input is "missing"; numeric outputs stay missing (null in batch, None online) unless a
``fill_null`` step fills them; encoders never output a missing value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.codegen import Source

if TYPE_CHECKING:
    import numpy as np


# -- value normalisation shared by both paths ---------------------------------------------


def to_float(value: Any, column: str) -> float | None:
    """Online input -> float (NaN and ±inf kept: the column's ValuePolicy decides) or None,
    like ``cast(Float64)``."""
    if value is None:
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, (bool, int)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"column {column!r}: expected a number, got {value!r}") from None


def to_category(value: Any) -> str | None:
    """Online input -> category string, exactly as Polars ``cast(pl.String)`` spells it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if value != value:
            return None
        return repr(value)
    return str(value)


def emit_to_float(src: Source, var: str, column: str, nonfinite: str) -> None:
    """Source for ``var = to_float(var, column)`` (codegen.py), the float and int cases inline,
    then ``var = nonfinite(var)`` for NaN and ±inf (the column's ValuePolicy, a bound helper).

    ``v.__class__ is float`` holds exactly for the values of ``to_float``'s
    ``isinstance(value, float)`` branch save subclasses (numpy.float64), and those go through
    ``to_float`` itself; likewise for int. For an exact float, ``v - v != 0.0`` is true exactly
    for NaN and ±inf (one subtraction on the path of clean values; the policy is a call on the
    rare path).
    """
    with src.block(f"if {var}.__class__ is float:"), src.block(f"if {var} - {var} != 0.0:"):
        src.line(f"{var} = {nonfinite}({var})")
    with src.block(f"elif {var}.__class__ is int:"):
        src.line(f"{var} = float({var})")
    with src.block(f"elif {var} is not None:"):
        src.line(f"{var} = {src.bind(to_float, 'to_float')}({var}, {column!r})")
        # (a numpy scalar here would warn on inf - inf: ask isfinite)
        finite = src.bind(math.isfinite, "isfinite")
        with src.block(f"if {var} is not None and not {finite}({var}):"):
            src.line(f"{var} = {nonfinite}({var})")


def emit_to_category(src: Source, var: str) -> None:
    """Source for ``var = to_category(var)`` (codegen.py), the str case inline."""
    with src.block(f"if {var}.__class__ is not str:"):
        src.line(f"{var} = {src.bind(to_category, 'to_category')}({var})")


def category_input(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String)


def category_code(column: str, vocabulary: list[str]) -> pl.Expr:
    """Index of the value in ``vocabulary`` (UInt32); unknown and missing -> len(vocabulary).

    A non-strict cast to an ``Enum`` of the vocabulary is an exact string lookup (unknown
    strings become null) and is 1.5-2x faster than ``replace_strict`` on strings; every
    category encoder then reads its outputs from this one integer column.
    """
    return (
        category_input(column)
        .cast(pl.Enum(vocabulary), strict=False)
        .to_physical()
        .cast(pl.UInt32)
        .fill_null(len(vocabulary))
    )


def lookup(values: list[float], default: float, code: pl.Expr) -> pl.Expr:
    """``values[code]``, or ``default`` for code == len(values) (gather from a small table)."""
    table = pl.Series([*(float(v) for v in values), float(default)], dtype=pl.Float64)
    return pl.lit(table).gather(code)


def finite_values(values: np.ndarray) -> np.ndarray:
    import numpy as np

    return values[~np.isnan(values)]


def exact_mean(values: np.ndarray) -> float:
    """Mean independent of row order and thread count (math.fsum is exactly rounded)."""
    return math.fsum(values.tolist()) / len(values)


# -- numeric steps ----------------------------------------------------------------------


class NumericStep:
    type: ClassVar[str]

    def __init__(self, params: Mapping[str, Any], column: str) -> None:
        self.params = dict(params)
        self.column = column

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        return {}

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        raise NotImplementedError

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        """Write the step applied to the local variable ``x`` as source lines (codegen.py);
        ``may_be_none`` says whether ``x`` can be None here. Returns whether the result can
        be None."""
        raise NotImplementedError

    def _need_values(self, values: np.ndarray) -> np.ndarray:
        present = finite_values(values)
        if present.size == 0:
            raise InputError(
                f"column {self.column!r}: {self.type} cannot be fitted: no non-null values in "
                "the training data"
            )
        return present


@contextmanager
def unless_none(src: Source, x: str, may_be_none: bool) -> Iterator[None]:
    """Lines emitted inside run only when ``x`` is not None (no test if it never is)."""
    if may_be_none:
        with src.block(f"if {x} is not None:"):
            yield
    else:
        yield


# -- encoders ---------------------------------------------------------------------------


class Encoder:
    kind: ClassVar[str]
    type: ClassVar[str]

    def __init__(self, column: str, params: Mapping[str, Any]) -> None:
        self.column = column
        self.params = {k: v for k, v in params.items() if k != "type"}

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        raise NotImplementedError

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        raise NotImplementedError

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        """Intermediate columns computed once before ``exprs`` (named by ``helper``)."""
        return []

    def helper(self, name: str) -> str:
        return f"__mlpipe__{self.column}__{name}"

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """Source lines computing the outputs from ``record`` (codegen.py); returns one
        expression per output, or ``*name`` for a sequence of them."""
        raise NotImplementedError


class Drop(Encoder):
    """Removes the column from the output; not an input."""

    kind = "drop"
    type = "drop"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        return {}

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return []

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        return []

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        return []
