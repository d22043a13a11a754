"""Categorical encoders: onehot, ordinal, frequency and target encoding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.base import (
    Encoder,
    category_code,
    category_input,
    emit_to_category,
    lookup,
)
from mlpipe_cli.transforms.codegen import Source

if TYPE_CHECKING:
    import numpy as np


def category_counts(frame: pl.DataFrame, column: str) -> list[tuple[str, int]]:
    """(value, count) of non-null categories, ordered by count desc then value asc."""
    counts = frame.select(category_input(column).alias("v")).drop_nulls().group_by("v").len().rows()
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
    import numpy as np

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
            self._codes(frame, vocabulary),
            target,
            len(vocabulary),
            self.params.get("smooth", "auto"),
        )
        return {
            "vocabulary": vocabulary,
            "encoding": [float(x) for x in enc],
            "prior": prior,
            "smooth": self.params.get("smooth", "auto"),
            "cv": int(self.params.get("cv", 5)),
        }

    def cross_fit(
        self, frame: pl.DataFrame, target: np.ndarray, state: Mapping[str, Any]
    ) -> np.ndarray:
        """Out-of-fold encodings for the training rows: fold = row index mod cv."""
        import numpy as np

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
