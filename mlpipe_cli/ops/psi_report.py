"""`mlpipe psi-report`: drift of current data (a batch or the serving log) vs the reference.

Four checks, one function each:

* ``psi_report``: the reference profile (a transform version's ``profile.json`` or a file)
  against a Parquet batch (``current``) or a serving-log window (``serving_log``). A raw batch
  gets the transform outputs computed first, so ``vec.*`` features are compared too.
* ``skew_report``: every logged vector recomputed from its ``raw.*`` record (``ops.skew``).
* ``shadow_report``: PSI of transform version B's outputs against version A's.
* ``shadow_log_report``: live ``vec.*`` against ``shadow.vec.*`` of a serving-log window
  (`serve --shadow`): same requests, two versions; plus prediction agreement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg, arg_name
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
            raise DataCheckFailed(
                f"{len(failed)} of {len(report.features)} feature(s) drifted or failed: {names}",
                report=self.to_dict(),
            )


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
        return {
            **self.report.to_dict(),
            "serving_log": str(self.serving_log),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
        }

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when a logged vector differs or the log cannot be checked."""
        report = self.report
        if report.failed:
            first = (
                report.problems[0]
                if report.problems
                else (
                    f"{report.rows_mismatched} of {report.rows} logged rows differ from transform "
                    f"{report.transform_version} beyond {report.tolerance:g}"
                )
            )
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
    engine: str | None = None,
) -> DriftResult:
    """Compare the reference profile with ``current`` or a ``serving_log`` window.

    The reference is a transform version's profile (``artifact``, default latest), a profile
    file, or — with ``source`` — the validation profile saved for that source, to compare a
    raw batch of it. On a serving log, features derived from the request time are excluded
    unless ``include_time_features``. ``engine`` spark reads the current batch or the
    serving-log window on Spark (engines/spark/drift.py: the same report).
    """
    started = time.perf_counter()
    from mlpipe_cli.engines import choose_engine, unsupported
    from mlpipe_cli.servinglog import check_window_flags

    check_window_flags(since, until)  # a bad value first, named, whatever else is wrong
    on_spark = choose_engine(project.config if profile is None else None, engine) == "spark"
    if (current is None) == (serving_log is None):
        raise UsageError(
            f"give exactly one of {arg('current', 'PATH')} or {arg('serving_log', 'DIR')}"
        )
    if profile is not None and artifact is not None:
        raise UsageError(
            f"give either {arg('profile', 'FILE')} or {arg('artifact', 'VERSION')}, not both"
        )
    if source is not None and (artifact is not None or profile is not None or serving_log):
        raise UsageError(
            f"{arg_name('source')} compares a raw batch ({arg_name('current')}) with the "
            "source's saved validation profile; it takes no "
            f"{arg_name('artifact')}, {arg_name('profile')} or {arg_name('serving_log')}"
        )
    if include_time_features and serving_log is None:
        raise UsageError(
            f"{arg_name('include_time_features')} applies to {arg_name('serving_log')} reports"
        )
    if (since or until) and serving_log is None:
        raise UsageError(
            f"{arg_name('since')}/{arg_name('until')} select a serving-log window; "
            f"use them with {arg_name('serving_log')}"
        )
    monitoring = _monitoring(project, need_config=profile is None)

    from mlpipe_cli.drift.report import (
        default_request_time_columns,
        drift_report,
        request_time_features,
        scan_parts,
        serving_log_parts,
    )
    from mlpipe_cli.io import checked_parquet_files, parquet_row_count
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
        if on_spark:
            from mlpipe_cli.engines.spark.drift import spark_serving_log

            parts, rows, log_scan = spark_serving_log(
                _spark_config(project), serving_log, start, end
            )
        else:
            parts, rows = serving_log_parts(serving_log, start, end)
        current_info: dict[str, Any] = {
            "source": "serving-log",
            "path": str(serving_log),
            "since": start.isoformat(),
            "until": end.isoformat(),
        }
        if not include_time_features:
            state = None
            if profile_info.get("kind") == "transform":
                from mlpipe_cli.transforms import load_transform

                state = load_transform(project.store, profile_info["version"]).state
            columns = (
                default_request_time_columns(project.config)
                if (project.config_path.exists())
                else []
            )
            exclude = request_time_features(reference, state, columns)
    else:
        assert current is not None
        # The part check every reading command runs (validate, training-set, fit, ...):
        # scan_parts unifies the parts' schemas, which would turn a part lacking a column
        # into a null surge and take a naive part for the zone of the others.
        files = checked_parquet_files(current)
        parts = scan_parts(files)
        rows = sum(parquet_row_count(f) for f in files)
        current_info = {"source": "file", "path": str(current)}
        if profile_info.get("kind") == "transform" and parts and _lacks_outputs(reference, parts):
            if on_spark:
                raise unsupported("psi-report of a batch without the transform outputs (vec.*)")
            from mlpipe_cli.transforms import load_transform

            transform = load_transform(project.store, profile_info["version"])
    sources = (
        {n: list(s.columns) for n, s in project.config.sources.items()}
        if project.config_path.exists()
        else None
    )

    report = drift_report(
        reference,
        parts,
        rows=rows,
        features=features,
        threshold=threshold if threshold is not None else monitoring.psi_threshold,
        thresholds=monitoring.thresholds(),
        moderate=min(
            monitoring.moderate_threshold,
            threshold if threshold is not None else monitoring.psi_threshold,
        ),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        profile_info=profile_info,
        current_info=current_info,
        default_features=default_features,
        exclude=exclude,
        transform=transform,
        sources=sources,
        scan=(_spark_scan(project, current) if current else log_scan) if on_spark else None,
    )
    warnings.extend(report.warnings)
    _write_html(report, html)
    return DriftResult(
        report=report, html=html, warnings=warnings, seconds=time.perf_counter() - started
    )


def skew_report(
    project: Project,
    *,
    serving_log: Path,
    artifact: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> SkewResult:
    """Recompute every logged vector in the window with transform ``artifact`` (default
    latest) and compare it with the served one."""
    from mlpipe_cli.drift.report import scan_serving_log
    from mlpipe_cli.ops.skew import skew_check
    from mlpipe_cli.servinglog import check_window_flags, parse_window
    from mlpipe_cli.transforms import load_transform

    check_window_flags(since, until)  # before the transform is looked up, as the CLI does
    monitoring = project.config.monitoring
    transform = load_transform(project.store, artifact or "latest")
    start, end = parse_window(since, until, monitoring.window)
    lf = scan_serving_log(serving_log, start, end)
    report = skew_check(transform, lf)
    return SkewResult(report=report, serving_log=serving_log, since=start, until=end)


def shadow_report(
    project: Project,
    *,
    versions: tuple[str, str],
    current: Path,
    features: list[str] | None = None,
    threshold: float | None = None,
    min_rows: int | None = None,
    html: Path | None = None,
) -> DriftResult:
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
        transform_a,
        transform_b,
        scan_parquet(current),
        features=features,
        threshold=gate,
        thresholds=monitoring.thresholds(),
        moderate=min(monitoring.moderate_threshold, gate),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        bins=monitoring.bins,
    )
    report.current_info["path"] = str(current)
    _write_html(report, html)
    return DriftResult(report=report, html=html, seconds=time.perf_counter() - started)


def _spark_scan(project: Project, current: Path | None) -> Any:
    """The Spark engine's pass over ``current`` (engines/spark/drift.py)."""
    from mlpipe_cli.engines.spark.drift import spark_scan

    assert current is not None
    return spark_scan(_spark_config(project), current)


def _spark_config(project: Project) -> Any:
    from mlpipe_cli.config import PipelineConfig

    return project.config if project.config_path.exists() else PipelineConfig(pipeline="psi")


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


def _load_profile(
    project: Project, profile_file: Path | None, artifact: str | None
) -> tuple[dict, dict[str, Any]]:
    from mlpipe_cli.drift.profile import read_profile

    if profile_file is not None:
        return read_profile(profile_file), {"source": "file", "path": str(profile_file)}
    version = project.store.get("transform", artifact or "latest")
    path = version.file("profile.json")
    return read_profile(path), {
        "source": "artifact",
        "kind": "transform",
        "version": version.version,
        "path": str(path),
    }


def _lacks_outputs(profile: dict, parts: list[pl.LazyFrame]) -> bool:
    """Whether a batch lacks profiled transform outputs (vec.*): only then is the transform
    loaded, to compute them (a batch that already carries them needs no transform)."""
    from mlpipe_cli.drift.report import match_column

    names = parts[0].collect_schema().names()
    profiled = list(profile["columns"])
    return any(
        c.startswith(VEC_PREFIX) and match_column(c, names, profiled) is None for c in profiled
    )


@dataclass(frozen=True)
class ShadowLogResult:
    """Live vs shadow on the same requests (``psi-report --compare-shadow --serving-log``).

    ``report``: PSI/KS of each shadow output against the live output of the same name (the
    live side is the reference profile). ``expected``: outputs named by ``--expect-change``;
    they are reported but never fail the check. ``agreement``: prediction agreement when both
    sides were scored (None otherwise).
    """

    report: DriftReport
    live_version: str
    shadow_version: str
    expected: list[str]
    agreement: dict[str, Any] | None
    html: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def unexpected(self) -> list[Any]:
        return [f for f in self.report.failed if f.column not in self.expected]

    @property
    def failed(self) -> bool:
        return bool(self.unexpected)

    def to_dict(self) -> dict[str, Any]:
        doc = self.report.to_dict()
        changed = {f.column for f in self.report.failed}
        doc["status"] = "failed" if self.failed else "passed"
        doc["live_version"] = self.live_version
        doc["shadow_version"] = self.shadow_version
        doc["expected_change"] = {
            "features": list(self.expected),
            "changed": [c for c in self.expected if c in changed],
            "unchanged": [c for c in self.expected if c not in changed],
        }
        doc["unexpected_drift"] = [f.column for f in self.unexpected]
        doc["prediction_agreement"] = self.agreement
        return doc

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when a feature not named by --expect-change drifted."""
        if self.unexpected:
            names = ", ".join(f.column for f in self.unexpected)
            raise DataCheckFailed(
                f"shadow {self.shadow_version} differs from live {self.live_version} in "
                f"{len(self.unexpected)} feature(s) not expected to change: {names}",
                hint=f"if the change is intended, name it with {arg_name('expect_change')}",
                report=self.to_dict(),
            )


def shadow_log_report(
    project: Project,
    *,
    serving_log: Path,
    since: str | None = None,
    until: str | None = None,
    features: list[str] | None = None,
    expect_change: list[str] | None = None,
    threshold: float | None = None,
    min_rows: int | None = None,
    decision_threshold: float = 0.5,
    html: Path | None = None,
) -> ShadowLogResult:
    """Compare the live ``vec.*`` and the ``shadow.vec.*`` columns of a serving-log window.

    Both were computed from the same raw values of the same requests (`serve --shadow`), so
    any difference is the transform's. The window must hold one live/shadow version pair
    (UsageError, exit 2, listing the pairs otherwise: narrow it with --since/--until).
    """
    import polars as pl

    from mlpipe_cli.drift.compare import ColumnDrift, compare_to_profile
    from mlpipe_cli.drift.profile import build_profile
    from mlpipe_cli.drift.report import DriftReport, per_feature_thresholds, scan_serving_log
    from mlpipe_cli.errors import InputError
    from mlpipe_cli.servinglog import (
        PREDICTION,
        SHADOW_PREDICTION,
        SHADOW_TRANSFORM_VERSION,
        SHADOW_VEC_PREFIX,
        TRANSFORM_VERSION,
        parse_window,
    )

    monitoring = project.config.monitoring
    gate = threshold if threshold is not None else monitoring.psi_threshold
    start, end = parse_window(since, until, monitoring.window)
    lf = scan_serving_log(serving_log, start, end)
    schema = lf.collect_schema()
    if SHADOW_TRANSFORM_VERSION not in schema:
        raise InputError(
            f"the serving log {serving_log} has no shadow columns ({SHADOW_TRANSFORM_VERSION})",
            hint="run `mlpipe serve --shadow VERSION` to log a shadow beside the live vectors",
        )
    lf = lf.filter(pl.col(SHADOW_TRANSFORM_VERSION).is_not_null())
    pairs = (
        lf.group_by(TRANSFORM_VERSION, SHADOW_TRANSFORM_VERSION)
        .agg(pl.len().alias("rows"))
        .sort(TRANSFORM_VERSION, SHADOW_TRANSFORM_VERSION)
        .collect()
    )
    where = f"{serving_log} [{start.isoformat()} .. {end.isoformat()})"
    if pairs.height == 0:
        raise InputError(
            f"no shadow rows in {where}", hint="no data in the window is an error, not a pass"
        )
    if pairs.height > 1:
        listed = "; ".join(f"live {r[0]} / shadow {r[1]}: {r[2]} rows" for r in pairs.rows())
        raise UsageError(
            f"the window holds several live/shadow version pairs ({listed})",
            hint=f"narrow it with {arg_name('since')}/{arg_name('until')} to one pair",
        )
    live_version, shadow_version, rows = pairs.row(0)
    live = _output_columns(project, live_version, schema, "vec.")
    shadow = _output_columns(project, shadow_version, schema, SHADOW_VEC_PREFIX)
    common = [c for c in live if c in shadow]
    frame = lf.select(
        *(pl.col(f"vec.{c}").alias(f"vec.{c}") for c in common),
        *(pl.col(f"{SHADOW_VEC_PREFIX}{c}").alias(f"shadow:{c}") for c in common),
        *(pl.col(c) for c in (PREDICTION, SHADOW_PREDICTION) if c in schema),
    ).collect()
    names = [f"vec.{c}" for c in common]
    expected = _expected_columns(expect_change or [], live, shadow)
    if features:
        wanted = _expected_columns(features, live, shadow, argument="features")
        names = [n for n in names if n in wanted]
    live_side = frame.select(names)
    shadow_side = frame.select(pl.col(f"shadow:{n[4:]}").alias(n) for n in names)
    profile = build_profile(live_side, bins=monitoring.bins)
    drifts = compare_to_profile(
        profile, shadow_side, names, threshold=gate,
        thresholds=per_feature_thresholds(monitoring.thresholds(), names),
        moderate=min(monitoring.moderate_threshold, gate),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
    )  # fmt: skip
    for c in live:
        if c not in shadow and (not features or f"vec.{c}" in wanted):
            drifts.append(
                ColumnDrift(
                    f"vec.{c}",
                    "unknown",
                    "error",
                    threshold=gate,
                    message=f"output only of live version {live_version}",
                )
            )
    for c in shadow:
        if c not in live and (not features or f"vec.{c}" in wanted):
            drifts.append(
                ColumnDrift(
                    f"vec.{c}",
                    "unknown",
                    "error",
                    threshold=gate,
                    message=f"output only of shadow version {shadow_version}",
                )
            )
    for d in drifts:
        if d.column in expected:
            d.message = "; ".join(filter(None, ["expected change (--expect-change)", d.message]))
    report = DriftReport(
        features=drifts,
        profile_info={"source": "serving-log", "side": "live", "kind": "transform",
                      "version": live_version, "path": str(serving_log), "rows": rows},
        current_info={"source": "serving-log", "side": "shadow", "kind": "transform",
                      "version": shadow_version, "path": str(serving_log), "rows": rows,
                      "since": start.isoformat(), "until": end.isoformat()},
        threshold=gate,
        moderate=min(monitoring.moderate_threshold, gate),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
    )  # fmt: skip
    agreement = _prediction_agreement(frame, decision_threshold)
    result = ShadowLogResult(
        report=report, live_version=live_version, shadow_version=shadow_version,
        expected=[n for n in sorted(expected) if any(d.column == n for d in drifts)],
        agreement=agreement, html=html,
    )  # fmt: skip
    if html is not None:
        _write_shadow_html(result, html)
    return result


def _output_columns(project: Project, version: str, schema: Any, prefix: str) -> list[str]:
    """A logged version's output columns: from its artifact when present (the log cannot
    tell an all-null output from one another version wrote), else from the log's columns."""
    from mlpipe_cli.errors import ArtifactNotFound
    from mlpipe_cli.transforms import load_transform

    try:
        return list(load_transform(project.store, version).output_columns)
    except ArtifactNotFound:
        return [c[len(prefix) :] for c in schema.names() if c.startswith(prefix)]


def _expected_columns(
    names: list[str], live: list[str], shadow: list[str], argument: str = "expect_change"
) -> set[str]:
    """``vec.*`` columns named by ``names``: an output (``age``, ``vec.age``) or an input
    whose outputs it means (``country`` → every ``vec.country__*``)."""
    outputs = list(dict.fromkeys([*live, *shadow]))
    found: set[str] = set()
    unknown = []
    for name in names:
        bare = name.removeprefix("vec.")
        hits = [c for c in outputs if c == bare or c.startswith(f"{bare}__")]
        if not hits:
            unknown.append(name)
        found.update(f"vec.{c}" for c in hits)
    if unknown:
        raise UsageError(
            f"{arg_name(argument)}: no transform output named {', '.join(unknown)} "
            f"(outputs: {', '.join(outputs[:12])}{', ...' if len(outputs) > 12 else ''})"
        )
    return found


def _prediction_agreement(frame: Any, threshold: float) -> dict[str, Any] | None:
    """Mean absolute difference of live and shadow predictions, and the share of decisions
    (score >= threshold) that flip, over rows where both sides were scored."""
    from mlpipe_cli.servinglog import PREDICTION, SHADOW_PREDICTION

    if PREDICTION not in frame.columns or SHADOW_PREDICTION not in frame.columns:
        return None
    both = frame.select(PREDICTION, SHADOW_PREDICTION).drop_nulls()
    if both.height == 0:
        return None
    live, shadow = both[PREDICTION], both[SHADOW_PREDICTION]
    flips = ((live >= threshold) != (shadow >= threshold)).sum()
    return {
        "rows": both.height,
        "mean_abs_diff": float((live - shadow).abs().mean()),
        "max_abs_diff": float((live - shadow).abs().max()),
        "decision_threshold": threshold,
        "flipped": int(flips),
        "flipped_share": int(flips) / both.height,
        "mean_live": float(live.mean()),
        "mean_shadow": float(shadow.mean()),
        "rows_without_both": frame.height - both.height,
    }


def _write_shadow_html(result: ShadowLogResult, html: Path) -> None:
    from html import escape

    from mlpipe_cli.drift.html import render_html
    from mlpipe_cli.drift.profile import atomic_write_text

    doc = result.to_dict()
    page = render_html(
        doc,
        f"Shadow {result.shadow_version} vs live {result.live_version}",
        relative_to=html.absolute().parent,
    )
    lines = []
    agreement = result.agreement
    if agreement is not None:
        lines.append(
            f"prediction agreement over {agreement['rows']} rows: mean |live - shadow| "
            f"{agreement['mean_abs_diff']:.4g}, {agreement['flipped']} decisions flipped "
            f"({agreement['flipped_share']:.2%}) at {agreement['decision_threshold']:g}"
        )
    else:
        lines.append("prediction agreement: not available (both sides need a model)")
    expected = doc["expected_change"]
    if expected["features"]:
        lines.append(
            "expected to change: changed "
            + (", ".join(expected["changed"]) or "none")
            + "; unchanged "
            + (", ".join(expected["unchanged"]) or "none")
        )
    if doc["unexpected_drift"]:
        lines.append("unexpected drift: " + ", ".join(doc["unexpected_drift"]))
    block = "".join(f'<p class="note shadow">{escape(line)}</p>' for line in lines)
    atomic_write_text(html, page.replace("</header>", block + "</header>", 1))
