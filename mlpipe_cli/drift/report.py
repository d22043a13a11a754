"""The psi-report core: load the current data, match it to the profile, build the report.

The command layer only parses flags and renders. What it calls here:

* ``drift_report(profile, parts, ...)`` → ``DriftReport`` (the one result object);
* the reference: a transform artifact's ``profile.json``, a profile file, or
  ``ops.profiles.source_reference(config, store, "orders")`` — the validation profile saved for a source
  (``validate --source orders --save-profile``), to compare a raw batch of that source;
* ``with_transform_outputs(transform, profile, parts)``: a raw batch against a transform
  profile gets its ``vec.*`` outputs computed with the transform's batch path;
* ``request_time_features(...)``: serving-log features derived from the request time, which
  ``drift_report(exclude=...)`` lists as excluded instead of comparing.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlpipe_cli.argnames import arg, arg_name, given
from mlpipe_cli.drift.compare import (
    DEFAULT_EPS,
    DEFAULT_MIN_ROWS,
    DEFAULT_MODERATE,
    DEFAULT_THRESHOLD,
    ColumnDrift,
    compare_to_profile,
)
from mlpipe_cli.errors import ArtifactError, InputError, UsageError

# The serving-log names and the window reading are the contract in mlpipe_cli.servinglog
# (re-exported here for existing callers).
from mlpipe_cli.servinglog import (  # noqa: F401
    PREFIXES,
    RAW_PREFIX,
    SEGMENT_GLOB,
    SERVED_AT,
    VEC_PREFIX,
    check_segment_metadata,
    parse_instant,
    parse_window,
    raw_column,
)

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config import PipelineConfig


class FittedTransform(Protocol):
    """What the report needs of a fitted transform (``mlpipe_cli.transforms.FittedTransform``
    has it); a protocol so drift does not depend on the transforms package."""

    state: Mapping[str, Any]
    input_columns: list[str]
    output_columns: list[str]

    def check_input_schema(self, schema: Any) -> None: ...

    def transform_batch(self, frame: pl.LazyFrame) -> pl.LazyFrame: ...


EXCLUDED = "excluded"
REQUEST_TIME_REASON = "request-time feature"
IDENTIFIER_REASON = "identifier column"
# Report order: what needs attention first.
STATUS_ORDER = ("drifted", "error", "moderate", "stable", EXCLUDED)


# ----------------------------------------------------------------------------- current data


def serving_log_files(log_dir: Path) -> list[Path]:
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise InputError(
            f"serving-log directory {log_dir} not found",
            hint="pass the directory `mlpipe serve` writes its feature log to",
        )
    return sorted(Path(p) for p in glob.glob(str(log_dir / "**" / SEGMENT_GLOB), recursive=True))


def scan_serving_log(log_dir: Path, start: datetime, end: datetime) -> pl.LazyFrame:
    """Every segment under ``log_dir`` (schemas may differ), rows with start <= served_at < end.

    InputError (exit 2) when there is no segment or no row in the window.
    """
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    files = serving_log_files(log_dir)
    if not files:
        raise InputError(
            f"no serving-log segments ({SEGMENT_GLOB}) in {log_dir}",
            hint="an empty serving log is an error, not a pass",
        )
    frames = [scan_parquet(f) for f in files]  # InputError for a file that is not Parquet
    for file in files:  # one footer read each: refuse a newer layout before reading rows
        check_segment_metadata(pl.read_parquet_metadata(file), str(file))
    lf = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    if SERVED_AT not in lf.collect_schema():
        raise InputError(f"serving log {log_dir} has no {SERVED_AT!r} column")
    return lf.filter(window_predicate(start, end))


PART_ROWS = 1 << 19


def scan_parts(
    files: Sequence[Path], *, part_rows: int | None = None, predicate: pl.Expr | None = None
) -> list[pl.LazyFrame]:
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
        raise InputError(
            f"input files have incompatible columns: {str(exc).splitlines()[0]}"
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
    """Rows per row group of a Parquet file (InputError when it cannot be read).

    From the footer by ``parquet_footer`` (no pyarrow import, ~0.15 s of psi-report's
    start-up); pyarrow reads what that reader does not (an encrypted footer) and words the
    error for a file that is not Parquet.
    """
    from mlpipe_cli.parquet_footer import FooterError, row_group_rows

    try:
        return row_group_rows(path)
    except (FooterError, OSError):
        pass
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


def serving_log_parts(
    log_dir: Path, start: datetime, end: datetime, *, part_rows: int | None = None
) -> tuple[list[pl.LazyFrame], int]:
    """The serving-log window as parts for ``compare_to_profile``, and its row count."""
    rows = count_rows(scan_serving_log(log_dir, start, end))
    parts = scan_parts(
        serving_log_files(log_dir), part_rows=part_rows, predicate=window_predicate(start, end)
    )
    return parts, rows


def count_rows(lf: pl.LazyFrame) -> int:
    import polars as pl

    try:
        return int(lf.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------- matching


def match_column(name: str, available: Sequence[str], profiled: Sequence[str] = ()) -> str | None:
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


def per_feature_thresholds(
    configured: Mapping[str, float], features: Sequence[str]
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
    """The result of one drift comparison: per-feature results plus where both sides came from.

    ``features`` holds one ColumnDrift per reported feature; excluded features (e.g.
    request-time features of a serving log) are in it with status ``excluded`` and the reason
    as their message, never compared and never failing the report. ``groups`` maps a feature
    to the input it derives from (``raw.country`` and ``vec.country__US`` → ``country``).
    """

    features: list[ColumnDrift]
    profile_info: dict[str, Any]
    current_info: dict[str, Any]
    threshold: float
    moderate: float
    min_rows: int
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)
    generated_at: str = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0).isoformat()
    )

    @property
    def failed(self) -> list[ColumnDrift]:
        return [f for f in self.features if f.failed]

    @property
    def excluded(self) -> list[ColumnDrift]:
        return [f for f in self.features if f.status == EXCLUDED]

    def sorted_features(self) -> list[ColumnDrift]:
        """Errors first, then by PSI descending, then by name; excluded features last."""
        return sorted(
            self.features,
            key=lambda f: (
                f.status == EXCLUDED,
                f.status != "error",
                -(f.psi if f.psi is not None else 0.0),
                f.column,
            ),
        )

    def summary(self) -> dict[str, int]:
        counts = {s: 0 for s in ("stable", "moderate", "drifted", "error", EXCLUDED)}
        for f in self.features:
            counts[f.status] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        groups = self.groups or feature_groups([f.column for f in self.features])
        return {
            "status": "failed" if self.failed else "passed",
            "summary": self.summary(),
            "generated_at": self.generated_at,
            "profile": self.profile_info,
            "current": self.current_info,
            "convention": {
                "psi": "sum((cur - ref) * ln(cur / ref)) over the reference bins",
                "log": "natural",
                "eps": DEFAULT_EPS,
                "renormalised": False,
                "numeric_bins": "reference deciles, half-open [lower, upper), open-ended "
                "first/last bins, an atom holding several deciles in a bin of its own; one bin "
                "per value when the reference has at most `bins` distinct values; plus "
                "__missing__ (null and NaN)",
                "categorical_bins": "reference categories, plus __other__ and __missing__",
            },
            "threshold": self.threshold,
            "moderate_threshold": self.moderate,
            "min_rows": self.min_rows,
            "warnings": list(self.warnings),
            **self.extra,
            "features": [
                {**f.to_dict(), "group": groups.get(f.column, f.column)}
                for f in self.sorted_features()
            ],
        }


def feature_groups(
    columns: Sequence[str], transform_state: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Map each feature to the input it derives from, so raw and transformed views of one
    feature are shown together: ``raw.x``, ``vec.x`` and ``vec.x__<part>`` → ``x``.

    With the transform's state the outputs of each input are known exactly; without it a
    ``vec.a__b`` belongs to ``a`` when ``raw.a`` or another ``vec.a__*`` is reported too.
    """
    out: dict[str, str] = {}
    if transform_state is not None:
        for entry in transform_state.get("columns", []):
            for output in entry.get("outputs") or []:
                out[f"vec.{output}"] = entry["column"]
    bare = [c[4:] if c.startswith(PREFIXES) else c for c in columns]
    raw = {c[4:] for c in columns if c.startswith("raw.")}
    stems: dict[str, int] = {}
    for column in columns:
        if column.startswith("vec.") and "__" in column[4:]:
            stem = column[4:].rsplit("__", 1)[0]
            stems[stem] = stems.get(stem, 0) + 1
    for column, name in zip(columns, bare, strict=True):
        if column in out:
            continue
        if column.startswith("vec.") and name not in raw and "__" in name:
            stem = name.rsplit("__", 1)[0]
            if stem in raw or stems.get(stem, 0) > 1:
                name = stem
        out[column] = name
    return out


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
    default_features: Sequence[str] | None = None,
    exclude: Mapping[str, str] | None = None,
    transform: FittedTransform | None = None,
    sources: Mapping[str, Sequence[str]] | None = None,
    warnings: Sequence[str] = (),
    scan: Callable[..., None] | None = None,
) -> DriftReport:
    """Compare ``current`` with ``profile``.

    ``features``: the features the user named (``--features``), either spelling; else
    ``default_features`` (e.g. from ``source_reference``), else every profiled feature.
    ``exclude`` maps a feature to the reason it is not compared (``request_time_features``,
    identifiers); it is then reported with status ``excluded`` — unless the user named it in
    ``features``, which always compares. ``transform``: the artifact the profile belongs to;
    a raw batch lacking the ``vec.*`` outputs gets them computed with its batch path (when
    that is impossible, a report warning says why and only the ``raw.*`` features are
    compared).
    ``sources`` (source name → its contract's columns) only improves the error below.

    InputError (exit 2) when there are no current rows; UsageError (exit 2, one line saying
    what ``--current`` must contain) when the current data holds none of the features.
    """
    import polars as pl

    names = select_features(profile, features or default_features)
    named = set(select_features(profile, features)) if features else set()
    skip = {n: r for n, r in (exclude or {}).items() if n in names and n not in named}
    parts = [current] if isinstance(current, pl.LazyFrame) else list(current)
    if rows is None:
        rows = sum(count_rows(p) for p in parts)
    if rows == 0:
        info = current_info or {}
        where = info.get("path", "the current data")
        if info.get("since"):
            where += f" between {info['since']} and {info['until']}"
        raise InputError(
            f"no current rows in {where}", hint="no data in the window is an error, not a pass"
        )
    warnings = list(warnings)
    if transform is not None and parts:
        parts, problem = with_transform_outputs(transform, profile, parts)
        if problem:
            warnings.append(problem)
    available = parts[0].collect_schema().names()
    profiled = list(profile["columns"])
    compared = [n for n in names if n not in skip]
    rename = {}
    for name in compared:
        hit = match_column(name, available, profiled)
        if hit is not None and hit != name:
            rename[name] = hit
    if compared and not any(match_column(n, available, profiled) for n in compared):
        inputs = transform.input_columns if transform is not None else None
        raise nothing_applies(
            profile, compared, available, sources or {}, profile_info or {}, inputs=inputs
        )
    drifts = (
        compare_to_profile(
            profile,
            parts,
            compared,
            threshold=threshold,
            thresholds=per_feature_thresholds(thresholds or {}, compared),
            moderate=moderate,
            min_rows=min_rows,
            rename=rename,
            rows=rows,
            scan=scan,
        )
        if compared
        else []
    )
    by_name = {d.column: d for d in drifts}
    for name in names:
        if name in skip:
            entry = profile["columns"].get(name, {})
            by_name[name] = ColumnDrift(
                name,
                entry.get("kind", "unknown"),
                EXCLUDED,
                threshold=float((thresholds or {}).get(name, threshold)),
                null_rate_ref=entry.get("null_rate"),
                mean_ref=entry.get("mean"),
                std_ref=entry.get("std"),
                message=f"excluded: {skip[name]}",
            )
    state = transform.state if transform is not None else None
    info = {"rows": rows, **(current_info or {})}
    if "transform_version" in available and "versions" not in info:
        info["versions"] = logged_versions(parts)
    return DriftReport(
        features=[by_name[n] for n in names],
        profile_info={"rows": profile.get("rows"), **(profile_info or {})},
        current_info=info,
        threshold=threshold,
        moderate=moderate,
        min_rows=min_rows,
        warnings=warnings,
        groups=feature_groups(names, state),
    )


def logged_versions(parts: Sequence[pl.LazyFrame]) -> dict[str, int]:
    """Rows per ``transform_version`` of a serving log (the versions that served the data)."""
    import polars as pl

    counts: dict[str, int] = {}
    try:
        for frame in pl.collect_all([p.group_by("transform_version").len() for p in parts]):
            for version, n in frame.iter_rows():
                key = "(none)" if version is None else str(version)
                counts[key] = counts.get(key, 0) + int(n)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read the current data: {str(exc).splitlines()[0]}") from None
    return dict(sorted(counts.items()))


def nothing_applies(
    profile: dict,
    features: Sequence[str],
    available: Sequence[str],
    sources: Mapping[str, Sequence[str]],
    profile_info: Mapping[str, Any],
    *,
    inputs: Sequence[str] | None = None,
) -> UsageError:
    """The one-line error when the current data holds none of the reference's features.

    ``inputs``: the transform's input columns (default: the profile's ``raw.*`` columns)."""
    shown = ", ".join(features[:6]) + (
        f" ... ({len(features)} in all)" if len(features) > 6 else ""
    )
    looks_like = guess_source(available, sources)
    of_source = profile_info.get("data_source")
    if of_source:
        message = (
            f"{arg_name('current')} has none of the columns profiled for source {of_source!r} "
            f"({shown}): it must be a batch of that source"
        )
    elif any(f.startswith(PREFIXES) for f in features):
        known = [*profile["columns"], *profile.get("unsupported", {})]
        raw = (
            list(inputs)
            if inputs is not None
            else sorted({f[4:] for f in known if f.startswith("raw.")})
        )
        message = (
            f"{arg_name('current')} has none of the transform profile's features: it must hold the "
            f"transform's inputs ({', '.join(raw[:6]) or '-'}"
            f"{' ...' if len(raw) > 6 else ''}, named x or raw.x; e.g. the output of "
            "`mlpipe training-set`) or its outputs (vec.*), or be a serving log"
        )
    else:
        message = f"{arg_name('current')} has none of the reference's features ({shown})"
    if looks_like and looks_like != of_source:
        return UsageError(
            message,
            hint=f"it looks like a raw batch of source {looks_like!r}: "
            f"compare it with {given('source', looks_like)}",
        )
    if not of_source and sources:
        return UsageError(
            message, hint=f"for a raw batch of a source, pass {arg('source', 'NAME')}"
        )
    return UsageError(message)


def guess_source(columns: Sequence[str], sources: Mapping[str, Sequence[str]]) -> str | None:
    """The configured source whose contract columns the data covers best (at least half of
    them, and more than any other source), else None."""
    have = set(columns)
    best, best_share = None, 0.0
    for name, contract in sorted(sources.items()):
        share = len(have & set(contract)) / len(contract) if contract else 0.0
        if share >= 0.5 and share > best_share:
            best, best_share = name, share
    return best


# ----------------------------------------------------------------------------- references


def default_request_time_columns(config: PipelineConfig) -> list[str]:
    """Transform inputs `serve` sets to the request time: ``serving.request_time_columns``,
    else the training set's timestamp (the spine time the features were computed as of)."""
    configured = config.serving.request_time_columns
    if configured is not None:
        return list(configured)
    return [config.training_set.timestamp] if config.training_set else []


def request_time_features(
    profile: dict, transform_state: Mapping[str, Any] | None, request_time_columns: Sequence[str]
) -> dict[str, str]:
    """Profile features derived from the request time, with the reason to exclude them.

    At serving time the spine timestamp (``label_ts``) is the request time, and training rows
    had label times: hour/weekday/month encodings of it always differ, with no drift in the
    data. Such features are the ``raw.<column>`` itself and every output of a transform step
    whose input — or ``reference`` column (``days_since``) — is a request-time column.
    Without the transform's state (a ``--profile`` file) the outputs are recognised by name:
    ``vec.<column>`` and ``vec.<column>__*``.
    """
    request = set(request_time_columns)
    known = set(profile["columns"]) | set(profile.get("unsupported", {}))
    derived = {f"raw.{c}" for c in request}
    if transform_state is None:
        derived.update(
            c for c in known for r in request if c == f"vec.{r}" or c.startswith(f"vec.{r}__")
        )
    else:
        for entry in transform_state.get("columns", []):
            state = entry.get("state") if isinstance(entry.get("state"), Mapping) else {}
            if entry["column"] in request or state.get("reference") in request:
                derived.update(f"vec.{o}" for o in entry.get("outputs") or [])
    return {c: REQUEST_TIME_REASON for c in sorted(derived & known)}


def with_transform_outputs(
    transform: FittedTransform, profile: dict, parts: list[pl.LazyFrame]
) -> tuple[list[pl.LazyFrame], str | None]:
    """A raw batch lacks the transform outputs (``vec.*``): compute them with the batch path.

    The raw inputs are kept as ``raw.<col>`` and the outputs named ``vec.<col>`` (one query
    per part). Returns the parts and, when the batch cannot be transformed (an input missing
    or of another dtype), the parts unchanged and a warning saying why.
    """
    import polars as pl

    schema = parts[0].collect_schema()
    names = schema.names()
    profiled = list(profile["columns"])
    wanted = [
        c for c in profiled if c.startswith("vec.") and match_column(c, names, profiled) is None
    ]
    if not wanted:
        return parts, None
    try:
        transform.check_input_schema(schema)
    except ArtifactError as exc:
        return parts, f"transform outputs not computed, so vec.* features cannot be compared: {exc}"
    keep_raw = [
        pl.col(c).alias(f"raw.{c}") for c in transform.input_columns if f"raw.{c}" not in names
    ]
    rename = {c: f"vec.{c}" for c in transform.output_columns}
    return [transform.transform_batch(p.with_columns(keep_raw)).rename(rename) for p in parts], None
