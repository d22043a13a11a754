"""Evaluate the pipeline's service-level objectives from the run ledger (`mlpipe slo`).

Every number comes from records the runs themselves wrote (mlpipe_cli.ledger), so a cron job
can gate on it with no Prometheus or database:

- freshness: for each successful ``materialize`` run in the window, trigger time -> the moment
  its version went live (both recorded by the run: clock-independent of when ``slo`` runs);
  optionally now - the live version's as-of, read from the online store.
- availability: per command, the share of finished runs that completed (exit 0, or exit 1: the
  run worked and the data failed a check, which is quality's business); a run killed before it
  could record its end counts as failed. ``serve``, ``slo`` and ``runs`` are not held to it.
- quality: over ``validate`` runs, input records that passed / input records.
- latency: the p99 of the feature server's request histogram (the servers write it to the
  ledger periodically and at shutdown), merged across server processes in the window.
- stream_lag: per streamed source, the consumer lag now in seconds (age of the oldest event
  not yet applied) and events, read from the stream's Redis by the caller
  (``streaming.status.lag_readings``): a point-in-time reading, not a window.

An objective with no data in the window is reported as ``no_data``: not a breach, but shown, so
a pipeline that silently stopped running is visible (and breaches ``max_age`` if set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlpipe_cli.config.slo import SloConfig
from mlpipe_cli.ledger import Run, read_runs

# Commands that are not pipeline runs: a server, and the monitoring commands themselves.
NOT_HELD_TO_AVAILABILITY = frozenset({"serve", "slo", "runs"})


@dataclass(frozen=True)
class Objective:
    name: str  # freshness | freshness_age | availability | quality | latency | stream_lag
    status: str  # ok | breach | no_data
    target: str
    actual: str
    value: float | None  # in the unit of ``unit``; None with no data
    threshold: float
    unit: str
    detail: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.name,
            "status": self.status,
            "target": self.target,
            "actual": self.actual,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "detail": self.detail,
            **({"labels": self.labels} if self.labels else {}),
        }

    @property
    def breach_line(self) -> str:
        subject = self.name + (
            "".join(f" {k}={v}" for k, v in sorted(self.labels.items())) if self.labels else ""
        )
        return f"SLO breached: {subject}: {self.actual} (objective {self.target}){self.detail and '; ' + self.detail}"


@dataclass(frozen=True)
class SloReport:
    pipeline: str
    window_start: datetime
    now: datetime
    objectives: list[Objective]
    runs_by_command: dict[str, dict[str, int]]

    @property
    def breaches(self) -> list[Objective]:
        return [o for o in self.objectives if o.status == "breach"]

    @property
    def ok(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pipeline": self.pipeline,
            "window_start": self.window_start.isoformat(),
            "now": self.now.isoformat(),
            "objectives": [o.to_dict() for o in self.objectives],
            "runs": self.runs_by_command,
        }


def _fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


def evaluate(
    artifact_dir: Path,
    pipeline: str,
    slo: SloConfig,
    *,
    window: timedelta | None = None,
    now: datetime | None = None,
    live_as_of: datetime | None = None,
    stream_lags: Sequence[Any] = (),
) -> SloReport:
    """Every objective over the window ending at ``now``.

    ``live_as_of``: the online store's live as-of (the caller reads the store, only when
    ``slo.freshness.max_age`` is set, so this module does no I/O beyond the ledger).
    ``stream_lags``: one ``streaming.status.LagReading`` per streamed source (read by the
    caller, likewise).
    """
    now = now or datetime.now(UTC)
    start = now - (window or slo.window)
    runs = [r for r in read_runs(artifact_dir, pipeline, since=start, now=now)]
    objectives = [
        *_freshness(runs, slo, now=now, live_as_of=live_as_of),
        *_availability(runs, slo),
        _quality(runs, slo),
        _latency(runs, slo),
        *_stream_lag(stream_lags, slo),
    ]
    by_command: dict[str, dict[str, int]] = {}
    for run in runs:
        counts = by_command.setdefault(run.command, {})
        counts[run.status] = counts.get(run.status, 0) + 1
    return SloReport(pipeline, start, now, objectives, by_command)


def _freshness(
    runs: Sequence[Run], slo: SloConfig, *, now: datetime, live_as_of: datetime | None
) -> list[Objective]:
    limit = slo.freshness.max_delay.total_seconds()
    target = f"trigger -> live <= {_fmt_seconds(limit)}"
    delays: list[tuple[float, Run]] = []
    for run in runs:
        if run.command != "materialize" or run.status != "ok":
            continue
        switched = run.record.get("switched_at")
        if not switched:
            continue  # a --rollback or --check run: no new version went live
        from mlpipe_cli.ledger import parse_instant

        delay = (parse_instant(switched, "switched_at") - run.triggered_at).total_seconds()
        delays.append((delay, run))
    out: list[Objective] = []
    if not delays:
        out.append(
            Objective(
                "freshness",
                "no_data",
                target,
                "no successful materialize run",
                None,
                limit,
                "seconds",
            )
        )
    else:
        worst, worst_run = max(delays, key=lambda item: item[0])
        late = [d for d, _ in delays if d > limit]
        status = "breach" if late else "ok"
        detail = (
            f"{len(late)} of {len(delays)} runs late; worst started {worst_run.record['started_at']}"
            if late
            else f"{len(delays)} runs"
        )
        out.append(
            Objective(
                "freshness",
                status,
                target,
                f"worst {_fmt_seconds(worst)}",
                worst,
                limit,
                "seconds",
                detail,
            )
        )
    if slo.freshness.max_age is not None:
        max_age = slo.freshness.max_age.total_seconds()
        age_target = f"now - live as-of <= {_fmt_seconds(max_age)}"
        if live_as_of is None:
            out.append(
                Objective(
                    "freshness_age",
                    "breach",
                    age_target,
                    "no live version",
                    None,
                    max_age,
                    "seconds",
                    "the online store has no live version",
                )
            )
        else:
            age = (now - live_as_of).total_seconds()
            out.append(
                Objective(
                    "freshness_age",
                    "breach" if age > max_age else "ok",
                    age_target,
                    _fmt_seconds(age),
                    age,
                    max_age,
                    "seconds",
                    f"live as-of {live_as_of.isoformat()}",
                )
            )
    return out


def _availability(runs: Sequence[Run], slo: SloConfig) -> list[Objective]:
    goal = slo.availability.min_success_rate
    wanted = slo.availability.commands
    counts: dict[str, list[int]] = {}  # command -> [completed, failed]
    for run in runs:
        if run.command in NOT_HELD_TO_AVAILABILITY or run.status == "running":
            continue
        if wanted is not None and run.command not in wanted:
            continue
        slot = counts.setdefault(run.command, [0, 0])
        slot[0 if run.status in ("ok", "data_failed") else 1] += 1
    target = f">= {goal:.2%} of runs complete"
    if not counts:
        return [
            Objective("availability", "no_data", target, "no finished runs", None, goal, "ratio")
        ]
    out = []
    for command, (completed, failed) in sorted(counts.items()):
        rate = completed / (completed + failed)
        out.append(
            Objective(
                "availability",
                "breach" if rate < goal else "ok",
                target,
                f"{rate:.2%} ({failed} of {completed + failed} failed)",
                rate,
                goal,
                "ratio",
                labels={"command": command},
            )
        )
    return out


def _quality(runs: Sequence[Run], slo: SloConfig) -> Objective:
    goal = slo.quality.min_pass_rate
    target = f">= {goal:.3%} of records pass validation"
    total = failed = 0
    for run in runs:
        if run.command != "validate" or run.status not in ("ok", "data_failed"):
            continue
        rows, bad = run.record.get("rows_in"), run.record.get("rows_failed")
        if isinstance(rows, int):
            total += rows
            failed += bad if isinstance(bad, int) else 0
    if total == 0:
        return Objective("quality", "no_data", target, "no validated records", None, goal, "ratio")
    rate = (total - failed) / total
    return Objective(
        "quality",
        "breach" if rate < goal else "ok",
        target,
        f"{rate:.3%} ({failed:,} of {total:,} records failed)",
        rate,
        goal,
        "ratio",
    )


def histogram_quantile(q: float, buckets: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of a histogram (upper bounds ``buckets``; ``counts`` per bucket with the
    +Inf bucket last), interpolated linearly inside the bucket as Prometheus'
    ``histogram_quantile`` does. Past the last finite bound it answers that bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = buckets[i] if i < len(buckets) else math.inf
        if seen + count >= rank and count > 0:
            if math.isinf(upper):
                return buckets[-1]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return buckets[-1]


def _latency(runs: Sequence[Run], slo: SloConfig) -> Objective:
    goal_ms = slo.latency.p99_ms
    target = f"p99 <= {goal_ms:g} ms"
    merged: list[int] | None = None
    bounds: list[float] | None = None
    for run in runs:
        latency = run.record.get("latency")
        if run.command != "serve" or not isinstance(latency, dict):
            continue
        try:
            these = [float(b) for b in latency.get("buckets", [])]
            counts = [int(c) for c in latency.get("counts", [])]
        except (TypeError, ValueError):
            continue  # a damaged snapshot: skipped, as read_runs skips unreadable records
        if bounds is None:
            bounds, merged = these, [0] * len(counts)
        if these != bounds or merged is None or len(counts) != len(merged):
            continue  # a server with other buckets (another version): not mergeable
        merged = [a + b for a, b in zip(merged, counts, strict=True)]
    p99 = None if merged is None or bounds is None else histogram_quantile(0.99, bounds, merged)
    if p99 is None:
        return Objective("latency", "no_data", target, "no served requests", None, goal_ms, "ms")
    p99_ms = p99 * 1000
    return Objective(
        "latency",
        "breach" if p99_ms > goal_ms else "ok",
        target,
        f"p99 {p99_ms:.2f} ms over {sum(merged or []):,} requests",
        p99_ms,
        goal_ms,
        "ms",
    )


def _stream_lag(readings: Sequence[Any], slo: SloConfig) -> list[Objective]:
    """Per streamed source: lag seconds against max_seconds; events against max_events."""
    goal = slo.stream_lag.max_seconds.total_seconds()
    max_events = slo.stream_lag.max_events
    out = []
    for r in readings:
        events = f"{r.events:,}{'+' if r.capped else ''} events"
        out.append(Objective(
            "stream_lag", "breach" if r.seconds > goal else "ok",
            f"oldest unapplied event <= {_fmt_seconds(goal)}",
            f"{_fmt_seconds(r.seconds)} behind, {events} not applied", r.seconds, goal,
            "seconds", detail=f"{r.applied:,} applied, {r.dead_lettered:,} dead-lettered",
            labels={"source": r.source},
        ))  # fmt: skip
        if max_events is not None:
            out.append(Objective(
                "stream_lag_events", "breach" if r.events > max_events else "ok",
                f"events not applied <= {max_events:,}", events, float(r.events),
                float(max_events), "events", labels={"source": r.source},
            ))  # fmt: skip
    return out


def prometheus_text(report: SloReport) -> str:
    """A node_exporter textfile: one gauge per objective (met, value, threshold) and run
    counts per command and status."""
    pipeline = _label(report.pipeline)
    lines = [
        "# HELP mlpipe_slo_met 1 when the objective is met, 0 when breached (absent: no data).",
        "# TYPE mlpipe_slo_met gauge",
    ]
    values = [
        "# HELP mlpipe_slo_value The objective's measured value (unit in the label).",
        "# TYPE mlpipe_slo_value gauge",
    ]
    thresholds = [
        "# HELP mlpipe_slo_threshold The objective's threshold (unit in the label).",
        "# TYPE mlpipe_slo_threshold gauge",
    ]
    for o in report.objectives:
        labels = {"pipeline": pipeline, "objective": o.name, "unit": o.unit,
                  **{k: _label(v) for k, v in o.labels.items()}}  # fmt: skip
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        thresholds.append(f"mlpipe_slo_threshold{{{text}}} {o.threshold!r}")
        if o.status == "no_data" or o.value is None:
            continue
        lines.append(f"mlpipe_slo_met{{{text}}} {1 if o.status == 'ok' else 0}")
        values.append(f"mlpipe_slo_value{{{text}}} {o.value!r}")
    runs = [
        "# HELP mlpipe_runs Runs recorded in the SLO window, by command and status.",
        "# TYPE mlpipe_runs gauge",
    ]
    for command, counts in sorted(report.runs_by_command.items()):
        for status, n in sorted(counts.items()):
            runs.append(
                f'mlpipe_runs{{pipeline="{pipeline}",command="{_label(command)}",'
                f'status="{status}"}} {n}'
            )
    return "\n".join([*lines, *values, *thresholds, *runs]) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
