"""Online store settings (owned by the materialize issue)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration


class OnlineStoreConfig(ConfigModel):
    type: Literal["sqlite", "redis"] = "sqlite"
    path: ConfigPath | None = Field(default=None, description="sqlite file; default under artifacts")
    url: str | None = Field(default=None, description="redis://host:port/db or rediss://")
    password: str | None = Field(default=None, repr=False)
    ttl: Duration | None = Field(default=None, description="per-key expiry in the store")
