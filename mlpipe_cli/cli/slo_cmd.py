"""`mlpipe slo` and `mlpipe runs`: the run ledger, and the pipeline's objectives evaluated on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def slo(
    window: Annotated[
        str | None,
        typer.Option("--window", help="Evaluation window, e.g. 30d (default: slo.window, 30d)."),
    ] = None,
    prometheus: Annotated[
        Path | None,
        typer.Option(
            "--prometheus",
            help="Also write a node_exporter textfile here (atomically), e.g. "
            "/var/lib/node_exporter/textfile/mlpipe.prom.",
        ),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(
            "--now", help="Evaluate as of this instant (ISO-8601) instead of now.", hidden=True
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Evaluate the pipeline's SLOs: freshness, availability, quality, latency, stream lag.

    Objectives come from the config's `slo:` section (defaults: materialize live within 1 h of
    its trigger, >= 99.5% of runs complete, >= 99.9% of validated records pass, lookup
    p99 <= 5 ms, and for streamed sources a consumer lag under 60 s). Every command records
    its runs under <artifact_dir>/<pipeline>/runs/; the feature server records its latency
    histogram there. An objective with no data in the
    window is shown as no_data, not as a breach. Exit codes: 0 every objective met (or no
    data), 1 an objective breached (one line per breach on stderr), 2 bad config or flags,
    4 the online store or an event stream is unreachable (read only when
    slo.freshness.max_age is set, and for stream_lag when a source streams).

    Example: mlpipe slo --window 7d --prometheus mlpipe.prom
    """
    from mlpipe_cli.config.base import parse_duration
    from mlpipe_cli.errors import DataCheckFailed, UsageError
    from mlpipe_cli.ledger import parse_instant
    from mlpipe_cli.slo import evaluate, prometheus_text

    out = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    cfg = ctx.config
    try:
        span = parse_duration(window) if window is not None else None
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from None
    at = parse_instant(now, "--now") if now is not None else None
    live_as_of = None
    if cfg.slo.freshness.max_age is not None:
        from mlpipe_cli.online import open_store

        store = open_store(cfg, ctx.artifact_dir)
        try:
            meta = store.live_metadata()
        finally:
            store.close()
        live_as_of = meta.as_of if meta is not None else None
    stream_lags = []
    if any(source.stream is not None for source in cfg.sources.values()):
        from mlpipe_cli.streaming.status import lag_readings

        stream_lags = lag_readings(cfg)
    report = evaluate(
        ctx.artifact_dir,
        cfg.pipeline,
        cfg.slo,
        window=span,
        now=at,
        live_as_of=live_as_of,
        stream_lags=stream_lags,
    )
    if prometheus is not None:
        from mlpipe_cli.io import atomic_write_bytes

        atomic_write_bytes(prometheus, prometheus_text(report).encode())
    out.result(report.to_dict())
    out.table(
        ["objective", "status", "actual", "target"],
        [
            [
                o.name + "".join(f" {k}={v}" for k, v in sorted(o.labels.items())),
                o.status,
                o.actual,
                o.target,
            ]
            for o in report.objectives
        ],
    )
    if report.breaches:
        for o in report.breaches[1:]:
            out.info(f"error: {o.breach_line}")
        raise DataCheckFailed(report.breaches[0].breach_line)


def runs(
    command: Annotated[
        str | None, typer.Option("--command", help="Only runs of this command, e.g. materialize.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only runs started within this span, e.g. 24h.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """List recorded runs (oldest first): a table on a terminal, JSON otherwise.

    Each run of a command that loads the config writes one record under
    <artifact_dir>/<pipeline>/runs/: command, arguments (secrets masked), start, end, exit code,
    status (ok, data_failed, error, killed, running), rows in/out/failed, versions read and
    written, and the trigger time (--triggered-at or MLPIPE_TRIGGERED_AT). Exit codes: 0, 2 bad
    flags or config.

    Example: mlpipe runs --command materialize --since 24h
    """
    from mlpipe_cli.ops.runs import list_runs

    ctx = run_context(config, artifact_dir)
    found = list_runs(ctx, command=command, since=since)
    # JSON unless a person is looking: cron and scripts get a stable document
    out = Output.create(json_mode=json_output, quiet=quiet)
    if not out.stdout_tty:
        out.json_mode = True
    out.result({"pipeline": ctx.config.pipeline, "runs": [r.to_dict() for r in found]})
    out.table(
        ["started", "command", "status", "exit", "seconds", "rows in", "rows out", "trigger"],
        [
            [
                r.record.get("started_at", "")[:19],
                r.command,
                r.status,
                r.record.get("exit_code"),
                None
                if r.ended_at is None
                else round((r.ended_at - r.started_at).total_seconds(), 2),
                r.record.get("rows_in"),
                r.record.get("rows_out"),
                (r.record.get("triggered_at") or "")[:19],
            ]
            for r in found
        ],
    )
    if not found:
        out.line("no runs recorded")
