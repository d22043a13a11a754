"""Drift monitoring settings (owned by the psi-report issue)."""

from __future__ import annotations

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel


class FeatureThreshold(ConfigModel):
    psi: float | None = Field(default=None, gt=0)


class MonitoringConfig(ConfigModel):
    psi_threshold: float = Field(default=0.2, gt=0)
    bins: int = Field(default=10, ge=2)
    min_rows: int = Field(default=200, ge=1)
    ks_pvalue: float = Field(default=0.01, gt=0, lt=1)
    features: dict[str, FeatureThreshold] = Field(default_factory=dict)
