"""`mlpipe psi-report`: drift of current data (a batch or the serving log) vs the reference.

Three checks, one function each:

* ``psi_report``: the reference profile (a transform version's ``profile.json`` or a file)
  against a Parquet batch (``current``) or a serving-log window (``serving_log``). A raw batch
  gets the transform outputs computed first, so ``vec.*`` features are compared too.
* ``skew_report``: every logged vector recomputed from its ``raw.*`` record (``ops.skew``).
* ``shadow_report``: PSI of transform version B's outputs against version A's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import DataCheckFailed, UsageError
from mlpipe_cli.servinglog import VEC_PREFIX

if TYPE_CHECKING:
    from datetime import datetime

    import polars as pl

    from mlpipe_cli.config.monitoring import MonitoringConfig
    from mlpipe_cli.drift.report import DriftReport
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.skew import SkewReport


@dataclass(frozen=True)
class DriftResult:
    """A drift report (psi_report, shadow_report); ``html`` is the HTML file written, if any."""

    report: DriftReport
    html: Path | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole report

    @property
    def failed(self) -> bool:
        return bool(self.report.failed)

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "seconds": round(self.seconds, 3)}

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when any feature drifted or errored."""
        report = self.report
        failed = report.failed
        if failed:
            names = ", ".join(f.column for f in report.sorted_features() if f.failed)
            raise DataCheckFailed(f"{len(failed)} of {len(report.features)} feature(s) drifted "
                                  f"or failed: {names}", report=self.to_dict())


@dataclass(frozen=True)
class SkewResult:
    report: SkewReport
    serving_log: Path
    since: datetime
    until: datetime

    @property
    def failed(self) -> bool:
        return self.report.failed

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "serving_log": str(self.serving_log),
                "since": self.since.isoformat(), "until": self.until.isoformat()}

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when a logged vector differs or the log cannot be checked."""
        report = self.report
        if report.failed:
            first = report.problems[0] if report.problems else (
                f"{report.rows_mismatched} of {report.rows} logged rows differ from transform "
                f"{report.transform_version} beyond {report.tolerance:g}")
            raise DataCheckFailed(f"training-serving skew: {first}", report=self.to_dict())


def psi_report(
    project: Project,
    *,
    artifact: str | None = None,
    profile: Path | None = None,
    current: Path | None = None,
    serving_log: Path | None = None,
    since: str | None = None,
    until: str | None = None,
    features: list[str] | None = None,
    threshold: float | None = None,
    min_rows: int | None = None,
    html: Path | None = None,
    source: str | None = None,
    include_time_features: bool = False,
) -> DriftResult:
    """Compare the reference profile with ``current`` or a ``serving_log`` window.

    The reference is a transform version's profile (``artifact``, default latest), a profile
    file, or — with ``source`` — the validation profile saved for that source, to compare a
    raw batch of it. On a serving log, features derived from the request time are excluded
    unless ``include_time_features``.
    """
    started = time.perf_counter()
    if (current is None) == (serving_log is None):
        raise UsageError("give exactly one of --current PATH or --serving-log DIR")
    if profile is not None and artifact is not None:
        raise UsageError("give either --profile FILE or --artifact VERSION, not both")
    if source is not None and (artifact is not None or profile is not None or serving_log):
        raise UsageError("--source compares a raw batch (--current) with the source's saved "
                         "validation profile; it takes no --artifact, --profile or --serving-log")
    if include_time_features and serving_log is None:
        raise UsageError("--include-time-features applies to --serving-log reports")
    if (since or until) and serving_log is None:
        raise UsageError("--since/--until select a serving-log window; use them with "
                         "--serving-log")
    monitoring = _monitoring(project, need_config=profile is None)

    from mlpipe_cli.drift.report import (
        default_request_time_columns,
        drift_report,
        request_time_features,
        scan_parts,
        serving_log_parts,
    )
    from mlpipe_cli.io import parquet_row_count, resolve_parquet_files
    from mlpipe_cli.servinglog import parse_window

    warnings: list[str] = []
    default_features: list[str] | None = None
    exclude: dict[str, str] | None = None
    transform = None
    if source is not None:
        from mlpipe_cli.ops.profiles import source_reference

        reference, profile_info, default_features, exclude = source_reference(
            project.config, project.store, source
        )
    else:
        reference, profile_info = _load_profile(project, profile, artifact)
    if serving_log is not None:
        start, end = parse_window(since, until, monitoring.window)
        parts, rows = serving_log_parts(serving_log, start, end)
        current_info: dict[str, Any] = {
            "source": "serving-log", "path": str(serving_log),
            "since": start.isoformat(), "until": end.isoformat(),
        }
        if not include_time_features:
            state = None
            if profile_info.get("kind") == "transform":
                from mlpipe_cli.transforms import load_transform

                state = load_transform(project.store, profile_info["version"]).state
            columns = default_request_time_columns(project.config) if (
                project.config_path.exists()) else []
            exclude = request_time_features(reference, state, columns)
    else:
        assert current is not None
        files = resolve_parquet_files(current)
        parts = scan_parts(files)
        rows = sum(parquet_row_count(f) for f in files)
        current_info = {"source": "file", "path": str(current)}
        if profile_info.get("kind") == "transform" and parts and _lacks_outputs(reference, parts):
            from mlpipe_cli.transforms import load_transform

            transform = load_transform(project.store, profile_info["version"])
    sources = (
        {n: list(s.columns) for n, s in project.config.sources.items()}
        if project.config_path.exists() else None
    )

    report = drift_report(
        reference,
        parts,
        rows=rows,
        features=features,
        threshold=threshold if threshold is not None else monitoring.psi_threshold,
        thresholds=monitoring.thresholds(),
        moderate=min(monitoring.moderate_threshold,
                     threshold if threshold is not None else monitoring.psi_threshold),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        profile_info=profile_info,
        current_info=current_info,
        default_features=default_features,
        exclude=exclude,
        transform=transform,
        sources=sources,
    )
    warnings.extend(report.warnings)
    _write_html(report, html)
    return DriftResult(report=report, html=html, warnings=warnings,
                       seconds=time.perf_counter() - started)


def skew_report(project: Project, *, serving_log: Path, artifact: str | None = None,
                since: str | None = None, until: str | None = None) -> SkewResult:
    """Recompute every logged vector in the window with transform ``artifact`` (default
    latest) and compare it with the served one."""
    from mlpipe_cli.drift.report import scan_serving_log
    from mlpipe_cli.ops.skew import skew_check
    from mlpipe_cli.servinglog import parse_window
    from mlpipe_cli.transforms import load_transform

    monitoring = project.config.monitoring
    transform = load_transform(project.store, artifact or "latest")
    start, end = parse_window(since, until, monitoring.window)
    lf = scan_serving_log(serving_log, start, end)
    report = skew_check(transform, lf)
    return SkewResult(report=report, serving_log=serving_log, since=start, until=end)


def shadow_report(project: Project, *, versions: tuple[str, str], current: Path,
                  features: list[str] | None = None, threshold: float | None = None,
                  min_rows: int | None = None, html: Path | None = None) -> DriftResult:
    """PSI of transform ``versions[1]``'s outputs against ``versions[0]``'s on ``current``."""
    from mlpipe_cli.io import scan_parquet
    from mlpipe_cli.ops.skew import shadow_compare
    from mlpipe_cli.transforms import load_transform

    started = time.perf_counter()
    monitoring = project.config.monitoring
    gate = threshold if threshold is not None else monitoring.psi_threshold
    transform_a = load_transform(project.store, versions[0])
    transform_b = load_transform(project.store, versions[1])
    report = shadow_compare(
        transform_a, transform_b, scan_parquet(current), features=features, threshold=gate,
        thresholds=monitoring.thresholds(), moderate=min(monitoring.moderate_threshold, gate),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        bins=monitoring.bins,
    )
    report.current_info["path"] = str(current)
    _write_html(report, html)
    return DriftResult(report=report, html=html, seconds=time.perf_counter() - started)


def _write_html(report: DriftReport, html: Path | None) -> None:
    if html is None:
        return
    from mlpipe_cli.drift.html import write_html

    write_html(report.to_dict(), html)


def _monitoring(project: Project, *, need_config: bool) -> MonitoringConfig:
    from mlpipe_cli.config.monitoring import MonitoringConfig

    if not need_config and not project.config_path.exists():
        return MonitoringConfig()
    return project.config.monitoring


def _load_profile(project: Project, profile_file: Path | None, artifact: str | None
                  ) -> tuple[dict, dict[str, Any]]:
    from mlpipe_cli.drift.profile import read_profile

    if profile_file is not None:
        return read_profile(profile_file), {"source": "file", "path": str(profile_file)}
    version = project.store.get("transform", artifact or "latest")
    path = version.file("profile.json")
    return read_profile(path), {"source": "artifact", "kind": "transform",
                                "version": version.version, "path": str(path)}


def _lacks_outputs(profile: dict, parts: list[pl.LazyFrame]) -> bool:
    """Whether a batch lacks profiled transform outputs (vec.*): only then is the transform
    loaded, to compute them (a batch that already carries them needs no transform)."""
    from mlpipe_cli.drift.report import match_column

    names = parts[0].collect_schema().names()
    profiled = list(profile["columns"])
    return any(
        c.startswith(VEC_PREFIX) and match_column(c, names, profiled) is None for c in profiled
    )
