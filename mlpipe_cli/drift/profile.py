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

import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
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


def profiled_columns(
    schema: pl.Schema, columns: Sequence[str] | None
) -> tuple[list[str], list[str], list[str], dict[str, str]]:
    """(names, numeric, categorical, unsupported name -> dtype) of the columns to profile
    (every column by default); InputError for a column the data does not have. Both
    engines'."""
    names = list(schema.names()) if columns is None else list(columns)
    missing = [c for c in names if c not in schema]
    if missing:
        raise InputError(f"cannot profile: column(s) {', '.join(missing)} not in the data")
    kinds = {c: column_kind(schema[c]) for c in names}
    numeric = [c for c in names if kinds[c] == "numeric"]
    categorical = [c for c in names if kinds[c] == "categorical"]
    return names, numeric, categorical, {c: str(schema[c]) for c in names if kinds[c] is None}


def categorical_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column as strings: booleans become 'true'/'false', categoricals their labels."""
    import polars as pl

    col = pl.col(name)
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name)
    return col.cast(pl.String).alias(name)


def quantiles_of_sorted(values: np.ndarray, probs: np.ndarray) -> list[float]:
    """numpy 'linear' quantiles of an already sorted float64 array (deterministic)."""
    n = len(values)
    if n == 0:
        return []
    lo, hi, frac = quantile_ranks(n, probs)
    return interpolate(values[lo], values[hi], frac)


def quantile_ranks(n: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 0-based ranks (lower, upper) and the fraction between them of each quantile of
    ``n`` sorted values: numpy's "linear" rule. Shared with the Spark engine, which fetches
    the values at these ranks from a distributed sort."""
    import numpy as np

    pos = probs * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, pos - lo


def interpolate(a: np.ndarray, b: np.ndarray, frac: np.ndarray) -> list[float]:
    import numpy as np

    # a + (b - a) * frac, but exact when a == b (avoids inf - inf = nan for infinite atoms).
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(a == b, a, a + (b - a) * frac)
        # _clean for the whole array at once: the same IEEE addition (-0.0 + 0.0 = 0.0),
        # without a Python call per quantile (~5 ms of a fit's profile, #19)
        return (out + 0.0).tolist()


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


def _json_floats(values: Sequence[float]) -> list[float | str | None]:
    """``[_json_float(v) for v in values]``, in one pass for the usual quantiles: finite,
    non-zero floats are already what it returns (no -0.0 to clean); ~10 ms of a fit, #19.
    With zeros among them (one-hot outputs, clipped columns) ``_json_float`` of a finite
    float is ``v + 0.0``, added in one pass as well (~5 ms more of a fit)."""
    values = list(values)
    if set(map(type, values)) == {float} and all(map(math.isfinite, values)):
        if 0.0 not in values:
            return list[float | str | None](values)
        return list[float | str | None](map(float.__add__, values, itertools.repeat(0.0)))
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
    if n == 0:
        return numeric_entry(rows, 0, nan_count, dtype=dtype)
    finite = sorted_valid[np.isfinite(sorted_valid)]
    if len(finite):
        # values near ±1.8e308 overflow the sum or the squares: then the mean or std is
        # ±inf (or NaN → null), as the Spark engine computes it too; not a warning
        with np.errstate(over="ignore", invalid="ignore"):
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
    distinct: list[float] | None = None
    if by_value is not None:
        distinct, edges = by_value
    else:
        edges = quantile_edges(sorted_valid, bins)
    return numeric_entry(
        rows,
        n,
        nan_count,
        dtype=dtype,
        mean=mean,
        std=std,
        low=float(sorted_valid[0]),
        high=float(sorted_valid[-1]),
        distinct=distinct,
        edges=edges,
        counts=bin_counts_sorted(sorted_valid, edges),
        quantiles=quantiles_of_sorted(sorted_valid, sketch_probs()),
    )


def sketch_probs() -> np.ndarray:
    """The probabilities of the KS quantiles a profile stores: k / SKETCH_SIZE."""
    import numpy as np

    return np.arange(SKETCH_SIZE + 1, dtype=np.float64) / SKETCH_SIZE


def numeric_entry(
    rows: int,
    valid: int,
    nan_count: int,
    *,
    dtype: str,
    mean: float = math.nan,
    std: float = math.nan,
    low: float = math.nan,
    high: float = math.nan,
    distinct: list[float] | None = None,
    edges: Sequence[float] = (),
    counts: Sequence[int] = (),
    quantiles: Sequence[float] = (),
) -> dict[str, Any]:
    """The profile entry of a numeric column from its statistics (both engines' last step):
    ``valid`` non-missing values of ``rows``, ``distinct`` set when binned by value."""
    null_count = rows - valid
    entry: dict[str, Any] = {
        "kind": "numeric",
        "dtype": dtype,
        "count": rows,
        "null_count": null_count,
        "nan_count": nan_count,
        "null_rate": (null_count / rows) if rows else 0.0,
        "valid_count": valid,
    }
    if valid == 0:
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
    if distinct is not None:
        entry["values"] = [_json_float(v) for v in distinct]
    entry.update(
        mean=_json_float(mean),
        std=_json_float(std),
        min=_json_float(low),
        max=_json_float(high),
        binning="values" if distinct is not None else "quantiles",
        edges=[_json_float(e) for e in edges],
        proportions=[c / rows for c in counts],
        missing_proportion=null_count / rows,
        quantiles=_json_floats(quantiles),
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
        new = new_values(sorted_valid[begin - 1 : end - 1], sorted_valid[begin:end])
        starts += (np.flatnonzero(new) + begin).tolist()
        if len(starts) + 1 > limit:
            return None
    return value_bins_from(
        float(sorted_valid[0]),
        [(float(sorted_valid[i - 1]), float(sorted_valid[i])) for i in starts],
    )


def new_values(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """True where ``upper`` (the next sorted value after ``lower``) starts a new value."""
    import numpy as np

    with np.errstate(invalid="ignore"):  # inf - inf = nan: the same (infinite) value
        tolerance = np.where(np.isinf(upper), 0.0, VALUE_TOLERANCE * np.maximum(1.0, np.abs(upper)))
        return (upper - lower) > tolerance  # -0.0 == 0.0: one value


def value_bins_from(
    first: float, steps: Sequence[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """(values, edges) from the smallest value and each (previous, new) pair of sorted values
    where a new value starts (``new_values``); the Spark engine finds the pairs per task."""
    values = [_clean(first), *(_clean(hi) for _, hi in steps)]
    edges = []
    for lo, hi in steps:
        mid = lo / 2 + hi / 2  # no overflow near ±max
        edges.append(_clean(mid if lo < mid <= hi else hi))
    return values, edges


def quantile_edges(sorted_valid: np.ndarray, bins: int) -> list[float]:
    """De-duplicated decile edges, plus nextafter(a) after each atom a that holds several
    deciles, when values lie between a and the next edge (else [a, next) is {a} already)."""
    import numpy as np

    probs = np.arange(1, bins, dtype=np.float64) / bins
    raw = quantiles_of_sorted(sorted_valid, probs)
    return quantile_edges_from(
        raw, lambda points: np.searchsorted(sorted_valid, points, side="left").tolist()
    )


def edge_probs(bins: int) -> np.ndarray:
    """The probabilities of the interior decile edges: i / bins."""
    import numpy as np

    return np.arange(1, bins, dtype=np.float64) / bins


def quantile_edges_from(
    quantiles: Sequence[float], count_below: Callable[[list[float]], list[int]]
) -> list[float]:
    """``quantile_edges`` from the raw decile values and a counter of the values ``< x``
    (a searchsorted on one machine, a sum over sorted partitions on Spark)."""
    raw = [e for e in quantiles if not math.isnan(e)]
    edges = sorted(set(raw))
    if len(edges) == len(raw):
        return edges
    out: list[float] = []
    for i, atom in enumerate(edges):
        out.append(atom)
        if raw.count(atom) < 2 or math.isinf(atom):
            continue
        after = atom_successor(atom)
        upper = edges[i + 1] if i + 1 < len(edges) else math.inf
        if after < upper:
            inside = count_below([after, upper])
            if inside[1] > inside[0]:
                out.append(_clean(after))
    return out


def atom_successor(atom: float) -> float:
    """The value just above an atom: where its own bin ends."""
    import numpy as np

    return float(np.nextafter(atom, math.inf))


def atom_probe_points(quantiles: Sequence[float]) -> list[float]:
    """Every point ``quantile_edges_from`` may count below, given the raw decile values."""
    raw = [e for e in quantiles if not math.isnan(e)]
    edges = sorted(set(raw))
    points = list(edges)
    for i, atom in enumerate(edges):
        if raw.count(atom) >= 2 and not math.isinf(atom):
            points += [atom_successor(atom), edges[i + 1] if i + 1 < len(edges) else math.inf]
    return points


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
    names, numeric, categorical, unsupported = profiled_columns(schema, columns)

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

    return profile_document(rows, bins, max_categories, names, out_columns, unsupported)


def profile_document(
    rows: int,
    bins: int,
    max_categories: int,
    names: list[str],
    columns: dict[str, Any],
    unsupported: dict[str, str],
) -> dict[str, Any]:
    """The profile's document (the artifact's bytes follow from it), for both engines."""
    return {
        "format_version": DriftProfile.FORMAT_VERSION,
        "kind": DriftProfile.KIND,
        "rows": rows,
        "bins": bins,
        "sketch_size": SKETCH_SIZE,
        "max_categories": max_categories,
        "column_order": [c for c in names if c not in unsupported],
        "columns": columns,
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
    return categorical_entry(
        rows,
        null_count,
        values=top.get_column("value").to_list(),
        value_counts=[int(v) for v in top.get_column("count").to_list()],
        n_categories=present.height,
        present_count=int(present.get_column("count").sum() or 0),
        dtype=dtype,
    )


def categorical_entry(
    rows: int,
    null_count: int,
    *,
    values: list[str],
    value_counts: list[int],
    n_categories: int,
    present_count: int,
    dtype: str,
) -> dict[str, Any]:
    """The profile entry of a categorical column: its top categories (``values``, by count
    descending then value), how many distinct categories and non-null rows it has."""
    other_count = present_count - sum(value_counts)
    return {
        "kind": "categorical",
        "dtype": dtype,
        "count": rows,
        "null_count": null_count,
        "null_rate": (null_count / rows) if rows else 0.0,
        "valid_count": rows - null_count,
        "n_categories": n_categories,
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
