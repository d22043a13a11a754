"""Numeric transformers: the chainable steps (fill_null, standard, minmax, robust, clip,
log1p), the chain that applies them to one column, and passthrough."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.errors import DataCheckFailed, InputError
from mlpipe_cli.transforms.base import (
    Encoder,
    NumericStep,
    emit_to_float,
    exact_mean,
    finite_values,
    unless_none,
)
from mlpipe_cli.transforms.codegen import Source

if TYPE_CHECKING:
    import numpy as np


class FillNull(NumericStep):
    type = "fill_null"

    def fit(self, values: np.ndarray) -> dict[str, Any]:
        import numpy as np

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
        import numpy as np

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
        import numpy as np

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


# -- what a numeric column does with null, NaN and ±inf inputs -------------------------------

POLICY_KEYS = ("on_null", "on_nan", "on_inf")
# states written before the policy existed (format 1): nulls and NaN came out missing, ±inf
# flowed through the arithmetic (a clip step clipped it), nothing was refused
LEGACY_POLICY: dict[str, Any] = {"null": "keep", "nan": "null", "inf": "keep", "inf_bounds": None}


def configured_policy(column: str, steps: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The column's policy from its step parameters (each key set on at most one step, as
    the config checks); unset keys get the defaults documented in docs/fit-transform.md:
    nulls are filled when the column has a fill_null step and refused otherwise, NaN is a
    null, ±inf is refused."""
    given = {k: s[k] for s in steps for k in POLICY_KEYS if s.get(k) is not None}
    fills = any(s["type"] == "fill_null" for s in steps)
    return {
        "null": given.get("on_null", "fill" if fills else "error"),
        "nan": given.get("on_nan", "null"),
        "inf": given.get("on_inf", "error"),
    }


class ValuePolicy:
    """A fitted policy (state["policy"]): applied on both paths, counted by report.py."""

    def __init__(self, column: str, state: Mapping[str, Any] | None) -> None:
        policy = LEGACY_POLICY if state is None else state
        self.column = column
        self.null: str = policy["null"]  # fill | keep | error
        self.nan: str = policy["nan"]  # null | error
        self.inf: str = policy["inf"]  # clip | error | keep (legacy states only)
        bounds = policy.get("inf_bounds")
        self.bounds: tuple[float, float] | None = (
            None if bounds is None else (float(bounds[0]), float(bounds[1]))
        )

    def input_expr(self) -> pl.Expr:
        """The column as Float64 with NaN as null and ±inf clipped where the policy says so
        (a refused value is left as is: the run fails on its count, see report.py)."""
        e = pl.col(self.column).cast(pl.Float64).fill_nan(None)
        if self.inf == "clip" and self.bounds is not None:
            lo, hi = self.bounds
            e = pl.when(e.is_infinite()).then(pl.when(e > 0).then(hi).otherwise(lo)).otherwise(e)
        return e

    def nonfinite(self) -> Any:
        """The online path's function for a NaN or ±inf input (called only for those)."""
        column, nan, inf, bounds = self.column, self.nan, self.inf, self.bounds

        def nonfinite(x: float) -> float | None:
            if x != x:
                if nan == "error":
                    raise InputError(
                        f"column {column!r}: NaN is refused (on_nan: error)",
                        hint="send null for a missing value",
                    )
                return None
            if inf == "clip" and bounds is not None:
                return bounds[1] if x > 0 else bounds[0]
            if inf == "error":
                raise InputError(
                    f"column {column!r}: {x!r} is refused (on_inf: error)",
                    hint="send a finite number; `on_inf: clip` maps ±inf to the training range",
                )
            return x

        return nonfinite

    def missing(self) -> Any:
        """The online path's function for a missing output where nothing may be missing."""
        column, fills = self.column, self.null == "fill"

        def missing(value: Any) -> InputError:
            if fills:
                return InputError(
                    f"column {column!r}: {value!r} gives a missing value after fill_null "
                    "(log1p of a value below the training range)",
                    hint="put fill_null after log1p",
                )
            if value is None:
                return InputError(
                    f"column {column!r}: None is missing and nothing fills it (on_null: error)",
                    hint="send a number; or fit with a fill_null step or `on_null: keep`",
                )
            return InputError(
                f"column {column!r}: {value!r} gives a missing value (log1p of a value below "
                "the training range, or NaN) and nothing fills it (on_null: error)",
                hint="fit with a fill_null step or `on_null: keep`",
            )

        return missing

    def emit_input(self, src: Source, x: str) -> None:
        """``x = record[column]`` as a float, NaN and ±inf handled (codegen.py)."""
        src.line(f"{x} = record[{self.column!r}]")
        emit_to_float(src, x, self.column, src.bind(self.nonfinite(), "nonfinite"))

    def emit_output(self, src: Source, x: str, may_be_none: bool) -> None:
        """Refuse a missing output unless the policy keeps missing values."""
        if may_be_none and self.null != "keep":
            with src.block(f"if {x} is None:"):
                src.line(f"raise {src.bind(self.missing(), 'missing')}(record[{self.column!r}])")


def fit_policy(column: str, policy: Mapping[str, Any], raw: pl.Series) -> dict[str, Any]:
    """The fitted policy: check the training values against it (DataCheckFailed, one line
    with what to do) and learn the ±inf clip bounds (the finite training range)."""
    values = raw.cast(pl.Float64)
    # the three counts in one query (a Series method each ran one: ~0.3 ms per column, #19)
    v = pl.col("v")  # the column's own name could read as a regex or a wildcard to pl.col
    nans, infs, nulls = (
        values.to_frame("v")
        .select(v.is_nan().sum(), v.is_infinite().sum().alias("i"), v.null_count().alias("n"))
        .row(0)
    )
    if nans and policy["nan"] == "error":
        raise DataCheckFailed(
            f"column {column!r}: {nans} training values are NaN (first at row "
            f"{_first(values.is_nan())}) and the column refuses NaN (on_nan: error)",
            hint="fix the data, or drop `on_nan: error` to read NaN as a missing value",
        )
    if infs and policy["inf"] == "error":
        raise DataCheckFailed(
            f"column {column!r}: {infs} training values are ±inf (first at row "
            f"{_first(values.is_infinite())}) and nothing handles them",
            hint="fix the data, or set `on_inf: clip` on the column's steps to map ±inf to the "
            "training minimum/maximum",
        )
    missing = nulls + (nans if policy["nan"] == "null" else 0)
    if missing and policy["null"] == "error":
        first = _first(values.is_null() | values.is_nan())
        raise DataCheckFailed(
            f"column {column!r}: {missing} training values are missing ({nulls} null, {nans} "
            f"NaN; first at row {first}) and no step fills them",
            hint="add a fill_null step to the column, or set `on_null: keep` to pass missing "
            "values on to the model",
        )
    fitted = dict(policy)
    fitted["inf_bounds"] = None
    if policy["inf"] == "clip":
        finite = values.filter(values.is_finite())
        if finite.len() == 0:
            raise DataCheckFailed(
                f"column {column!r}: no finite training values to clip ±inf to",
                hint="fix the data",
            )
        fitted["inf_bounds"] = [float(finite.min()), float(finite.max())]  # type: ignore[arg-type]
    return fitted


def _first(mask: pl.Series) -> int:
    return int(mask.fill_null(False).arg_max() or 0)


NUMERIC_STEPS: dict[str, type[NumericStep]] = {
    cls.type: cls for cls in (FillNull, Standard, MinMax, Robust, Clip, Log1p)
}


class NumericChain:
    """A column's numeric steps applied in the declared order; output named like the column.
    Its input goes through the column's ValuePolicy first (null / NaN / ±inf)."""

    kind = "numeric"

    def __init__(self, column: str, steps: list[Mapping[str, Any]]) -> None:
        self.column = column
        self.configured = configured_policy(column, steps)
        self.steps = [
            NUMERIC_STEPS[s["type"]](
                {k: v for k, v in s.items() if k != "type" and k not in POLICY_KEYS}, column
            )
            for s in steps
        ]

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        import numpy as np

        policy = fit_policy(self.column, self.configured, frame[self.column])
        series = frame.select(ValuePolicy(self.column, policy).input_expr()).to_series()
        states = []
        for step in self.steps:
            values = series.to_numpy().astype(np.float64, copy=False)
            state = step.fit(values)
            states.append({"type": step.type, **state})
            series = pl.select(step.expr(pl.lit(series), state)).to_series()
        return {"steps": states, "policy": policy}

    def policy(self, state: Mapping[str, Any]) -> ValuePolicy:
        return ValuePolicy(self.column, state.get("policy"))

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [self.column]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        e = self.policy(state).input_expr()
        for step, step_state in zip(self.steps, state["steps"], strict=True):
            e = step.expr(e, step_state)
        return [e.alias(self.column)]

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """Read the value as a float, then each step inline (codegen.py); returns the output."""
        x = src.name("x")
        policy = self.policy(state)
        src.line(f"# {self.column!r}: {', '.join(s.type for s in self.steps)}")
        policy.emit_input(src, x)
        may_be_none = True
        for step, step_state in zip(self.steps, state["steps"], strict=True):
            may_be_none = step.emit(step_state, src, x, may_be_none)
        policy.emit_output(src, x, may_be_none)
        return [x]


class Passthrough(Encoder):
    """The column as Float64, through the column's ValuePolicy (null / NaN / ±inf)."""

    kind = "passthrough"
    type = "passthrough"

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        configured = configured_policy(self.column, [{"type": self.type, **self.params}])
        return {"policy": fit_policy(self.column, configured, frame[self.column])}

    def policy(self, state: Mapping[str, Any]) -> ValuePolicy:
        return ValuePolicy(self.column, state.get("policy"))

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        return [self.column]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        return [self.policy(state).input_expr().alias(self.column)]

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        x = src.name("x")
        policy = self.policy(state)
        src.line(f"# {self.column!r}: passthrough")
        policy.emit_input(src, x)
        policy.emit_output(src, x, may_be_none=True)
        return [x]
