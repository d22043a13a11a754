"""Apply a transform to a batch and account for every null, NaN and ±inf it met.

Each numeric column's fitted policy (numeric.py ``ValuePolicy``) says what happens to a null,
NaN or ±inf input: filled, kept as a missing output, clipped, or refused. ``transform_frame``
returns the transformed LazyFrame together with a one-row LazyFrame of counts over the same
input (null, NaN and ±inf inputs, missing outputs per numeric column); ``TransformReport``
turns the counts into what was handled and what was refused, and ``check`` raises
DataCheckFailed (exit 1) naming the column and the count when anything was refused.

    run = transform_frame(fitted, lazy)             # nothing computed yet
    report = run.report()                           # one pass over the numeric inputs
    report.check()                                  # DataCheckFailed if a value was refused
    sink_parquet_atomic(run.output, out)            # then write

or, one streaming pass for both (the counts ride along with the write):

    counts, _ = pl.collect_all([run.counts, run.output.sink_parquet(tmp, lazy=True)])
    report = run.report_from(counts)

``apply_with_report(fitted, lazy)`` is the in-memory form: (output DataFrame, report),
checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.errors import DataCheckFailed
from mlpipe_cli.transforms.numeric import ValuePolicy

if TYPE_CHECKING:
    from mlpipe_cli.transforms.fitted import FittedTransform

_COUNTS = ("null", "nan", "inf", "missing_out")


@dataclass(frozen=True)
class ColumnCounts:
    """What one numeric column met in a batch, and what its policy did with it."""

    column: str
    null: int  # null inputs
    nan: int  # NaN inputs
    inf: int  # +inf or -inf inputs
    missing_out: int  # missing (null) outputs, whatever the cause
    policy: Mapping[str, Any] = field(repr=False)

    def handled(self) -> dict[str, int]:
        """Values the policy took care of, by what it did (zero counts left out)."""
        nan_missing = self.nan if self.policy["nan"] == "null" else 0
        done = {
            "nan_read_as_null": nan_missing,
            "nulls_filled": self.null + nan_missing if self.policy["null"] == "fill" else 0,
            "nulls_kept": self.missing_out if self.policy["null"] == "keep" else 0,
            "inf_clipped": self.inf if self.policy["inf"] == "clip" else 0,
            "inf_kept": self.inf if self.policy["inf"] == "keep" else 0,  # format-1 states
        }
        return {k: v for k, v in done.items() if v}

    def problems(self) -> list[str]:
        """One line per kind of value the policy refuses (empty: nothing refused)."""
        c, out = self.column, []
        if self.nan and self.policy["nan"] == "error":
            out.append(
                f"column {c!r}: {self.nan} NaN values, which the column refuses (on_nan: error)"
            )
        if self.inf and self.policy["inf"] == "error":
            out.append(
                f"column {c!r}: {self.inf} ±inf values and nothing handles them "
                "(fit with `on_inf: clip` to map them to the training range)"
            )
        if self.missing_out and self.policy["null"] == "error":
            out.append(
                f"column {c!r}: {self.missing_out} values would come out missing ({self.null} "
                f"null, {self.nan} NaN inputs) and no step fills them (fit with a fill_null "
                "step, or `on_null: keep` to pass missing values on)"
            )
        elif self.missing_out and self.policy["null"] == "fill":
            out.append(
                f"column {c!r}: {self.missing_out} values come out missing after fill_null "
                "(log1p of a value below the training range; put fill_null after log1p)"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "null": self.null, "nan": self.nan, "inf": self.inf,
                "missing_out": self.missing_out, "handled": self.handled(),
                "policy": {k: self.policy[k] for k in ("null", "nan", "inf")}}  # fmt: skip


@dataclass(frozen=True)
class TransformReport:
    """Counts for one batch through one transform version."""

    version: str
    rows: int
    columns: list[ColumnCounts]

    def handled(self) -> dict[str, dict[str, int]]:
        """column -> {what was done: count}, for columns where anything was done."""
        return {c.column: h for c in self.columns if (h := c.handled())}

    def problems(self) -> list[str]:
        return [p for c in self.columns for p in c.problems()]

    def check(self) -> None:
        """Raise DataCheckFailed (exit 1) if the policy refused any value of the batch."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataCheckFailed(
                f"transform {self.version}: {problems[0]}{more}", report=self.to_dict()
            )

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rows": self.rows, "problems": self.problems(),
                "columns": [c.to_dict() for c in self.columns]}  # fmt: skip


@dataclass(frozen=True)
class TransformRun:
    """A batch through a transform, not yet computed: the output and the counts."""

    fitted: FittedTransform
    output: pl.LazyFrame
    counts: pl.LazyFrame

    def report_from(self, counts: pl.DataFrame) -> TransformReport:
        """The report for ``counts`` (the collected ``counts`` frame)."""
        row = counts.row(0, named=True)
        columns = []
        for transformer, state in self.fitted.numeric_columns():
            policy = transformer.policy(state)
            name = transformer.column
            null, nan, inf, missing_out = (int(row[_count_name(name, k)]) for k in _COUNTS)
            columns.append(ColumnCounts(
                name, null, nan, inf, missing_out,
                policy=_policy_dict(policy),
            ))  # fmt: skip
        return TransformReport(self.fitted.version, int(row["rows"]), columns)

    def report(self) -> TransformReport:
        """Compute the counts alone (a pass reading only the numeric input columns)."""
        return self.report_from(self.counts.collect())


def _count_name(column: str, kind: str) -> str:
    return f"__mlpipe__count__{kind}__{column}"


def _policy_dict(policy: ValuePolicy) -> dict[str, Any]:
    return {"null": policy.null, "nan": policy.nan, "inf": policy.inf}


def count_exprs(fitted: FittedTransform) -> list[pl.Expr]:
    """Aggregations over the raw input: rows, and per numeric column its null, NaN and ±inf
    inputs and missing outputs (the column's own batch expression, recomputed)."""
    exprs = [pl.len().alias("rows")]
    for transformer, state in fitted.numeric_columns():
        name = transformer.column
        raw = pl.col(name).cast(pl.Float64)
        (out,) = transformer.exprs(state, fitted.tables)
        exprs += [
            raw.is_null().sum().alias(_count_name(name, "null")),
            raw.is_nan().sum().alias(_count_name(name, "nan")),
            raw.is_infinite().sum().alias(_count_name(name, "inf")),
            out.is_null().sum().alias(_count_name(name, "missing_out")),
        ]
    return exprs


def transform_frame(fitted: FittedTransform, lazy: pl.LazyFrame) -> TransformRun:
    """The transformed batch and its counts, as lazy frames over the same input (the input
    schema is checked first: ArtifactError, exit 3)."""
    output = fitted.transform_batch(lazy)  # checks the schema
    return TransformRun(fitted, output, lazy.select(count_exprs(fitted)))


def apply_with_report(
    fitted: FittedTransform, lazy: pl.LazyFrame | pl.DataFrame
) -> tuple[pl.DataFrame, TransformReport]:
    """Transform in memory in one pass with the counts; DataCheckFailed if a value was
    refused."""
    run = transform_frame(fitted, lazy.lazy())
    counts, output = pl.collect_all([run.counts, run.output])
    report = run.report_from(counts)
    report.check()
    return output, report


__all__ = [
    "ColumnCounts",
    "TransformReport",
    "TransformRun",
    "apply_with_report",
    "count_exprs",
    "transform_frame",
]
