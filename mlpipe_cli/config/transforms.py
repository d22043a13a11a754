"""Transform specs (owned by the fit/transform issue)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, ConfigPath


class TransformConfig(ConfigModel):
    """The preprocessing fitted by `mlpipe fit`: one entry per input column."""

    data: ConfigPath | None = Field(default=None, description="default training data for fit")
    target: str | None = None
    columns: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
