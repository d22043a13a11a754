"""The Redis Cluster online store (``online_store: {type: redis, cluster: true, url: ...}``).

The same versions, values and atomic switch as the single-node store (redis_store.py, whose
packing, reply checks and error messages are reused here), laid out for a cluster. ``P`` is
``online_store.key_prefix`` (default ``mlpipe:<pipeline>``)::

    {P}:live                    the control keys share ONE hash tag, ``{P}``, so they live in
    {P}:previous                one slot on one master: the switch and --rollback stay a
    {P}:seq                     single MULTI/EXEC (WATCHed), exactly as on one node
    {P}:versions
    {P}:progress
    {P}:lease:<version>
    P:d:<version>:<entity key>  no hash tag: rows spread over all 16384 slots (all masters)

Writes: each chunk's rows are grouped by the master that owns their slot (the client's slot
map), then every master gets its own hand-packed pipelined ``SET`` stream on its own
connection, all masters at once (one thread each), every reply checked. After its stream a
master is asked ``WAIT 1`` (when it has a replica): a chunk counts as written only once a
replica holds it too, so a failover after the check cannot lose acknowledged rows.

Failover: the writer records every master's (address, run id) when it starts; ``verify``
refuses to switch if that set changed (a master was replaced or restarted), and a write that
meets a dead master or a MOVED reply fails the run. Either way the live pointer never moves
to a version that may be missing rows; re-running starts a fresh version.

Reads: one key is a GET on the owning master; several keys are split by slot and sent as
one MGET per slot, grouped per master and written to every master before any reply is read
(redis-py's ``mget_nonatomic``; a plain cross-slot MGET is refused by the cluster). The
serving event loop runs these blocking reads on a small thread pool, bounded by the request's
deadline (the single-node store's non-blocking wire connection speaks to one server only).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mlpipe_cli.errors import ServiceUnavailable, Signal, UsageError
from mlpipe_cli.online import redis_wire
from mlpipe_cli.online.base import BaseStore, KnownKeys, _View
from mlpipe_cli.online.redis_store import (
    RedisStore,
    _BulkWriter,
    _namespace_part,
    _split_reply,
    _url_password,
    mask_url,
    set_command_batches,
)
from mlpipe_cli.online.store import LookupResult, RunProgress, StoreMetadata

_READ_THREADS = 8  # concurrent blocking cluster reads for one serving process
_REPLICA_WAIT = 5.0  # seconds a chunk may wait for a replica's acknowledgement (at least)
_SLOT_MAP_CHANGED = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


class RedisClusterStore(RedisStore):
    kind = "redis-cluster"
    async_reads = True  # through _READ_THREADS threads, never blocking the event loop

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
        # Not RedisStore.__init__: that builds a single-node client. The attributes its
        # inherited methods use (errors, pointers, versions, leases, switch, rollback) are
        # set here; the control keys get the hash tag through ``prefix``.
        BaseStore.__init__(self, pointer_refresh)
        self._local = threading.local()
        self._timeout = timeout
        self.url = url
        self.location = mask_url(url)
        self._secrets = [s for s in (password, _url_password(url)) if s]
        self._password = password
        self.data_prefix = prefix
        self.prefix = "{" + prefix + "}"
        self.ttl_seconds = ttl_seconds
        self._k_live = f"{self.prefix}:live".encode()
        self._k_prev = f"{self.prefix}:previous".encode()
        self._k_seq = f"{self.prefix}:seq"
        self._k_versions = f"{self.prefix}:versions"
        self._k_progress = f"{self.prefix}:progress"
        self._cluster: Any = None
        self._connect_lock = threading.Lock()
        self._writers: dict[str, _BulkWriter] = {}
        self._readers: ThreadPoolExecutor | None = None
        self._read_conns: list[Any] = []

    # -- the client (made on first use: open_store does no I/O) --------------------------
    @property
    def client(self) -> Any:  # type: ignore[override]  # RedisStore's is a plain attribute
        if self._cluster is None:
            with self._connect_lock:
                if self._cluster is None:
                    self._cluster = self._connect()
        return self._cluster

    def _connect(self) -> Any:
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.retry import Retry

        kwargs: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "health_check_interval": 0,
            # few, short retries: a lookup must answer (or fail) within about its timeout;
            # each failed attempt asks for a fresh slot map, which is how a promoted replica
            # is found after a failover
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2),
            "topology_refresh_min_interval": 0.25,
        }
        if self._password:
            kwargs["password"] = self._password
        first, others = split_cluster_url(self.url)
        with self._errors("connecting"):
            startup = [ClusterNode(host, port) for host, port in others]
            return RedisCluster.from_url(first, startup_nodes=startup, **kwargs)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from redis.exceptions import RedisClusterException

        try:
            with super()._errors(action):
                yield
        except RedisClusterException as exc:  # not a RedisError: no node reachable, no slot
            raise ServiceUnavailable(
                f"online store {self.location} (Redis Cluster) failed ({action}): "
                f"{self._scrub(exc)}",
                hint="is the cluster up (cluster_state:ok)? online_store.url names any node",
            ) from None

    def ping(self) -> None:
        with self._errors("ping"):
            self.client.ping()

    def close(self) -> None:
        self._drop_bulk_connection()
        if self._readers is not None:
            self._readers.shutdown(wait=False, cancel_futures=True)
            self._readers = None
        with self._connect_lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            conn.disconnect()
        self._local = threading.local()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    # -- read hooks (the blocking path; BaseStore does the pointer cache and decoding) ----
    def _check_deadline(self) -> None:
        import redis

        deadline = getattr(self._local, "deadline", None)
        if deadline is not None and time.monotonic() >= deadline:
            raise redis.TimeoutError("no reply within online_store.timeout")

    def _read_live(self) -> str | None:
        with self._errors("reading the live pointer"):
            self._check_deadline()
            value = self.client.get(self._k_live)
        return value.decode() if value is not None else None

    def _read_metadata(self, version: str) -> StoreMetadata | None:
        with self._errors("reading version metadata"):
            self._check_deadline()
            raw = self.client.hget(self._k_versions, version)
        return StoreMetadata.from_json(raw) if raw is not None else None

    def _view_prefix(self, version: str, namespace: int = 0) -> bytes:
        return f"{self.data_prefix}:d:{version}:{_namespace_part(namespace)}".encode()

    def _fetch(self, view: _View, keys: list[str], namespace: int = 0) -> list[bytes | None]:
        prefix = view.prefixes[namespace]
        return self._fetch_keys([prefix + k.encode() for k in keys])

    def _fetch_all(self, view: _View, keys: list[list[str]]) -> list[list[bytes | None]]:
        """Every namespace's rows in one call (one GET/MGET per slot, all masters at once)."""
        full = [
            prefix + k.encode()
            for prefix, part in zip(view.prefixes, keys, strict=True)
            for k in part
        ]
        return _split_reply(self._fetch_keys(full), keys)

    def _fetch_keys(self, full: list[bytes]) -> list[bytes | None]:
        import redis

        with self._errors("reading features"):
            self._check_deadline()
            try:
                return self._fetch_direct(full)
            except (redis.ConnectionError, _Redirected):
                # A node went away or a slot moved (failover, resharding): redis-py's cluster
                # path follows MOVED/ASK, refreshes the slot map and retries.
                self._check_deadline()
                if len(full) == 1:
                    return [self.client.get(full[0])]
                return self.client.mget_nonatomic(full)

    def _fetch_direct(self, full: list[bytes]) -> list[bytes | None]:
        """The steady-state read: keys grouped by master (the client's slot map), one GET or
        MGET per slot, every master's commands written before any reply is read; one
        connection per master per thread, hand-packed RESP (redis-py's cluster command path
        costs ~40 µs of client CPU per GET here, this ~15 µs)."""
        import redis
        from redis.crc import key_slot

        slots = self.client.nodes_manager.slots_cache
        plan: dict[str, tuple[Any, dict[int, list[int]]]] = {}
        for index, key in enumerate(full):
            slot = key_slot(key)
            owners = slots.get(slot)
            if not owners:
                raise _Redirected(f"slot {slot} has no master in the client's map")
            node = owners[0]
            entry = plan.get(node.name)
            if entry is None:
                plan[node.name] = (node, {slot: [index]})
            else:
                entry[1].setdefault(slot, []).append(index)
        deadline = getattr(self._local, "deadline", None) or time.monotonic() + self._timeout
        out: list[bytes | None] = [None] * len(full)
        pending: list[Any] = []  # connections with replies not read yet
        try:
            sent = []
            for node, by_slot in plan.values():
                conn = self._read_connection(node, deadline)
                commands = []
                for indexes in by_slot.values():
                    if len(indexes) == 1:
                        commands.append(redis_wire.get_command(full[indexes[0]]))
                    else:
                        commands.append(redis_wire.pack(b"MGET", *[full[i] for i in indexes]))
                pending.append(conn)
                conn.send_packed_command([b"".join(commands)], check_health=False)
                sent.append((conn, by_slot))
            for conn, by_slot in sent:
                for indexes in by_slot.values():
                    reply = conn.read_response()
                    if len(indexes) == 1:
                        out[indexes[0]] = reply
                    else:
                        for i, value in zip(indexes, reply, strict=True):
                            out[i] = value
                pending.remove(conn)
        except BaseException as exc:
            # Every connection that still owes replies is closed: a late reply must never be
            # read as the answer to the next lookup on it.
            for conn in pending:
                conn.disconnect()
            if isinstance(exc, redis.ResponseError):  # MOVED / ASK / CLUSTERDOWN
                raise _Redirected(str(exc)) from None
            raise
        return out

    def _read_connection(self, node: Any, deadline: float) -> Any:
        """This thread's connection to ``node``, its socket timeout set to what is left."""
        import redis

        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(node.name)
        if conn is None:
            conn = self.client.get_redis_connection(node).connection_pool.make_connection()
            conns[node.name] = conn
            with self._connect_lock:
                self._read_conns.append(conn)  # reader threads' too: close() ends them all
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise redis.TimeoutError("no reply within online_store.timeout")
        # relies on redis-py 5-8 Connection attributes, as RedisStore._call does
        conn.socket_timeout = conn.socket_connect_timeout = remaining
        if conn._sock is not None:
            conn._sock.settimeout(remaining)
        return conn

    # -- the event loop's read path: the blocking path on a thread, one deadline ----------
    async def get_many_async(
        self,
        entities: Sequence[Any],
        deadline: float | None = None,
        *,
        keys: KnownKeys | None = None,
    ) -> list[LookupResult]:
        """``get_many`` for an event loop: it runs on a reader thread, so the loop keeps
        serving; the answer (or a one-line ServiceUnavailable) comes by ``deadline``."""
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        return await self._off_loop(
            lambda: self.get_many(entities, deadline, keys=keys), deadline, "reading features"
        )

    async def ping_async(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        await self._off_loop(self.ping, deadline, "ping")

    async def live_metadata_async(self, deadline: float | None = None) -> StoreMetadata | None:
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        return await self._off_loop(self.live_metadata, deadline, "reading the live pointer")

    async def _off_loop(self, call: Callable[[], Any], deadline: float, action: str) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(action)
        if self._readers is None:
            self._readers = ThreadPoolExecutor(_READ_THREADS, "mlpipe-cluster-read")
        future = asyncio.get_running_loop().run_in_executor(self._readers, call)
        try:
            return await asyncio.wait_for(future, remaining)
        except TimeoutError:
            # The thread finishes on its own within the client's socket timeouts; its
            # answer is dropped.
            raise self._timed_out(action) from None

    # -- write side -------------------------------------------------------------------------
    def _server_state(self) -> dict[str, Any]:
        """Every master's address and run id (a failover or restart changes the set) and the
        cluster's total evicted_keys."""
        client = self.client
        masters = []
        evicted = 0
        for node in sorted(client.get_primaries(), key=lambda n: n.name):
            conn = client.get_redis_connection(node)
            masters.append(f"{node.name}/{conn.info('server')['run_id']}")
            evicted += int(conn.info("stats").get("evicted_keys", 0))
        return {"run_id": ",".join(masters), "evicted_keys": evicted}

    def write_chunk(
        self, progress: RunProgress, items: Sequence[tuple[str, bytes]], namespace: int = 0
    ) -> None:
        """Rows of one namespace grouped by owning master, each master's SET stream sent
        concurrently, every reply checked, a replica's acknowledgement awaited; then progress
        is recorded."""
        if not items:
            return
        import redis

        part = _namespace_part(namespace)
        prefix = self._view_prefix(progress.version, namespace)
        with self._errors("writing features"):
            try:
                groups = self._group_by_master(prefix, items)
                self._write_masters(prefix, groups)
            except redis.ResponseError as exc:
                self._drop_bulk_connection()
                text = self._scrub(exc)
                if text.startswith(_SLOT_MAP_CHANGED):
                    raise ServiceUnavailable(
                        f"online store {self.location}: the cluster's slot map changed while "
                        f"version {progress.version} was being written ({text}: a failover or "
                        "resharding); the live version was not changed, re-run "
                        "`mlpipe materialize`"
                    ) from None
                raise
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

    def _group_by_master(
        self, prefix: bytes, items: Sequence[tuple[str, bytes]]
    ) -> dict[str, tuple[Any, int, list[tuple[str, bytes]]]]:
        """master name → (node, its replica count, its rows), by the client's slot map."""
        from redis.crc import key_slot
        from redis.exceptions import SlotNotCoveredError

        by_slot: dict[int, list[tuple[str, bytes]]] = {}
        for item in items:
            slot = key_slot(prefix + item[0].encode())
            rows = by_slot.get(slot)
            if rows is None:
                by_slot[slot] = [item]
            else:
                rows.append(item)
        slots = self.client.nodes_manager.slots_cache
        groups: dict[str, tuple[Any, int, list[tuple[str, bytes]]]] = {}
        for slot, rows in by_slot.items():
            owners = slots.get(slot)
            if not owners:
                raise SlotNotCoveredError(f"slot {slot} is not served by any master")
            master = owners[0]
            group = groups.get(master.name)
            if group is None:
                groups[master.name] = (master, len(owners) - 1, rows)
            else:
                group[2].extend(rows)
        return groups

    def _write_masters(
        self, prefix: bytes, groups: dict[str, tuple[Any, int, list[tuple[str, bytes]]]]
    ) -> None:
        jobs = [
            (node.name, self._writer(node), replicas, rows)
            for node, replicas, rows in groups.values()
        ]
        if len(jobs) == 1:
            self._write_master(prefix, *jobs[0])
            return
        with ThreadPoolExecutor(len(jobs), "mlpipe-cluster-write") as pool:
            futures = [pool.submit(self._write_master, prefix, *job) for job in jobs]
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _write_master(
        self,
        prefix: bytes,
        name: str,
        writer: _BulkWriter,
        replicas: int,
        rows: list[tuple[str, bytes]],
    ) -> None:
        writer.write_all(set_command_batches(prefix, rows, self.ttl_seconds), len(rows))
        if replicas:
            # Redis replicates asynchronously: without this, a master that dies right after
            # acknowledging could hand its slots to a replica that never got the rows.
            # Normally a few ms; a replica on a busy host can need more than a lookup's
            # timeout, so the wait gets at least _REPLICA_WAIT.
            wait_ms = int(max(self._timeout, _REPLICA_WAIT) * 1000)
            writer.conn.send_command("WAIT", 1, wait_ms)
            acked = writer.conn.read_response()
            if int(acked) < 1:
                raise ServiceUnavailable(
                    f"online store {self.location}: no replica of master {name} "
                    f"acknowledged the rows within {wait_ms} ms; the live version was not "
                    "changed"
                )

    def _writer(self, node: Any) -> _BulkWriter:
        writer = self._writers.get(node.name)
        if writer is None:
            conn = self.client.get_redis_connection(node).connection_pool.make_connection()
            conn.connect()
            writer = _BulkWriter(conn)
            self._writers[node.name] = writer
        return writer

    def _drop_bulk_connection(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.conn.disconnect()

    def _restarted(self, version: str) -> str:
        """RedisStore.verify's message when the set of masters changed."""
        return (
            f"online store {self.location}: a cluster master was replaced or restarted while "
            f"version {version} was being written (a failover; rows may be lost); the live "
            "version was not changed, re-run `mlpipe materialize`"
        )

    def count(self, version: str) -> int:
        """Exact row count of a version (a SCAN of every master: slow, used after eviction)."""
        with self._errors("counting rows"):
            return sum(
                1
                for _ in self.client.scan_iter(
                    match=f"{self.data_prefix}:d:{version}:*", count=10_000
                )
            )

    def rollback(self) -> tuple[str, str]:
        """RedisStore.rollback with two GETs under WATCH (a cluster pipeline has no MGET)."""
        import redis

        with self._errors("rolling back"), self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self._k_live, self._k_prev)
                    live, previous = pipe.get(self._k_live), pipe.get(self._k_prev)
                    if live is None or previous is None:
                        raise UsageError(
                            "nothing to roll back to: the store keeps one previous version, "
                            "and there is none yet (run `mlpipe materialize` twice first)"
                        )
                    pipe.multi()
                    pipe.set(self._k_live, previous)
                    pipe.set(self._k_prev, live)
                    pipe.execute()
                    return previous.decode(), live.decode()
                except redis.WatchError:
                    continue

    def _drop(self, version: str) -> None:
        with self._errors("removing an old version"):
            pending: list[bytes] = []
            for key in self.client.scan_iter(
                match=f"{self.data_prefix}:d:{version}:*", count=10_000
            ):
                pending.append(key)
                if len(pending) >= 10_000:
                    self.client.unlink(*pending)  # split per slot by the client
                    pending = []
            if pending:
                self.client.unlink(*pending)
            pipe = self.client.pipeline(transaction=True)  # control keys: one slot
            pipe.hdel(self._k_versions, version)
            pipe.hdel(self._k_progress, version)
            pipe.delete(f"{self.prefix}:lease:{version}")
            pipe.execute()


class _Redirected(Signal):
    """The client's slot map is out of date (MOVED/ASK, an uncovered slot): take redis-py's
    path, which follows the redirect and refreshes the map."""


_HOSTS_RE = re.compile(r"^(?P<head>[a-z]+://(?:[^@/]*@)?)(?P<hosts>[^/?#]+)(?P<tail>.*)$")


def split_cluster_url(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis://pw@h1:7000,h2:7001/0`` → (``redis://pw@h1:7000/0``, [("h2", 7001)]).

    Several nodes in the url are tried in turn when a process starts, so one node being down
    (the one a single-host url names, say) does not keep a new process from finding the
    cluster. A running process learns every node from the cluster itself.
    """
    match = _HOSTS_RE.match(url)
    if match is None or "," not in match.group("hosts"):
        return url, []
    first, *rest = [h.strip() for h in match.group("hosts").split(",") if h.strip()]
    others = []
    for host in rest:
        name, sep, port = host.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError(f"online_store.url: expected host:port, got {host!r}")
        others.append((name.strip("[]"), int(port)))
    return f"{match.group('head')}{first}{match.group('tail')}", others
