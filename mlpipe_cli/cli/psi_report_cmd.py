"""`mlpipe psi-report`: drift of current data (a batch or the serving log) vs the reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    JsonOption,
    Output,
    QuietOption,
    run_context,
)
from mlpipe_cli.errors import DataCheckFailed, UsageError

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.cli.common import RunContext
    from mlpipe_cli.config.monitoring import MonitoringConfig


def psi_report(
    artifact: Annotated[
        str | None,
        typer.Option("--artifact", help="Transform artifact whose profile.json is the "
                     "reference: a version or 'latest' (default when --profile is not given)."),
    ] = None,
    profile_file: Annotated[
        Path | None,
        typer.Option("--profile", help="Reference profile JSON file (instead of --artifact)."),
    ] = None,
    current: Annotated[
        Path | None,
        typer.Option("--current", help="Current data: a Parquet file, directory or glob."),
    ] = None,
    serving_log: Annotated[
        Path | None,
        typer.Option("--serving-log", help="Serving-log directory (segment-*.parquet)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Window start for --serving-log: a duration back from "
                     "--until (24h, 7d) or an ISO time. Default: monitoring.window (24h)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Window end (exclusive) for --serving-log: ISO time or "
                     "'now' (default)."),
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option("--features", help="Only these features (comma-separated; repeatable)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0.0, help="PSI gate (default monitoring.psi_threshold, "
                     "0.2); per-feature gates in monitoring.features still apply."),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option("--min-rows", min=1, help="Warn below this many current rows "
                     "(default monitoring.min_rows, 200)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    skew: Annotated[
        bool,
        typer.Option("--skew", help="Training-serving skew: recompute each logged vector from "
                     "its raw.* record with the --artifact transform's batch path and compare "
                     "with the served vec.* (needs --serving-log; exit 1 beyond 1e-9)."),
    ] = False,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option("--compare", help="Shadow check: PSI of transform version B's outputs "
                     "against version A's on the same --current data.",
                     metavar="VERSION_A VERSION_B"),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Compare the reference profile with current data: PSI, KS, null and mean/std changes.

    PSI uses the reference's decile bins (open-ended edge bins), __missing__ and __other__
    bins, natural log, proportions clipped at 1e-4 without renormalisation. Status per
    feature: stable (PSI < 0.1), moderate, drifted (PSI >= threshold) or error (missing
    column, unknown dtype, all null). Exit 1 when any feature drifted or errored, 2 when there
    is no current data (e.g. nothing in the serving-log window), 3 on a bad artifact.

    Example: mlpipe psi-report -c configs/example.yaml --serving-log artifacts/churn/serving-logs --since 24h --html drift.html
    """
    out = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    if skew and compare:
        raise UsageError("--skew and --compare are separate checks; run them one at a time")
    if skew:
        if serving_log is None or current is not None or profile_file is not None:
            raise UsageError("--skew checks a serving log: give --serving-log DIR (and "
                             "optionally --artifact), not --current or --profile")
        if html is not None or features or threshold is not None or min_rows is not None:
            raise UsageError("--html, --features, --threshold and --min-rows belong to drift "
                             "reports; --skew compares every output exactly")
        _skew(out, ctx, artifact, serving_log, since, until)
        return
    if compare:
        if current is None or serving_log is not None or profile_file or artifact:
            raise UsageError("--compare A B transforms --current PATH with both versions; "
                             "do not combine it with --serving-log, --profile or --artifact")
        _shadow(out, ctx, compare, current, _split(features), threshold, min_rows, html)
        return
    if (current is None) == (serving_log is None):
        raise UsageError("give exactly one of --current PATH or --serving-log DIR")
    if profile_file is not None and artifact is not None:
        raise UsageError("give either --profile FILE or --artifact VERSION, not both")
    if (since or until) and serving_log is None:
        raise UsageError("--since/--until select a serving-log window; use them with "
                         "--serving-log")
    monitoring = _monitoring(ctx, need_config=profile_file is None)

    from mlpipe_cli.drift.report import drift_report, parse_window, scan_parts, serving_log_parts
    from mlpipe_cli.io import parquet_row_count, resolve_parquet_files

    profile, profile_info = _load_profile(ctx, profile_file, artifact)
    if serving_log is not None:
        start, end = parse_window(since, until, monitoring.window)
        parts, rows = serving_log_parts(serving_log, start, end)
        current_info: dict[str, Any] = {
            "source": "serving-log", "path": str(serving_log),
            "since": start.isoformat(), "until": end.isoformat(),
        }
    else:
        assert current is not None
        files = resolve_parquet_files(current)
        parts = scan_parts(files)
        rows = sum(parquet_row_count(f) for f in files)
        current_info = {"source": "file", "path": str(current)}
        if profile_info.get("version") and parts:
            parts = _with_transform_outputs(out, ctx, profile_info["version"], profile, parts)

    report = drift_report(
        profile,
        parts,
        rows=rows,
        features=_split(features),
        threshold=threshold if threshold is not None else monitoring.psi_threshold,
        thresholds=monitoring.thresholds(),
        moderate=min(monitoring.moderate_threshold,
                     threshold if threshold is not None else monitoring.psi_threshold),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        profile_info=profile_info,
        current_info=current_info,
    )
    _finish_report(out, report, html)


def _finish_report(out: Output, report: Any, html: Path | None) -> None:
    from mlpipe_cli.drift.html import render_html
    from mlpipe_cli.drift.profile import atomic_write_text

    doc = report.to_dict()
    if html is not None:
        atomic_write_text(html, render_html(doc))
        out.info(f"wrote {html}")
    out.result(doc)
    _print_table(out, report)
    failed = report.failed
    if failed:
        names = ", ".join(f.column for f in report.sorted_features() if f.failed)
        raise DataCheckFailed(f"{len(failed)} of {len(report.features)} feature(s) drifted or "
                              f"failed: {names}", report=doc)


def _skew(out: Output, ctx: RunContext, artifact: str | None, serving_log: Path,
          since: str | None, until: str | None) -> None:
    from mlpipe_cli.drift.report import parse_window, scan_serving_log
    from mlpipe_cli.drift.skew import skew_check
    from mlpipe_cli.transforms import load_transform

    monitoring = ctx.config.monitoring
    transform = load_transform(ctx.store, artifact or "latest")
    start, end = parse_window(since, until, monitoring.window)
    lf = scan_serving_log(serving_log, start, end)
    report = skew_check(transform, lf)
    doc = {**report.to_dict(), "serving_log": str(serving_log), "since": start.isoformat(),
           "until": end.isoformat()}
    out.result(doc)
    versions = ", ".join(f"{v} ({n})" for v, n in report.log_transform_versions.items())
    out.line(f"skew check: transform {report.transform_version} vs {report.rows} logged rows "
             f"[{start.isoformat()} .. {end.isoformat()}); logged by: {versions or '-'}")
    out.table(["output", "mismatches", "max_abs_diff", "example entity", "served", "recomputed"],
              [[c.column, c.mismatches, c.max_abs_diff, c.example_entity, c.example_served,
                c.example_recomputed] for c in report.columns])
    for problem in report.problems:
        out.warn(problem)
    if report.failed:
        first = report.problems[0] if report.problems else (
            f"{report.rows_mismatched} of {report.rows} logged rows differ from transform "
            f"{report.transform_version} beyond {report.tolerance:g}")
        raise DataCheckFailed(f"training-serving skew: {first}", report=doc)
    out.line(f"no skew: every logged vector matches transform {report.transform_version} "
             f"within {report.tolerance:g}")


def _shadow(out: Output, ctx: RunContext, versions: tuple[str, str], current: Path,
            features: list[str] | None, threshold: float | None, min_rows: int | None,
            html: Path | None) -> None:
    from mlpipe_cli.drift.skew import shadow_compare
    from mlpipe_cli.io import scan_parquet
    from mlpipe_cli.transforms import load_transform

    monitoring = ctx.config.monitoring
    gate = threshold if threshold is not None else monitoring.psi_threshold
    transform_a = load_transform(ctx.store, versions[0])
    transform_b = load_transform(ctx.store, versions[1])
    report = shadow_compare(
        transform_a, transform_b, scan_parquet(current), features=features, threshold=gate,
        thresholds=monitoring.thresholds(), moderate=min(monitoring.moderate_threshold, gate),
        min_rows=min_rows if min_rows is not None else monitoring.min_rows,
        bins=monitoring.bins,
    )
    report.current_info["path"] = str(current)
    _finish_report(out, report, html)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _monitoring(ctx: RunContext, *, need_config: bool) -> MonitoringConfig:
    from mlpipe_cli.config.monitoring import MonitoringConfig

    if not need_config and not ctx.config_path.exists():
        return MonitoringConfig()
    return ctx.config.monitoring


def _load_profile(ctx: RunContext, profile_file: Path | None, artifact: str | None
                  ) -> tuple[dict, dict[str, Any]]:
    from mlpipe_cli.drift.profile import read_profile

    if profile_file is not None:
        return read_profile(profile_file), {"source": "file", "path": str(profile_file)}
    version = ctx.store.get("transform", artifact or "latest")
    path = version.file("profile.json")
    return read_profile(path), {"source": "artifact", "kind": "transform",
                                "version": version.version, "path": str(path)}


def _with_transform_outputs(out: Output, ctx: RunContext, version: str, profile: dict,
                            parts: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
    """A raw batch lacks the transform outputs (vec.*): compute them with the batch path.

    The raw inputs are kept as ``raw.<col>`` and the outputs named ``vec.<col>`` (one query).
    When the batch cannot be transformed (an input missing or of another dtype) the vec.*
    features get an error status instead of aborting the report.
    """
    import polars as pl

    from mlpipe_cli.drift.report import match_column
    from mlpipe_cli.errors import ArtifactError

    schema = parts[0].collect_schema()
    names = schema.names()
    profiled = list(profile["columns"])
    wanted = [c for c in profiled if c.startswith("vec.")
              and match_column(c, names, profiled) is None]
    if not wanted:
        return parts
    from mlpipe_cli.transforms import load_transform

    transform = load_transform(ctx.store, version)
    try:
        transform.check_input_schema(schema)
    except ArtifactError as exc:
        out.warn(f"transform outputs not computed, so vec.* features cannot be compared: {exc}")
        return parts
    keep_raw = [pl.col(c).alias(f"raw.{c}") for c in transform.input_columns
                if f"raw.{c}" not in names]
    rename = {c: f"vec.{c}" for c in transform.output_columns}
    return [transform.transform_batch(p.with_columns(keep_raw)).rename(rename) for p in parts]


def _print_table(out: Output, report: Any) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}"

    def arrow(a: Any, b: Any) -> str:
        return f"{fmt(a)} → {fmt(b)}"

    rows = []
    for f in report.sorted_features():
        note = f.message or "; ".join(f.warnings)
        rows.append([f.column, f.status, f.psi, f.threshold, f.ks_pvalue,
                     arrow(f.null_rate_ref, f.null_rate_cur), arrow(f.mean_ref, f.mean_cur),
                     f.rows, note[:80]])
    cur = report.current_info
    where = cur.get("path", "")
    if cur.get("since"):
        where += f" [{cur['since']} .. {cur['until']})"
    out.line(f"reference: {report.profile_info.get('version') or report.profile_info.get('path')}"
             f"  current: {where} ({cur.get('rows')} rows)")
    out.table(["feature", "status", "psi", "threshold", "ks_p", "null ref→cur", "mean ref→cur",
               "rows", "note"], rows)
    s = report.summary()
    out.line(f"{s['drifted']} drifted, {s['moderate']} moderate, {s['stable']} stable, "
             f"{s['error']} error (PSI gate {report.threshold:g})")
