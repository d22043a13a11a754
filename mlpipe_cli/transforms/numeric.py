"""Numeric transformers: the chainable steps (fill_null, standard, minmax, robust, clip,
log1p), the chain that applies them to one column, and passthrough."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.base import (
    Encoder,
    NumericStep,
    emit_to_float,
    exact_mean,
    finite_values,
    numeric_input,
    unless_none,
)
from mlpipe_cli.transforms.codegen import Source


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

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        mean, scale = src.const(float(state["mean"])), src.const(float(state["scale"]))
        with unless_none(src, x, may_be_none):
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

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        scale, offset = src.const(float(state["scale"])), src.const(float(state["min"]))
        with unless_none(src, x, may_be_none):
            src.line(f"{x} = {x} * {scale} + {offset}")
            if state["clip"] is not None:
                lo, hi = (float(v) for v in state["clip"])
                _emit_clip(src, x, lo, hi)
        return may_be_none


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

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        center, scale = src.const(float(state["center"])), src.const(float(state["scale"]))
        with unless_none(src, x, may_be_none):
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

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        with unless_none(src, x, may_be_none):
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

    def emit(self, state: Mapping[str, Any], src: Source, x: str, may_be_none: bool) -> bool:
        shift = float(state["shift"])
        with unless_none(src, x, may_be_none):
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

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """Read the value as a float, then each step inline (codegen.py); returns the output."""
        x = src.name("x")
        src.line(f"# {self.column!r}: {', '.join(s.type for s in self.steps)}")
        src.line(f"{x} = record[{self.column!r}]")
        emit_to_float(src, x, self.column)
        may_be_none = True
        for step, step_state in zip(self.steps, state["steps"], strict=True):
            may_be_none = step.emit(step_state, src, x, may_be_none)
        return [x]


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

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        x = src.name("x")
        src.line(f"# {self.column!r}: passthrough")
        src.line(f"{x} = record[{self.column!r}]")
        emit_to_float(src, x, self.column)
        return [x]
