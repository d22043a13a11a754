"""A version removed by another run while it is still being written, and a version that goes
live after another run listed it for removal: both on a real SQLite file, a real
redis-server and (tests/test_redis_cluster.py) a real Redis Cluster.

A run takes a version for abandoned when its writer's lease lapsed (a chunk took longer than
the lease, or the writer is on another host that stopped renewing it). Before, the writer's
own switch then pointed ``live`` at a version whose rows were gone (every lookup missed), and
a removal that listed a version just before it went live could drop the live version. The
oracle is what readers get back: the values written, by ``get``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.errors import ServiceUnavailable
from mlpipe_cli.online import entity_store_key, open_store, pack_row
from mlpipe_cli.online.base import done_writing, stale_versions
from mlpipe_cli.online.store import OnlineStoreWriter, StoreMetadata
from mlpipe_cli.online.writer import finish_version, new_version_id, start_version, write_version

KEYS = ["ü-1", "a", "東京-長い-key"]


@pytest.fixture(params=["sqlite", "redis"])
def online(request: Any, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.sqlite")}
    server = request.getfixturevalue("redis_server")
    return {"type": "redis", "url": server.url, "key_prefix": f"t:race:{tmp_path.name}"}


def open_two(tmp_path: Path, online: dict[str, Any]) -> tuple[OnlineStoreWriter, OnlineStoreWriter]:
    """Two handles on one store, as two runs would have (their own connections)."""
    path = tmp_path / "mlpipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pipeline": "race",
                "entity_keys": ["user"],
                "artifact_dir": str(tmp_path / "artifacts"),
                "sources": {"e": {"path": str(tmp_path / "e.parquet"), "timestamp": "ts"}},
                "features": [{"name": "n", "source": "e", "agg": "count", "default": 0}],
                "online_store": online,
            },
            allow_unicode=True,
        )
    )
    config = load_config(path)
    return open_store(config, config.artifact_dir), open_store(config, config.artifact_dir)


def rows(value: int) -> list[tuple[str, bytes]]:
    return [(entity_store_key(key), pack_row([value])) for key in KEYS]


def go_live(store: OnlineStoreWriter, value: int, day: int) -> str:
    meta, _ = write_version(store, features=["n"], rows=[rows(value)],
                            as_of=datetime(2026, 6, day, tzinfo=UTC), feature_hash="h",
                            entity_keys=["user"], key_types=["str"], expected=len(KEYS))  # fmt: skip
    return meta.version


def begin(store: OnlineStoreWriter, value: int, day: int) -> tuple[StoreMetadata, Any]:
    """A run that wrote all its rows and has not switched yet."""
    meta = StoreMetadata(version=new_version_id(store), as_of=datetime(2026, 6, day, tzinfo=UTC),
                         finished_at=None, entity_count=len(KEYS), features=["n"],
                         feature_hash="h", entity_keys=["user"], key_types=["str"],
                         defaults={}, ttls={}, event_times=False, status="building")  # fmt: skip
    progress = start_version(store, meta, chunk_size=100, entities_hash="")
    store.write_chunk(progress, rows(value))
    return meta, progress


def served(store: OnlineStoreWriter) -> list[Any]:
    return [store.get(key).values for key in KEYS]


def check_removed_while_written(first: OnlineStoreWriter, second: OnlineStoreWriter) -> None:
    old = go_live(first, value=1, day=1)
    meta, progress = begin(first, value=2, day=2)
    done_writing(meta.version)  # its lease lapsed: to the other run it is abandoned
    assert meta.version in second.remove_stale()
    with pytest.raises(ServiceUnavailable) as failed:
        finish_version(first, meta, progress, expected=len(KEYS), verify=False)
    message = str(failed.value)
    assert f"version {meta.version} was removed by another run" in message
    assert "the live version was not changed" in message
    assert "\n" not in message
    assert first.pointers().get("live") == old
    assert served(first) == served(second) == [{"n": 1}] * len(KEYS)


def check_listed_then_live_is_kept(first: OnlineStoreWriter, second: OnlineStoreWriter) -> None:
    go_live(first, value=1, day=1)
    meta, progress = begin(first, value=2, day=2)
    done_writing(meta.version)
    listed = stale_versions(second)  # the other run lists it as abandoned...
    assert meta.version in listed
    finish_version(first, meta, progress, expected=len(KEYS), verify=False)  # ...it goes live
    assert meta.version not in second.remove_versions(listed)
    assert first.pointers().get("live") == meta.version
    assert served(first) == served(second) == [{"n": 2}] * len(KEYS)


@pytest.mark.parametrize(
    "case", [check_removed_while_written, check_listed_then_live_is_kept],
    ids=["removed_while_written", "listed_then_live"],
)  # fmt: skip
def test_removal_races(
    tmp_path: Path, online: dict[str, Any], case: Callable[[Any, Any], None]
) -> None:
    first, second = open_two(tmp_path, online)
    try:
        case(first, second)
    finally:
        first.close()
        second.close()
