"""Drift monitoring settings (`monitoring:` section; used by `mlpipe psi-report`).

PSI follows one pinned convention (docs/psi-report.md): natural log, the reference's decile
bins with open-ended edge bins, `__missing__`/`__other__` bins, empty bins clipped at 1e-4
without renormalisation. Only the gates are configurable, never the convention.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from mlpipe_cli.config.base import ConfigModel, Duration


class FeatureThreshold(ConfigModel):
    """Per-feature overrides, keyed by feature name (`revenue`, `raw.revenue`, `vec.x`)."""

    psi: float | None = Field(default=None, gt=0, description="PSI gate for this feature")


class MonitoringConfig(ConfigModel):
    psi_threshold: float = Field(default=0.2, gt=0, description="PSI >= this: drifted (exit 1)")
    moderate_threshold: float = Field(
        default=0.1, gt=0, description="PSI >= this (and below the gate): moderate"
    )
    bins: int = Field(default=10, ge=2, description="bins of a reference profile (deciles)")
    min_rows: int = Field(
        default=200, ge=1, description="fewer current rows per feature: a noisy-PSI warning"
    )
    ks_pvalue: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="KS p-value below which a distribution check fails (validate)",
    )
    window: Duration = Field(
        default=timedelta(hours=24), description="default --since for --serving-log"
    )
    features: dict[str, FeatureThreshold] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _moderate_below_gate(self) -> MonitoringConfig:
        if self.moderate_threshold > self.psi_threshold:
            raise ValueError(
                f"moderate_threshold ({self.moderate_threshold}) must not exceed "
                f"psi_threshold ({self.psi_threshold})"
            )
        return self

    def thresholds(self) -> dict[str, float]:
        """Feature → its own PSI gate (only features that set one)."""
        return {name: f.psi for name, f in self.features.items() if f.psi is not None}
