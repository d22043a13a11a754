"""The psi-report core: load the current data, match it to the profile, build the report.

``mlpipe_cli/ops/psi_report.py`` runs the command with it; ``cli/psi_report_cmd.py`` only
parses flags and renders.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.drift.compare import (
    DEFAULT_EPS,
    DEFAULT_MIN_ROWS,
    DEFAULT_MODERATE,
    DEFAULT_THRESHOLD,
    ColumnDrift,
    compare_to_profile,
)
from mlpipe_cli.errors import InputError, UsageError

# The serving-log names and the window reading are the contract in mlpipe_cli.servinglog
# (re-exported here for existing callers).
from mlpipe_cli.servinglog import (  # noqa: F401
    PREFIXES,
    RAW_PREFIX,
    SEGMENT_GLOB,
    SERVED_AT,
    VEC_PREFIX,
    parse_instant,
    parse_window,
    raw_column,
)

if TYPE_CHECKING:
    import polars as pl

# ----------------------------------------------------------------------------- current data


def serving_log_files(log_dir: Path) -> list[Path]:
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise InputError(f"serving-log directory {log_dir} not found",
                         hint="pass the directory `mlpipe serve` writes its feature log to")
    return sorted(Path(p) for p in glob.glob(str(log_dir / "**" / SEGMENT_GLOB),
                                             recursive=True))


def scan_serving_log(log_dir: Path, start: datetime, end: datetime) -> pl.LazyFrame:
    """Every segment under ``log_dir`` (schemas may differ), rows with start <= served_at < end.

    InputError (exit 2) when there is no segment or no row in the window.
    """
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    files = serving_log_files(log_dir)
    if not files:
        raise InputError(f"no serving-log segments ({SEGMENT_GLOB}) in {log_dir}",
                         hint="an empty serving log is an error, not a pass")
    frames = [scan_parquet(f) for f in files]
    lf = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    if SERVED_AT not in lf.collect_schema():
        raise InputError(f"serving log {log_dir} has no {SERVED_AT!r} column")
    return lf.filter(window_predicate(start, end))


PART_ROWS = 1 << 19


def scan_parts(files: Sequence[Path], *, part_rows: int | None = None,
               predicate: pl.Expr | None = None) -> list[pl.LazyFrame]:
    """Row slices of each Parquet file (optionally filtered), with every part given the union
    schema of all files (missing columns null, dtypes unified).

    By default a part is a run of whole row groups of ≤ ``PART_ROWS`` rows (a row group larger
    than that is split into ``PART_ROWS`` slices): a slice of a Parquet scan decodes every row
    group it touches, so slices that straddle row groups would decompress those twice.
    ``part_rows`` instead cuts fixed slices of that many rows. ``compare_to_profile`` reads the
    parts one at a time, so memory stays bounded however large the input.
    """
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    scans = [scan_parquet(f) for f in files]
    if not scans:
        return []
    try:
        union = pl.concat([s.head(0) for s in scans], how="diagonal_relaxed").collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"input files have incompatible columns: {str(exc).splitlines()[0]}"
                         ) from None
    parts = []
    for file, lf in zip(files, scans, strict=True):
        have = lf.collect_schema()
        fix = [
            pl.lit(None, dtype).alias(name) if name not in have else pl.col(name).cast(dtype)
            for name, dtype in union.items()
            if name not in have or have[name] != dtype
        ]
        for offset, length in _slices(file, part_rows):
            part = lf.slice(offset, length)
            if fix:
                part = part.with_columns(fix)
            if predicate is not None:
                part = part.filter(predicate)
            parts.append(part.select(list(union.names())))
    return parts


def _slices(file: Path, part_rows: int | None) -> list[tuple[int, int]]:
    """(offset, length) of the parts of one file; at least one part, even for 0 rows."""
    from mlpipe_cli.io import parquet_row_count

    if part_rows is not None:
        rows = parquet_row_count(file)
        return [(offset, part_rows) for offset in range(0, max(rows, 1), part_rows)]
    out: list[tuple[int, int]] = []
    start = size = 0
    for group in parquet_row_groups(file):
        if size and size + group > PART_ROWS:
            out.append((start, size))
            start, size = start + size, 0
        if group > PART_ROWS:  # one huge row group: bounded slices of it
            out += [(start + o, min(PART_ROWS, group - o)) for o in range(0, group, PART_ROWS)]
            start += group
        else:
            size += group
    if size or not out:
        out.append((start, size if size else PART_ROWS))
    return out


def parquet_row_groups(path: Path) -> list[int]:
    """Rows per row group of a Parquet file (InputError when it cannot be read)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # pyarrow raises several types for bad files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as Parquet: {first}") from None
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def window_predicate(start: datetime, end: datetime) -> pl.Expr:
    import polars as pl

    lo = pl.lit(start).dt.cast_time_unit("us")
    hi = pl.lit(end).dt.cast_time_unit("us")
    return (pl.col(SERVED_AT) >= lo) & (pl.col(SERVED_AT) < hi)


def serving_log_parts(log_dir: Path, start: datetime, end: datetime,
                      *, part_rows: int | None = None) -> tuple[list[pl.LazyFrame], int]:
    """The serving-log window as parts for ``compare_to_profile``, and its row count."""
    rows = count_rows(scan_serving_log(log_dir, start, end))
    parts = scan_parts(serving_log_files(log_dir), part_rows=part_rows,
                       predicate=window_predicate(start, end))
    return parts, rows


def count_rows(lf: pl.LazyFrame) -> int:
    import polars as pl

    try:
        return int(lf.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------- matching


def match_column(name: str, available: Sequence[str],
                 profiled: Sequence[str] = ()) -> str | None:
    """The column of the current data that holds profile column ``name``.

    Exact name first; then ``raw.x`` ← ``x`` (a raw batch); ``vec.x`` ← ``x`` (a file written
    by ``mlpipe transform``) unless ``raw.x`` is also profiled, since then a plain ``x`` is
    ambiguous; a plain ``x`` ← ``raw.x`` or ``vec.x``.
    """
    have = set(available)
    if name in have:
        return name
    if name.startswith(RAW_PREFIX) and name[4:] in have:
        return name[4:]
    if name.startswith(VEC_PREFIX) and name[4:] in have and raw_column(name[4:]) not in profiled:
        return name[4:]
    if not name.startswith(PREFIXES):
        for prefix in PREFIXES:
            if prefix + name in have:
                return prefix + name
    return None


def select_features(profile: dict, requested: Sequence[str] | None) -> list[str]:
    """Profile columns to report: all (profile order) or the requested ones, by name."""
    known = list(profile.get("column_order") or sorted(profile["columns"]))
    unsupported = list(profile.get("unsupported", {}))
    if not requested:
        return known
    out = []
    for name in requested:
        hit = match_column(name, known + unsupported)
        if hit is None:
            shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
            raise UsageError(f"feature {name!r} is not in the reference profile (known: {shown})")
        if hit not in out:
            out.append(hit)
    return out


def per_feature_thresholds(configured: Mapping[str, float], features: Sequence[str]
                           ) -> dict[str, float]:
    """Config thresholds may name `revenue`, `raw.revenue` or `vec.x`: map them onto features."""
    out: dict[str, float] = {}
    for feature in features:
        for key, value in configured.items():
            if key == feature or match_column(key, [feature]) == feature:
                out[feature] = value
    return out


# ----------------------------------------------------------------------------- the report


@dataclass
class DriftReport:
    features: list[ColumnDrift]
    profile_info: dict[str, Any]
    current_info: dict[str, Any]
    threshold: float
    moderate: float
    min_rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[ColumnDrift]:
        return [f for f in self.features if f.failed]

    def sorted_features(self) -> list[ColumnDrift]:
        """Errors first, then by PSI descending, then by name."""
        return sorted(
            self.features,
            key=lambda f: (f.status != "error", -(f.psi if f.psi is not None else 0.0), f.column),
        )

    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in ("stable", "moderate", "drifted", "error")}
        for f in self.features:
            counts[f.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "failed" if self.failed else "passed",
            "summary": self.summary(),
            "profile": self.profile_info,
            "current": self.current_info,
            "convention": {
                "psi": "sum((cur - ref) * ln(cur / ref)) over the reference bins",
                "log": "natural",
                "eps": DEFAULT_EPS,
                "renormalised": False,
                "numeric_bins": "reference deciles, half-open [lower, upper), open-ended "
                "first/last bins, plus __missing__ (null and NaN)",
                "categorical_bins": "reference categories, plus __other__ and __missing__",
            },
            "threshold": self.threshold,
            "moderate_threshold": self.moderate,
            "min_rows": self.min_rows,
            **self.extra,
            "features": [f.to_dict() for f in self.sorted_features()],
        }


def drift_report(
    profile: dict,
    current: pl.LazyFrame | Sequence[pl.LazyFrame],
    *,
    rows: int | None = None,
    features: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: Mapping[str, float] | None = None,
    moderate: float = DEFAULT_MODERATE,
    min_rows: int = DEFAULT_MIN_ROWS,
    profile_info: dict[str, Any] | None = None,
    current_info: dict[str, Any] | None = None,
) -> DriftReport:
    """Compare ``current`` with ``profile``; InputError (exit 2) when it has no rows."""
    import polars as pl

    names = select_features(profile, features)
    parts = [current] if isinstance(current, pl.LazyFrame) else list(current)
    if rows is None:
        rows = sum(count_rows(p) for p in parts)
    if rows == 0:
        info = current_info or {}
        where = info.get("path", "the current data")
        if info.get("since"):
            where += f" between {info['since']} and {info['until']}"
        raise InputError(f"no current rows in {where}",
                         hint="no data in the window is an error, not a pass")
    available = parts[0].collect_schema().names()
    profiled = list(profile["columns"])
    rename = {}
    for name in names:
        hit = match_column(name, available, profiled)
        if hit is not None and hit != name:
            rename[name] = hit
    drifts = compare_to_profile(
        profile,
        parts,
        names,
        threshold=threshold,
        thresholds=per_feature_thresholds(thresholds or {}, names),
        moderate=moderate,
        min_rows=min_rows,
        rename=rename,
    )
    return DriftReport(
        features=drifts,
        profile_info={"rows": profile.get("rows"), **(profile_info or {})},
        current_info={"rows": rows, **(current_info or {})},
        threshold=threshold,
        moderate=moderate,
        min_rows=min_rows,
    )
