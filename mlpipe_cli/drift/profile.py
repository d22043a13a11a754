"""Reference profiles: the one profile format shared by validate, fit and psi-report.

A profile is a JSON-serialisable dict describing the distribution of each column of a frame:

* numeric columns (ints, floats, decimals; cast to float64): row count, null count (nulls and
  NaN both count as missing), mean, std (ddof=1), min, max, the interior bin ``edges``, the
  exact proportion of rows per bin, the ``__missing__`` proportion and a quantile sketch of
  ``sketch_size + 1`` quantiles (probabilities k/sketch_size, numpy "linear" interpolation)
  used for KS. The edges come from one of two ``binning`` rules:

  - ``"values"`` — the column has at most ``bins`` distinct values (a 0/1 flag, a one-hot
    output, a small integer code): one bin per distinct value, the edges halfway between
    consecutive values (so each bin holds exactly one reference value, listed in ``values``).
    Deciles would put a 5%-ones flag into a single bin and make PSI blind to it.
  - ``"quantiles"`` — the interior decile edges (``bins-1`` edges at quantiles i/bins),
    de-duplicated; where several deciles fall on one value (an atom: a zero-inflated feature)
    that value gets a bin of its own, ``[a, nextafter(a))``, so its share is compared on its
    own instead of being lumped with the values above it.
* categorical columns (string, boolean, categorical, enum): category counts and proportions
  (top ``max_categories`` by count, ties by value), the mass of the remaining categories
  (``__other__``) and the ``__missing__`` proportion.
* every other dtype is listed under ``unsupported`` (column → dtype) and otherwise ignored.

Bins are half-open ``[lower, upper)``; the first bin is ``(-inf, e1)`` and the last
``[e_last, +inf]``, so values outside the reference range land in the edge bins. All
proportions are of *all* rows (missing included), so bins + ``__missing__`` sum to 1.

Determinism: every statistic is computed with numpy float64 on the *sorted* non-missing
values of the column, so the result depends only on the multiset of values — not on row
order, chunking or ``POLARS_MAX_THREADS``. The frame is read in a few passes (a row count,
then groups of numeric columns sized to a memory budget, then one pass for the categorical
counts), each a projection of the lazy query.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.documents import DriftProfile, check
from mlpipe_cli.errors import InputError
from mlpipe_cli.io import register_input

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

SKETCH_SIZE = 1000
MISSING = "__missing__"
OTHER = "__other__"
# Bytes of float64 column data materialised at once while profiling numeric columns.
MEMORY_BUDGET = int(os.environ.get("MLPIPE_PROFILE_MEMORY_BUDGET", str(1 << 30)))


def column_kind(dtype: pl.DataType) -> str | None:
    """'numeric', 'categorical' or None (unsupported) for a Polars dtype."""
    import polars as pl

    if dtype.is_numeric():
        return "numeric"
    if dtype in (pl.String, pl.Boolean, pl.Categorical) or isinstance(
        dtype, pl.Categorical | pl.Enum
    ):
        return "categorical"
    return None


def categorical_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column as strings: booleans become 'true'/'false', categoricals their labels."""
    import polars as pl

    col = pl.col(name)
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name)
    return col.cast(pl.String).alias(name)


def quantiles_of_sorted(values: np.ndarray, probs: np.ndarray) -> list[float]:
    """numpy 'linear' quantiles of an already sorted float64 array (deterministic)."""
    import numpy as np

    n = len(values)
    if n == 0:
        return []
    pos = probs * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    a = values[lo]
    b = values[hi]
    # a + (b - a) * frac, but exact when a == b (avoids inf - inf = nan for infinite atoms).
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(a == b, a, a + (b - a) * frac)
    return [_clean(v) for v in out.tolist()]


def _clean(value: float) -> float:
    # -0.0 → 0.0 so that JSON does not depend on which zero a sort put first.
    return value + 0.0


def _json_float(value: float) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return _clean(float(value))


def _json_floats(values: list[float]) -> list[float | str | None]:
    """``[_json_float(v) for v in values]`` for the cleaned floats of quantiles_of_sorted: all
    finite (the usual case) they are already what it returns (~10 ms of a small fit, #19)."""
    if all(map(math.isfinite, values)):
        return list(values)
    return [_json_float(v) for v in values]


def _num(value: Any) -> float:
    """Inverse of _json_float for edges/quantiles read back from JSON (None → NaN)."""
    if value is None:  # a NaN quantile (-inf and +inf interpolated) is written as null
        return math.nan
    if isinstance(value, str):
        return float(value)
    return float(value)


def numeric_profile(
    sorted_valid: np.ndarray, rows: int, nan_count: int, *, bins: int, dtype: str
) -> dict[str, Any]:
    """Profile of one numeric column from its sorted non-missing values."""
    import numpy as np

    n = len(sorted_valid)
    null_count = rows - n
    entry: dict[str, Any] = {
        "kind": "numeric",
        "dtype": dtype,
        "count": rows,
        "null_count": null_count,
        "nan_count": nan_count,
        "null_rate": (null_count / rows) if rows else 0.0,
        "valid_count": n,
    }
    if n == 0:
        entry.update(
            mean=None,
            std=None,
            min=None,
            max=None,
            binning="quantiles",
            edges=[],
            proportions=[0.0],
            quantiles=[],
        )
        entry["missing_proportion"] = 1.0 if rows else 0.0
        return entry
    finite = sorted_valid[np.isfinite(sorted_valid)]
    if len(finite):
        total = float(np.sum(finite))
        mean = total / len(finite)
        std = (
            math.sqrt(float(np.sum((finite - mean) ** 2)) / (len(finite) - 1))
            if len(finite) > 1
            else 0.0
        )
    else:
        mean, std = math.nan, math.nan
    by_value = value_bins(sorted_valid, limit=bins)
    if by_value is not None:
        binning = "values"
        distinct, edges = by_value
        entry["values"] = [_json_float(v) for v in distinct]
    else:
        binning = "quantiles"
        edges = quantile_edges(sorted_valid, bins)
    counts = bin_counts_sorted(sorted_valid, edges)
    entry.update(
        mean=_json_float(mean),
        std=_json_float(std),
        min=_json_float(float(sorted_valid[0])),
        max=_json_float(float(sorted_valid[-1])),
        binning=binning,
        edges=[_json_float(e) for e in edges],
        proportions=[c / rows for c in counts],
        missing_proportion=null_count / rows,
        quantiles=_json_floats(
            quantiles_of_sorted(
                sorted_valid, np.arange(SKETCH_SIZE + 1, dtype=np.float64) / SKETCH_SIZE
            )
        ),
    )
    return entry


# Values this close count as one value when binning by value (the skew check's tolerance):
# the same weekday's cosine computed by two code paths may differ in the last ulp, and such
# noise must not split one value into two bins that then trade mass.
VALUE_TOLERANCE = 1e-9
VALUE_BLOCK = 1 << 16


def value_bins(sorted_valid: np.ndarray, *, limit: int) -> tuple[list[float], list[float]] | None:
    """(values, edges) for one bin per distinct value, or None when there are more than
    ``limit`` distinct values (values within VALUE_TOLERANCE·max(1, |v|) are one value).

    Bin i = [edge_{i-1}, edge_i) holds exactly the reference's ``values[i]``; the edges lie
    halfway between consecutive values, so a current value between two reference values
    counts toward the nearer one (ties toward the upper). Where the halfway point does not
    fall strictly above the lower value (adjacent floats, infinities), the upper value itself
    is the edge — still one value per bin.
    """
    import numpy as np

    n = len(sorted_valid)
    if n == 0:
        return [], []
    # In blocks, so a continuous column is given up on after one block of 65,536 values
    # instead of costing full-length temporaries.
    starts: list[int] = []  # index of each value's first occurrence after the first value
    for begin in range(1, n, VALUE_BLOCK):
        end = min(begin + VALUE_BLOCK, n)
        lower = sorted_valid[begin - 1 : end - 1]
        upper = sorted_valid[begin:end]
        with np.errstate(invalid="ignore"):  # inf - inf = nan: the same (infinite) value
            tolerance = np.where(
                np.isinf(upper), 0.0, VALUE_TOLERANCE * np.maximum(1.0, np.abs(upper))
            )
            new = (upper - lower) > tolerance  # -0.0 == 0.0: one value
        starts += (np.flatnonzero(new) + begin).tolist()
        if len(starts) + 1 > limit:
            return None
    values = [_clean(float(sorted_valid[i])) for i in [0, *starts]]
    edges = []
    for start in starts:
        lo, hi = float(sorted_valid[start - 1]), float(sorted_valid[start])
        mid = lo / 2 + hi / 2  # no overflow near ±max
        edges.append(_clean(mid if lo < mid <= hi else hi))
    return values, edges


def quantile_edges(sorted_valid: np.ndarray, bins: int) -> list[float]:
    """De-duplicated decile edges, plus nextafter(a) after each atom a that holds several
    deciles, when values lie between a and the next edge (else [a, next) is {a} already)."""
    import numpy as np

    probs = np.arange(1, bins, dtype=np.float64) / bins
    raw = [e for e in quantiles_of_sorted(sorted_valid, probs) if not math.isnan(e)]
    edges = sorted(set(raw))
    if len(edges) == len(raw):
        return edges
    out: list[float] = []
    for i, atom in enumerate(edges):
        out.append(atom)
        if raw.count(atom) < 2 or math.isinf(atom):
            continue
        after = float(np.nextafter(atom, math.inf))
        upper = edges[i + 1] if i + 1 < len(edges) else math.inf
        if after < upper:
            inside = np.searchsorted(sorted_valid, [after, upper], side="left")
            if inside[1] > inside[0]:
                out.append(_clean(after))
    return out


def bin_counts_sorted(sorted_valid: np.ndarray, edges: Sequence[float]) -> list[int]:
    """Counts per half-open bin [e_{i-1}, e_i) with open-ended first and last bins."""
    import numpy as np

    cuts = np.searchsorted(sorted_valid, np.asarray(edges, dtype=np.float64), side="left")
    bounds = [0, *cuts.tolist(), len(sorted_valid)]
    return [int(bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]


def build_profile(
    frame: pl.LazyFrame | pl.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    bins: int = 10,
    max_categories: int = 1000,
) -> dict:
    """Profile ``columns`` (default: all) of a frame; see the module docstring for the format.

    Raises InputError when a named column does not exist or ``bins`` < 2.
    """
    import numpy as np
    import polars as pl

    if bins < 2:
        raise InputError(f"bins must be at least 2, got {bins}")
    if max_categories < 1:
        raise InputError(f"max_categories must be at least 1, got {max_categories}")
    lf = frame.lazy()
    try:
        schema = lf.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot profile the frame: {str(exc).splitlines()[0]}") from None
    names = list(schema.names()) if columns is None else list(columns)
    missing = [c for c in names if c not in schema]
    if missing:
        raise InputError(f"cannot profile: column(s) {', '.join(missing)} not in the data")

    numeric = [c for c in names if column_kind(schema[c]) == "numeric"]
    categorical = [c for c in names if column_kind(schema[c]) == "categorical"]
    unsupported = {c: str(schema[c]) for c in names if column_kind(schema[c]) is None}

    try:
        rows = int(lf.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot profile the frame: {str(exc).splitlines()[0]}") from None
    out_columns: dict[str, Any] = {}

    group = max(1, MEMORY_BUDGET // max(1, rows * 8))
    for start in range(0, len(numeric), group):
        chunk = numeric[start : start + group]
        try:
            data = lf.select([pl.col(c).cast(pl.Float64) for c in chunk]).collect()
        except pl.exceptions.PolarsError as exc:
            raise InputError(
                f"cannot profile {', '.join(chunk)}: {str(exc).splitlines()[0]}"
            ) from None
        for c in chunk:
            series = data.get_column(c)
            values = series.to_numpy()  # nulls → NaN
            missing_mask = np.isnan(values)
            nan_count = int(missing_mask.sum()) - series.null_count()
            values = np.sort(values[~missing_mask])
            out_columns[c] = numeric_profile(
                values, rows, nan_count, bins=bins, dtype=str(schema[c])
            )
        del data

    if categorical:
        queries = [
            lf.select(categorical_expr(c, schema[c]).alias("value"))
            .group_by("value")
            .agg(pl.len().alias("count"))
            for c in categorical
        ]
        try:
            results = pl.collect_all(queries)
        except pl.exceptions.PolarsError as exc:
            raise InputError(
                f"cannot profile {', '.join(categorical)}: {str(exc).splitlines()[0]}"
            ) from None
        for c, counts in zip(categorical, results, strict=True):
            out_columns[c] = _categorical_profile(
                counts, rows, max_categories=max_categories, dtype=str(schema[c])
            )

    return {
        "format_version": DriftProfile.FORMAT_VERSION,
        "kind": DriftProfile.KIND,
        "rows": rows,
        "bins": bins,
        "sketch_size": SKETCH_SIZE,
        "max_categories": max_categories,
        "column_order": [c for c in names if c not in unsupported],
        "columns": out_columns,
        "unsupported": unsupported,
    }


def _categorical_profile(
    counts: pl.DataFrame, rows: int, *, max_categories: int, dtype: str
) -> dict[str, Any]:
    import polars as pl

    null_count = int(counts.filter(pl.col("value").is_null()).get_column("count").sum() or 0)
    present = counts.filter(pl.col("value").is_not_null()).sort(
        ["count", "value"], descending=[True, False]
    )
    top = present.head(max_categories)
    values = top.get_column("value").to_list()
    value_counts = [int(v) for v in top.get_column("count").to_list()]
    other_count = int(present.get_column("count").sum() or 0) - sum(value_counts)
    return {
        "kind": "categorical",
        "dtype": dtype,
        "count": rows,
        "null_count": null_count,
        "null_rate": (null_count / rows) if rows else 0.0,
        "valid_count": rows - null_count,
        "n_categories": present.height,
        "values": values,
        "counts": value_counts,
        "proportions": [c / rows for c in value_counts],
        "other_count": other_count,
        "other_proportion": (other_count / rows) if rows else 0.0,
        "missing_proportion": (null_count / rows) if rows else 0.0,
    }


def dumps_profile(profile: dict) -> str:
    """Canonical JSON text of a profile (sorted keys, no NaN)."""
    from mlpipe_cli.jsontext import dumps_sorted  # json.dumps' text, without its slow path

    return dumps_sorted(profile, indent=1) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via temp file + fsync + rename (never a partial file)."""
    from mlpipe_cli.io import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def write_profile(profile: dict, path: Path) -> None:
    """Write a profile as canonical JSON (sorted keys), atomically."""
    atomic_write_text(Path(path), dumps_profile(profile))


def read_profile(path: Path) -> dict:
    """Read and sanity-check a profile JSON file (InputError when it is not one)."""
    path = Path(path)
    register_input(path)  # the same-path guard: no output of this run may be this profile
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"profile file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read profile {path}: {exc}") from None
    check_profile(doc, source=str(path))
    return doc


def check_profile(doc: Any, *, source: str = "profile") -> None:
    if not isinstance(doc, dict) or doc.get("kind") != DriftProfile.KIND:
        raise InputError(f"{source} is not an mlpipe profile (kind != {DriftProfile.KIND!r})")
    check(DriftProfile, doc, source, invalid=InputError)  # format_version first, then fields
