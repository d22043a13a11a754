"""Online feature stores: SQLite (embedded default) and Redis, behind one small interface.

``serve`` uses :func:`open_store` and the read side (``OnlineStore``); ``materialize`` also
uses the write side (``OnlineStoreWriter``: ``begin``/``write_chunk``/``switch``/``rollback``,
driven through ``online.writer``). Modules: ``store`` the two contracts and the records they
exchange, ``base`` the read path both backends share, ``codec`` keys and packed values,
``sqlite_store`` / ``redis_store`` the backends. docs/materialize.md documents the layouts,
the value encoding and the atomic switch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlpipe_cli.online.codec import entity_store_key, pack_row
from mlpipe_cli.online.store import LookupResult, OnlineStore, OnlineStoreWriter, StoreMetadata

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.online.redis_store import RedisStore
    from mlpipe_cli.online.sqlite_store import SqliteStore

__all__ = [
    "LookupResult",
    "OnlineStore",
    "OnlineStoreWriter",
    "StoreMetadata",
    "default_sqlite_path",
    "entity_store_key",
    "open_store",
    "pack_row",
]


def default_sqlite_path(config: PipelineConfig, artifact_dir: Path) -> Path:
    return Path(artifact_dir) / config.pipeline / "online.sqlite"


def open_store(config: PipelineConfig, artifact_dir: Path) -> SqliteStore | RedisStore:
    """The configured online store (no I/O yet: call ``ping()`` to check it is reachable)."""
    settings = config.online_store
    refresh = settings.pointer_refresh.total_seconds()
    if settings.type == "redis":
        from mlpipe_cli.online.redis_cluster import RedisClusterStore
        from mlpipe_cli.online.redis_store import RedisStore

        assert settings.url is not None  # the config model guarantees it
        ttl = settings.ttl
        return (RedisClusterStore if settings.cluster else RedisStore)(
            settings.url,
            password=settings.password.get_secret_value() if settings.password else None,
            prefix=settings.key_prefix or f"mlpipe:{config.pipeline}",
            ttl_seconds=max(1, int(ttl.total_seconds())) if ttl is not None else None,
            timeout=settings.timeout.total_seconds(),
            pointer_refresh=refresh,
        )
    from mlpipe_cli.online.sqlite_store import SqliteStore

    path = settings.path or default_sqlite_path(config, artifact_dir)
    return SqliteStore(path, pointer_refresh=refresh)
