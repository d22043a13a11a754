"""The Redis online store (redis-py; ``redis://`` and ``rediss://``).

Key layout (``P`` = ``online_store.key_prefix``, default ``mlpipe:<pipeline>``)::

    P:live                      string: the live version id
    P:previous                  string: the version --rollback returns to
    P:seq                       counter for version ids
    P:versions                  hash: version -> metadata JSON (status building|complete)
    P:progress                  hash: version -> progress JSON while it is being written
    P:lease:<version>           string with expiry: a writer is alive on this version
    P:d:<version>:<entity key>  one packed row per entity (SET ... EX <online ttl>)
    P:d:<version>:<i>:<key>     namespace i >= 1 of a version with several entity types

A lookup of several entity types reads every namespace's row in one MGET (one round trip).

Writes bypass redis-py's per-command Python overhead: each chunk is packed into RESP by hand
and sent over one pooled connection in batches, then every reply is checked (``+OK``).
Passwords come from the config (``${ENV}``) or the URL and never appear in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlpipe_cli.errors import ServiceUnavailable, UsageError
from mlpipe_cli.online import redis_wire
from mlpipe_cli.online.base import (
    LEASE_SECONDS,
    BaseStore,
    KnownKeys,
    _View,
    owner_id,
    removed_while_written,
    stale_versions,
)
from mlpipe_cli.online.codec import PackedChunk
from mlpipe_cli.online.redis_wire import parse_values_reply  # noqa: F401  (re-exported)
from mlpipe_cli.online.store import (
    LookupResult,
    OlderThanLive,
    RunProgress,
    StoreMetadata,
    no_live_version,
)

_USERINFO_RE = re.compile(r"(?P<scheme>[a-z]+://)(?P<userinfo>[^@/]*)@")
_BATCH = 5000  # commands per socket write while loading


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` → ``redis://user:***@host:6379/0``."""

    def repl(match: re.Match[str]) -> str:
        user, sep, _ = match.group("userinfo").partition(":")
        return f"{match.group('scheme')}{user + ':' if sep else ''}***@"

    return _USERINFO_RE.sub(repl, url)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class RedisStore(BaseStore):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str,
        ttl_seconds: int | None = None,
        timeout: float = 2.0,
        pointer_refresh: float = 1.0,
    ) -> None:
        super().__init__(pointer_refresh)
        import redis

        self._local = threading.local()
        self._bulk: _BulkWriter | None = None
        self._timeout = timeout
        # (event loop, the connection only it uses) for get_many_async
        self._async_state: tuple[Any, redis_wire.LoopConnection] | None = None
        self.url = url
        self.location = mask_url(url)
        self._secrets = [s for s in (password, _url_password(url)) if s]
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry_on_timeout": False,
            "health_check_interval": 0,
        }
        if password:
            kwargs["password"] = password
        try:
            self.client = redis.Redis.from_url(url, **kwargs)
        except ValueError as exc:
            raise UsageError(
                f"online_store.url {self.location} is invalid: {self._scrub(exc)}"
            ) from None
        self._wire_target = _wire_target(url, password)
        self._k_live = f"{prefix}:live".encode()
        self._k_prev = f"{prefix}:previous".encode()
        self._k_seq = f"{prefix}:seq"
        self._k_versions = f"{prefix}:versions"
        self._k_progress = f"{prefix}:progress"

    # -- errors -------------------------------------------------------------------------
    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return mask_url(text)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.AuthenticationError:
            raise ServiceUnavailable(
                f"online store {self.location} rejected the credentials ({action})",
                hint="check online_store.password / the environment variable it reads",
            ) from None
        except redis.TimeoutError:
            raise ServiceUnavailable(
                f"online store {self.location} timed out ({action})",
                hint="is redis-server up and reachable? online_store.timeout sets the limit",
            ) from None
        except redis.ConnectionError as exc:
            raise self._unreachable(action, exc) from None
        except redis.ResponseError as exc:
            raise self._refused(action, exc) from None
        except redis.RedisError as exc:
            raise ServiceUnavailable(
                f"online store {self.location} failed ({action}): {self._scrub(exc)}"
            ) from None

    def ping(self) -> None:
        with self._errors("ping"):
            self.client.ping()

    def close(self) -> None:
        self._drop_bulk_connection()
        if self._async_state is not None:
            self._async_state[1].close()
            self._async_state = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
            self._local.conn = None
        self.client.close()

    # -- read hooks ---------------------------------------------------------------------
    # Lookups go over one dedicated connection per thread with hand-packed RESP: redis-py's
    # generic command path (pool checkout, argument encoding) costs ~45 µs per GET here, the
    # raw round trip ~25 µs. A dropped connection (server restart) is retried once.
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.client.connection_pool.make_connection()
            self._local.conn = conn
        return conn

    def get(self, entity: Sequence[Any] | Any, deadline: float | None = None) -> LookupResult:
        self._local.deadline = time.monotonic() + self._timeout if deadline is None else deadline
        try:
            return super().get(entity)
        finally:
            self._local.deadline = None

    def get_many(
        self,
        entities: Sequence[Any],
        deadline: float | None = None,
        *,
        keys: KnownKeys | None = None,
    ) -> list[LookupResult]:
        """``BaseStore.get_many``; pointer refresh, fetch and any re-check share one deadline
        (``time.monotonic()``; default now + ``online_store.timeout``)."""
        self._local.deadline = time.monotonic() + self._timeout if deadline is None else deadline
        try:
            return super().get_many(entities, keys=keys)
        finally:
            self._local.deadline = None

    def _call(self, packed: bytes) -> Any:
        """One blocking round trip within the caller's deadline (or one timeout from now).

        A connection the server dropped (a restart) is re-made once; a timeout is never
        retried, so ``online_store.timeout`` bounds the whole lookup.
        """
        import redis

        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        conn = self._conn()
        for attempt in (0, 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                conn.disconnect()
                raise redis.TimeoutError("no reply within online_store.timeout")
            # relies on redis-py 5-8 Connection attributes (pinned in pyproject.toml)
            conn.socket_timeout = conn.socket_connect_timeout = remaining
            if conn._sock is not None:
                conn._sock.settimeout(remaining)
            try:
                conn.send_packed_command([packed], check_health=False)
                return conn.read_response()
            except redis.TimeoutError:
                conn.disconnect()
                raise
            except redis.ConnectionError as exc:
                conn.disconnect()
                if attempt or isinstance(exc, redis.AuthenticationError):
                    raise
        raise AssertionError("unreachable")

    def _read_live(self) -> str | None:
        with self._errors("reading the live pointer"):
            value = self._call(_pack(b"GET", self._k_live))
        return value.decode() if value is not None else None

    def _read_metadata(self, version: str) -> StoreMetadata | None:
        with self._errors("reading version metadata"):
            raw = self._call(_pack(b"HGET", self._k_versions.encode(), version.encode()))
        return StoreMetadata.from_json(raw) if raw is not None else None

    def _view_prefix(self, version: str, namespace: int = 0) -> bytes:
        return f"{self.prefix}:d:{version}:{_namespace_part(namespace)}".encode()

    def _fetch(self, view: _View, keys: list[str], namespace: int = 0) -> list[bytes | None]:
        prefix = view.prefixes[namespace]
        if len(keys) == 1:
            packed = redis_wire.get_command(prefix + keys[0].encode())
        else:
            packed = redis_wire.pack(b"MGET", *[prefix + k.encode() for k in keys])
        with self._errors("reading features"):
            reply = self._call(packed)
        return [reply] if len(keys) == 1 else reply

    def _fetch_all(self, view: _View, keys: list[list[str]]) -> list[list[bytes | None]]:
        """Every namespace's rows in one round trip (one GET or MGET)."""
        packed, total = self._fetch_command(view, keys)
        with self._errors("reading features"):
            reply = self._call(packed)
        return _split_reply([reply] if total == 1 else reply, keys)

    @staticmethod
    def _fetch_command(view: _View, keys: list[list[str]]) -> tuple[bytes, int]:
        """(GET or MGET over the keys of every namespace, number of keys)."""
        if len(keys) == 1:
            prefix = view.prefix
            part = keys[0]
            if len(part) == 1:
                return redis_wire.get_command(prefix + part[0].encode()), 1
            return redis_wire.pack(b"MGET", *[prefix + k.encode() for k in part]), len(part)
        full = [
            prefix + k.encode()
            for prefix, part in zip(view.prefixes, keys, strict=True)
            for k in part
        ]
        if len(full) == 1:
            return redis_wire.get_command(full[0]), 1
        return redis_wire.pack(b"MGET", *full), len(full)

    # -- the event loop's read path (redis_wire: no blocking call, one deadline) -------------
    async_reads = True

    async def get_many_async(
        self,
        entities: Sequence[Any],
        deadline: float | None = None,
        *,
        keys: KnownKeys | None = None,
    ) -> list[LookupResult]:
        """``get_many`` for an event loop: nothing blocks the loop while Redis answers.

        Pointer refresh, metadata and values go over a connection only this event loop uses
        (redis_wire.LoopConnection; concurrent callers take turns), and the whole call, turns
        included, ends by ``deadline`` (``time.monotonic()``; default now + timeout): a frozen
        server is a one-line ServiceUnavailable after ``online_store.timeout``, never a stall.
        ``rediss://`` and a second event loop use the blocking path instead. ``keys``: store
        keys the caller already made (``_View.lookup_keys``).

        This is every Redis-backed request's path, so it is written flat: the cached pointer
        is checked inline, the command goes straight to the connection, and wire errors are
        mapped here (no coroutine or context manager per step).
        """
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        state = self._async_state
        conn: redis_wire.LoopConnection | None
        if state is not None and state[0] is asyncio.get_running_loop():
            conn = state[1]
        else:
            conn = self._loop_connection()
            if conn is None:
                return self.get_many(entities, deadline, keys=keys)
        lock = conn.lock
        try:
            if lock.locked():
                await redis_wire._within(lock.acquire(), deadline)
            else:
                await lock.acquire()
        except redis_wire.WireTimeout:
            raise self._timed_out("reading features") from None
        try:
            view: _View | None
            if time.monotonic() - self._checked_at < self._refresh and self._view is not None:
                view = self._view
            else:
                view = await self._current_async(conn, deadline, force=False)
                if view is None:
                    view = await self._current_async(conn, deadline, force=True)
            if view is None:
                return [no_live_version() for _ in entities]
            if not entities:
                return []
            lookup = view.lookup_keys(entities, keys)
            command, total = self._fetch_command(view, lookup)
            try:
                rows = _split_reply(await conn.command(command, total, deadline), lookup)
            except redis_wire.WireSignal as exc:
                raise self._wire_failure("reading features", exc) from None
            for part in rows:
                if None in part:
                    # A miss may mean the pointer moved on (our version was dropped):
                    # re-check once.
                    fresh = await self._current_async(conn, deadline, force=True)
                    if fresh is None:
                        return [no_live_version() for _ in entities]
                    if fresh is not view:
                        view = fresh
                        lookup = view.lookup_keys(entities)
                        command, total = self._fetch_command(view, lookup)
                        reply = await self._command(conn, command, total, deadline)
                        rows = _split_reply(reply, lookup)
                    break
        finally:
            lock.release()
        return view.decode_all(rows, time.time())

    async def ping_async(self, deadline: float | None = None) -> None:
        """``ping`` for an event loop (non-blocking, bounded by ``deadline``)."""
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        conn = self._loop_connection()
        if conn is None:
            self.ping()
            return
        try:
            await redis_wire._within(conn.lock.acquire(), deadline)
        except redis_wire.WireTimeout:
            raise self._timed_out("ping") from None
        try:
            with self._wire_errors("ping"):
                await conn.ping(deadline)
        finally:
            conn.lock.release()

    async def live_metadata_async(self, deadline: float | None = None) -> StoreMetadata | None:
        """``live_metadata`` for an event loop (non-blocking, bounded by ``deadline``)."""
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        conn = self._loop_connection()
        if conn is None:
            return self.live_metadata()
        try:
            await redis_wire._within(conn.lock.acquire(), deadline)
        except redis_wire.WireTimeout:
            raise self._timed_out("reading the live pointer") from None
        try:
            view = await self._current_async(conn, deadline, force=True)
        finally:
            conn.lock.release()
        return view.meta if view is not None else None

    def _loop_connection(self) -> redis_wire.LoopConnection | None:
        """This event loop's own connection; None when the blocking path must be used."""
        if not self.async_reads:
            return None
        loop = asyncio.get_running_loop()
        state = self._async_state
        if state is not None and state[0] is loop:
            return state[1]
        if state is not None and state[0].is_running() and not state[0].is_closed():
            # Another loop (an app mounted in threads) owns it: never share a connection.
            return None
        if state is not None:
            state[1].close()
        target = self._wire_target
        if target is None:  # rediss:// (TLS) or an unusual URL: redis-py's blocking path
            self.async_reads = False
            return None
        conn = redis_wire.LoopConnection(**target)
        self._async_state = (loop, conn)
        return conn

    async def _current_async(
        self, conn: redis_wire.LoopConnection, deadline: float, *, force: bool
    ) -> _View | None:
        """``BaseStore._current`` over the loop's connection (same cache, same rules)."""
        now = time.monotonic()
        if not force and now - self._checked_at < self._refresh:
            return self._view
        raw = (await self._command(conn, redis_wire.get_command(self._k_live), 1, deadline))[0]
        version = raw.decode() if raw is not None else None
        view = self._view
        if version is None:
            view = None
        elif view is None or view.version != version:
            view = self._views.get(version)
            if view is None:
                command = redis_wire.pack(b"HGET", self._k_versions.encode(), version.encode())
                meta_raw = (await self._command(conn, command, 1, deadline))[0]
                if meta_raw is None:
                    view = None
                else:
                    view = self._new_view(StoreMetadata.from_json(meta_raw))
                    with self._lock:
                        if len(self._views) > 8:
                            self._views.clear()
                        self._views[version] = view
        self._view = view
        self._checked_at = now
        return view

    async def _command(
        self, conn: redis_wire.LoopConnection, packed: bytes, count: int, deadline: float
    ) -> list[bytes | None]:
        with self._wire_errors("reading features"):
            return await conn.command(packed, count, deadline)

    @contextmanager
    def _wire_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis_wire.WireSignal as exc:
            raise self._wire_failure(action, exc) from None

    def _wire_failure(self, action: str, exc: Exception) -> ServiceUnavailable:
        """The one-line ServiceUnavailable for a failure on the event loop's wire."""
        if isinstance(exc, redis_wire.WireTimeout):
            return self._timed_out(action)
        if isinstance(exc, redis_wire.WireClosed):
            return self._unreachable(action, exc)
        return self._refused(action, exc)

    def _unreachable(self, action: str, exc: Exception) -> ServiceUnavailable:
        """A dropped or refused connection (redis-py and the event loop's wire alike)."""
        return ServiceUnavailable(
            f"online store {self.location} is unreachable ({action}): {self._scrub(exc)}",
            hint="start redis-server or fix online_store.url",
        )

    def _refused(self, action: str, exc: Exception) -> ServiceUnavailable:
        """An error reply: the credentials, or another refusal named by the server."""
        text = self._scrub(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) or "AUTH" in text[:40]:
            return ServiceUnavailable(
                f"online store {self.location} rejected the credentials ({action}): {text}",
                hint="check online_store.password / the environment variable it reads",
            )
        return ServiceUnavailable(f"online store {self.location} refused {action}: {text}")

    def _timed_out(self, action: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"online store {self.location} timed out ({action}) after {self._timeout:g} s",
            hint="is redis-server up and reachable? online_store.timeout sets the limit",
        )

    # -- write side (materialize) -------------------------------------------------------
    def versions(self) -> list[tuple[StoreMetadata, RunProgress | None]]:
        with self._errors("listing versions"):
            metas = self.client.hgetall(self._k_versions)
            progress = self.client.hgetall(self._k_progress)
            leases = {}
            if progress:
                names = list(progress)
                alive = self.client.mget([f"{self.prefix}:lease:{_text(v)}" for v in names])
                leases = {v: a is not None for v, a in zip(names, alive, strict=True)}
        out = []
        for version, raw in metas.items():
            meta = StoreMetadata.from_json(raw)
            prog = None
            if version in progress:
                prog = RunProgress.from_json(progress[version])
                if not leases.get(version):
                    prog.lease_until = 0.0
            out.append((meta, prog))
        out.sort(key=lambda item: int(item[0].version.split("-")[0]))
        return out

    def pointers(self) -> dict[str, str]:
        with self._errors("reading pointers"):
            live, prev = self.client.mget([self._k_live, self._k_prev])
        out = {}
        if live is not None:
            out["live"] = _text(live)
        if prev is not None:
            out["previous"] = _text(prev)
        return out

    def next_sequence(self) -> int:
        with self._errors("allocating a version"):
            return int(self.client.incr(self._k_seq))

    def _lease(self, pipe: Any, progress: RunProgress) -> None:
        progress.owner = owner_id()
        progress.lease_until = time.time() + LEASE_SECONDS
        pipe.set(
            f"{self.prefix}:lease:{progress.version}", progress.owner, px=int(LEASE_SECONDS * 1000)
        )
        pipe.hset(self._k_progress, progress.version, progress.to_json())

    def begin(self, meta: StoreMetadata, progress: RunProgress) -> None:
        self._drop_bulk_connection()  # a fresh connection per run
        with self._errors("starting a version"):
            progress.backend = self._server_state()
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._k_versions, meta.version, meta.to_json())
            self._lease(pipe, progress)
            pipe.execute()

    def end_lease(self, version: str) -> None:
        """The run writing ``version`` gave it up: its lease goes, so the version reads as
        abandoned at once whoever wrote last (a Spark task's worker, say). A delete, which
        Redis still accepts when it is out of memory: the failure that often ends such a run."""
        with self._errors("giving up a version"):
            self.client.delete(f"{self.prefix}:lease:{version}")

    def claim(self, progress: RunProgress) -> bool:
        """Take over an abandoned version; False if the server restarted since (rows lost)."""
        self._drop_bulk_connection()
        with self._errors("resuming a version"):
            if self._server_state()["run_id"] != progress.backend.get("run_id"):
                return False
            pipe = self.client.pipeline(transaction=True)
            self._lease(pipe, progress)
            pipe.execute()
        return True

    def write_chunk(
        self, progress: RunProgress, items: Sequence[tuple[str, bytes]], namespace: int = 0
    ) -> None:
        """SET every row of one namespace (with the online ttl), check every reply, then
        record progress.

        Batches of ``_BATCH`` commands are packed into RESP by hand and sent over a dedicated
        connection while a second thread reads the replies (so packing overlaps the server's
        work) and checks them in bulk: all ``+OK`` or the run fails.
        """
        if not items:
            return
        part = _namespace_part(namespace)
        prefix = f"{self.prefix}:d:{progress.version}:{part}".encode()
        with self._errors("writing features"):
            conn = self._bulk_connection()
            if isinstance(items, PackedChunk):  # built column-wise: the same bytes
                payloads = items.set_commands(prefix, self.ttl_seconds, _BATCH)
            else:
                payloads = set_command_batches(prefix, items, self.ttl_seconds)
            try:
                conn.write_all(payloads, len(items))
            except BaseException:
                self._drop_bulk_connection()
                raise
            progress.chunks_done += 1
            progress.written += len(items)
            # probes are relative to P:d:<version>: (verify checks they exist)
            progress.probes.extend([part + items[0][0], part + items[-1][0]])
            pipe = self.client.pipeline(transaction=True)
            self._lease(pipe, progress)
            pipe.execute()

    def _bulk_connection(self) -> _BulkWriter:
        if self._bulk is None:
            conn = self.client.connection_pool.make_connection()
            conn.connect()
            self._bulk = _BulkWriter(conn)
        return self._bulk

    def _drop_bulk_connection(self) -> None:
        if self._bulk is not None:
            self._bulk.conn.disconnect()
            self._bulk = None

    def _server_state(self) -> dict[str, Any]:
        info = self.client.info("server")
        stats = self.client.info("stats")
        return {"run_id": info.get("run_id"), "evicted_keys": int(stats.get("evicted_keys", 0))}

    def verify(self, meta: StoreMetadata, progress: RunProgress, expected: int) -> None:
        """Cheap proof that every acknowledged row is still there before switching.

        Every SET reply was checked already; rows can only vanish afterwards if the server
        restarted (its run_id changed; on a cluster: a master was replaced), evicted keys
        (its evicted_keys counter moved; then the keys are counted exactly), or the keys
        expired (online ttl shorter than the run). The first and last key of every chunk are
        also checked to exist. Shared by the cluster store (``_server_state``,
        ``_view_prefix`` and ``_restarted`` are its own).
        """
        with self._errors("verifying the new version"):
            state = self._server_state()
            if state["run_id"] != progress.backend.get("run_id"):
                raise ServiceUnavailable(self._restarted(meta.version))
            if state["evicted_keys"] != progress.backend.get("evicted_keys"):
                stored = self.count(meta.version)
                if stored != expected:
                    raise ServiceUnavailable(
                        f"online store {self.location} evicted {expected - stored} of {expected} "
                        f"rows of version {meta.version} (maxmemory); the live version was not "
                        "changed"
                    )
            prefix = self._view_prefix(meta.version).decode()  # probes are relative to it
            probes = sorted(set(progress.probes))
            for start in range(0, len(probes), 1000):
                part = probes[start : start + 1000]
                found = self.client.exists(*[prefix + k for k in part])  # cluster: per slot
                if found != len(part):
                    raise ServiceUnavailable(
                        f"online store {self.location}: {len(part) - found} sampled rows of "
                        f"version {meta.version} are missing (expired or deleted while writing); "
                        "the live version was not changed"
                    )

    def _restarted(self, version: str) -> str:
        return (
            f"online store {self.location} restarted while version {version} was being "
            "written (rows were lost); the live version was not changed, re-run "
            "`mlpipe materialize`"
        )

    def count(self, version: str) -> int:
        """Exact row count of a version (a SCAN over the keyspace: slow, used after eviction)."""
        total = 0
        with self._errors("counting rows"):
            for _ in self.client.scan_iter(match=f"{self.prefix}:d:{version}:*", count=10_000):
                total += 1
        return total

    def switch(self, meta: StoreMetadata, *, allow_older: bool | None = None) -> list[str]:
        """Mark complete and flip ``live`` in one MULTI/EXEC; then remove stale versions.

        A version as of an earlier time than the live one is marked complete but not made
        live (OlderThanLive), unless ``allow_older`` (default: the store's attribute). The
        live pointer is WATCHed from the read of its as-of to EXEC: if another run moves it
        in between, the whole decision is taken again.
        """
        import redis

        allow = self.allow_older if allow_older is None else allow_older
        refused: OlderThanLive | None = None
        with (
            self._errors("switching the live version"),
            self.client.pipeline(transaction=True) as pipe,
        ):
            while True:
                try:
                    # versions too: a run that claims this version for removal (its lease
                    # lapsed) changes it, and then this switch re-reads and refuses
                    pipe.watch(self._k_live, self._k_versions)
                    own = pipe.hget(self._k_versions, meta.version)
                    if own is None or StoreMetadata.from_json(own).status == _DROPPING:
                        raise ServiceUnavailable(removed_while_written(self.location, meta.version))
                    live = pipe.get(self._k_live)
                    refused = None
                    if live is not None and _text(live) != meta.version and not allow:
                        raw = pipe.hget(self._k_versions, live)
                        live_meta = StoreMetadata.from_json(raw) if raw is not None else None
                        if live_meta is not None and meta.as_of < live_meta.as_of:
                            refused = OlderThanLive(
                                meta.version, meta.as_of, _text(live), live_meta.as_of
                            )
                    pipe.multi()
                    pipe.hset(self._k_versions, meta.version, meta.to_json())
                    pipe.hdel(self._k_progress, meta.version)
                    pipe.delete(f"{self.prefix}:lease:{meta.version}")
                    if refused is None:
                        if live is not None and _text(live) != meta.version:
                            pipe.set(self._k_prev, live)
                        pipe.set(self._k_live, meta.version)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if refused is not None:
            self.remove_stale()  # the refused version too: it can never become live
            raise refused
        return self.remove_stale()

    def rollback(self) -> tuple[str, str]:
        import redis

        with self._errors("rolling back"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._k_live, self._k_prev)
                    live, previous = pipe.mget([self._k_live, self._k_prev])
                    if live is None or previous is None:
                        raise UsageError(
                            "nothing to roll back to: the store keeps one previous version, "
                            "and there is none yet (run `mlpipe materialize` twice first)"
                        )
                    pipe.multi()
                    pipe.set(self._k_live, previous)
                    pipe.set(self._k_prev, live)
                    pipe.execute()
                    return _text(previous), _text(live)
                except redis.WatchError:
                    continue

    def remove_stale(self) -> list[str]:
        return self.remove_versions(stale_versions(self))

    def remove_versions(self, versions: list[str]) -> list[str]:
        """Drop ``versions``; one that went live (or previous) since it was listed is kept.
        Returns the versions dropped."""
        removed = []
        for version in versions:
            if self._claim_for_removal(version):
                self._drop(version)
                removed.append(version)
        return removed

    def _claim_for_removal(self, version: str) -> bool:
        """Mark ``version`` as being removed, unless it is live or previous, in one WATCHed
        MULTI: its own switch, racing this, either sees the mark and refuses, or goes live
        first and this sees it live. A removal cut short is finished by a later run (the
        mark makes the version stale, never resumable)."""
        import redis

        with (
            self._errors("removing an old version"),
            self.client.pipeline(transaction=True) as pipe,
        ):
            while True:
                try:
                    pipe.watch(self._k_live, self._k_prev, self._k_versions)
                    pointers = (pipe.get(self._k_live), pipe.get(self._k_prev))
                    pointed = {_text(p) for p in pointers if p is not None}
                    if version in pointed:
                        pipe.unwatch()
                        return False
                    raw = pipe.hget(self._k_versions, version)
                    pipe.multi()
                    if raw is not None:
                        marked = StoreMetadata.from_json(raw).replace(status=_DROPPING)
                        pipe.hset(self._k_versions, version, marked.to_json())
                    pipe.hdel(self._k_progress, version)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def _drop(self, version: str) -> None:
        with self._errors("removing an old version"):
            pipe = self.client.pipeline(transaction=False)
            pending = 0
            for key in self.client.scan_iter(match=f"{self.prefix}:d:{version}:*", count=10_000):
                pipe.unlink(key)
                pending += 1
                if pending >= 10_000:
                    pipe.execute()
                    pending = 0
            pipe.hdel(self._k_versions, version)
            pipe.hdel(self._k_progress, version)
            pipe.delete(f"{self.prefix}:lease:{version}")
            pipe.execute()


# StoreMetadata.status of a version a run has started removing (see _claim_for_removal)
_DROPPING = "dropping"


def set_command_batches(
    prefix: bytes, items: Sequence[tuple[str, bytes]], ttl_seconds: int | None
) -> Iterator[bytes]:
    """``SET <prefix><key> <value> [EX ttl]`` for every row, packed into RESP by hand, in
    socket writes of ``_BATCH`` commands (lazily: packing overlaps the server's work)."""
    if ttl_seconds:
        tail = b"$2\r\nEX\r\n" + _bulk(str(ttl_seconds).encode())
        head = b"*5\r\n$3\r\nSET\r\n"
    else:
        tail = b""
        head = b"*3\r\n$3\r\nSET\r\n"
    plen = len(prefix)
    return (
        b"".join(
            [
                b"%s$%d\r\n%s%s\r\n$%d\r\n%s\r\n%s"
                % (head, plen + len(kb), prefix, kb, len(value), value, tail)
                for kb, value in [
                    (key.encode(), value) for key, value in items[start : start + _BATCH]
                ]
            ]
        )
        for start in range(0, len(items), _BATCH)
    )


class _BulkWriter:
    """Raw pipelined sends and bulk reply checks on one authenticated redis-py connection.

    redis-py parses replies one Python call at a time (~3 µs each); a batch of SET replies is
    a run of ``+OK\\r\\n`` lines, checked here with one bytes comparison. Only used by one
    writer; any error disconnects it.
    """

    _OK = b"+OK\r\n"

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock = conn._sock  # connected and authenticated by redis-py (TLS included)
        self.buffer = b""

    def write_all(self, payloads: Iterator[bytes], n: int) -> None:
        """Send every payload; a reader thread meanwhile expects ``n`` ``+OK`` replies.

        Socket errors become redis-py's ConnectionError/TimeoutError (the store maps those
        to ServiceUnavailable, exit 4).
        """
        import redis

        try:
            self._write_all(payloads, n)
        except TimeoutError as exc:  # socket.timeout
            raise redis.TimeoutError(f"timed out while writing: {exc}") from None
        except OSError as exc:
            raise redis.ConnectionError(f"connection lost while writing: {exc}") from None

    def _write_all(self, payloads: Iterator[bytes], n: int) -> None:
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                self.expect_ok(n)
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=receive, name="mlpipe-redis-replies", daemon=True)
        reader.start()
        try:
            for payload in payloads:
                self.sock.sendall(payload)
        except BaseException:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # unblocks the reader
            reader.join()
            raise
        reader.join()
        if outcome:
            raise outcome[0]

    def expect_ok(self, n: int) -> None:
        import redis

        need = len(self._OK) * n
        data = bytearray(self.buffer)
        while len(data) < need:
            chunk = self.sock.recv(max(65536, min(need - len(data), 1 << 20)))
            if not chunk:
                raise redis.ConnectionError("connection closed by the server while writing")
            data += chunk
        head, self.buffer = bytes(data[:need]), bytes(data[need:])
        if head != self._OK * n:
            line = next((x for x in head.split(b"\r\n") if not x.startswith(b"+OK")), b"?")
            raise redis.ResponseError(line.decode(errors="replace").lstrip("-"))


def _namespace_part(namespace: int) -> str:
    """The key segment of a namespace after ``P:d:<version>:`` (none for namespace 0, so a
    single-entity version keeps its layout; store keys start with ``[``, so they never
    collide)."""
    return f"{namespace}:" if namespace else ""


def _split_reply(values: list[bytes | None], keys: list[list[str]]) -> list[list[bytes | None]]:
    """A flat GET/MGET reply back into one list per namespace."""
    if len(keys) == 1:
        return [values]
    out, start = [], 0
    for part in keys:
        out.append(values[start : start + len(part)])
        start += len(part)
    return out


def _wire_target(url: str, password: str | None) -> dict[str, Any] | None:
    """Where redis_wire.LoopConnection connects for ``url``; None for TLS (``rediss://``)."""
    from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

    try:
        parts = parse_url(url)
    except ValueError:
        return None
    kind = parts.get("connection_class")
    if kind is SSLConnection:
        return None
    target: dict[str, Any] = {
        "username": parts.get("username"),
        "password": password or parts.get("password"),
        "db": int(parts.get("db") or 0),
    }
    if kind is UnixDomainSocketConnection:
        target["path"] = parts["path"]
    else:
        target["host"] = parts.get("host") or "localhost"
        target["port"] = int(parts.get("port") or 6379)
    return target


def _url_password(url: str) -> str | None:
    match = _USERINFO_RE.match(url)
    if not match:
        return None
    _, sep, password = match.group("userinfo").partition(":")
    return password if sep and password else None


def _text(value: bytes | str) -> str:
    """A key or pointer as text (the client returns bytes; its types allow str too)."""
    return value.decode() if isinstance(value, bytes) else value
