"""Feature definitions and the training-set spine (owned by the training-set issue).

A feature is computed per entity from one source, as of a point in time ``t`` (the spine
row's timestamp). The exact rules (window bounds, boundary, ttl, bitemporal cutoff, type-2
tables) are written down in docs/training-set.md and implemented in
``mlpipe_cli.features.engine``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration, parse_duration

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "count_distinct", "last"]
FeatureKind = Literal["aggregate", "lag", "time_since_last", "mean_interval", "attribute"]
TimeUnit = Literal["s", "m", "h", "d", "w"]

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Aggregations that read a column (count without a column counts rows).
_NEEDS_COLUMN = {"sum", "mean", "min", "max", "std", "count_distinct", "last"}

# `window: 5 events` (or `1 event`): the last N visible rows instead of a span of time.
_EVENTS_RE = re.compile(r"^\s*(\d+)\s*events?\s*$")


def parse_event_window(value: str) -> int | None:
    """N for a window written as 'N events', else None."""
    match = _EVENTS_RE.match(value)
    return int(match.group(1)) if match else None


def drop_new_defaults(data: dict[str, Any], model: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Leave fields added after a model's first release out of its dump while they hold their
    default, so hashes of configs that do not use them (training-set config_hash,
    materialize feature_hash) stay what they were."""
    for name, default in fields.items():
        if name in data and getattr(model, name) == default:
            del data[name]
    return data


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
    window: str = Field(
        default="lifetime",
        description="'lifetime', a duration like '30d', or a row count like '5 events'",
    )
    unit: TimeUnit = Field(default="d", description="time_since_last / mean_interval unit")
    default: float | int | str | bool | None = None
    inclusive: bool = Field(default=False, description="count source rows at exactly t")
    ttl: Duration | None = Field(
        default=None, description="overrides the source's ttl for this feature"
    )
    offset: int = Field(
        default=1, ge=1, description="lag: 1 = the newest row, 2 = the one before it, ..."
    )
    entity_keys: list[str] | None = Field(
        default=None,
        description="the source columns identifying this feature's entity (default: the "
        "source's entity_keys), e.g. driver_id on a rides table keyed by rider_id",
    )
    join: dict[str, str] | None = Field(
        default=None,
        description="spine column -> source key column, for keys named differently "
        "(overrides the source's `join`)",
    )
    min_match_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="fail when fewer spine rows than this share have a source row in scope",
    )

    @field_validator("window")
    @classmethod
    def _window_ok(cls, value: str) -> str:
        if value == "lifetime":
            return value
        events = parse_event_window(value)
        if events is not None:
            if events < 1:
                raise ValueError("an event window needs at least 1 event")
            return value
        try:
            delta = parse_duration(value)
        except ValueError:
            raise ValueError(
                f"expected a duration such as '30m' or '7d', 'N events' or 'lifetime', got {value!r}"
            ) from None
        if delta <= timedelta(0):
            raise ValueError("window must be positive")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        new = {"ttl": None, "offset": 1, "entity_keys": None, "join": None, "min_match_rate": None}
        return drop_new_defaults(handler(self), self, new)

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
        if self.offset != 1 and self.kind != "lag":
            raise ValueError(f"feature {self.name!r}: `offset` only applies to kind lag")
        if self.join is not None and len(set(self.join.values())) != len(self.join):
            raise ValueError(f"feature {self.name!r}: `join` maps two spine columns to one key")
        return self

    @property
    def window_delta(self) -> timedelta | None:
        """The window as a timedelta; None for lifetime and for event-count windows."""
        if self.window == "lifetime" or self.window_events is not None:
            return None
        return parse_duration(self.window)

    @property
    def window_events(self) -> int | None:
        """N for `window: N events` (the last N visible rows), else None."""
        return None if self.window == "lifetime" else parse_event_window(self.window)

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
