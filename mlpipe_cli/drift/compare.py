"""PSI and KS of current data against a reference profile (one streaming pass).

PSI convention (pinned; see docs/psi-report.md):

    PSI = Σ_b (c_b − r_b) · ln(c_b / r_b)

over the reference's bins b, natural log, where r_b and c_b are the reference and current
proportions of *all* rows (missing included) with each proportion clipped from below at
``eps`` (default 1e-4) and NOT renormalised afterwards. Numeric bins are the profile's
half-open bins ``[lower, upper)`` with open-ended first and last bins plus ``__missing__``
(null and NaN) — decile edges, or one bin per value for columns with at most ``bins``
distinct values (see ``drift.profile``); categorical bins are the profile's categories plus
``__other__`` (unseen values and reference categories beyond the stored top-k) plus
``__missing__``.

KS is computed from the profile's quantile sketch (sketch_size+1 quantiles): the reference CDF
F̂ is the linear interpolation of (quantile_k, k/sketch_size), with jumps at repeated values
(atoms); the current sample is histogrammed exactly on the sketch points, which bounds
sup|G − F̂| between D_lo and D_hi with D_hi − D_lo ≤ 1/sketch_size. The reported statistic is
their midpoint, so |D̂ − D_ks_2samp| ≤ 1.5/sketch_size + 2/n_ref. The p-value is
``scipy.stats.kstwo.sf(D̂, round(en))`` with en = n·m/(n+m) — what ``ks_2samp(method="asymp")``
does — for en ≤ 10,000, and the limiting Kolmogorov law ``kstwobign.sf(D̂·√en)`` above that.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from mlpipe_cli.drift.profile import (
    MISSING,
    OTHER,
    _json_float,
    _num,
    categorical_expr,
    check_profile,
    column_kind,
)
from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

DEFAULT_EPS = 1e-4
DEFAULT_THRESHOLD = 0.2
DEFAULT_MODERATE = 0.1
DEFAULT_MIN_ROWS = 200
CHUNK_ROWS = 1 << 18
SORT_BLOCK = 1 << 16  # values sorted at once per numeric column (512 KiB: stays in L2)
KS_EXACT_MAX_N = 10_000  # effective n up to which the p-value uses scipy's kstwo

STATUSES = ("stable", "moderate", "drifted", "error")


@dataclass
class ColumnDrift:
    """Drift of one column. ``bins`` rows: bin, lower, upper, reference, current, contribution
    (reference/current are unclipped proportions of all rows; contribution uses the clip)."""

    column: str
    kind: str
    status: str
    psi: float | None = None
    threshold: float = DEFAULT_THRESHOLD
    bins: list[dict[str, Any]] = field(default_factory=list)
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    ks_bounds: tuple[float, float] | None = None
    null_rate_ref: float | None = None
    null_rate_cur: float | None = None
    mean_ref: float | None = None
    mean_cur: float | None = None
    std_ref: float | None = None
    std_cur: float | None = None
    rows: int = 0
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("drifted", "error")

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` of the fields (lists and dicts copied, ``ks_bounds`` a list),
        without its deepcopy of every scalar: ~15 ms of a small psi-report's 50 columns."""
        doc = {name: _copied(getattr(self, name)) for name in _DRIFT_FIELDS}
        doc["ks_bounds"] = list(self.ks_bounds) if self.ks_bounds is not None else None
        return doc


_DRIFT_FIELDS = tuple(f.name for f in fields(ColumnDrift))


def _copied(value: Any) -> Any:
    # asdict's copy: new lists and dicts all the way down; the leaves are immutable scalars
    if type(value) is list:
        return [_copied(v) for v in value]
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    return value


def psi(reference: Sequence[float], current: Sequence[float], eps: float = DEFAULT_EPS) -> float:
    """Σ (c − r) · ln(c / r) with both proportions clipped at ``eps`` (no renormalisation)."""
    if len(reference) != len(current):
        raise ValueError(f"psi: {len(reference)} reference bins vs {len(current)} current bins")
    return math.fsum(_psi_terms(reference, current, eps))


def _psi_terms(reference: Sequence[float], current: Sequence[float], eps: float) -> list[float]:
    terms = []
    for r, c in zip(reference, current, strict=True):
        r = max(float(r), eps)
        c = max(float(c), eps)
        terms.append((c - r) * math.log(c / r))
    return terms


def status_for(value: float, threshold: float, moderate: float = DEFAULT_MODERATE) -> str:
    if value >= threshold:
        return "drifted"
    if value >= moderate:
        return "moderate"
    return "stable"


# --------------------------------------------------------------------------- accumulators


def _floats(values: list[Any]) -> np.ndarray:
    """Edges or quantiles read back from a profile as float64 (``_num`` for each value).

    Plain numbers convert in one call (a profile holds ~1000 quantiles per column, and the
    per-value path was ~10 ms of a small psi-report); null and "inf"/"-inf" take ``_num``.
    """
    import numpy as np

    if set(map(type, values)) <= {float, int}:
        return np.asarray(values, dtype=np.float64)
    return np.asarray([_num(v) for v in values], dtype=np.float64)


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of NaN-free values, by sorting: numpy's own first asks
    ``np.ma.is_masked``, which imports numpy.ma (~5 ms of every psi-report, #19). Equal
    values collapse into one as in ``np.unique`` (0.0 and -0.0 too, where either may stay:
    the fine points are only ever compared, and the two compare equal)."""
    import numpy as np

    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def _in_sorted(values: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """``np.isin(values, ordered)`` for a sorted, NaN-free ``ordered`` by binary search
    (``np.isin`` calls ``np.unique``, which imports numpy.ma: see _distinct_sorted)."""
    import numpy as np

    if len(ordered) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ordered, values, side="left"), len(ordered) - 1)
    return ordered[at] == values


class _NumericAcc:
    """Exact histogram of the current values on the union of PSI edges and sketch points.

    Values are consumed in blocks of ``SORT_BLOCK``: each block is copied into a reusable
    buffer and sorted (NaN sorts last), and one ``searchsorted`` of the ~1000 fine points into
    the sorted block gives the block's exact cumulative counts — the same block-sort numpy's
    ``histogram`` does, without its per-call overhead, and the null/NaN count and the finite
    values for the mean/std fall out of the same sorted block as contiguous slices.
    """

    def __init__(self, column: str, entry: dict[str, Any]) -> None:
        import numpy as np

        self.column = column
        self.entry = entry
        self.edges = _floats(entry.get("edges", []))
        quantiles = _floats(entry.get("quantiles", []))
        self.quantiles = quantiles
        self.ks_ok = len(quantiles) >= 2 and bool(np.all(np.isfinite(quantiles)))
        points = [self.edges[np.isfinite(self.edges)]]
        if self.ks_ok:
            uniq, counts = np.unique(quantiles, return_counts=True)
            atoms = uniq[counts > 1]
            points += [uniq, np.nextafter(atoms, np.inf)]
        self.fine = _distinct_sorted(np.concatenate(points))
        # below[k] = number of valid values < fine[k]; valid = number of non-NaN values.
        self.below = np.zeros(len(self.fine), dtype=np.int64)
        self.valid = 0
        self.missing = 0
        self.posinf = 0  # +inf values: their fine interval's left end may be below an inf edge
        self.rows = 0
        mean = entry.get("mean")
        self.shift: float = mean if isinstance(mean, float | int) else 0.0
        self.s1: list[float] = []
        self.s2: list[float] = []
        self.finite = 0
        self.block = SORT_BLOCK
        self._buf = np.empty(0)
        self._tmp = np.empty(0)
        self._carry: list[np.ndarray] = []  # the rows of an unfinished block
        self._carry_n = 0

    @property
    def counts(self) -> np.ndarray:
        """Counts per fine interval: (-inf, f0), [f0, f1), ..., [f_last, +inf]."""
        import numpy as np

        if len(self.fine) == 0:
            return np.asarray([self.valid], dtype=np.int64)
        return np.diff(np.concatenate([[0], self.below, [self.valid]]))

    def update_series(self, series: pl.Series) -> None:
        """Consume a Float64 series (nulls and NaN are missing), chunk by chunk."""
        for chunk in series.get_chunks():
            self.update(chunk.to_numpy())  # zero-copy without nulls; nulls become NaN

    def update(self, values: np.ndarray) -> None:
        """Consume values in row order. Blocks start every ``block`` rows from the first row,
        whatever sizes the values arrive in: the mean and std are sums of per-block sums, and
        a float sum depends on how its terms are grouped, so blocks cut where the reader's
        batches happen to end (they vary with the thread count) made the report differ in
        the last digits from run to run."""
        import numpy as np

        n = len(values)
        if n == 0:
            return
        if self._carry_n:
            take = min(n, self.block - self._carry_n)
            self._carry.append(np.array(values[:take], dtype=np.float64))  # a copy, as below
            self._carry_n += take
            values = values[take:]
            if self._carry_n < self.block:
                return
            self._blocks(np.concatenate(self._carry))
            self._carry, self._carry_n = [], 0
        whole = len(values) - len(values) % self.block
        if whole:
            self._blocks(values[:whole])
        if whole < len(values):
            # copied: the caller's buffer may be reused or released
            self._carry.append(np.array(values[whole:], dtype=np.float64))
            self._carry_n = len(values) - whole

    def flush(self) -> None:
        """Consume the rows of an unfinished block (at the end of the data)."""
        import numpy as np

        if self._carry_n:
            self._blocks(np.concatenate(self._carry))
            self._carry, self._carry_n = [], 0

    def _blocks(self, values: np.ndarray) -> None:
        import numpy as np

        n = len(values)
        self.rows += n
        if len(self._buf) < min(n, self.block):
            self._buf = np.empty(min(n, self.block), dtype=np.float64)
            self._tmp = np.empty_like(self._buf)
        for start in range(0, n, self.block):
            block = values[start : start + self.block]
            m = len(block)
            s = self._buf[:m]
            np.copyto(s, block)
            s.sort()  # NaN last, then ±inf at the ends of the non-NaN values
            lo = int(np.searchsorted(s, -np.inf, side="right"))  # first finite
            hi = int(np.searchsorted(s, np.inf, side="left"))  # end of finite
            valid = int(np.searchsorted(s, np.inf, side="right"))  # end of non-NaN
            self.valid += valid
            self.missing += m - valid
            self.posinf += valid - hi
            if len(self.fine):
                self.below += np.searchsorted(s[:valid], self.fine, side="left")
            if hi > lo:
                d = self._tmp[: hi - lo]
                np.subtract(s[lo:hi], self.shift, out=d)
                self.s1.append(float(np.sum(d)))
                self.s2.append(float(np.einsum("i,i->", d, d)))  # np.dot → BLAS threads
                self.finite += hi - lo

    def result(self) -> dict[str, Any]:
        import numpy as np

        self.flush()
        rows = self.rows
        valid = self.valid
        fine_counts = self.counts
        # Map fine intervals [f_j, f_j+1) onto coarse PSI bins by their left endpoint.
        left = np.concatenate([[-np.inf], self.fine])
        coarse_idx = np.searchsorted(self.edges, left, side="right")
        coarse = np.zeros(len(self.edges) + 1, dtype=np.int64)
        np.add.at(coarse, coarse_idx, fine_counts)
        # +inf belongs to the last bin even when the edges end in +inf ([inf, inf]); the fine
        # points are finite, so it was counted with the last fine interval's left end.
        coarse[coarse_idx[-1]] -= self.posinf
        coarse[-1] += self.posinf
        out: dict[str, Any] = {"rows": rows, "valid": valid, "missing": self.missing}
        out["bin_counts"] = [int(c) for c in coarse]
        if self.finite:
            n = self.finite
            s1 = math.fsum(self.s1)
            s2 = math.fsum(self.s2)
            out["mean"] = self.shift + s1 / n
            out["std"] = math.sqrt(max(s2 - s1 * s1 / n, 0.0) / (n - 1)) if n > 1 else 0.0
        else:
            out["mean"] = None
            out["std"] = None
        if self.ks_ok and valid:
            out.update(self._ks(valid, fine_counts))
        return out

    def _ks(self, m: int, counts: np.ndarray) -> dict[str, Any]:
        import numpy as np

        from mlpipe_cli.drift.kstest import kolmogorov_sf, kstwo_sf

        q = self.quantiles
        k = len(q) - 1
        uniq, first = np.unique(q, return_index=True)
        last = len(q) - 1 - np.unique(q[::-1], return_index=True)[1]
        p_first = first / k
        p_last = last / k
        is_atom = last > first
        # KS points: unique quantiles and, after each atom u, nextafter(u) (F̂ flat between)
        # unless nextafter(u) is itself a quantile: values one ulp apart (cos/sin of "equal"
        # angles, say) must not give one point two meanings.
        atoms_plus = np.nextafter(uniq[is_atom], np.inf)
        keep = ~_in_sorted(atoms_plus, uniq)
        atoms_plus = atoms_plus[keep]
        pts = np.concatenate([uniq, atoms_plus])
        fl = np.concatenate([p_first, p_last[is_atom][keep]])  # F̂ just left of the point
        fr = np.concatenate([p_last, p_last[is_atom][keep]])  # F̂ at the point
        atom_flag = np.concatenate([is_atom, np.zeros(len(atoms_plus), dtype=bool)])
        order = np.argsort(pts, kind="stable")
        pts, fl, fr, atom_flag = pts[order], fl[order], fr[order], atom_flag[order]
        # A_i = fraction of current values < pts[i]: cumulative fine counts.
        cum = np.concatenate([[0], np.cumsum(counts)])
        idx = np.searchsorted(self.fine, pts, side="left")  # pts[i] == fine[idx]
        # counts[0] is (-inf, fine[0]), counts[j+1] is [fine[j], fine[j+1]): so the mass
        # strictly below fine[i] is counts[0..i] = cum[i + 1].
        a = cum[idx + 1] / m
        a_next = np.concatenate([a[1:], [1.0]])
        d_lo = float(np.max(np.abs(a - fl)))
        # Interval (pts_i, pts_i+1): F̂ linear from fr_i to fl_i+1, G within [a_i, a_i+1].
        fl_next = np.concatenate([fl[1:], [1.0]])
        upper = np.maximum(a_next - fr, fl_next - a)
        # Exact cases: [u, u⁺) holds exactly the mass at atom u (G = a_next there, F̂ = fr);
        # an interval without current values has G = a constant, so the sup is at its ends.
        exact = np.where(
            atom_flag,
            np.abs(a_next - fr),
            np.maximum(np.abs(a - fr), np.abs(a - fl_next)),
        )
        is_exact = atom_flag | (a_next == a)
        upper = np.where(is_exact, exact, upper)
        d_hi = float(max(d_lo, float(np.max(upper))))
        d_lo = float(max(d_lo, float(np.max(np.where(is_exact, exact, 0.0)))))
        d = (d_lo + d_hi) / 2
        n = int(self.entry.get("valid_count") or 0)
        pvalue = None
        if n > 0:
            en = n * m / (n + m)
            # scipy.stats.kstwo.sf / kstwobign.sf, computed without importing scipy (#19)
            if en <= KS_EXACT_MAX_N:
                pvalue = kstwo_sf(d, max(1, round(en)))
            else:  # kstwo.sf costs ~0.3 s at n=1e5; the limiting law is within 1% there
                pvalue = kolmogorov_sf(d * math.sqrt(en))
        return {"ks_statistic": d, "ks_pvalue": pvalue, "ks_bounds": (d_lo, d_hi)}


class _CategoricalAcc:
    def __init__(self, column: str, entry: dict[str, Any]) -> None:
        self.column = column
        self.entry = entry
        self.values = [str(v) for v in entry.get("values", [])]
        self.index = {v: i for i, v in enumerate(self.values)}
        self.counts = [0] * len(self.values)
        self.other = 0
        self.missing = 0
        self.rows = 0
        self.unseen: dict[str, int] = {}

    def update(self, series: pl.Series) -> None:
        self.rows += len(series)
        self.missing += series.null_count()
        vc = series.drop_nulls().value_counts()
        for value, count in zip(vc[:, 0].to_list(), vc[:, 1].to_list(), strict=True):
            i = self.index.get(value)
            if i is None:
                self.other += int(count)
                if len(self.unseen) < 10_000:
                    self.unseen[value] = self.unseen.get(value, 0) + int(count)
            else:
                self.counts[i] += int(count)

    def result(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "valid": self.rows - self.missing,
            "missing": self.missing,
            "counts": self.counts,
            "other": self.other,
            "unseen": self.unseen,
        }


# --------------------------------------------------------------------------- main entry


def compare_to_profile(
    profile: dict,
    current: pl.LazyFrame | pl.DataFrame | Sequence[pl.LazyFrame | pl.DataFrame],
    columns: Sequence[str] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Mapping[str, float] | None = None,
    moderate: float = DEFAULT_MODERATE,
    min_rows: int = DEFAULT_MIN_ROWS,
    eps: float = DEFAULT_EPS,
    rename: Mapping[str, str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    rows: int | None = None,
    scan: Callable[..., None] | None = None,
) -> list[ColumnDrift]:
    """Compare ``current`` with the reference ``profile`` column by column.

    ``columns`` defaults to every profiled column (in the profile's column order).
    ``thresholds`` maps column → its own PSI threshold (else ``threshold``); ``rename`` maps a
    profile column to the name it has in ``current`` (e.g. ``revenue`` → ``raw.revenue``).
    Status: ``drifted`` when PSI ≥ threshold, ``moderate`` when PSI ≥ ``moderate``, else
    ``stable``; ``error`` (with a message) when the column is missing, has a dtype the profile
    cannot compare, is all null, or there are no rows — never aborting the other columns.
    The current data is read once, in chunks of ``chunk_rows`` rows. ``current`` may also be
    a sequence of parts with the same columns (read one at a time, in order: bounded memory;
    ``drift.report.scan_parts`` slices Parquet files into such parts). ``rows`` (the current
    row count, when the caller knows it) is only the total of the progress shown.
    ``scan`` replaces the local pass that feeds the accumulators (same arguments as
    ``_scan``; the Spark engine's fills them from per-task accumulators, merged exactly).
    """
    import polars as pl

    check_profile(profile)
    thresholds = dict(thresholds or {})
    rename = dict(rename or {})
    profiled: dict[str, Any] = profile["columns"]
    names = (
        list(profile.get("column_order") or sorted(profiled)) if columns is None else list(columns)
    )
    parts = [current] if isinstance(current, pl.DataFrame | pl.LazyFrame) else list(current)
    try:
        schema = parts[0].lazy().collect_schema() if parts else pl.Schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None

    results: dict[str, ColumnDrift] = {}
    numeric: dict[str, _NumericAcc] = {}
    categorical: dict[str, _CategoricalAcc] = {}
    exprs: list[pl.Expr] = []
    for name in names:
        thr = float(thresholds.get(name, threshold))
        entry = profiled.get(name)
        if entry is None:
            dtype = profile.get("unsupported", {}).get(name)
            msg = (
                f"dtype {dtype} is not profiled (unsupported)"
                if dtype
                else "not in the reference profile"
            )
            results[name] = ColumnDrift(name, "unknown", "error", threshold=thr, message=msg)
            continue
        kind = entry["kind"]
        src = rename.get(name, name)
        if src not in schema:
            results[name] = _base(
                name, entry, thr, status="error", message=f"column {src!r} not in the current data"
            )
            continue
        # an all-null column written without a type (dtype Null) is all missing of either kind
        cur_kind = kind if schema[src] == pl.Null else column_kind(schema[src])
        if cur_kind != kind:
            results[name] = _base(
                name,
                entry,
                thr,
                status="error",
                message=f"current dtype {schema[src]} cannot be compared with the profile's "
                f"{kind} column ({entry.get('dtype')})",
            )
            continue
        key = f"c{len(exprs)}"
        if kind == "numeric":
            numeric[key] = _NumericAcc(name, entry)
            exprs.append(pl.col(src).cast(pl.Float64).alias(key))
        else:
            categorical[key] = _CategoricalAcc(name, entry)
            cur_dtype = pl.String() if schema[src] == pl.Null else schema[src]
            exprs.append(categorical_expr(src, cur_dtype).alias(key))

    if exprs:
        (scan or _scan)(parts, exprs, numeric, categorical, chunk_rows, rows)

    for acc in numeric.values():
        results[acc.column] = _numeric_drift(
            acc, thresholds.get(acc.column, threshold), moderate, min_rows, eps
        )
    for cat_acc in categorical.values():
        results[cat_acc.column] = _categorical_drift(
            cat_acc, thresholds.get(cat_acc.column, threshold), moderate, min_rows, eps
        )
    return [results[n] for n in names]


def _chunks(
    parts: list[pl.LazyFrame | pl.DataFrame],
    exprs: list[pl.Expr],
    chunk_rows: int,
    pool: ThreadPoolExecutor,
) -> Iterator[pl.DataFrame]:
    """The selected columns, chunk by chunk, in order.

    * one LazyFrame: Polars' streaming ``collect_batches`` (the engine may run ahead of a slow
      consumer and buffer batches);
    * several parts (e.g. row-group slices of Parquet files, see ``drift.report.scan_parts``):
      each part is collected on its own, one part prefetched in the background — memory stays
      bounded by two parts whatever the total size;
    * a DataFrame: sliced in place.
    """
    import polars as pl

    if len(parts) == 1 and isinstance(parts[0], pl.LazyFrame):
        yield from parts[0].select(exprs).collect_batches(chunk_size=chunk_rows)
        return

    def load(part: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
        return part.lazy().select(exprs).collect()

    pending = pool.submit(load, parts[0]) if parts else None
    for i in range(len(parts)):
        assert pending is not None
        frame = pending.result()
        pending = pool.submit(load, parts[i + 1]) if i + 1 < len(parts) else None
        yield from frame.iter_slices(chunk_rows)


def _scan(
    parts: list[pl.LazyFrame | pl.DataFrame],
    exprs: list[pl.Expr],
    numeric: dict[str, _NumericAcc],
    categorical: dict[str, _CategoricalAcc],
    chunk_rows: int,
    rows: int | None = None,
) -> None:
    import polars as pl

    from mlpipe_cli.progress import task as progress_task

    workers = max(1, min(len(exprs), os.cpu_count() or 1))
    keys = [*numeric, *categorical]

    def work(batch: pl.DataFrame, key: str) -> None:
        if key in numeric:
            numeric[key].update_series(batch.get_column(key))
        else:
            categorical[key].update(batch.get_column(key))

    try:
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            ThreadPoolExecutor(max_workers=1) as reader,
            progress_task(f"comparing {len(keys)} features", total=rows, unit="rows") as bar,
        ):
            for batch in _chunks(parts, exprs, chunk_rows, reader):
                # Columns are independent: each accumulator is touched by one task per batch.
                list(pool.map(lambda k, b=batch: work(b, k), keys))
                bar.advance(batch.height)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None


def _base(
    name: str,
    entry: dict[str, Any],
    thr: float,
    *,
    status: str,
    message: str = "",
    kind: str | None = None,
) -> ColumnDrift:
    return ColumnDrift(
        column=name,
        kind=kind or entry.get("kind", "unknown"),
        status=status,
        threshold=thr,
        null_rate_ref=entry.get("null_rate"),
        mean_ref=entry.get("mean"),
        std_ref=entry.get("std"),
        message=message,
    )


def _finish(
    drift: ColumnDrift,
    ref: list[float],
    cur_counts: list[int],
    labels: list[dict],
    rows: int,
    missing: int,
    moderate: float,
    min_rows: int,
    eps: float,
) -> ColumnDrift:
    cur = [c / rows for c in cur_counts] if rows else [0.0] * len(cur_counts)
    terms = _psi_terms(ref, cur, eps)
    drift.rows = rows
    drift.bins = [
        {**label, "reference": r, "current": c, "contribution": t}
        for label, r, c, t in zip(labels, ref, cur, terms, strict=True)
    ]
    if rows == 0:
        drift.status = "error"
        drift.message = "no current rows"
        return drift
    drift.psi = math.fsum(terms)
    drift.null_rate_cur = missing / rows
    if rows < min_rows:
        drift.warnings.append(
            f"only {rows} current rows (< {min_rows}): PSI is noisy on small samples"
        )
    if missing == rows:
        drift.status = "error"
        drift.message = f"all {rows} current values are missing (null/NaN)"
        return drift
    drift.status = status_for(drift.psi, drift.threshold, moderate)
    return drift


def _numeric_drift(
    acc: _NumericAcc, thr: float, moderate: float, min_rows: int, eps: float
) -> ColumnDrift:
    entry = acc.entry
    res = acc.result()
    drift = _base(acc.column, entry, thr, status="stable")
    edges = [_num(e) for e in entry.get("edges", [])]
    values = [_num(v) for v in entry["values"]] if entry.get("binning") == "values" else None
    bounds = [None, *(_json_float(e) for e in edges), None]
    labels = [
        {"bin": label, "lower": bounds[i], "upper": bounds[i + 1]}
        for i, label in enumerate(bin_labels(edges, values))
    ]
    if values is not None and len(values) == len(labels):
        for label, value in zip(labels, values, strict=True):
            label["value"] = _json_float(value)
    labels.append({"bin": MISSING, "lower": None, "upper": None})
    ref = [float(p) for p in entry.get("proportions", [])]
    if len(ref) != len(edges) + 1:
        drift.status = "error"
        drift.message = "profile entry is inconsistent: proportions do not match edges"
        return drift
    ref.append(float(entry.get("missing_proportion", 0.0)))
    counts = [*res["bin_counts"], res["missing"]]
    drift.mean_cur = res["mean"]
    drift.std_cur = res["std"]
    if "ks_statistic" in res:
        drift.ks_statistic = res["ks_statistic"]
        drift.ks_pvalue = res["ks_pvalue"]
        drift.ks_bounds = res["ks_bounds"]
    return _finish(drift, ref, counts, labels, res["rows"], res["missing"], moderate, min_rows, eps)


def format_number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, plain notation from 1e-4 to 1e6, no
    trailing zeros: 0.39999 → "0.4", 1234.5 → "1234" (integer digits are never dropped),
    1.5e-05 → "1.5e-5"."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if -4 <= magnitude < 6:
        text = f"{value:.{max(0, digits - 1 - magnitude)}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def bin_labels(edges: Sequence[float], values: Sequence[float] | None = None) -> list[str]:
    """Readable labels of the ``len(edges) + 1`` bins of a numeric profile entry.

    Value bins are labelled by their value ("0", "1"); decile bins "< 2.5", "[2.5, 3.2)",
    "≥ 100"; a bin [a, nextafter(a)) holding one atom is "a" and the bin after it "(a, b)".
    Significant digits: the fewest (at least 3) that keep every boundary distinct.
    """
    edges = [float(e) for e in edges]
    if values is not None and len(values) == len(edges) + 1:
        digits = _distinct_digits([float(v) for v in values])
        return [format_number(float(v), digits) for v in values]
    # an edge one ulp above the previous one closes a single-value bin; it has no label
    ulp_after = [i > 0 and e == math.nextafter(edges[i - 1], math.inf) for i, e in enumerate(edges)]
    digits = _distinct_digits([e for e, skip in zip(edges, ulp_after, strict=True) if not skip])

    def fmt(x: float | None) -> str:
        assert x is not None  # each branch below prints a bound its bin has
        return format_number(x, digits)

    if not edges:
        return ["all values"]
    labels = []
    for i in range(len(edges) + 1):
        lo = edges[i - 1] if i > 0 else None
        hi = edges[i] if i < len(edges) else None
        after_atom = i > 0 and ulp_after[i - 1]  # lower bound is nextafter(atom): "(atom, .."
        shown_lo = edges[i - 2] if after_atom else lo
        if hi is not None and i < len(edges) and ulp_after[i]:
            labels.append(fmt(lo) if lo is not None else fmt(hi))  # the atom itself
        elif lo is None:
            labels.append(f"< {fmt(hi)}")
        elif hi is None:
            labels.append(f"> {fmt(shown_lo)}" if after_atom else f"≥ {fmt(lo)}")
        else:
            opening = "(" if after_atom else "["
            labels.append(f"{opening}{fmt(shown_lo)}, {fmt(hi)})")
    return labels


def _distinct_digits(points: Sequence[float]) -> int:
    wanted = len(set(points))
    for digits in range(3, 18):
        if len({format_number(p, digits) for p in points}) == wanted:
            return digits
    return 17


def _categorical_drift(
    acc: _CategoricalAcc, thr: float, moderate: float, min_rows: int, eps: float
) -> ColumnDrift:
    entry = acc.entry
    res = acc.result()
    drift = _base(acc.column, entry, thr, status="stable")
    labels = [{"bin": v, "lower": None, "upper": None} for v in acc.values]
    labels += [
        {"bin": OTHER, "lower": None, "upper": None},
        {"bin": MISSING, "lower": None, "upper": None},
    ]
    ref = [float(p) for p in entry.get("proportions", [])]
    ref += [float(entry.get("other_proportion", 0.0)), float(entry.get("missing_proportion", 0.0))]
    counts = [*res["counts"], res["other"], res["missing"]]
    if res["unseen"]:
        top = sorted(res["unseen"].items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        drift.warnings.append(
            "values not among the reference categories: "
            + ", ".join(f"{v!r} ({c})" for v, c in top)
        )
    return _finish(drift, ref, counts, labels, res["rows"], res["missing"], moderate, min_rows, eps)
