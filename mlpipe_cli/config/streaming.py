"""`sources.<name>.stream`: the event stream that keeps a source's features fresh.

See docs/streaming.md. Only the key is required; the Redis server defaults to the online
store's (``online_store.url`` and ``password``) so a Redis-backed pipeline needs no second URL.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, SecretStr, field_validator

from mlpipe_cli.config.base import ConfigModel, Duration

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:{}-]+$")


class StreamConfig(ConfigModel):
    """Where a source's events arrive (a Redis stream) and how late they may be."""

    key: str = Field(description="Redis stream key the events are appended to, e.g. orders-events")
    url: str | None = Field(
        default=None,
        description="redis://host:port/db holding the stream and the streamed state; "
        "default: online_store.url",
    )
    password: SecretStr | None = Field(
        default=None, description="redis password (${ENV}); default: online_store.password"
    )
    dead_letter: str | None = Field(
        default=None, description="stream receiving rejected events; default <key>:dead"
    )
    max_lateness: Duration = Field(
        default=timedelta(hours=1),
        description="an event older than its entity's newest event by more than this is "
        "dead-lettered (reason late)",
    )
    group: str = Field(default="mlpipe", description="consumer group name")
    batch: int = Field(
        default=100, ge=1, le=100_000, description="events read and applied per Redis call"
    )
    claim_idle: Duration = Field(
        default=timedelta(seconds=30),
        description="entries pending this long on another consumer are claimed (XAUTOCLAIM)",
    )

    @field_validator("key", "dead_letter", "group")
    @classmethod
    def _safe_key(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_RE.match(value):
            raise ValueError("expected letters, digits, '_', '.', ':', '{', '}' or '-'")
        return value

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a URL starting with redis://, rediss:// or unix://")
        return value

    @field_validator("max_lateness")
    @classmethod
    def _non_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("max_lateness must not be negative")
        return value

    @property
    def dead_letter_key(self) -> str:
        return self.dead_letter or f"{self.key}:dead"
