"""Service-level objectives of the pipeline (`slo:` section; evaluated by `mlpipe slo`).

The defaults are the objectives a production feature pipeline is usually held to: online
features switched live within 1 hour of the trigger, lookup p99 under 5 ms, more than 99.5% of
runs succeeding and more than 99.9% of input records passing validation.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, Duration


class FreshnessObjective(ConfigModel):
    max_delay: Duration = Field(
        default=timedelta(hours=1),
        description="each materialize run: trigger time -> online switch within this",
    )
    max_age: Duration | None = Field(
        default=None,
        description="now - the live version's as-of within this (reads the online store); "
        "null: reported, not gated",
    )


class AvailabilityObjective(ConfigModel):
    min_success_rate: float = Field(
        default=0.995, ge=0, le=1, description="share of runs that complete, per command"
    )
    commands: list[str] | None = Field(
        default=None, description="commands held to it (default: every recorded command)"
    )


class QualityObjective(ConfigModel):
    min_pass_rate: float = Field(
        default=0.999, ge=0, le=1, description="share of validated input records that pass"
    )


class LatencyObjective(ConfigModel):
    p99_ms: float = Field(default=5.0, gt=0, description="feature lookup p99 from the server")


class StreamLagObjective(ConfigModel):
    max_seconds: Duration = Field(
        default=timedelta(minutes=1),
        description="each streamed source: age of its oldest event not yet applied within "
        "this (reads the stream's Redis; only when a source has a stream: section)",
    )
    max_events: int | None = Field(
        default=None,
        ge=0,
        description="each streamed source: events not yet applied at most this; null: "
        "reported, not gated",
    )


class SloConfig(ConfigModel):
    window: Duration = Field(default=timedelta(days=30), description="evaluation window")
    freshness: FreshnessObjective = Field(default_factory=FreshnessObjective)
    availability: AvailabilityObjective = Field(default_factory=AvailabilityObjective)
    quality: QualityObjective = Field(default_factory=QualityObjective)
    latency: LatencyObjective = Field(default_factory=LatencyObjective)
    stream_lag: StreamLagObjective = Field(default_factory=StreamLagObjective)
