"""The streamed state in Redis: bootstrap from the batch, apply batches, read entities.

Per entity (keys in ``streaming.plan``): the raw events newer than its **fold horizon**
``H`` (a sorted set) and the running aggregates of every older event (a hash). ``H`` trails
the entity's newest event time by the longest window plus ``max_lateness``, never moves
back, and starts at ``T_b - (window + lateness)`` where ``T_b`` is the batch as-of. Every
accepted event is newer than ``H`` (older ones are late), so the fold always takes events in
event-time order and a value at any ``t >= H + window`` is exact (``streaming.evaluate``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlpipe_cli.errors import ConfigError, InputError, ServiceUnavailable
from mlpipe_cli.online.keylimits import MAX_KEY_BYTES, check_key_sizes
from mlpipe_cli.streaming.lua import APPLY_SCRIPT
from mlpipe_cli.streaming.plan import STATE_FORMAT, StreamPlan
from mlpipe_cli.streaming.source import RedisStreamSource, redis_client, redis_errors

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config import PipelineConfig

_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"
TIE_LEN = 26  # 's' + 15-digit ms + 10-digit seq (stream entries) | 'b' + 25-digit row
_WRITE_CHUNK = 2000  # entities per pipelined bootstrap write
# Raised under the CLI and the Python API alike: the hint names both ways to do it.
_REBUILD = "rebuild it: mlpipe stream --reset, or Pipeline.stream(reset=True)"


# -- value codecs shared with the Lua script ------------------------------------------------


def g17(value: float) -> str:
    """17 significant digits: a double round-trips exactly (C's and Lua's ``%.17g``)."""
    return format(value, ".17g")


def encode_value(value: Any) -> str:
    """``z`` null, ``n<%.17g>`` number, ``s<text>`` string, ``b1``/``b0`` boolean."""
    if value is None:
        return "z"
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int | float):
        return "n" + g17(value)
    return "s" + str(value)


def decode_value(text: str | None, is_int: bool = False) -> Any:
    if text is None or text == "z":
        return None
    tag, body = text[0], text[1:]
    if tag == "n":
        if is_int:
            try:
                return int(body)
            except ValueError:
                return int(float(body))
        return float(body)
    if tag == "b":
        return body == "1"
    return body


_DOUBLE = struct.Struct(">d")
_LENGTH = struct.Struct(">I")


def pack_values(values: Sequence[Any]) -> bytes:
    """A raw member's payload: each value tagged, as the Lua script packs it. ``z`` null,
    ``n`` + big-endian double, ``t``/``f`` booleans, ``s`` + 4-byte length + UTF-8 bytes.
    Numbers are doubles, as in the script (integers exact up to 2**53)."""
    parts: list[bytes] = []
    for value in values:
        if value is None:
            parts.append(b"z")
        elif isinstance(value, bool):
            parts.append(b"t" if value else b"f")
        elif isinstance(value, int | float):
            parts.append(b"n" + _DOUBLE.pack(float(value)))
        else:
            data = str(value).encode()
            parts.append(b"s" + _LENGTH.pack(len(data)) + data)
    return b"".join(parts)


def unpack_values(data: bytes, columns: Sequence[str], int_columns: Sequence[bool],
                  start: int = 0) -> dict[str, Any]:  # fmt: skip
    """The inverse of :func:`pack_values`: column -> value (integer columns as ``int``)."""
    out: dict[str, Any] = {}
    pos = start
    for column, is_int in zip(columns, int_columns, strict=True):
        tag = data[pos]
        if tag == 110:  # n
            number = _DOUBLE.unpack_from(data, pos + 1)[0]
            out[column] = int(number) if is_int and math.isfinite(number) else number
            pos += 9
        elif tag == 115:  # s
            size = _LENGTH.unpack_from(data, pos + 1)[0]
            out[column] = data[pos + 5 : pos + 5 + size].decode()
            pos += 5 + size
        elif tag == 116:  # t
            out[column] = True
            pos += 1
        elif tag == 102:  # f
            out[column] = False
            pos += 1
        elif tag == 122:  # z
            out[column] = None
            pos += 1
        else:
            raise ValueError(f"unknown value tag {tag} in a streamed state member")
    return out


# -- what the evaluator reads ----------------------------------------------------------------


@dataclass
class EntityState:
    """One entity's streamed state: raw events (time order) and the fold of older ones."""

    raw: list[tuple[int, str, dict[str, Any]]]  # (event time us, tie key, plan columns)
    agg: dict[str, str]
    sets: dict[int, set[str]] = field(default_factory=dict)  # column index (1-based) -> values
    horizon_us: int = 0
    newest_us: int | None = None


@dataclass(frozen=True)
class ApplyResult:
    entries: int
    applied: int
    late: int
    before_batch: int
    malformed: int
    duplicate: int
    last_id: str | None
    stream_head: str | None = None  # drained (read mode): the stream's newest id

    @property
    def dead_lettered(self) -> int:
        return self.late + self.before_batch + self.malformed


@dataclass(frozen=True)
class StateMeta:
    batch_version: str | None
    batch_as_of_us: int
    window_us: int
    lateness_us: int
    columns: list[str]
    state: str
    bootstrapped_at: str | None
    entities: int
    format: int = STATE_FORMAT

    @property
    def batch_as_of(self) -> datetime:
        return datetime.fromtimestamp(self.batch_as_of_us / 1_000_000, UTC)


class StateStore:
    """The streamed state of one source in its Redis (see ``streaming.plan`` for the keys)."""

    def __init__(self, plan: StreamPlan, *, timeout: float = 5.0) -> None:
        self.plan = plan
        self.client = redis_client(plan.url, plan.password, timeout=timeout)
        self.source = RedisStreamSource(
            self.client, plan.stream.key, url=plan.url, password=plan.password
        )
        self._sha: str | None = None
        self._local = threading.local()  # a connection per thread for read()
        self._distinct = [i + 1 for i, d in enumerate(plan.distinct) if d]

    def errors(self, action: str) -> Any:
        return redis_errors(self.plan.url, action, [self.plan.password])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
        self.client.close()

    # -- metadata ------------------------------------------------------------------------
    def meta(self) -> StateMeta | None:
        with self.errors("reading the stream state"):
            raw = self.client.hgetall(self.plan.meta_key)
        if not raw:
            return None
        doc = {k.decode(): v.decode() for k, v in raw.items()}
        return StateMeta(
            batch_version=doc.get("batch_version") or None,
            batch_as_of_us=int(doc.get("batch_as_of_us", "0")),
            window_us=int(doc.get("window_us", "0")),
            lateness_us=int(doc.get("lateness_us", "0")),
            columns=json.loads(doc.get("columns", "[]")),
            state=doc.get("state", "unknown"),
            bootstrapped_at=doc.get("bootstrapped_at"),
            entities=int(doc.get("entities", "0")),
            format=int(doc.get("format", "1")),
        )

    def check_compatible(self, meta: StateMeta) -> None:
        """The state was built for this plan's columns, window and lateness."""
        plan = self.plan
        if meta.format != STATE_FORMAT:
            raise ConfigError(
                f"the streamed state of source {plan.source_name!r} is in format {meta.format}; "
                f"this mlpipe reads format {STATE_FORMAT}",
                hint=_REBUILD,
            )
        if (meta.columns, meta.window_us, meta.lateness_us) != (
            plan.columns, plan.window_us, plan.lateness_us,
        ):  # fmt: skip
            raise ConfigError(
                f"the streamed state of source {plan.source_name!r} was built for columns "
                f"{meta.columns}, window {meta.window_us} us, lateness {meta.lateness_us} us; "
                f"the config now needs {plan.columns}, {plan.window_us} us, "
                f"{plan.lateness_us} us",
                hint=_REBUILD,
            )

    # -- bootstrap -----------------------------------------------------------------------
    def reset(self) -> int:
        """Remove the whole state (not the stream): the next bootstrap starts over.

        The consumer group is recreated at the start of the stream, so every event is
        applied again on top of the new bootstrap."""
        import redis

        removed = 0
        with self.errors("removing the stream state"):
            for key in self.client.scan_iter(match=f"{self.plan.prefix}:*", count=1000):
                removed += int(self.client.unlink(key))
            # no stream or no group yet: nothing to destroy
            with contextlib.suppress(redis.ResponseError):
                self.client.xgroup_destroy(self.plan.stream.key, self.plan.stream.group)
        return removed

    def bootstrap(
        self,
        config: PipelineConfig,
        *,
        as_of: datetime,
        batch_version: str | None,
        wait_seconds: float = 600.0,
    ) -> bool:
        """Build the state from the source files as of ``as_of`` unless it exists.

        Returns True when this call built it. Several consumers starting together: one
        takes a lock and builds, the others wait for ``state = ready``."""
        plan = self.plan
        lock = f"{plan.prefix}:lock"
        owner = f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns()}"
        deadline = time.monotonic() + wait_seconds
        while True:
            meta = self.meta()
            if meta is not None and meta.state == "ready":
                self.check_compatible(meta)
                self.source.ensure_group(plan.stream.group)
                return False
            with self.errors("locking the stream state"):
                got = self.client.set(lock, owner, nx=True, ex=int(wait_seconds))
            if got:
                break
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"another process has been building the state of {plan.source_name!r} "
                    f"for {wait_seconds:.0f}s",
                    hint=f"if it died, delete the key {lock}",
                )
            time.sleep(0.2)
        try:
            if meta is not None:  # an abandoned bootstrap: start over
                self.reset()
            frame = load_batch_events(config, plan, as_of)
            self._write_bootstrap(frame, as_of, batch_version)
            self.source.ensure_group(plan.stream.group)
        finally:
            with self.errors("unlocking the stream state"):
                if self.client.get(lock) == owner.encode():
                    self.client.delete(lock)
        return True

    def _write_bootstrap(self, frame: pl.DataFrame, as_of: datetime, version: str | None) -> None:
        plan = self.plan
        tb = to_epoch_us(as_of)
        horizon = tb - plan.horizon_lag_us
        with self.errors("writing the bootstrap state"):
            self.client.hset(
                plan.meta_key,
                mapping={
                    "format": str(STATE_FORMAT),
                    "state": "bootstrapping",
                    "batch_version": version or "",
                    "batch_as_of_us": str(tb),
                    "window_us": str(plan.window_us),
                    "lateness_us": str(plan.lateness_us),
                    "hlag_us": str(plan.horizon_lag_us),
                    "columns": json.dumps(plan.columns),
                    "distinct": "".join("1" if d else "0" for d in plan.distinct),
                },
            )
        entities = 0
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for key, rows in _entity_rows(frame, plan):
            entities += 1
            fields, raw, sets = fold_rows(plan, rows, horizon)
            pipe.hset(plan.agg_key(key), mapping=fields)
            if raw:
                pipe.zadd(plan.raw_key(key), raw)
            for index, values in sets.items():
                pipe.sadd(plan.set_key(key, index), *values)
            pending += 1
            if pending >= _WRITE_CHUNK:
                with self.errors("writing the bootstrap state"):
                    pipe.execute()
                pending = 0
        with self.errors("writing the bootstrap state"):
            if pending:
                pipe.execute()
            self.client.hset(
                plan.meta_key,
                mapping={
                    "state": "ready",
                    "entities": str(entities),
                    "bootstrapped_at": datetime.now(UTC).isoformat(),
                },
            )

    # -- applying ------------------------------------------------------------------------
    def apply(self, consumer: str, *, mode: str = "read", count: int | None = None,
              min_idle_ms: int | None = None) -> ApplyResult | None:  # fmt: skip
        """One atomic batch: read (``read``: new entries; ``own``: this consumer's pending;
        ``claim``: entries idle on any consumer), apply and acknowledge. None before the
        bootstrap has finished."""
        plan = self.plan
        stream = plan.stream
        args = [
            mode, stream.key, stream.group, consumer, stream.dead_letter_key, plan.prefix,
            str(count or stream.batch),
            str(min_idle_ms if min_idle_ms is not None else int(stream.claim_idle.total_seconds() * 1000)),
            str(MAX_KEY_BYTES),
        ]  # fmt: skip
        return self._apply_calls(args, 1)[0]

    def apply_ahead(self, consumer: str, depth: int = 2) -> list[ApplyResult | None]:
        """``depth`` read batches sent in one round trip: each script is still one atomic
        batch, and redis-server starts the next as soon as one ends instead of waiting for
        this client to read the reply and send again (an idle gap per batch)."""
        plan = self.plan
        stream = plan.stream
        args = ["read", stream.key, stream.group, consumer, stream.dead_letter_key, plan.prefix,
                str(stream.batch), str(int(stream.claim_idle.total_seconds() * 1000)),
                str(MAX_KEY_BYTES)]  # fmt: skip
        return self._apply_calls(args, depth)

    def _apply_calls(self, args: list[str], depth: int) -> list[ApplyResult | None]:
        import redis

        def send() -> list[Any]:
            if depth == 1:
                return [self.client.evalsha(self._sha, 0, *args)]
            pipe = self.client.pipeline(transaction=False)
            for _ in range(depth):
                pipe.evalsha(self._sha, 0, *args)
            return pipe.execute()

        with self.errors("applying events"):
            if self._sha is None:
                self._sha = self.client.script_load(APPLY_SCRIPT)
            try:
                replies = send()
            except redis.exceptions.NoScriptError:  # the server restarted: nothing ran
                self._sha = self.client.script_load(APPLY_SCRIPT)
                replies = send()
        return [self._result(reply) for reply in replies]

    def _result(self, reply: Any) -> ApplyResult | None:
        if int(reply[0]) == -2:
            self.check_compatible(self.meta())  # type: ignore[arg-type]  # raises: format
        if int(reply[0]) < 0:
            return None
        last, head = (x.decode() if isinstance(x, bytes) else str(x) for x in reply[6:8])
        entries, applied, late, before_batch, malformed, duplicate = (int(x) for x in reply[:6])
        return ApplyResult(
            entries,
            applied,
            late,
            before_batch,
            malformed,
            duplicate,
            last_id=last or None,
            stream_head=head or None,
        )

    # -- reading -------------------------------------------------------------------------
    def read(self, entity_keys: Sequence[str]) -> list[EntityState]:
        """Each entity's state, all from one snapshot (MULTI/EXEC: one round trip).

        The transaction is packed by hand and sent on a connection of this thread's own
        (serving reads from several executor threads): redis-py's pipeline object spent
        ~60 us per call building and unwinding it, the whole read's cost again."""
        from mlpipe_cli.online.redis_wire import pack

        plan = self.plan
        distinct = self._distinct
        commands = [_MULTI]
        for key in entity_keys:
            if len(entity_keys) == 1 and not distinct:  # serving's read_one: no list walk
                commands.append(_read_one(plan, key))
                break
            commands.append(pack(b"ZRANGE", plan.raw_key(key).encode(), b"0", b"-1",
                                 b"WITHSCORES"))  # fmt: skip
            commands.append(pack(b"HGETALL", plan.agg_key(key).encode()))
            for index in distinct:
                commands.append(pack(b"SMEMBERS", plan.set_key(key, index).encode()))
        commands.append(_EXEC)
        queued = len(entity_keys) * (2 + len(distinct))
        try:
            replies = self._transaction(b"".join(commands), queued)
        except Exception:
            # translated only on failure: the context builds a masked URL (a regex) each
            # time it is entered, a tenth of a read's own cost
            with self.errors("reading streamed state"):
                raise
        out = []
        step = 2 + len(distinct)
        for n in range(len(entity_keys)):
            raw_flat, agg_flat = replies[n * step], replies[n * step + 1]
            sets = {
                index: {v.decode() for v in replies[n * step + 2 + j]}
                for j, index in enumerate(distinct)
            }
            if isinstance(agg_flat, dict):  # RESP3: a map
                agg = {k.decode(): v.decode() for k, v in agg_flat.items()}
            else:  # RESP2: a flat list, field, value, ...
                if len(agg_flat) % 2:
                    raise ValueError("HGETALL replied an odd number of items")
                texts = iter([item.decode() for item in agg_flat])
                agg = dict(zip(texts, texts))  # noqa: B905  # pairs of one iterator
            out.append(_state_of(plan, _pairs(raw_flat), agg, sets))
        return out

    def _transaction(self, packed: bytes, queued: int) -> list[Any]:
        """Send MULTI, ``queued`` commands and EXEC; the EXEC reply. A connection the server
        dropped (a restart) is re-made once; the commands only read, so a retry is safe."""
        import redis

        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.client.connection_pool.make_connection()
        for attempt in (0, 1):
            try:
                conn.send_packed_command([packed], check_health=False)
                for _ in range(queued + 1):  # +OK, then +QUEUED per command
                    conn.read_response()
                reply = conn.read_response()
            except redis.ConnectionError as exc:
                conn.disconnect()
                if attempt or isinstance(exc, redis.AuthenticationError):
                    raise
                continue
            except BaseException:
                conn.disconnect()  # a reply half read: the connection is out of step
                raise
            for item in reply or ():
                if isinstance(item, Exception):
                    raise item
            return reply
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, int]:
        with self.errors("reading stream stats"):
            raw = self.client.hgetall(self.plan.stats_key)
        return {k.decode(): int(float(v)) for k, v in raw.items()}


def _read_one(plan: StreamPlan, key: str) -> bytes:
    """ZRANGE + HGETALL of one entity, packed in one go (the same bytes as two ``pack``)."""
    raw_key = plan.raw_key(key).encode()
    agg_key = plan.agg_key(key).encode()
    return b"".join((
        b"*5\r\n$6\r\nZRANGE\r\n$%d\r\n" % len(raw_key), raw_key,
        b"\r\n$1\r\n0\r\n$2\r\n-1\r\n$10\r\nWITHSCORES\r\n*2\r\n$7\r\nHGETALL\r\n$%d\r\n"
        % len(agg_key), agg_key, b"\r\n",
    ))  # fmt: skip


def _pairs(reply: list[Any]) -> list[Any]:
    """ZRANGE WITHSCORES as (member, score) pairs: RESP3 nests them, RESP2 is flat."""
    if reply and isinstance(reply[0], list):
        return reply
    return list(zip(reply[::2], reply[1::2], strict=True))


class MemberDecoder:
    """Raw members of one column layout as (tie key, column -> value), the same values as
    :func:`unpack_values`. A member whose values are all numbers (the common case: tag
    ``n`` + 8 bytes each) has a fixed length and its tags sit every 9 bytes: one slice
    comparison checks them and one precompiled struct reads every double. Any other member
    (a null, a boolean, a string) goes through :func:`unpack_values`."""

    __slots__ = ("columns", "fixed", "int_columns", "int_positions", "numbers", "tags")

    def __init__(self, columns: Sequence[str], int_columns: Sequence[bool]) -> None:
        self.columns = tuple(columns)
        self.int_columns = tuple(int_columns)
        self.fixed = TIE_LEN + 9 * len(self.columns)
        self.tags = b"n" * len(self.columns)
        self.numbers = struct.Struct(">" + "xd" * len(self.columns))
        self.int_positions = tuple(j for j, is_int in enumerate(self.int_columns) if is_int)

    def __call__(self, member: bytes) -> tuple[str, dict[str, Any]]:
        if len(member) == self.fixed and member[TIE_LEN::9] == self.tags:
            numbers = self.numbers.unpack_from(member, TIE_LEN)
            # the struct reads exactly one double per column (strict=True costs 0.4 us here)
            out: dict[str, Any] = dict(zip(self.columns, numbers))  # noqa: B905
            for j in self.int_positions:
                if math.isfinite(numbers[j]):
                    out[self.columns[j]] = int(numbers[j])
            return member[:TIE_LEN].decode(), out
        return member[:TIE_LEN].decode(), unpack_values(member, self.columns, self.int_columns,
                                                        TIE_LEN)  # fmt: skip


_DECODERS: dict[tuple[tuple[str, ...], tuple[bool, ...]], MemberDecoder] = {}


def member_decoder(columns: Sequence[str], int_columns: Sequence[bool]) -> MemberDecoder:
    key = (tuple(columns), tuple(int_columns))
    decoder = _DECODERS.get(key)
    if decoder is None:
        decoder = _DECODERS[key] = MemberDecoder(columns, int_columns)
    return decoder


def parse_state(plan: StreamPlan, raw_reply: Any, agg_reply: Any, sets: dict[int, set[str]]
                ) -> EntityState:  # fmt: skip
    agg = {k.decode(): v.decode() for k, v in agg_reply.items()}
    return _state_of(plan, raw_reply, agg, sets)


def _state_of(plan: StreamPlan, raw_reply: Any, agg: dict[str, str], sets: dict[int, set[str]]
              ) -> EntityState:  # fmt: skip
    decode = member_decoder(plan.columns, plan.int_columns)
    raw = [(int(float(score)), *decode(member)) for member, score in raw_reply]
    horizon = agg.get("H")
    return EntityState(
        raw=raw,
        agg=agg,
        sets=sets,
        horizon_us=int(float(horizon)) if horizon is not None else None,  # type: ignore[arg-type]
        newest_us=int(float(agg["nw"])) if "nw" in agg else None,
    )


# -- bootstrap from the batch ----------------------------------------------------------------


def to_epoch_us(value: datetime) -> int:
    if value.tzinfo is None:
        raise InputError(f"time {value.isoformat()} has no time zone")
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds


def event_time_expr(column: str, dtype: pl.DataType, timezone: str | None, what: str) -> pl.Expr:
    """A source's event-time column as epoch microseconds (UTC).

    Naive times are wall-clock times in ``timezone``, read by the rule of the rest of mlpipe
    (``features.localtime``): a time the clocks skip or repeat names no single instant and is
    never resolved by guessing. Callers refuse such values first: the bootstrap with
    ``check_event_times`` (exit 2, as `materialize` does on the same files), `push` per event
    (``bad_local_time``: the event is dead-lettered); the expression itself raises on one.
    """
    import polars as pl

    from mlpipe_cli.features.localtime import localize

    expr = pl.col(column)
    if isinstance(dtype, pl.Date):
        expr, dtype = expr.cast(pl.Datetime("us")), pl.Datetime("us")
    if not isinstance(dtype, pl.Datetime):
        raise InputError(f"{what} column {column!r} must be a datetime, got {dtype}")
    if dtype.time_zone is None:
        if timezone is None:
            raise ConfigError(
                f"{what} column {column!r} holds naive timestamps",
                hint="set `timezone:` in the config (the zone they are in), or store UTC times",
            )
        expr = localize(expr, timezone)
    return expr.dt.convert_time_zone("UTC").dt.cast_time_unit("us").dt.epoch("us")


def _naive_wall_clock(column: str, dtype: pl.DataType, timezone: str | None) -> pl.Expr | None:
    """The column as naive datetimes when its values are read as wall-clock times in
    ``timezone`` (a naive Datetime or a Date); None when no zone reading is involved."""
    import polars as pl

    if timezone is None:
        return None
    if isinstance(dtype, pl.Date):
        return pl.col(column).cast(pl.Datetime("us"))
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(column)
    return None


def bad_local_time(column: str, dtype: pl.DataType, timezone: str | None) -> pl.Expr | None:
    """True for a value that does not exist (clocks skip it) or happens twice (clocks repeat
    it) in ``timezone``; None when the column needs no zone reading."""
    naive = _naive_wall_clock(column, dtype, timezone)
    if naive is None:
        return None
    assert timezone is not None
    local = naive.dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
    return (naive.is_not_null() & local.is_null()).fill_null(False)


def check_event_times(
    frame: pl.LazyFrame | pl.DataFrame, column: str, timezone: str | None, what: str
) -> None:
    """InputError (exit 2) naming the column, the value, the zone and the candidate instants
    when a naive event time is skipped or repeated in ``timezone`` (features.localtime)."""
    from mlpipe_cli.features.localtime import check_naive_times

    lazy = frame.lazy()
    naive = _naive_wall_clock(column, lazy.collect_schema()[column], timezone)
    if naive is None:
        return
    assert timezone is not None
    check_naive_times(lazy.select(naive.alias(column)), column, timezone, what)


def load_batch_events(config: PipelineConfig, plan: StreamPlan, as_of: datetime) -> pl.DataFrame:
    """The source's rows with event time < ``as_of``: keys, ``__e`` (us), ``__row`` (file
    order) and the value columns, sorted by (entity, event time, file order)."""
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    lazy = scan_parquet(plan.source.path)
    schema = lazy.collect_schema()
    missing = [c for c in [*plan.entity_keys, plan.timestamp, *plan.columns] if c not in schema]
    if missing:
        raise InputError(
            f"source {plan.source_name!r} has no column {missing[0]!r} "
            f"(columns: {', '.join(schema.names())})"
        )
    what = f"source {plan.source_name!r}"
    check_event_times(lazy, plan.timestamp, config.timezone, what)
    e = event_time_expr(plan.timestamp, schema[plan.timestamp], config.timezone, what)
    tb = to_epoch_us(as_of)
    try:
        frame = (
            lazy.with_row_index("__row")
            .select(*plan.entity_keys, e.alias("__e"), pl.col("__row").cast(pl.Int64),
                    *[pl.col(c) for c in plan.columns if c not in plan.entity_keys])
            .filter(pl.col("__e") < tb)
            .drop_nulls([*plan.entity_keys, "__e"])
            .collect()
        )  # fmt: skip
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {plan.source_name!r}: {exc}") from None
    # the entities `materialize` refuses for the same reason: serve could never read them
    check_key_sizes(frame, plan.entity_keys, f"stream bootstrap of {what}",
                    "the stream state was not built")  # fmt: skip
    return frame.sort([*plan.entity_keys, "__e", "__row"], maintain_order=True)


def _entity_rows(frame: pl.DataFrame, plan: StreamPlan):
    """(store key, rows as dicts) per entity, rows in (event time, file order) order."""
    from mlpipe_cli.online.codec import entity_store_key

    if frame.height == 0:
        return
    keys = plan.entity_keys
    rows = frame.to_dicts()
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or any(rows[i][k] != rows[start][k] for k in keys):
            yield entity_store_key([rows[start][k] for k in keys]), rows[start:i]
            start = i


def fold_rows(
    plan: StreamPlan, rows: list[dict[str, Any]], horizon: int
) -> tuple[dict[str, str], dict[bytes, int], dict[int, list[str]]]:
    """One entity's bootstrap: the fold of its rows older than ``horizon`` (the same
    running values, in the same order, as the Lua script's fold) and its newer rows as raw
    members. Rows are in (event time, file order) order."""
    fields: dict[str, str] = {"H": str(horizon), "nw": str(rows[-1]["__e"])}
    raw: dict[bytes, int] = {}
    sets: dict[int, list[str]] = {}
    folded = [r for r in rows if r["__e"] < horizon]
    for row in rows[len(folded) :]:
        member = f"b{row['__row']:025d}".encode() + pack_values([row[c] for c in plan.columns])
        raw[member] = row["__e"]
    if folded:
        fields.update(n=str(len(folded)), e0=str(folded[0]["__e"]), e1=str(folded[-1]["__e"]))
    for i, column in enumerate(plan.columns, start=1):
        nn, s, p, q = 0, 0.0, 0.0, 0.0
        centre = low = high = last = None
        lag = "z"
        seen: set[str] = set()
        for row in folded:
            value = row[column]
            lag = encode_value(value)
            if value is None:
                continue
            nn += 1
            x = _numeric(value)
            if x is not None:
                s += x
                if centre is None:
                    centre = x
                dx = x - centre
                p += dx
                q += dx * dx
            if low is None or _less(value, low):
                low = value
            if high is None or _less(high, value):
                high = value
            last = encode_value(value)
            if plan.distinct[i - 1]:
                seen.add(encode_value(value))
        if not folded:
            continue
        fields.update({f"N{i}": str(nn), f"S{i}": g17(s), f"P{i}": g17(p), f"Q{i}": g17(q),
                       f"G{i}": lag})  # fmt: skip
        if centre is not None:
            fields[f"C{i}"] = g17(centre)
        if low is not None:
            fields[f"m{i}"], fields[f"M{i}"] = encode_value(low), encode_value(high)
        if last is not None:
            fields[f"L{i}"] = last
        if seen:
            sets[i] = sorted(seen)
    return fields, raw, sets


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _less(a: Any, b: Any) -> bool:
    if isinstance(a, str):
        return a.encode() < b.encode()  # byte order, as Polars and the Lua fold compare
    return a < b
