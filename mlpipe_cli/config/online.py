"""Online store settings (owned by the materialize issue).

See docs/materialize.md for what every key does. The password is a ``SecretStr``: it never
appears in ``repr()``, in ``model_dump()`` (dumps ``'**********'``) or in config hashes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from mlpipe_cli.config.base import ConfigModel, ConfigPath, Duration

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


class OnlineStoreConfig(ConfigModel):
    """Where `materialize` writes the latest feature values and `serve` reads them."""

    type: Literal["sqlite", "redis"] = Field(default="sqlite", description="store backend")
    path: ConfigPath | None = Field(
        default=None, description="sqlite file; default <artifact_dir>/<pipeline>/online.sqlite"
    )
    url: str | None = Field(default=None, description="redis://host:port/db or rediss://")
    cluster: bool = Field(
        default=False,
        description="url names one node of a Redis Cluster (the others are discovered)",
    )
    password: SecretStr | None = Field(
        default=None, description="redis password; write ${ENV_VAR}, never the literal"
    )
    ttl: Duration | None = Field(
        default=None, description="redis per-key expiry (abandoned entities disappear)"
    )
    key_prefix: str | None = Field(
        default=None, description="redis key prefix; default mlpipe:<pipeline>"
    )
    timeout: Duration = Field(
        default=timedelta(seconds=2), description="connect/socket timeout for redis"
    )
    chunk_size: int = Field(
        default=10_000, ge=1, le=5_000_000, description="entities computed and written per chunk"
    )
    pointer_refresh: Duration = Field(
        default=timedelta(seconds=1),
        description="readers re-read the live-version pointer at most this often (and on a miss)",
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _safe_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _PREFIX_RE.match(value):
            raise ValueError("expected letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _url_for_redis(self) -> OnlineStoreConfig:
        if self.type == "redis" and not self.url:
            raise ValueError("type: redis needs url: redis://host:port/db")
        if self.cluster:
            _check_cluster_url(self.type, self.url)
        if self.ttl is not None and self.ttl.total_seconds() < 1:
            raise ValueError("ttl must be at least 1s")
        return self


def _check_cluster_url(kind: str, url: str | None) -> None:
    """A Redis Cluster has no databases and no unix sockets (redis-py's RedisCluster)."""
    if kind != "redis":
        raise ValueError("cluster: true needs type: redis")
    assert url is not None  # type: redis requires it (checked first)
    if url.startswith("unix://"):
        raise ValueError("cluster: true needs a redis:// or rediss:// url (no unix sockets)")
    path = urlsplit(url).path.strip("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0; drop /{path} from the url")
