"""Every transformer, each with the same small contract (see docs/fit-transform.md).

A *numeric step* maps one float (or None) to one float (or None) and chains with others:

    fit(values: np.ndarray) -> state        values: float64, NaN marks a missing value
    expr(e: pl.Expr, state) -> pl.Expr      the batch path (Polars expression)
    compile(state) -> Callable[[float | None], float | None]   the online path (pure Python)

An *encoder* owns a whole input column and produces one or more outputs:

    fit(frame: pl.DataFrame, target: np.ndarray | None) -> state
    outputs(state) -> list[str]             deterministic output column names
    exprs(state, tables) -> list[pl.Expr]   batch path, one aliased expression per output
    compile(state, tables) -> Callable[[Mapping], list]   online path: record -> outputs

The fitted state is plain JSON (floats round-trip exactly through ``repr``); the only
non-JSON state is an embedding table, stored as Parquet next to it. Missing values: a null
or NaN input is "missing"; numeric outputs stay missing (null in batch, None online) unless a
``fill_null`` step fills them; encoders never output a missing value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import numpy as np
import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.codegen import Source

NumFn = Callable[[float | None], float | None]
RecordFn = Callable[[Mapping[str, Any]], list[Any]]

# -- value normalisation shared by both paths -------------------------------------------


def to_float(value: Any, column: str) -> float | None:
    """Online input -> float or None (None and NaN are missing), like ``cast(Float64)``."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, (bool, int)):
        return float(value)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InputError(f"column {column!r}: expected a number, got {value!r}") from None
    return None if result != result else result


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


def emit_to_float(src: Source, var: str, column: str) -> None:
    """Source for ``var = to_float(var, column)`` (codegen.py), the float and int cases inline.

    ``v.__class__ is float`` holds exactly for the values of ``to_float``'s
    ``isinstance(value, float)`` branch save subclasses (numpy.float64), and those go through
    ``to_float`` itself; likewise for int. NaN becomes None, as there.
    """
    with src.block(f"if {var}.__class__ is float:"), src.block(f"if {var} != {var}:"):
        src.line(f"{var} = None")
    with src.block(f"elif {var}.__class__ is int:"):
        src.line(f"{var} = float({var})")
    with src.block(f"elif {var} is not None:"):
        src.line(f"{var} = {src.bind(to_float, 'to_float')}({var}, {column!r})")


def emit_to_category(src: Source, var: str) -> None:
    """Source for ``var = to_category(var)`` (codegen.py), the str case inline."""
    with src.block(f"if {var}.__class__ is not str:"):
        src.line(f"{var} = {src.bind(to_category, 'to_category')}({var})")


def numeric_input(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64).fill_nan(None)


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

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        raise NotImplementedError

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        """Write ``x = compile(state)(x)`` as source lines (see codegen.py); ``may_be_none``
        says whether ``x`` can be None here. Returns whether the result can be None.

        This default calls the closure; steps override it with an inline transcription.
        """
        src.line(f"{x} = {src.bind(self.compile(state), 'step')}({x})")
        return True

    def _need_values(self, values: np.ndarray) -> np.ndarray:
        present = finite_values(values)
        if present.size == 0:
            raise InputError(
                f"column {self.column!r}: {self.type} cannot be fitted: no non-null values in "
                "the training data"
            )
        return present


class FillNull(NumericStep):
    type = "fill_null"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        strategy = self.params.get("strategy", "mean")
        if strategy == "constant":
            return {"value": float(self.params["value"])}
        present = self._need_values(values)
        if strategy == "mean":
            return {"value": exact_mean(present)}
        return {"value": float(np.median(present))}

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        return e.fill_null(state["value"])

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        fill = float(state["value"])
        return lambda x: fill if x is None else x

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        if may_be_none:
            with src.block(f"if {x} is None:"):
                src.line(f"{x} = {src.const(float(state['value']))}")
        return False


class Standard(NumericStep):
    """(x - mean) / std with ddof=0; std 0 -> scale 1 (as sklearn StandardScaler)."""

    type = "standard"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        present = self._need_values(values)
        mean = exact_mean(present)
        var = math.fsum(((present - mean) ** 2).tolist()) / len(present)
        scale = math.sqrt(var) if var > 0 else 1.0
        return {
            "mean": mean if self.params.get("with_mean", True) else 0.0,
            "scale": scale if self.params.get("with_std", True) else 1.0,
            "var": var,
        }

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        return (e - state["mean"]) / state["scale"]

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        mean, scale = float(state["mean"]), float(state["scale"])
        return lambda x: None if x is None else (x - mean) / scale

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        mean, scale = src.const(float(state["mean"])), src.const(float(state["scale"]))
        with _unless_none(src, x, may_be_none):
            src.line(f"{x} = ({x} - {mean}) / {scale}")
        return may_be_none


class MinMax(NumericStep):
    """x * scale + min_ as sklearn MinMaxScaler; optional clip to feature_range."""

    type = "minmax"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        present = self._need_values(values)
        lo, hi = (float(v) for v in self.params.get("feature_range", (0.0, 1.0)))
        data_min, data_max = float(present.min()), float(present.max())
        data_range = data_max - data_min
        scale = (hi - lo) / (data_range if data_range != 0 else 1.0)
        return {
            "data_min": data_min,
            "data_max": data_max,
            "scale": scale,
            "min": lo - data_min * scale,
            "clip": [lo, hi] if self.params.get("clip", False) else None,
        }

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        out = e * state["scale"] + state["min"]
        if state["clip"] is not None:
            out = out.clip(state["clip"][0], state["clip"][1])
        return out

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        scale, offset = float(state["scale"]), float(state["min"])
        if state["clip"] is None:
            return lambda x: None if x is None else x * scale + offset
        lo, hi = (float(v) for v in state["clip"])
        return lambda x: None if x is None else _clip(x * scale + offset, lo, hi)

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        scale, offset = src.const(float(state["scale"])), src.const(float(state["min"]))
        with _unless_none(src, x, may_be_none):
            src.line(f"{x} = {x} * {scale} + {offset}")
            if state["clip"] is not None:
                lo, hi = (float(v) for v in state["clip"])
                _emit_clip(src, x, lo, hi)
        return may_be_none


def _clip(x: float, lo: float | None, hi: float | None) -> float:
    if x != x:
        return x
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


@contextmanager
def _unless_none(src: Source, x: str, may_be_none: bool) -> Iterator[None]:
    """Lines emitted inside run only when ``x`` is not None (no test if it never is)."""
    if may_be_none:
        with src.block(f"if {x} is not None:"):
            yield
    else:
        yield


def _emit_clip(src: Source, x: str, lo: Any, hi: Any) -> None:
    """``x = _clip(x, lo, hi)`` for a non-None ``x``, written out."""
    if lo is None and hi is None:
        return
    with src.block(f"if {x} != {x}:"):  # NaN stays NaN
        src.line("pass")
    for bound, op in ((lo, "<"), (hi, ">")):
        if bound is not None:
            with src.block(f"elif {x} {op} {src.const(bound)}:"):
                src.line(f"{x} = {src.const(bound)}")


class Robust(NumericStep):
    """(x - median) / (q_hi - q_lo), percentiles with linear interpolation (RobustScaler)."""

    type = "robust"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        present = self._need_values(values)
        q_lo, q_hi = self.params.get("quantile_range", (25.0, 75.0))
        center = float(np.median(present)) if self.params.get("with_centering", True) else 0.0
        scale = 1.0
        if self.params.get("with_scaling", True):
            lo, hi = np.percentile(present, [q_lo, q_hi])
            scale = float(hi - lo) or 1.0
        return {"center": center, "scale": scale}

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        return (e - state["center"]) / state["scale"]

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        center, scale = float(state["center"]), float(state["scale"])
        return lambda x: None if x is None else (x - center) / scale

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        center, scale = src.const(float(state["center"])), src.const(float(state["scale"]))
        with _unless_none(src, x, may_be_none):
            src.line(f"{x} = ({x} - {center}) / {scale}")
        return may_be_none


class Clip(NumericStep):
    type = "clip"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        quantiles = self.params.get("quantiles")
        if quantiles is None:
            lo, hi = self.params.get("min"), self.params.get("max")
            return {
                "min": None if lo is None else float(lo),
                "max": None if hi is None else float(hi),
            }
        present = self._need_values(values)
        lo, hi = np.quantile(present, list(quantiles))
        return {"min": float(lo), "max": float(hi)}

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        return e.clip(state["min"], state["max"])

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        lo, hi = state["min"], state["max"]
        return lambda x: None if x is None else _clip(x, lo, hi)

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        with _unless_none(src, x, may_be_none):
            _emit_clip(src, x, state["min"], state["max"])
        return may_be_none


class Log1p(NumericStep):
    """log1p(x + shift); an argument <= -1 at transform time gives a missing value."""

    type = "log1p"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        present = finite_values(values)
        low = float(present.min()) if present.size else 0.0
        shift = 0.0
        if low <= -1:
            if self.params.get("on_invalid", "error") == "error":
                raise InputError(
                    f"column {self.column!r}: log1p needs values > -1 but the training data has "
                    f"{low!r}",
                    hint="clip the column first, or set `on_invalid: shift` on the log1p step",
                )
            shift = -low
        return {"shift": shift}

    def expr(self, e: pl.Expr, state: Mapping[str, Any]) -> pl.Expr:
        arg = e + state["shift"] if state["shift"] else e
        return pl.when(arg > -1).then(arg.log1p()).otherwise(pl.when(arg.is_nan()).then(arg))

    def compile(self, state: Mapping[str, Any]) -> NumFn:
        shift = float(state["shift"])
        log1p = math.log1p

        def apply(x: float | None) -> float | None:
            if x is None:
                return None
            arg = x + shift if shift else x
            if arg > -1:
                return log1p(arg)
            return arg if arg != arg else None

        return apply

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        shift = float(state["shift"])
        with _unless_none(src, x, may_be_none):
            if shift:
                src.line(f"{x} = {x} + {src.const(shift)}")
            with src.block(f"if {x} > -1:"):
                src.line(f"{x} = {src.bind(math.log1p, 'log1p')}({x})")
            with src.block(f"elif {x} != {x}:"):  # NaN stays NaN
                src.line("pass")
            with src.block("else:"):
                src.line(f"{x} = None")
        return True


NUMERIC_STEPS: dict[str, type[NumericStep]] = {
    cls.type: cls for cls in (FillNull, Standard, MinMax, Robust, Clip, Log1p)
}


class NumericChain:
    """A column's numeric steps applied in the declared order; output named like the column."""

    kind = "numeric"

    def __init__(self, column: str, steps: list[Mapping[str, Any]]) -> None:
        self.column = column
        self.steps = [
            NUMERIC_STEPS[s["type"]]({k: v for k, v in s.items() if k != "type"}, column)
            for s in steps
        ]

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        series = frame.select(numeric_input(self.column)).to_series()
        states = []
        for step in self.steps:
            values = series.to_numpy().astype(np.float64, copy=False)
            state = step.fit(values)
            states.append({"type": step.type, **state})
            series = pl.select(step.expr(pl.lit(series), state)).to_series()
        return {"steps": states}

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [self.column]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        e = numeric_input(self.column)
        for step, step_state in zip(self.steps, state["steps"], strict=True):
            e = step.expr(e, step_state)
        return [e.alias(self.column)]

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        fns = tuple(
            step.compile(s) for step, s in zip(self.steps, state["steps"], strict=True)
        )
        column = self.column

        def apply(record: Mapping[str, Any]) -> list[Any]:
            x = to_float(record[column], column)
            for fn in fns:
                x = fn(x)
            return [x]

        return apply

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """Write ``compile``'s function inline (see codegen.py); returns the output expressions."""
        x = src.name("x")
        src.line(f"# {self.column!r}: {', '.join(s.type for s in self.steps)}")
        src.line(f"{x} = record[{self.column!r}]")
        emit_to_float(src, x, self.column)
        may_be_none = True
        for step, step_state in zip(self.steps, state["steps"], strict=True):
            may_be_none = step.emit(step_state, src, x, may_be_none)
        return [x]


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

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        raise NotImplementedError


def category_counts(frame: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    """(value, count) of non-null categories, ordered by count desc then value asc."""
    counts = (
        frame.select(category_input(column).alias("v"))
        .drop_nulls()
        .group_by("v")
        .len()
        .rows()
    )
    return sorted(((v, int(n)) for v, n in counts), key=lambda item: (-item[1], item[0]))


def unique_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


class OneHot(Encoder):
    """Fixed vocabulary (count desc, then value) + an always-present `other` column."""

    kind = "categorical"
    type = "onehot"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        counts = category_counts(frame, self.column)
        total = sum(n for _, n in counts)
        min_frequency = self.params.get("min_frequency")
        threshold = 0.0
        if isinstance(min_frequency, float):
            threshold = min_frequency * total
        elif isinstance(min_frequency, int):
            threshold = float(min_frequency)
        vocabulary = [v for v, n in counts if n >= threshold]
        max_categories = self.params.get("max_categories")
        if max_categories is not None:
            vocabulary = vocabulary[: max_categories - 1]
        names = [f"{self.column}__{v}" for v in vocabulary]
        other = unique_name(f"{self.column}__other", set(names))
        return {
            "vocabulary": vocabulary,
            "counts": [n for v, n in counts if v in set(vocabulary)],
            "other_count": total - sum(n for v, n in counts if v in set(vocabulary)),
            "names": [*names, other],
        }

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return list(state["names"])

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        return [category_code(self.column, state["vocabulary"]).alias(self.helper("code"))]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        code = pl.col(self.helper("code"))
        return [(code == i).cast(pl.Float64).alias(name) for i, name in enumerate(state["names"])]

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        index = {v: i for i, v in enumerate(state["vocabulary"])}
        width = len(state["names"])
        other = width - 1
        column = self.column

        def apply(record: Mapping[str, Any]) -> list[Any]:
            out = [0.0] * width
            out[index.get(to_category(record[column]), other)] = 1.0  # type: ignore[arg-type]
            return out

        return apply

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        # category -> its finished output row, the `other` row for anything else
        width = len(state["names"])
        rows = [tuple(1.0 if j == i else 0.0 for j in range(width)) for i in range(width)]
        table = {v: rows[i] for i, v in enumerate(state["vocabulary"])}
        v = src.name("v")
        src.line(f"# {self.column!r}: onehot")
        src.line(f"{v} = record[{self.column!r}]")
        emit_to_category(src, v)
        src.line(f"{v} = {src.bind(table, 'onehot')}.get({v}, {src.bind(rows[-1], 'other')})")
        return [f"*{v}"]


class CategoryLookup(Encoder):
    """An encoder mapping each vocabulary category to one number, unknown and null to a
    fallback; subclasses say which numbers (``table``), the rest is shared."""

    kind = "categorical"

    def table(self, state: Mapping[str, Any]) -> tuple[list[float], Any]:
        """(one value per vocabulary entry, the fallback)."""
        raise NotImplementedError

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [self.column]

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        return [category_code(self.column, state["vocabulary"]).alias(self.helper("code"))]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        values, fallback = self.table(state)
        code = pl.col(self.helper("code"))
        return [lookup(values, fallback, code).alias(self.column)]

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        values, fallback = self.table(state)
        mapping = dict(zip(state["vocabulary"], values, strict=True))
        default = float(fallback)
        column = self.column
        return lambda record: [mapping.get(to_category(record[column]), default)]  # type: ignore[arg-type]

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        values, fallback = self.table(state)
        mapping = dict(zip(state["vocabulary"], values, strict=True))
        v = src.name("v")
        src.line(f"# {self.column!r}: {self.type}")
        src.line(f"{v} = record[{self.column!r}]")
        emit_to_category(src, v)
        src.line(f"{v} = {src.bind(mapping, self.type)}.get({v}, {src.const(float(fallback))})")
        return [v]


class Ordinal(CategoryLookup):
    """Category -> index in the vocabulary; unknown and null -> unknown_value."""

    kind = "categorical"
    type = "ordinal"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        counts = category_counts(frame, self.column)
        values = [v for v, _ in counts]
        if self.params.get("order", "lexical") == "lexical":
            values = sorted(values)
        unknown = int(self.params.get("unknown_value", -1))
        if 0 <= unknown < len(values):
            raise InputError(
                f"column {self.column!r}: ordinal unknown_value {unknown} collides with a "
                f"category index (0..{len(values) - 1}); use a negative number or >= {len(values)}"
            )
        return {"vocabulary": values, "unknown_value": unknown}

    def table(self, state: Mapping[str, Any]) -> tuple[list[float], Any]:
        return [float(i) for i in range(len(state["vocabulary"]))], state["unknown_value"]


class Frequency(CategoryLookup):
    """Category -> its share of the non-null training rows; unknown/null -> unknown_value."""

    kind = "categorical"
    type = "frequency"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        counts = category_counts(frame, self.column)
        total = sum(n for _, n in counts)
        return {
            "vocabulary": [v for v, _ in counts],
            "frequency": [n / total for _, n in counts],
            "unknown_value": float(self.params.get("unknown_value", 0.0)),
        }

    def table(self, state: Mapping[str, Any]) -> tuple[list[float], Any]:
        return state["frequency"], state["unknown_value"]


def target_encoding(
    codes: np.ndarray, y: np.ndarray, n_categories: int, smooth: str | float
) -> tuple[np.ndarray, float]:
    """Per-category encodings and the prior, with sklearn TargetEncoder's formulas.

    ``codes`` are category indices (-1 = unknown/null, not counted). smooth='auto' is the
    empirical-Bayes blend lambda = v*n / (v*n + s2), enc = lambda*mean_c + (1-lambda)*prior
    (v = variance of y, s2 = within-category variance); a number m gives
    (sum_c + m*prior) / (n_c + m). Categories without rows get the prior.
    """
    prior = float(np.mean(y)) if y.size else 0.0
    known = codes >= 0
    c, yk = codes[known], y[known]
    counts = np.bincount(c, minlength=n_categories).astype(np.float64)
    sums = np.bincount(c, weights=yk, minlength=n_categories)
    with np.errstate(divide="ignore", invalid="ignore"):
        if smooth == "auto":
            variance = float(np.var(y)) if y.size else 0.0
            means = sums / counts
            diffs = yk - means[c]
            ssd = np.bincount(c, weights=diffs * diffs, minlength=n_categories)
            lam = variance * counts / (variance * counts + ssd / counts)
            enc = np.where(np.isnan(lam), prior, lam * means + (1 - lam) * prior)
        else:
            m = float(smooth)
            denom = counts + m
            enc = np.where(denom == 0, prior, (sums + m * prior) / np.where(denom == 0, 1, denom))
    return enc, prior


class TargetEnc(CategoryLookup):
    """Smoothed target mean per category; the training rows get cross-fitted values."""

    kind = "categorical"
    type = "target"

    def _codes(self, frame: pl.DataFrame, vocabulary: list[str]) -> np.ndarray:
        return (
            frame.select(
                category_input(self.column).replace_strict(
                    vocabulary, list(range(len(vocabulary))), default=-1, return_dtype=pl.Int64
                )
            )
            .to_series()
            .to_numpy()
        )

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        if target is None:
            raise InputError(f"column {self.column!r}: target encoding needs the target column")
        vocabulary = sorted(v for v, _ in category_counts(frame, self.column))
        enc, prior = target_encoding(
            self._codes(frame, vocabulary), target, len(vocabulary), self.params.get("smooth", "auto")
        )
        return {
            "vocabulary": vocabulary,
            "encoding": [float(x) for x in enc],
            "prior": prior,
            "smooth": self.params.get("smooth", "auto"),
            "cv": int(self.params.get("cv", 5)),
        }

    def cross_fit(self, frame: pl.DataFrame, target: np.ndarray, state: Mapping[str, Any]) -> np.ndarray:
        """Out-of-fold encodings for the training rows: fold = row index mod cv."""
        vocabulary = state["vocabulary"]
        codes = self._codes(frame, vocabulary)
        folds = np.arange(len(codes)) % state["cv"]
        out = np.empty(len(codes), dtype=np.float64)
        for fold in range(state["cv"]):
            test = folds == fold
            enc, prior = target_encoding(
                codes[~test], target[~test], len(vocabulary), state["smooth"]
            )
            test_codes = codes[test]
            out[test] = np.where(test_codes >= 0, enc[np.maximum(test_codes, 0)], prior)
        return out

    def table(self, state: Mapping[str, Any]) -> tuple[list[float], Any]:
        return state["encoding"], state["prior"]


_TWO_PI = 2 * math.pi
_US_PER_DAY = 86_400_000_000
_PERIODS = {"hour": 24, "dow": 7, "month": 12}
_FIRST = {"hour": 0, "dow": 1, "month": 1}  # hour 0..23, ISO weekday 1..7, month 1..12


def cyclical_table(part: str, fn: str) -> list[float]:
    """sin/cos of every possible value, indexed by the raw value (hour, weekday, month).

    angle = 2*pi * (value - first) / period; both paths look values up in this one table, so
    batch and online agree exactly.
    """
    period, first = _PERIODS[part], _FIRST[part]
    func = math.sin if fn == "sin" else math.cos
    table = [0.0] * (first + period)
    for value in range(first, first + period):
        table[value] = func((value - first) * (_TWO_PI / period))
    return table


def parse_timestamp(value: Any, column: str) -> datetime | None:
    """Online input -> datetime (naive or aware) or None; a date is its midnight, naive."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise InputError(f"column {column!r}: expected a timestamp, got {value!r}")


# Zones whose offset is zero at every instant (all links to Etc/UTC or Etc/GMT): a naive value
# names one instant in them, and the UTC wall clock is the local one.
_UTC_ZONES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
     "GMT", "Etc/GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT0", "GMT+0", "GMT-0",
     "Etc/Greenwich", "Greenwich"}
)  # fmt: skip
# Polars (chrono-tz) knows a zone's offset changes up to the end of 2099 only: from 2100-01-01
# UTC on, every zone keeps the offset it has then (no more daylight-saving changes), where
# Python's zoneinfo goes on applying the zone's rules. The online path does as Polars does
# (tests/test_transform_temporal_dst.py checks it against every instant it draws).
_TZ_HORIZON = datetime(2100, 1, 1, tzinfo=UTC)


def to_utc(ts: datetime, column: str, naive_ok: bool, zone: str) -> datetime:
    """The instant an online timestamp names, as an aware datetime in UTC, for a temporal
    column fitted with time zone ``zone``.

    An aware value names ``ts - ts.utcoffset()``: any zone, any offset; for a wall-clock time
    a daylight-saving change repeats or skips, ``fold`` picks the offset (PEP 495). A naive
    value (or a date: its midnight) is read as UTC where ``naive_ok`` (the batch path, which
    converts a naive column to a zone as if it were UTC, does the same); elsewhere it is an
    InputError, as the batch path refuses a naive column for a column fitted with a zone.
    """
    if ts.tzinfo is None or ts.utcoffset() is None:
        if naive_ok:
            return ts.replace(tzinfo=UTC)
        raise InputError(
            f"column {column!r}: {ts.isoformat()} has no UTC offset (a date, or a timestamp "
            f"without one) but the transform was fitted on timestamps in {zone}, so which "
            "instant it means is ambiguous",
            hint="send it with its UTC offset (ISO 8601 '...+01:00' or an aware datetime)",
        )
    return ts.astimezone(UTC)


class Temporal(Encoder):
    """Calendar parts in the column's time zone; ISO weekday Mon=1..Sun=7.

    Cyclical encodings use fixed periods: hour/24, (dow-1)/7, (month-1)/12 of a full turn.
    days_since = (column - reference) in days (fractional).

    For a column with a time zone, batch works on instants (Polars stores UTC and converts to
    the zone for the calendar parts), and so does the online path: each value becomes its UTC
    instant (``to_utc``); the parts are the wall clock of that instant in the column's zone;
    days_since is the difference of the two instants — elapsed time, so 1/24 day less than
    the wall-clock difference across a spring-forward change. A naive online value is read
    as UTC where batch reads a naive column so (the zone is UTC, or the reference column was
    fitted naive: ``input_families``); elsewhere it raises InputError (batch refuses it).

    A column without a time zone works on wall-clock times as given; an aware online value is
    first converted to UTC and its zone dropped.
    """

    kind = "temporal"
    type = "temporal"

    def __init__(
        self,
        column: str,
        params: Mapping[str, Any],
        input_families: Mapping[str, Any] | None = None,
    ) -> None:
        """``input_families``: the state's dtype families per input column (fitted.py), to
        know whether the reference column was fitted naive; None if unknown (a naive
        reference value is then read like a naive column value)."""
        super().__init__(column, params)
        self.input_families = input_families

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        dtype = frame.schema[self.column]
        tz = getattr(dtype, "time_zone", None) if isinstance(dtype, pl.Datetime) else None
        return {
            "features": list(self.params.get("features") or []),
            "reference": self.params.get("reference"),
            "time_zone": tz,
        }

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [f"{self.column}__{f}" for f in state["features"]]

    @staticmethod
    def _part(feature: str) -> str | None:
        if feature in _PERIODS:
            return feature
        if feature == "is_weekend":
            return "dow"
        base = feature.rsplit("_", 1)[0]
        return base if base in _PERIODS else None

    def _parts(self, state: Mapping[str, Any]) -> list[str]:
        return sorted({p for f in state["features"] if (p := self._part(f)) is not None})

    def _local(self, state: Mapping[str, Any], column: str) -> pl.Expr:
        ts = pl.col(column)
        if state["time_zone"] is not None:
            ts = ts.dt.convert_time_zone(state["time_zone"])
        return ts

    def _naive_ok(self, state: Mapping[str, Any]) -> tuple[bool, bool]:
        """Whether a naive online value is taken (for a zoned column: read as UTC), for the
        column and for the reference."""
        if state["time_zone"] is None:
            return True, True
        utc = state["time_zone"] in _UTC_ZONES
        families = (self.input_families or {}).get(state["reference"])
        fitted_naive = families is not None and "datetime-tz" not in families
        return utc, utc or fitted_naive

    def _zone(self, state: Mapping[str, Any]) -> tuple[Any, timedelta | None]:
        """(ZoneInfo of the column's zone or None, the zone's offset from _TZ_HORIZON on or
        None where the UTC wall clock is the local one: no zone, or a zone that is UTC)."""
        from zoneinfo import ZoneInfo

        if state["time_zone"] is None:
            return None, None
        tz = ZoneInfo(state["time_zone"])
        if state["time_zone"] in _UTC_ZONES:
            return tz, None
        return tz, (_TZ_HORIZON - timedelta(microseconds=1)).astimezone(tz).utcoffset()

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        ts = self._local(state, self.column)
        calendar = {"hour": ts.dt.hour(), "dow": ts.dt.weekday(), "month": ts.dt.month()}
        if state["time_zone"] in (None, "UTC"):
            # no zone offsets: hour and weekday by integer arithmetic on the epoch (4x faster);
            # floor division keeps pre-1970 values right; 1970-01-01 was a Thursday (ISO 4)
            epoch = pl.col(self.column).dt.epoch("us")
            calendar["hour"] = (epoch // 3_600_000_000) % 24
            calendar["dow"] = (epoch // _US_PER_DAY + 3) % 7 + 1
        return [calendar[p].cast(pl.UInt32).alias(self.helper(p)) for p in self._parts(state)]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        exprs = []
        for feature, name in zip(state["features"], self.outputs(state), strict=True):
            part = self._part(feature)
            if feature in _PERIODS:
                e = pl.col(self.helper(feature)).cast(pl.Float64)
            elif feature == "is_weekend":
                e = (pl.col(self.helper("dow")) >= 6).cast(pl.Float64)
            elif feature == "days_since":
                delta = self._local(state, self.column) - self._local(state, state["reference"])
                e = delta.dt.total_microseconds().cast(pl.Float64) / float(_US_PER_DAY)
            else:
                table = pl.Series(cyclical_table(part, feature.rsplit("_", 1)[1]), dtype=pl.Float64)  # type: ignore[arg-type]
                e = pl.lit(table).gather(pl.col(self.helper(part)))  # type: ignore[arg-type]
            exprs.append(e.alias(name))
        return exprs

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        column, reference, zone = self.column, state["reference"], state["time_zone"]
        getters = {
            "hour": lambda ts: ts.hour,
            "dow": lambda ts: ts.isoweekday(),
            "month": lambda ts: ts.month,
        }
        plan: list[tuple[str, Any]] = []
        for feature in state["features"]:
            part = self._part(feature)
            if feature in _PERIODS:
                plan.append(("raw", getters[feature]))
            elif feature == "is_weekend":
                plan.append(("weekend", getters["dow"]))
            elif feature == "days_since":
                plan.append(("days", None))
            else:
                table = tuple(cyclical_table(part, feature.rsplit("_", 1)[1]))  # type: ignore[arg-type]
                plan.append(("table", (getters[part], table)))  # type: ignore[index]
        width = len(plan)
        tz, frozen = self._zone(state)
        naive_column, naive_reference = self._naive_ok(state)

        def instant(value: Any, name: str, naive_ok: bool) -> datetime | None:
            """No zone: the wall-clock time (an aware value's in UTC). A zone: the instant, as
            an aware datetime in UTC."""
            ts = parse_timestamp(value, name)
            if ts is None:
                return None
            if zone is None:
                return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)
            return to_utc(ts, name, naive_ok, zone)

        def local(ts: datetime) -> datetime:
            """The wall clock in the zone (as Polars has it from 2100 on: see _TZ_HORIZON)."""
            if frozen is None:
                return ts
            return ts.astimezone(tz) if ts < _TZ_HORIZON else ts + frozen

        calendar = bool(self._parts(state))  # any feature read from the wall clock

        def apply(record: Mapping[str, Any]) -> list[Any]:
            ts = instant(record[column], column, naive_column)
            if ts is None:
                return [None] * width
            wall = local(ts) if calendar else ts
            out: list[Any] = []
            for kind, arg in plan:
                if kind == "table":
                    out.append(arg[1][arg[0](wall)])
                elif kind == "raw":
                    out.append(float(arg(wall)))
                elif kind == "weekend":
                    out.append(1.0 if arg(wall) >= 6 else 0.0)
                else:
                    ref = instant(record[reference], reference, naive_reference)
                    if ref is None:
                        out.append(None)
                    else:
                        delta = ts - ref
                        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
                        out.append(float(micros) / float(_US_PER_DAY))
            return out

        return apply

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """``compile``'s function written out: each calendar part read once, tables bound."""
        zone = state["time_zone"]
        parts = {"hour": "{}.hour", "dow": "{}.isoweekday()", "month": "{}.month"}
        dt, utc = src.bind(datetime, "datetime"), src.bind(UTC, "UTC")
        tz, frozen = self._zone(state)
        naive_column, naive_reference = self._naive_ok(state)

        def parse(var: str, column: str) -> None:
            """``var = parse_timestamp(record[column], column)``, a datetime passed as is."""
            src.line(f"{var} = record[{column!r}]")
            with src.block(f"if {var}.__class__ is not {dt}:"):
                fn = src.bind(parse_timestamp, "parse_timestamp")
                src.line(f"{var} = {fn}({var}, {column!r})")

        def instant(var: str, column: str, naive_ok: bool) -> None:
            """``var`` (a datetime) -> ``instant`` of compile's function."""
            if zone is None:
                with src.block(f"if {var}.tzinfo is not None:"):
                    src.line(f"{var} = {var}.astimezone({utc}).replace(tzinfo=None)")
                return
            # A plain datetime in datetime.UTC (what the server stamps requests with) is its
            # instant already, and so is one in a UTC zone's ZoneInfo (what Polars gives):
            # to_utc would only swap the tzinfo for an equal one, which neither the calendar
            # parts nor a difference of two UTC times can see.
            convert = f"{var}.tzinfo is not {utc}"
            if frozen is None:
                convert = f"({convert} and {var}.tzinfo is not {src.bind(tz, 'zone')})"
            with src.block(f"if {convert} or {var}.__class__ is not {dt}:"):
                fn = src.bind(to_utc, "to_utc")
                src.line(f"{var} = {fn}({var}, {column!r}, {naive_ok!r}, {zone!r})")

        ts, out = src.name("ts"), src.name("t")
        src.line(f"# {self.column!r}: temporal {', '.join(state['features'])}")
        parse(ts, self.column)
        with src.block(f"if {ts} is None:"):
            src.line(f"{out} = {src.bind((None,) * len(state['features']), 'nones')}")
        with src.block("else:"):
            instant(ts, self.column, naive_column)
            wall = ts  # the wall clock the calendar parts are read from (local in compile)
            if frozen is not None and self._parts(state):
                wall = src.name("wall")
                with src.block(f"if {ts} < {src.bind(_TZ_HORIZON, 'tz_horizon')}:"):
                    src.line(f"{wall} = {ts}.astimezone({src.bind(tz, 'zone')})")
                with src.block("else:"):
                    src.line(f"{wall} = {ts} + {src.bind(frozen, 'frozen_offset')}")
            values: dict[str, str] = {}  # calendar part -> local variable

            def part(name: str) -> str:
                if name not in values:
                    values[name] = src.name(name)
                    src.line(f"{values[name]} = {parts[name].format(wall)}")
                return values[name]

            items = []
            for feature in state["features"]:
                if feature in _PERIODS:
                    items.append(f"float({part(feature)})")
                elif feature == "is_weekend":
                    items.append(f"(1.0 if {part('dow')} >= 6 else 0.0)")
                elif feature == "days_since":
                    ref, days = src.name("ref"), src.name("days")
                    parse(ref, state["reference"])
                    with src.block(f"if {ref} is None:"):
                        src.line(f"{days} = None")
                    with src.block("else:"):
                        instant(ref, state["reference"], naive_reference)
                        src.line(f"{ref} = {ts} - {ref}")
                        src.line(
                            f"{days} = float(({ref}.days * 86400 + {ref}.seconds) * 1000000"
                            f" + {ref}.microseconds) / {src.const(float(_US_PER_DAY))}"
                        )
                    items.append(days)
                else:
                    name = self._part(feature)
                    table = tuple(cyclical_table(name, feature.rsplit("_", 1)[1]))  # type: ignore[arg-type]
                    items.append(f"{src.bind(table, 'cyclical')}[{part(name)}]")  # type: ignore[arg-type]
            src.line(f"{out} = ({', '.join(items)}{',' if len(items) == 1 else ''})")
        return [f"*{out}"]


class EmbeddingEnc(Encoder):
    """id -> fixed-dimension vector from a lookup table copied into the artifact."""

    kind = "embedding"
    type = "embedding"

    def table_file(self) -> str:
        return f"embedding__{self.column}.parquet"

    def load_table(self) -> pl.DataFrame:
        from mlpipe_cli.io import read_parquet

        key, vector = self.params["key"], self.params["vector"]
        raw = read_parquet(self.params["table"])
        for name in (key, vector):
            if name not in raw.columns:
                raise InputError(
                    f"embedding table {self.params['table']} for column {self.column!r} has no "
                    f"column {name!r} (has: {', '.join(raw.columns)})"
                )
        dtype = raw.schema[vector]
        if not isinstance(dtype, (pl.Array, pl.List)) or not dtype.inner.is_numeric():
            raise InputError(f"embedding column {vector!r} must be an Array/List of numbers, got {dtype}")
        table = raw.select(pl.col(key).alias("key"), pl.col(vector).cast(pl.List(pl.Float64)).alias("vector"))
        table = table.drop_nulls("key").sort("key")
        if table["key"].is_duplicated().any():
            raise InputError(f"embedding table {self.params['table']}: duplicate ids in {key!r}")
        lengths = table["vector"].list.len().unique().to_list()
        if len(lengths) != 1 or table["vector"].null_count():
            raise InputError(f"embedding table {self.params['table']}: vectors must all have one length")
        dim = int(lengths[0])
        return table.with_columns(pl.col("vector").cast(pl.Array(pl.Float64, dim)))

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        table = self.load_table()
        dim = table.schema["vector"].size  # type: ignore[union-attr]
        matrix = table["vector"].to_numpy()
        if self.params.get("unknown", "zero") == "mean":
            fallback = [math.fsum(matrix[:, d].tolist()) / len(matrix) for d in range(dim)]
        else:
            fallback = [0.0] * dim
        return {
            "file": self.table_file(),
            "dim": dim,
            "rows": table.height,
            "key_dtype": str(table.schema["key"]),
            "unknown": self.params.get("unknown", "zero"),
            "fallback": fallback,
            "_table": table,  # side output: fit_frame pops "_" keys and stores the table as Parquet
        }

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        width = max(2, len(str(state["dim"] - 1)))
        return [f"{self.column}__emb_{d:0{width}d}" for d in range(state["dim"])]

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        """The id's row in the table (UInt32); unknown or missing ids -> the fallback row n."""
        keys = tables[state["file"]]["key"]
        n = len(keys)
        if keys.dtype.is_integer() and n and keys[-1] - keys[0] + 1 == n:
            # dense sorted integer ids: the row is the id minus the first id
            first, last = int(keys[0]), int(keys[-1])
            key = pl.col(self.column).cast(pl.Int64, strict=False)
            row = pl.when(key.is_between(first, last)).then(key - first)
        elif keys.dtype == pl.String:
            row = pl.col(self.column).cast(pl.String).cast(pl.Enum(keys), strict=False).to_physical()
        else:
            row = (
                pl.col(self.column)
                .cast(keys.dtype, strict=False)
                .replace_strict(keys, pl.Series(np.arange(n, dtype=np.int64)), default=None,
                                return_dtype=pl.Int64)
            )
        return [row.cast(pl.UInt32).fill_null(n).alias(self.helper("row"))]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        # one gather per dimension from that dimension's values with the fallback appended as
        # row n: no fill_null pass, no list/array ops
        table: pl.DataFrame = tables[state["file"]]
        idx = pl.col(self.helper("row"))
        matrix = table["vector"].to_numpy()
        return [
            lookup(matrix[:, d].tolist(), state["fallback"][d], idx).alias(name)
            for d, name in enumerate(self.outputs(state))
        ]

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        table: pl.DataFrame = tables[state["file"]]
        lookup = dict(zip(table["key"].to_list(), (list(v) for v in table["vector"].to_list()), strict=True))
        fallback = [float(v) for v in state["fallback"]]
        numeric_key = table.schema["key"].is_integer()
        column = self.column

        def apply(record: Mapping[str, Any]) -> list[Any]:
            value = record[column]
            if numeric_key and isinstance(value, str) and value.lstrip("-").isdigit():
                value = int(value)
            elif not numeric_key and value is not None and not isinstance(value, str):
                value = to_category(value)
            vector = lookup.get(value) if not isinstance(value, (bool, float)) else None
            return list(vector if vector is not None else fallback)

        return apply

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """``compile``'s function written out, with a shortcut for the common exact-int id."""
        table: pl.DataFrame = tables[state["file"]]
        keys, rows = table["key"].to_list(), (tuple(v) for v in table["vector"].to_list())
        lookup = src.bind(dict(zip(keys, rows, strict=True)), "embedding")
        fallback = src.bind(tuple(float(v) for v in state["fallback"]), "fallback")
        numeric_key = table.schema["key"].is_integer()
        v = src.name("v")
        src.line(f"# {self.column!r}: embedding")
        src.line(f"{v} = record[{self.column!r}]")
        if numeric_key:
            with src.block(f"if {v}.__class__ is int:"):
                src.line(f"{v} = {lookup}.get({v}, {fallback})")
            with src.block("else:"):
                with src.block(f"if isinstance({v}, str) and {v}.lstrip('-').isdigit():"):
                    src.line(f"{v} = int({v})")
                self._emit_get(src, v, lookup, fallback)
        else:
            with src.block(f"if {v} is not None and not isinstance({v}, str):"):
                src.line(f"{v} = {src.bind(to_category, 'to_category')}({v})")
            self._emit_get(src, v, lookup, fallback)
        return [f"*{v}"]

    @staticmethod
    def _emit_get(src: Source, v: str, lookup: str, fallback: str) -> None:
        with src.block(f"if isinstance({v}, (bool, float)):"):
            src.line(f"{v} = {fallback}")
        with src.block("else:"):  # vectors are never None (load_table refuses null vectors)
            src.line(f"{v} = {lookup}.get({v}, {fallback})")


class Passthrough(Encoder):
    """The column as Float64 (NaN counts as missing)."""

    kind = "passthrough"
    type = "passthrough"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        return {}

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [self.column]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        return [numeric_input(self.column).alias(self.column)]

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        column = self.column
        return lambda record: [to_float(record[column], column)]

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        x = src.name("x")
        src.line(f"# {self.column!r}: passthrough")
        src.line(f"{x} = record[{self.column!r}]")
        emit_to_float(src, x, self.column)
        return [x]


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

    def compile(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> RecordFn:
        return lambda record: []

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        return []


ENCODERS: dict[str, type[Encoder]] = {
    cls.type: cls
    for cls in (OneHot, Ordinal, Frequency, TargetEnc, Temporal, EmbeddingEnc, Passthrough, Drop)
}


def build(
    column: str,
    steps: list[Mapping[str, Any]],
    input_families: Mapping[str, Any] | None = None,
) -> NumericChain | Encoder:
    """The transformer for a column's step list (validated by the config model).

    ``input_families``: the state's ``input_families`` (what a temporal transformer's online
    path needs to know about its reference column); None when fitting.
    """
    if steps[0]["type"] in NUMERIC_STEPS:
        return NumericChain(column, list(steps))
    if steps[0]["type"] == Temporal.type:
        return Temporal(column, steps[0], input_families)
    return ENCODERS[steps[0]["type"]](column, steps[0])
