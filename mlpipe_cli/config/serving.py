"""Serving settings (owned by the serve issue)."""

from __future__ import annotations

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, ConfigPath


class ServingConfig(ConfigModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch: int = Field(default=100, ge=1)
    log_dir: ConfigPath | None = None
