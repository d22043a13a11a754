"""Feature definitions and the training-set spine (owned by the training-set issue)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, ConfigPath

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "count_distinct", "last"]


class FeatureConfig(ConfigModel):
    """One feature computed per entity from a source, as of a point in time."""

    name: str
    source: str
    kind: Literal["aggregate", "lag", "time_since_last", "attribute"] = "aggregate"
    agg: Aggregation | None = None
    column: str | None = None
    window: str = Field(default="lifetime", description="'lifetime' or a duration like '30d'")
    default: float | int | str | bool | None = None
    inclusive: bool = Field(default=False, description="count source rows at exactly t")


class TrainingSetConfig(ConfigModel):
    """The spine (label table) the training set is built on."""

    spine: ConfigPath
    timestamp: str
    entity_keys: list[str] | None = None
    features: list[str] | None = None
