"""The root config model: one YAML file per pipeline."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath
from mlpipe_cli.config.features import FeatureConfig, TrainingSetConfig
from mlpipe_cli.config.monitoring import MonitoringConfig
from mlpipe_cli.config.online import OnlineStoreConfig
from mlpipe_cli.config.serving import ServingConfig
from mlpipe_cli.config.slo import SloConfig
from mlpipe_cli.config.sources import SourceConfig
from mlpipe_cli.config.spark import SparkConfig
from mlpipe_cli.config.transforms import TransformConfig

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PipelineConfig(ConfigModel):
    """Everything one pipeline needs; every section but `pipeline` is optional."""

    pipeline: str = Field(description="name; artifacts live under <artifact_dir>/<pipeline>/")
    entity_keys: list[str] = Field(default_factory=list, min_length=0)
    timezone: str | None = Field(
        default=None,
        description="zone for naive timestamps; mixing naive/aware is otherwise an error",
    )
    artifact_dir: ConfigPath | None = None
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    features: list[FeatureConfig] = Field(default_factory=list)
    training_set: TrainingSetConfig | None = None
    transforms: TransformConfig | None = None
    online_store: OnlineStoreConfig = Field(default_factory=OnlineStoreConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    engine: Literal["polars", "spark"] = Field(
        default="polars", description="batch engine: polars (one machine) or spark (docs/scale.md)"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @field_validator("pipeline")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("expected letters, digits, '_', '-' or '.' (it names a directory)")
        return value

    @model_validator(mode="after")
    def _features_name_known_sources(self) -> PipelineConfig:
        seen: set[str] = set()
        for feature in self.features:
            if feature.source not in self.sources:
                raise ValueError(
                    f"feature {feature.name!r} reads unknown source {feature.source!r} "
                    f"(known: {', '.join(sorted(self.sources)) or 'none'})"
                )
            if feature.name in seen:
                raise ValueError(f"feature name {feature.name!r} is defined twice")
            seen.add(feature.name)
            source = self.sources[feature.source]
            mapping: dict[str, str] | None
            if feature.join is not None:
                keys = feature.entity_keys or source.entity_keys or self.entity_keys
                mapping, where = feature.join, "its"
            else:
                keys = source.entity_keys or self.entity_keys
                mapping, where = source.join, f"source {feature.source!r}'s"
            for spine_column, key in (mapping or {}).items():
                if keys and key not in keys:
                    raise ValueError(
                        f"feature {feature.name!r}: {where} join maps spine column "
                        f"{spine_column!r} onto {key!r}, which is not a key of source "
                        f"{feature.source!r} (keys: {', '.join(keys)})"
                    )
            if feature.ttl is not None and source.timestamp is None:
                raise ValueError(
                    f"feature {feature.name!r}: ttl needs source {feature.source!r} to have a "
                    "`timestamp` (plain and type-2 tables have no age to expire)"
                )
        return self

    def source(self, name: str) -> SourceConfig:
        from mlpipe_cli.errors import UsageError

        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise UsageError(f"unknown source {name!r} (known: {known})") from None
