"""Feature definitions and the training-set spine (owned by the training-set issue).

A feature is computed per entity from one source, as of a point in time ``t`` (the spine
row's timestamp). The exact rules (window bounds, boundary, ttl, bitemporal cutoff, type-2
tables) are written down in docs/training-set.md and implemented in
``mlpipe_cli.features.engine``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath, parse_duration

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "count_distinct", "last"]
FeatureKind = Literal["aggregate", "lag", "time_since_last", "mean_interval", "attribute"]
TimeUnit = Literal["s", "m", "h", "d", "w"]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Aggregations that read a column (count without a column counts rows).
_NEEDS_COLUMN = {"sum", "mean", "min", "max", "std", "count_distinct", "last"}


class FeatureConfig(ConfigModel):
    """One feature computed per entity from a source, as of a point in time."""

    name: str = Field(description="output column name")
    source: str = Field(description="a key of `sources`")
    kind: FeatureKind = Field(
        default="aggregate",
        description="aggregate | lag | time_since_last | mean_interval | attribute",
    )
    agg: Aggregation | None = Field(default=None, description="for kind: aggregate")
    column: str | None = Field(
        default=None, description="source column; attribute defaults to the feature name"
    )
    window: str = Field(default="lifetime", description="'lifetime' or a duration like '30d'")
    unit: TimeUnit = Field(default="d", description="time_since_last / mean_interval unit")
    default: float | int | str | bool | None = None
    inclusive: bool = Field(default=False, description="count source rows at exactly t")

    @field_validator("window")
    @classmethod
    def _window_ok(cls, value: str) -> str:
        if value != "lifetime":
            parse_duration(value)
            if parse_duration(value) <= timedelta(0):
                raise ValueError("window must be positive")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> FeatureConfig:
        if self.kind == "aggregate":
            if self.agg is None:
                raise ValueError(f"feature {self.name!r}: kind aggregate needs `agg`")
            if self.agg in _NEEDS_COLUMN and self.column is None:
                raise ValueError(f"feature {self.name!r}: agg {self.agg} needs `column`")
        elif self.agg is not None:
            raise ValueError(f"feature {self.name!r}: `agg` only applies to kind aggregate")
        if self.kind == "lag" and self.column is None:
            raise ValueError(f"feature {self.name!r}: kind lag needs `column`")
        if self.kind in ("lag", "time_since_last", "attribute") and self.window != "lifetime":
            raise ValueError(f"feature {self.name!r}: kind {self.kind} takes no window")
        return self

    @property
    def window_delta(self) -> timedelta | None:
        """The window as a timedelta, or None for lifetime."""
        return None if self.window == "lifetime" else parse_duration(self.window)

    @property
    def source_column(self) -> str | None:
        if self.kind == "attribute":
            return self.column or self.name
        return self.column


class TrainingSetConfig(ConfigModel):
    """The spine (label table) the training set is built on."""

    spine: ConfigPath = Field(description="Parquet spine: entity keys, timestamp, labels")
    timestamp: str = Field(description="spine column holding each row's point in time")
    entity_keys: list[str] | None = Field(
        default=None, description="spine key columns (default: the pipeline's entity_keys)"
    )
    features: list[str] | None = Field(default=None, description="subset (default: all)")
