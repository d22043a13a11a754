"""Training-serving skew and shadow comparison (psi-report --skew / --compare).

Both need a fitted transform and the drift machinery, so they live in the ops layer (drift/
never imports transforms).

* ``skew_check``: recompute every logged vector from the logged raw record with the batch
  transform path (``FittedTransform.transform_batch``) and compare it with what was served.
  One fused Polars query over the log: per output column the mismatch count, the largest
  absolute difference and an example entity.
* ``shadow_compare``: transform the same data with two transform versions and report PSI of
  B's outputs against A's (A's outputs are profiled with ``build_profile``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlpipe_cli.drift.compare import DEFAULT_MIN_ROWS, DEFAULT_MODERATE, DEFAULT_THRESHOLD
from mlpipe_cli.drift.report import DriftReport, count_rows
from mlpipe_cli.errors import InputError
from mlpipe_cli.servinglog import VEC_PREFIX, raw_column, vec_column

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.transforms import FittedTransform

SKEW_TOLERANCE = 1e-9


@dataclass
class ColumnSkew:
    column: str
    mismatches: int = 0
    max_abs_diff: float | None = None
    example_entity: str | None = None
    example_served: float | None = None
    example_recomputed: float | None = None
    message: str = ""


@dataclass
class SkewReport:
    transform_version: str
    rows: int
    rows_mismatched: int
    tolerance: float
    log_transform_versions: dict[str, int]
    columns: list[ColumnSkew] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.rows_mismatched > 0 or bool(self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "failed" if self.failed else "passed",
            "transform_version": self.transform_version,
            "rows": self.rows,
            "rows_mismatched": self.rows_mismatched,
            "tolerance": self.tolerance,
            "tolerance_rule": "|recomputed - served| <= tolerance * max(1, |served|); "
            "null == null and NaN == NaN",
            "log_transform_versions": self.log_transform_versions,
            "problems": self.problems,
            "columns": [asdict(c) for c in self.columns],
        }


def skew_check(
    transform: FittedTransform, log: pl.LazyFrame, *, tolerance: float = SKEW_TOLERANCE
) -> SkewReport:
    """Compare served ``vec.*`` with ``transform_batch`` of the logged ``raw.*`` columns."""
    import polars as pl

    schema = log.collect_schema()
    rows = count_rows(log)
    if rows == 0:
        raise InputError(
            "no serving-log rows in the window",
            hint="no data in the window is an error, not a pass",
        )
    versions: dict[str, int] = {}
    if "transform_version" in schema:
        counts = log.group_by("transform_version").agg(pl.len()).collect()
        versions = {str(v): int(n) for v, n in counts.sort("transform_version").iter_rows()}

    problems = []
    missing_raw = [c for c in transform.input_columns if raw_column(c) not in schema]
    if missing_raw:
        problems.append(
            f"the log has no raw.{missing_raw[0]}, an input of transform {transform.version}"
            + (f" (and {len(missing_raw) - 1} more)" if len(missing_raw) > 1 else "")
        )
        return SkewReport(transform.version, rows, rows, tolerance, versions, [], problems)
    outputs = [c for c in transform.output_columns if vec_column(c) in schema]
    missing_vec = [c for c in transform.output_columns if vec_column(c) not in schema]
    extra_vec = sorted(
        c
        for c in schema.names()
        if c.startswith(VEC_PREFIX) and c[4:] not in set(transform.output_columns)
    )
    if missing_vec:
        problems.append(
            f"transform {transform.version} outputs {len(missing_vec)} column(s) the "
            f"log does not have, e.g. vec.{missing_vec[0]}"
        )
    if extra_vec:
        problems.append(
            f"the log has {len(extra_vec)} vec.* column(s) transform "
            f"{transform.version} does not output, e.g. {extra_vec[0]}"
        )

    entity = pl.col("entity").cast(pl.String) if "entity" in schema else pl.lit(None, pl.String)
    served = {c: f"\x00served.{c}" for c in outputs}
    base = log.select(
        entity.alias("\x00entity"),
        *[pl.col(vec_column(c)).cast(pl.Float64).alias(served[c]) for c in outputs],
        *[pl.col(raw_column(c)).alias(c) for c in transform.input_columns],
    )
    try:
        recomputed = transform.transform_batch(base)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot recompute vectors: {str(exc).splitlines()[0]}") from None

    aggs = []
    flags = []
    for i, c in enumerate(outputs):
        rec = pl.col(c).cast(pl.Float64)
        srv = pl.col(served[c])
        diff = (rec - srv).abs()
        same = (
            (rec.is_null() & srv.is_null())
            | (rec.is_nan() & srv.is_nan()).fill_null(False)
            | (diff <= tolerance * pl.max_horizontal(pl.lit(1.0), srv.abs())).fill_null(False)
        )
        bad = ~same
        flags.append(bad)
        aggs += [
            bad.sum().alias(f"n{i}"),
            diff.filter(bad).max().alias(f"d{i}"),
            pl.col("\x00entity").filter(bad).first().alias(f"e{i}"),
            srv.filter(bad).first().alias(f"s{i}"),
            rec.filter(bad).first().alias(f"r{i}"),
        ]
    if not outputs:
        return SkewReport(
            transform.version,
            rows,
            0,
            tolerance,
            versions,
            [],
            problems or ["no output column of the transform is in the log"],
        )
    aggs.append(pl.any_horizontal(flags).sum().alias("rows_bad"))
    try:
        res = recomputed.select(aggs).collect().row(0, named=True)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot recompute vectors: {str(exc).splitlines()[0]}") from None
    columns = [
        ColumnSkew(
            column=vec_column(c),
            mismatches=int(res[f"n{i}"]),
            max_abs_diff=res[f"d{i}"],
            example_entity=res[f"e{i}"],
            example_served=res[f"s{i}"],
            example_recomputed=res[f"r{i}"],
        )
        for i, c in enumerate(outputs)
    ]
    columns.sort(key=lambda c: (-c.mismatches, c.column))
    return SkewReport(
        transform.version, rows, int(res["rows_bad"]), tolerance, versions, columns, problems
    )


def shadow_compare(
    transform_a: FittedTransform,
    transform_b: FittedTransform,
    current: pl.LazyFrame,
    *,
    features: list[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    thresholds: dict[str, float] | None = None,
    moderate: float = DEFAULT_MODERATE,
    min_rows: int = DEFAULT_MIN_ROWS,
    bins: int = 10,
) -> DriftReport:
    """PSI of version B's outputs against version A's on the same data (A is the reference)."""
    import polars as pl

    from mlpipe_cli.drift.compare import ColumnDrift, compare_to_profile
    from mlpipe_cli.drift.profile import build_profile
    from mlpipe_cli.drift.report import per_feature_thresholds, select_features

    rows = count_rows(current)
    if rows == 0:
        raise InputError("no current rows to transform", hint="no data is an error, not a pass")
    out_a = (
        transform_a.transform_batch(current)
        .select([pl.col(c).alias(vec_column(c)) for c in transform_a.output_columns])
        .collect()
    )
    out_b = (
        transform_b.transform_batch(current)
        .select([pl.col(c).alias(vec_column(c)) for c in transform_b.output_columns])
        .collect()
    )
    profile = build_profile(out_a, bins=bins)
    names = select_features(profile, features)
    drifts = compare_to_profile(
        profile,
        out_b,
        names,
        threshold=threshold,
        thresholds=per_feature_thresholds(thresholds or {}, names),
        moderate=moderate,
        min_rows=min_rows,
    )
    only_b = [c for c in out_b.columns if c not in out_a.columns]
    if not features:
        for c in only_b:
            drifts.append(
                ColumnDrift(
                    c,
                    "unknown",
                    "error",
                    threshold=threshold,
                    message=f"output only of version {transform_b.version}",
                )
            )
    for d in drifts:
        if d.status == "error" and "not in the current data" in d.message:
            d.message = f"output only of version {transform_a.version}"
    return DriftReport(
        features=drifts,
        profile_info={
            "source": "shadow",
            "kind": "transform",
            "version": transform_a.version,
            "rows": rows,
        },
        current_info={
            "source": "shadow",
            "kind": "transform",
            "version": transform_b.version,
            "rows": rows,
        },
        threshold=threshold,
        moderate=moderate,
        min_rows=min_rows,
    )
