"""Distribution checks of a batch against a reference profile (PSI, KS, mean shift, nulls).

All statistics come from the one shared implementation, ``mlpipe_cli.drift.compare``; this
module only turns its per-column results into checks with this source's thresholds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeGuard

from mlpipe_cli.validation.report import ERROR, FAIL, PASS, SKIPPED, WARN, CheckResult

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config.sources import SourceConfig


def distribution_checks(
    source_name: str,
    source: SourceConfig,
    lazy: pl.LazyFrame,
    profile: dict[str, Any],
    *,
    schema_ok: bool = True,
    scan: Any = None,
) -> list[CheckResult]:
    from mlpipe_cli.drift.compare import DEFAULT_THRESHOLD, compare_to_profile

    cfg = source.distribution
    present = set(lazy.collect_schema().names())
    profiled = _profiled_columns(profile)
    columns = [c for c in (cfg.columns or profiled) if c in profiled]
    results: list[CheckResult] = []
    runnable = [c for c in columns if c in present]
    for column in columns:
        if column not in present:
            results.append(
                CheckResult(
                    f"{source_name}.{column}.psi",
                    source_name,
                    column,
                    "psi",
                    cfg.severity,
                    status=SKIPPED,
                    message="column missing",
                )
            )
    if not runnable:
        return results
    try:
        drifts = compare_to_profile(
            profile, lazy, runnable, threshold=cfg.psi_threshold or DEFAULT_THRESHOLD, scan=scan
        )
    except Exception as exc:  # the shared implementation crashed: a tool error
        results.append(
            CheckResult(
                f"{source_name}.table.distribution",
                source_name,
                None,
                "distribution",
                cfg.severity,
                status=ERROR,
                message=f"distribution comparison crashed: {exc}",
            )
        )
        return results
    for drift in drifts:
        results.extend(_checks_for(source_name, cfg, drift))
    return results


def _profiled_columns(profile: dict[str, Any]) -> list[str]:
    columns = profile.get("columns", {})
    return sorted(columns) if isinstance(columns, dict) else []


def _fail_status(severity: str) -> str:
    return FAIL if severity == "error" else WARN


def _checks_for(source_name: str, cfg: Any, drift: Any) -> list[CheckResult]:
    column = drift.column
    sev = cfg.severity
    rows = getattr(drift, "rows", None)
    out: list[CheckResult] = []

    def make(kind: str, statistic: float | None, threshold: float | None) -> CheckResult:
        check = CheckResult(f"{source_name}.{column}.{kind}", source_name, column, kind, sev,
                            statistic=statistic, threshold=threshold, rows=rows)  # fmt: skip
        out.append(check)
        return check

    if getattr(drift, "status", None) == "error":
        check = make("psi", None, cfg.psi_threshold)
        if not rows or (drift.null_rate_cur is not None and drift.null_rate_cur >= 1.0):
            # no rows / all null: a property of the data (reported by other checks), not a crash
            check.status = SKIPPED
        else:
            check.status = ERROR
        check.message = f"cannot compare column {column!r}: {drift.message}"
        if check.status == SKIPPED:
            out.extend(_null_rate_only(source_name, cfg, drift))
        return out

    if cfg.psi_threshold is not None and drift.psi is not None:
        check = make("psi", drift.psi, cfg.psi_threshold)
        check.details = {"bins": getattr(drift, "bins", None)}
        if drift.psi >= cfg.psi_threshold:
            check.status = _fail_status(sev)
            check.message = f"PSI of {column!r} is {drift.psi:.4g} >= {cfg.psi_threshold}"
        if drift.warnings:
            check.message = "; ".join(filter(None, [check.message, *drift.warnings]))
    pvalue = getattr(drift, "ks_pvalue", None)
    if cfg.ks_pvalue is not None and pvalue is not None:
        check = make("ks", pvalue, cfg.ks_pvalue)
        check.details = {"ks_statistic": drift.ks_statistic}
        if pvalue < cfg.ks_pvalue:
            check.status = _fail_status(sev)
            check.message = (
                f"KS test on {column!r}: statistic {drift.ks_statistic:.4g}, p-value "
                f"{pvalue:.3g} < {cfg.ks_pvalue}"
            )
    mean_ref, mean_cur = getattr(drift, "mean_ref", None), getattr(drift, "mean_cur", None)
    if cfg.mean_shift_factor is not None and _finite(mean_ref) and _finite(mean_cur):
        factor = _shift_factor(mean_ref, mean_cur)
        check = make("mean_shift", factor, cfg.mean_shift_factor)
        check.details = {"mean_ref": mean_ref, "mean_cur": mean_cur}
        if factor > cfg.mean_shift_factor:
            check.status = _fail_status(sev)
            check.message = (
                f"mean of {column!r} moved from {mean_ref:.4g} to {mean_cur:.4g} "
                f"({factor:.3g}x > {cfg.mean_shift_factor}x)"
            )
    null_ref, null_cur = (
        getattr(drift, "null_rate_ref", None),
        getattr(drift, "null_rate_cur", None),
    )
    if cfg.max_null_rate_increase is not None and _finite(null_ref) and _finite(null_cur):
        increase = null_cur - null_ref
        check = make("null_rate", increase, cfg.max_null_rate_increase)
        check.details = {"null_rate_ref": null_ref, "null_rate_cur": null_cur}
        if increase > cfg.max_null_rate_increase:
            check.status = _fail_status(sev)
            check.message = (
                f"null rate of {column!r} rose from {null_ref:.3g} to {null_cur:.3g} "
                f"(+{increase:.3g} > {cfg.max_null_rate_increase})"
            )
    for check in out:
        if check.status == PASS and not check.message:
            check.message = ""
    return out


def _null_rate_only(source_name: str, cfg: Any, drift: Any) -> list[CheckResult]:
    null_ref, null_cur = drift.null_rate_ref, drift.null_rate_cur
    if cfg.max_null_rate_increase is None or not (_finite(null_ref) and _finite(null_cur)):
        return []
    increase = null_cur - null_ref
    check = CheckResult(
        f"{source_name}.{drift.column}.null_rate",
        source_name,
        drift.column,
        "null_rate",
        cfg.severity,
        statistic=increase,
        threshold=cfg.max_null_rate_increase,
        rows=drift.rows,
    )
    check.details = {"null_rate_ref": null_ref, "null_rate_cur": null_cur}
    if increase > cfg.max_null_rate_increase:
        check.status = _fail_status(cfg.severity)
        check.message = (
            f"null rate of {drift.column!r} rose from {null_ref:.3g} to {null_cur:.3g} "
            f"(+{increase:.3g} > {cfg.max_null_rate_increase})"
        )
    return [check]


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _shift_factor(ref: float, cur: float) -> float:
    """How many times larger (or smaller) the current mean is, in absolute value."""
    a, b = abs(ref), abs(cur)
    if a == 0 and b == 0:
        return 1.0
    if a == 0 or b == 0:
        return math.inf
    return max(a / b, b / a)
