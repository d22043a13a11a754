"""Writing one version into a store: begin → write chunks → verify → switch.

``materialize`` drives this with computed features; tests and the benchmark drive it with
rows they build themselves. Nothing here reports success before ``switch`` has run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from mlpipe_cli.errors import ServiceUnavailable
from mlpipe_cli.online.base import done_writing, mark_writing
from mlpipe_cli.online.codec import utcnow
from mlpipe_cli.online.store import OnlineStoreWriter, RunProgress, StoreMetadata


def new_version_id(store: OnlineStoreWriter) -> str:
    return f"{store.next_sequence():04d}-{secrets.token_hex(4)}"


def start_version(
    store: OnlineStoreWriter, meta: StoreMetadata, *, chunk_size: int, entities_hash: str
) -> RunProgress:
    """Create the version namespace (status 'building') and take its lease."""
    progress = RunProgress(meta.version, chunk_size=chunk_size, entities_hash=entities_hash)
    # Marked before the version exists in the store: a run in another thread of this process
    # that lists versions in between must see it as being written, not as abandoned (it
    # dropped the tables of a version still being written).
    mark_writing(meta.version)
    try:
        store.begin(meta.replace(status="building", finished_at=None), progress)
    except BaseException:
        done_writing(meta.version)
        raise
    return progress


def resume_version(store: OnlineStoreWriter, progress: RunProgress) -> bool:
    """Take over an abandoned version; False when it cannot be continued (server restarted)."""
    if not store.claim(progress):
        return False
    mark_writing(progress.version)
    return True


def release_version(version: str) -> None:
    """A run writing ``version`` failed: the version is abandoned (resumable, and removed by
    a later switch once no live process writes it)."""
    done_writing(version)


def finish_version(
    store: OnlineStoreWriter,
    meta: StoreMetadata,
    progress: RunProgress,
    *,
    expected: int,
    verify: bool = True,
    allow_older: bool | None = None,
) -> tuple[StoreMetadata, list[str]]:
    """Check every row arrived, then make the version live atomically.

    Returns the final metadata (with ``finished_at``) and the ids of removed versions. A
    version as of an earlier time than the live one stays complete but not live
    (``store.OlderThanLive``, exit 1) unless ``allow_older`` (None: the store's attribute).
    """
    try:
        if progress.written != expected:
            raise ServiceUnavailable(
                f"online store {store.location}: wrote {progress.written} of {expected} entities; "
                "the live version was not changed"
            )
        if verify:
            store.verify(meta, progress, expected)
        final = meta.replace(status="complete", finished_at=utcnow(), entity_count=expected)
        removed = store.switch(final, allow_older=allow_older)
        return final, removed
    finally:
        done_writing(meta.version)


def write_version(
    store: OnlineStoreWriter,
    *,
    features: list[str],
    rows: Iterable[list[tuple[str, bytes]]],
    as_of: datetime,
    feature_hash: str,
    entity_keys: list[str],
    key_types: list[str],
    defaults: dict[str, Any] | None = None,
    ttls: dict[str, float] | None = None,
    event_times: bool = False,
    expected: int,
    chunk_size: int = 100_000,
) -> tuple[StoreMetadata, list[str]]:
    """Write a whole version from pre-packed chunks and switch to it (tests, benchmark)."""
    meta = StoreMetadata(
        version=new_version_id(store),
        as_of=as_of,
        finished_at=None,
        entity_count=expected,
        features=features,
        feature_hash=feature_hash,
        entity_keys=entity_keys,
        key_types=key_types,
        defaults=defaults or {},
        ttls=ttls or {},
        event_times=event_times,
        status="building",
    )
    progress = start_version(store, meta, chunk_size=chunk_size, entities_hash="")
    try:
        for chunk in rows:
            store.write_chunk(progress, chunk)
    except BaseException:
        done_writing(meta.version)
        raise
    return finish_version(store, meta, progress, expected=expected)
