"""`mlpipe psi-report`: drift of current data (a batch or the serving log) vs the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    EngineOption,
    FeaturesOption,
    JsonOption,
    Output,
    QuietOption,
    parse_features,
    run_context,
)
from mlpipe_cli.errors import UsageError


def psi_report(
    artifact: Annotated[
        str | None,
        typer.Option(
            "--artifact",
            help="Transform artifact whose profile.json is the "
            "reference: a version or 'latest' (default when --profile is not given).",
        ),
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
        typer.Option(
            "--since",
            help="Window start for --serving-log: a duration back from "
            "--until (24h, 7d) or an ISO time. Default: monitoring.window (24h).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Window end (exclusive) for --serving-log: ISO time or 'now' (default)."
        ),
    ] = None,
    features: FeaturesOption = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            help="PSI gate (default monitoring.psi_threshold, "
            "0.2); per-feature gates in monitoring.features still apply.",
        ),
    ] = None,
    min_rows: Annotated[
        int | None,
        typer.Option(
            "--min-rows",
            min=1,
            help="Warn below this many current rows (default monitoring.min_rows, 200).",
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    skew: Annotated[
        bool,
        typer.Option(
            "--skew",
            help="Training-serving skew: recompute each logged vector from "
            "its raw.* record with the --artifact transform's batch path and compare "
            "with the served vec.* (needs --serving-log; exit 1 beyond 1e-9).",
        ),
    ] = False,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare",
            help="Shadow check: PSI of transform version B's outputs "
            "against version A's on the same --current data.",
            metavar="VERSION_A VERSION_B",
        ),
    ] = None,
    compare_shadow: Annotated[
        bool,
        typer.Option(
            "--compare-shadow",
            help="Live vs shadow on live traffic: PSI/KS of "
            "each shadow.vec.* against the live vec.* of the same rows of --serving-log "
            "(written by `serve --shadow`), and prediction agreement. Exit 1 when a "
            "feature not named by --expect-change drifted.",
        ),
    ] = False,
    expect_change: Annotated[
        str | None,
        typer.Option(
            "--expect-change",
            help="With --compare-shadow: outputs (or inputs, "
            "meaning all their outputs) whose change is intended, comma-separated; "
            "reported separately, never failing the check.",
        ),
    ] = None,
    threshold_decision: Annotated[
        float,
        typer.Option(
            "--threshold-decision",
            min=0.0,
            help="With --compare-shadow: the score "
            "at which a prediction is a positive decision, for the share of decisions "
            "flipped (default 0.5).",
        ),
    ] = 0.5,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Compare a raw batch of this source (--current) with the "
            "profile saved by `validate --source NAME --save-profile`.",
        ),
    ] = None,
    include_time_features: Annotated[
        bool,
        typer.Option(
            "--include-time-features",
            help="On --serving-log, also compare features "
            "derived from the request time (excluded by default: request time is not "
            "label time, so they always look drifted).",
        ),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    engine: EngineOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Compare the reference profile with current data: PSI, KS, null and mean/std changes.

    PSI uses the reference's decile bins (open-ended edge bins), __missing__ and __other__
    bins, natural log, proportions clipped at 1e-4 without renormalisation. Status per
    feature: stable (PSI < 0.1), moderate, drifted (PSI >= threshold) or error (missing
    column, unknown dtype, all null). Exit 1 when any feature drifted or errored, 2 when there
    is no current data (e.g. nothing in the serving-log window) or --current holds none of the
    reference's features, 3 on a bad artifact or no saved profile for --source. Features
    derived from the request time are excluded on serving logs (--include-time-features).

    Example: mlpipe psi-report --source orders --current day.parquet

    Example: mlpipe psi-report -c configs/example.yaml --serving-log artifacts/churn/serving-logs --since 24h --html drift.html

    Example: mlpipe psi-report -c configs/example.yaml --compare-shadow --serving-log artifacts/churn/serving-logs --since 48h --expect-change age
    """
    from mlpipe_cli.ops import psi_report as ops
    from mlpipe_cli.servinglog import check_window_flags

    check_window_flags(since, until)  # a bad value first, named, whatever else is wrong
    out = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    if sum(map(bool, (skew, compare, compare_shadow))) > 1:
        raise UsageError(
            "--skew, --compare and --compare-shadow are separate checks; run them one at a time"
        )
    if (expect_change or threshold_decision != 0.5) and not compare_shadow:
        raise UsageError("--expect-change and --threshold-decision belong to --compare-shadow")
    if compare_shadow:
        if serving_log is None or current is not None or profile_file or artifact or source:
            raise UsageError(
                "--compare-shadow compares the live and shadow vectors of a "
                "serving log: give --serving-log DIR, not --current, --profile, "
                "--artifact or --source"
            )
        _render_shadow_log(
            out,
            ops.shadow_log_report(
                ctx,
                serving_log=serving_log,
                since=since,
                until=until,
                features=parse_features(features),
                expect_change=parse_features(expect_change),
                threshold=threshold,
                min_rows=min_rows,
                decision_threshold=threshold_decision,
                html=html,
            ),
        )
        return
    if skew:
        if serving_log is None or current is not None or profile_file is not None:
            raise UsageError(
                "--skew checks a serving log: give --serving-log DIR (and "
                "optionally --artifact), not --current or --profile"
            )
        if html is not None or features or threshold is not None or min_rows is not None:
            raise UsageError(
                "--html, --features, --threshold and --min-rows belong to drift "
                "reports; --skew compares every output exactly"
            )
        _render_skew(
            out,
            ops.skew_report(
                ctx, serving_log=serving_log, artifact=artifact, since=since, until=until
            ),
        )
        return
    if compare:
        if current is None or serving_log is not None or profile_file or artifact:
            raise UsageError(
                "--compare A B transforms --current PATH with both versions; "
                "do not combine it with --serving-log, --profile or --artifact"
            )
        with out.reporting():
            shadow = ops.shadow_report(
                ctx,
                versions=compare,
                current=current,
                features=parse_features(features),
                threshold=threshold,
                min_rows=min_rows,
                html=html,
            )
        _render_drift(out, shadow)
        return
    with out.reporting():
        drift = ops.psi_report(
            ctx,
            artifact=artifact,
            profile=profile_file,
            current=current,
            serving_log=serving_log,
            since=since,
            until=until,
            features=parse_features(features),
            threshold=threshold,
            min_rows=min_rows,
            html=html,
            source=source,
            include_time_features=include_time_features,
            engine=engine,
        )
    _render_drift(out, drift)


def _render_drift(out: Output, result: Any) -> None:
    for warning in result.warnings:
        out.warn(warning)
    out.result(result.to_dict())
    _print_table(out, result.report)
    report = result.report
    counts = report.summary()
    failed = {s: counts[s] for s in ("drifted", "error") if counts.get(s)}
    out.summary(
        "psi-report",
        rows=int(report.current_info.get("rows") or 0),
        seconds=result.seconds,
        detail=f" x {len(report.features) - counts.get('excluded', 0)} features",
        status=", ".join(f"{n} {s}" for s, n in failed.items()) or "no drift",
        output=result.html,
    )
    result.raise_for_status()


def _render_shadow_log(out: Output, result: Any) -> None:
    for warning in result.warnings:
        out.warn(warning)
    if result.html is not None:
        out.info(f"wrote {result.html}")
    doc = result.to_dict()
    out.result(doc)
    out.line(f"live {result.live_version} vs shadow {result.shadow_version} on the same requests")
    _print_table(out, result.report)
    agreement = result.agreement
    if agreement is None:
        out.line("prediction agreement: not available (both sides need a model)")
    else:
        out.line(
            f"prediction agreement over {agreement['rows']} rows: mean |live - shadow| "
            f"{agreement['mean_abs_diff']:.4g} (max {agreement['max_abs_diff']:.4g}), "
            f"{agreement['flipped']} decisions flipped ({agreement['flipped_share']:.2%}) "
            f"at {agreement['decision_threshold']:g}"
        )
    expected = doc["expected_change"]
    if expected["features"]:
        out.line(
            f"expected to change: changed {', '.join(expected['changed']) or 'none'}; "
            f"unchanged {', '.join(expected['unchanged']) or 'none'}"
        )
    result.raise_for_status()
    out.line(
        f"no unexpected change: shadow {result.shadow_version} matches live "
        f"{result.live_version}" + (" outside the expected changes" if expected["features"] else "")
    )


def _render_skew(out: Output, result: Any) -> None:
    report = result.report
    start, end = result.since, result.until
    out.result(result.to_dict())
    versions = ", ".join(f"{v} ({n})" for v, n in report.log_transform_versions.items())
    out.line(
        f"skew check: transform {report.transform_version} vs {report.rows} logged rows "
        f"[{start.isoformat()} .. {end.isoformat()}); logged by: {versions or '-'}"
    )
    out.table(
        ["output", "mismatches", "max_abs_diff", "example entity", "served", "recomputed"],
        [
            [
                c.column,
                c.mismatches,
                c.max_abs_diff,
                c.example_entity,
                c.example_served,
                c.example_recomputed,
            ]
            for c in report.columns
        ],
    )
    for problem in report.problems:
        out.warn(problem)
    result.raise_for_status()
    out.line(
        f"no skew: every logged vector matches transform {report.transform_version} "
        f"within {report.tolerance:g}"
    )


def _print_table(out: Output, report: Any) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}"

    def arrow(a: Any, b: Any) -> str:
        return f"{fmt(a)} → {fmt(b)}"

    rows = []
    for f in report.sorted_features():
        note = f.message or "; ".join(f.warnings)
        rows.append(
            [
                f.column,
                f.status,
                f.psi,
                f.threshold,
                f.ks_pvalue,
                arrow(f.null_rate_ref, f.null_rate_cur),
                arrow(f.mean_ref, f.mean_cur),
                f.rows,
                note[:80],
            ]
        )
    cur = report.current_info
    where = cur.get("path", "")
    if cur.get("since"):
        where += f" [{cur['since']} .. {cur['until']})"
    out.line(
        f"reference: {report.profile_info.get('version') or report.profile_info.get('path')}"
        f"  current: {where} ({cur.get('rows')} rows)"
    )
    out.table(
        [
            "feature",
            "status",
            "psi",
            "threshold",
            "ks_p",
            "null ref→cur",
            "mean ref→cur",
            "rows",
            "note",
        ],
        rows,
    )
    s = report.summary()
    out.line(
        f"{s['drifted']} drifted, {s['moderate']} moderate, {s['stable']} stable, "
        f"{s['error']} error, {s.get('excluded', 0)} excluded (PSI gate "
        f"{report.threshold:g})"
    )
