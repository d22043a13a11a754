"""The embedded online store: one SQLite file in WAL mode.

Layout::

    mlpipe_pointer(name PRIMARY KEY, version)         rows 'live', 'previous'
    mlpipe_versions(version PRIMARY KEY, seq, status, metadata, progress)
    "data_<version>"(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID   one table per version
    "data_<version>_ns<i>"(k, v)      namespace i >= 1 of a version with several entity types

``k`` is the entity's store key (``[123]``), ``v`` its packed row. A point lookup is one
prepared ``SELECT v FROM "data_…" WHERE k = ?`` on a per-thread read connection; a lookup
of several entity types is one query per namespace. All tables of a version are created in
the transaction that registers it and dropped with it; the live pointer moves in one
transaction, so readers never see part of a version.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mlpipe_cli.errors import OutputError, ServiceUnavailable, Signal, UsageError
from mlpipe_cli.io import on_read_only_filesystem, write_failure
from mlpipe_cli.online.base import (
    LEASE_SECONDS,
    BaseStore,
    _Gone,
    _View,
    owner_id,
    removed_while_written,
    stale_versions,
)
from mlpipe_cli.online.codec import PackedChunk
from mlpipe_cli.online.store import OlderThanLive, RunProgress, StoreMetadata

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mlpipe_pointer (name TEXT PRIMARY KEY, version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mlpipe_versions (
    version TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    metadata BLOB NOT NULL,
    progress BLOB
);
"""


def _table(version: str, namespace: int = 0) -> str:
    """The table of one namespace of a version (namespace 0: the single-entity layout)."""
    suffix = f"_ns{namespace}" if namespace else ""
    return '"data_' + version.replace("-", "_") + suffix + '"'


def _version_tables(conn: sqlite3.Connection, version: str) -> list[str]:
    """Every table of a version (quoted), found by name: also the tables of a version whose
    metadata was never committed."""
    base = "data_" + version.replace("-", "_")
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND (name = ? OR name GLOB ?)",
        (base, base + "_ns[0-9]*"),
    ).fetchall()
    return ['"' + name + '"' for (name,) in sorted(rows)]


class SqliteStore(BaseStore):
    kind = "sqlite"

    def __init__(self, path: Path, *, pointer_refresh: float = 1.0) -> None:
        super().__init__(pointer_refresh)
        self.path = Path(path)
        self.location = f"sqlite:{self.path}"
        self._local = threading.local()
        self._writer: sqlite3.Connection | None = None

    # -- connections --------------------------------------------------------------------
    def _connect(self, *, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise _Missing
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            full = write_failure(exc, self.path, "open the online store")
            if full is not None:  # a full disk is the user's to fix (exit 2), not an outage
                raise full from None
            if on_read_only_filesystem(self.path.parent):
                # SQLite in WAL mode writes -wal/-shm files beside the database, even to read
                raise OutputError(
                    f"online store {self.location} cannot be opened: {self.path.parent} is on "
                    "a read-only file system",
                    hint="point online_store.path (or artifact_dir) at a writable directory",
                ) from None
            raise ServiceUnavailable(
                f"online store {self.location} cannot be opened: {exc}",
                hint="check the online_store.path directory exists and is writable",
            ) from None
        return conn

    def _reader(self) -> sqlite3.Connection | None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect(create=False)
            except _Missing:
                return None
            self._local.conn = conn
        return conn

    def _write_conn(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = self._connect(create=True)
        return self._writer

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def ping(self) -> None:
        if self.path.exists():
            conn = self._reader()
            if conn is None:  # removed since exists() said it was there
                raise ServiceUnavailable(f"online store {self.location} is gone")
            try:
                conn.execute("SELECT 1").fetchone()
            except sqlite3.Error as exc:
                raise ServiceUnavailable(
                    f"online store {self.location} is unreadable: {exc}"
                ) from None
        elif not self.path.parent.exists() and not _creatable(self.path.parent):
            raise ServiceUnavailable(
                f"online store {self.location}: directory {self.path.parent} cannot be created"
            )

    # -- read hooks ---------------------------------------------------------------------
    def _read_live(self) -> str | None:
        conn = self._reader()
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT version FROM mlpipe_pointer WHERE name = 'live'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise ServiceUnavailable(f"online store {self.location} is unreadable: {exc}") from None
        return row[0] if row else None

    def _read_metadata(self, version: str) -> StoreMetadata | None:
        conn = self._reader()
        if conn is None:
            return None
        row = conn.execute(
            "SELECT metadata FROM mlpipe_versions WHERE version = ?", (version,)
        ).fetchone()
        return StoreMetadata.from_json(row[0]) if row else None

    def _view_prefix(self, version: str, namespace: int = 0) -> tuple[str, str]:
        table = _table(version, namespace)
        return (f"SELECT v FROM {table} WHERE k = ?", f"SELECT k, v FROM {table} WHERE k IN ")

    def _fetch(self, view: _View, keys: list[str], namespace: int = 0) -> list[bytes | None]:
        conn = self._reader()
        if conn is None:  # the store file was removed under a live view: resolve again
            raise _Gone
        one, many = view.prefixes[namespace]
        try:
            if len(keys) == 1:
                row = conn.execute(one, (keys[0],)).fetchone()
                return [row[0] if row else None]
            found: dict[str, bytes] = {}
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                sql = many + "(" + ",".join("?" * len(part)) + ")"
                found.update(conn.execute(sql, part).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise _Gone from None
            raise ServiceUnavailable(f"online store {self.location} is unreadable: {exc}") from None
        return [found.get(k) for k in keys]

    # -- write side (materialize) -------------------------------------------------------
    def versions(self) -> list[tuple[StoreMetadata, RunProgress | None]]:
        conn = self._write_conn()
        rows = conn.execute(
            "SELECT metadata, progress FROM mlpipe_versions ORDER BY seq"
        ).fetchall()
        return [
            (StoreMetadata.from_json(m), RunProgress.from_json(p) if p else None) for m, p in rows
        ]

    def pointers(self) -> dict[str, str]:
        conn = self._write_conn()
        return dict(conn.execute("SELECT name, version FROM mlpipe_pointer").fetchall())

    def next_sequence(self) -> int:
        conn = self._write_conn()
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM mlpipe_versions").fetchone()
        return int(row[0]) + 1

    def begin(self, meta: StoreMetadata, progress: RunProgress) -> None:
        """Create the namespace of a new version (status 'building')."""
        conn = self._write_conn()
        progress.owner = owner_id()
        progress.lease_until = time.time() + LEASE_SECONDS
        seq = int(meta.version.split("-")[0])
        with _transaction(conn):
            for namespace in range(len(meta.key_sets())):
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_table(meta.version, namespace)} "
                    "(k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
                )
            conn.execute(
                "INSERT OR REPLACE INTO mlpipe_versions VALUES (?, ?, 'building', ?, ?)",
                (meta.version, seq, meta.to_json(), progress.to_json()),
            )

    def claim(self, progress: RunProgress) -> bool:
        """Take over an abandoned version to resume it."""
        conn = self._write_conn()
        progress.owner = owner_id()
        progress.lease_until = time.time() + LEASE_SECONDS
        with _transaction(conn):
            conn.execute(
                "UPDATE mlpipe_versions SET progress = ? WHERE version = ?",
                (progress.to_json(), progress.version),
            )
        return True

    def write_chunk(
        self, progress: RunProgress, items: Sequence[tuple[str, bytes]], namespace: int = 0
    ) -> None:
        """Write one chunk of rows of one namespace and record the progress in the same
        transaction."""
        conn = self._write_conn()
        # in key order: SQLite inserts sorted keys ~6x faster than random ones
        rows = items.sorted_rows() if isinstance(items, PackedChunk) else sorted(items)
        progress.chunks_done += 1
        progress.written += len(rows)
        progress.lease_until = time.time() + LEASE_SECONDS
        try:
            with _transaction(conn):
                conn.executemany(
                    f"INSERT OR REPLACE INTO {_table(progress.version, namespace)} (k, v) "
                    "VALUES (?, ?)",
                    rows,
                )
                conn.execute(
                    "UPDATE mlpipe_versions SET progress = ? WHERE version = ?",
                    (progress.to_json(), progress.version),
                )
        except (sqlite3.Error, OutputError) as exc:
            progress.chunks_done -= 1
            progress.written -= len(rows)
            if isinstance(exc, OutputError):  # the disk is full (see _transaction)
                raise
            raise ServiceUnavailable(f"online store {self.location}: write failed: {exc}") from None

    def verify(self, meta: StoreMetadata, progress: RunProgress, expected: int) -> None:
        """Count the version's rows (exact; ~0.1 s per million) before switching."""
        stored = self.count(meta.version)
        if stored != expected:
            raise ServiceUnavailable(
                f"online store {self.location}: version {meta.version} holds {stored} of "
                f"{expected} entities; the live version was not changed, re-run `mlpipe materialize`"
            )

    def count(self, version: str) -> int:
        """Rows of a version over all its namespaces."""
        conn = self._write_conn()
        return sum(
            int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in _version_tables(conn, version)
        )

    def switch(self, meta: StoreMetadata, *, allow_older: bool | None = None) -> list[str]:
        """Mark ``meta.version`` complete and make it live atomically; drop older versions.

        Returns the removed version ids. A version as of an earlier time than the live one
        is marked complete but not made live (OlderThanLive), unless ``allow_older``
        (default: the store's attribute); the check reads the live pointer in the same
        IMMEDIATE transaction that would move it, so a concurrent run cannot slip between.
        """
        allow = self.allow_older if allow_older is None else allow_older
        conn = self._write_conn()
        refused: OlderThanLive | None = None
        with _transaction(conn):
            pointers = dict(conn.execute("SELECT name, version FROM mlpipe_pointer").fetchall())
            marked = conn.execute(
                "UPDATE mlpipe_versions SET status = 'complete', metadata = ?, progress = NULL "
                "WHERE version = ?",
                (meta.to_json(), meta.version),
            ).rowcount
            if marked != 1:  # raised inside the transaction: the pointers stay as they were
                raise ServiceUnavailable(removed_while_written(self.location, meta.version))
            live = pointers.get("live")
            if live is not None and live != meta.version and not allow:
                row = conn.execute(
                    "SELECT metadata FROM mlpipe_versions WHERE version = ?", (live,)
                ).fetchone()
                live_meta = StoreMetadata.from_json(row[0]) if row else None
                if live_meta is not None and meta.as_of < live_meta.as_of:
                    refused = OlderThanLive(meta.version, meta.as_of, live, live_meta.as_of)
            if refused is None:
                if live is not None and live != meta.version:
                    conn.execute(
                        "INSERT OR REPLACE INTO mlpipe_pointer VALUES ('previous', ?)", (live,)
                    )
                conn.execute(
                    "INSERT OR REPLACE INTO mlpipe_pointer VALUES ('live', ?)", (meta.version,)
                )
        if refused is not None:
            self.remove_stale()  # the refused version too: it can never become live
            raise refused
        return self.remove_stale()

    def rollback(self) -> tuple[str, str]:
        """Swap live and previous atomically; returns (new live, new previous)."""
        conn = self._write_conn()
        with _transaction(conn):
            pointers = dict(conn.execute("SELECT name, version FROM mlpipe_pointer").fetchall())
            live, previous = pointers.get("live"), pointers.get("previous")
            if previous is None or live is None:
                raise UsageError(
                    "nothing to roll back to: the store keeps one previous version, and there "
                    "is none yet (run `mlpipe materialize` twice first)"
                )
            conn.execute("UPDATE mlpipe_pointer SET version = ? WHERE name = 'live'", (previous,))
            conn.execute("UPDATE mlpipe_pointer SET version = ? WHERE name = 'previous'", (live,))
        return previous, live

    def remove_stale(self) -> list[str]:
        """Drop every version that is neither live, previous, nor being written right now."""
        return self.remove_versions(stale_versions(self))

    def remove_versions(self, versions: list[str]) -> list[str]:
        """Drop ``versions``, each in one transaction that first re-reads the pointers: a
        version listed as stale that went live (or previous) since is kept. Returns the
        versions dropped."""
        conn = self._write_conn()
        removed = []
        for version in versions:
            with _transaction(conn):
                kept = conn.execute(
                    "SELECT 1 FROM mlpipe_pointer WHERE version = ?", (version,)
                ).fetchone()
                if kept is not None:
                    continue
                for table in _version_tables(conn, version):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("DELETE FROM mlpipe_versions WHERE version = ?", (version,))
            removed.append(version)
        return removed


class _Missing(Signal):
    """The database file does not exist yet (nothing materialized): readers see no version."""


class _transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._raise_if_disk_full(exc)
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as failed:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                self._raise_if_disk_full(failed)
                raise
        else:
            self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                self._raise_if_disk_full(exc)

    def _raise_if_disk_full(self, exc: sqlite3.Error) -> None:
        # SQLITE_FULL is the user's to fix (exit 2, naming the file), not an outage (exit 4)
        rows = self.conn.execute("PRAGMA database_list").fetchall()
        path = Path(next((row[2] for row in rows if row[1] == "main"), "") or ".")
        failure = write_failure(exc, path, "write the online store")
        if failure is not None:
            raise failure from None


def _creatable(directory: Path) -> bool:
    for parent in [directory, *directory.parents]:
        if parent.exists():
            import os

            return os.access(parent, os.W_OK)
    return False
