"""The event source interface and its Redis Streams implementation.

An event is three fields, written by `mlpipe push` and read by `mlpipe stream`:

    k   the entity's store key: compact JSON of its key values, e.g. ``[123]``
    e   the event time in epoch microseconds (decimal string)
    d   the whole event record as JSON (column -> value; NaN/Infinity kept as JSON tokens)

``EventSource`` is what a broker adapter provides (append, consumer-group reads, acks,
pending entries and claiming them from dead consumers). Redis Streams is the only
implementation: no Kafka broker can run on this project's machines, and an adapter that
was never run against a broker would be a guess. The consumer's fast path does the read,
the state update and the ack in one server-side script (``streaming.state``), which needs
the broker and the state in one Redis; a Kafka adapter would pair this interface with an
idempotency record kept beside the state (see docs/streaming.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from mlpipe_cli.errors import ServiceUnavailable, UsageError


@dataclass(frozen=True)
class Event:
    """One stream entry: its id and fields (``None`` fields: deleted from the stream)."""

    id: str
    fields: dict[str, str] | None


@dataclass(frozen=True)
class PendingSummary:
    count: int
    oldest_id: str | None


class EventSource(Protocol):
    """What the streaming code needs from a broker."""

    def append(self, events: Sequence[dict[str, str]]) -> list[str]: ...

    def ensure_group(self, group: str) -> None: ...

    def read_group(self, group: str, consumer: str, count: int, block_ms: int | None = None
                   ) -> list[Event]: ...  # fmt: skip

    def ack(self, group: str, ids: Sequence[str]) -> int: ...

    def pending(self, group: str) -> PendingSummary: ...

    def claim(self, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Event]: ...


def redis_client(url: str, password: str | None, *, timeout: float = 5.0) -> Any:
    """A redis-py client for ``url`` (a bad URL is a UsageError naming the masked URL)."""
    import redis

    from mlpipe_cli.online.redis_store import mask_url

    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 0,
    }
    if password:
        kwargs["password"] = password
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise UsageError(f"stream url {mask_url(url)} is invalid: {exc}") from None


@contextmanager
def redis_errors(url: str, action: str, secrets: Sequence[str | None] = ()) -> Iterator[None]:
    """Turn redis-py errors into one ServiceUnavailable line (exit 4), secrets masked."""
    import redis

    from mlpipe_cli.online.redis_store import mask_url

    where = mask_url(url)

    def scrub(exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return mask_url(text)

    try:
        yield
    except redis.AuthenticationError:
        raise ServiceUnavailable(
            f"stream redis {where} rejected the credentials ({action})",
            hint="check stream.password / online_store.password",
        ) from None
    except redis.TimeoutError:
        raise ServiceUnavailable(f"stream redis {where} timed out ({action})") from None
    except redis.ConnectionError as exc:
        raise ServiceUnavailable(
            f"stream redis {where} is unreachable ({action}): {scrub(exc)}",
            hint="start redis-server or fix sources.<name>.stream.url",
        ) from None
    except redis.ResponseError as exc:
        text = scrub(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise ServiceUnavailable(
                f"stream redis {where} rejected the credentials ({action}): {text}"
            ) from None
        raise ServiceUnavailable(f"stream redis {where} refused {action}: {text}") from None
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"stream redis {where} failed ({action}): {scrub(exc)}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _events(entries: Any) -> list[Event]:
    out = []
    for entry_id, fields in entries or []:
        if fields is None:
            out.append(Event(_text(entry_id), None))
        else:
            out.append(Event(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}))
    return out


class RedisStreamSource:
    """``EventSource`` over one Redis stream (redis-py)."""

    # XADDs per pipeline round trip when appending (measured: larger batches gain < 5 %)
    APPEND_BATCH = 2000

    def __init__(self, client: Any, key: str, *, url: str = "redis://", password: str | None = None
                 ) -> None:  # fmt: skip
        self.client = client
        self.key = key
        self.url = url
        self._secrets = [password]

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.url, action, self._secrets)

    def append(self, events: Sequence[dict[str, str]]) -> list[str]:
        """XADD every event (pipelined, in order); returns their ids."""
        ids: list[str] = []
        with self._errors(f"appending to {self.key}"):
            for start in range(0, len(events), self.APPEND_BATCH):
                pipe = self.client.pipeline(transaction=False)
                for fields in events[start : start + self.APPEND_BATCH]:
                    pipe.xadd(self.key, fields)
                ids += [_text(i) for i in pipe.execute()]
        return ids

    def ensure_group(self, group: str) -> None:
        """Create the consumer group at the start of the stream (the stream too) if needed."""
        import redis

        with self._errors(f"creating consumer group {group}"):
            try:
                self.client.xgroup_create(self.key, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read_group(self, group: str, consumer: str, count: int, block_ms: int | None = None
                   ) -> list[Event]:  # fmt: skip
        with self._errors(f"reading {self.key}"):
            reply = self.client.xreadgroup(group, consumer, {self.key: ">"}, count=count,
                                           block=block_ms)  # fmt: skip
        return _events(reply[0][1]) if reply else []

    def ack(self, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self._errors(f"acknowledging on {self.key}"):
            return int(self.client.xack(self.key, group, *ids))

    def pending(self, group: str) -> PendingSummary:
        with self._errors(f"reading pending entries of {self.key}"):
            info = self.client.xpending(self.key, group)
        oldest = info.get("min")
        return PendingSummary(int(info.get("pending") or 0), _text(oldest) if oldest else None)

    def claim(self, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Event]:
        with self._errors(f"claiming pending entries of {self.key}"):
            reply = self.client.xautoclaim(self.key, group, consumer, min_idle_ms, "0-0",
                                           count=count)  # fmt: skip
        return _events(reply[1])

    def wait_for_entries(self, after: dict[str, str], block_ms: int) -> bool:
        """Block until one of the streams (key -> id, all on this client's server) has an
        entry after its id, or ``block_ms`` passed; True when one has. The entry is only
        looked at (XREAD), never delivered to a group: the apply script still takes it."""
        with self._errors(f"waiting for entries on {self.key}"):
            reply = self.client.xread(after, count=1, block=max(block_ms, 1))
        return bool(reply)

    def dead_letters(self, key: str, count: int = 10_000) -> list[Event]:
        """The newest ``count`` entries of a dead-letter stream (oldest first)."""
        with self._errors(f"reading {key}"):
            reply = self.client.xrevrange(key, count=count)
        return list(reversed(_events(reply)))


@dataclass(frozen=True)
class Lag:
    """How far a consumer group is behind: entries not yet delivered plus pending ones."""

    events: int
    seconds: float
    capped: bool  # Redis < 7 has no lag counter: undelivered entries counted up to a cap


LAG_COUNT_CAP = 100_000


def _ms_of(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def group_lag(source: RedisStreamSource, group: str, now_ms: int) -> Lag:
    """Consumer lag in events and seconds (age of the oldest entry not yet applied)."""
    client, key = source.client, source.key
    with source._errors(f"reading the lag of {key}"):
        if not client.exists(key):
            return Lag(0, 0.0, False)
        groups = client.xinfo_groups(key)
        info = next((g for g in groups if _text(g["name"]) == group), None)
        if info is None:
            length = int(client.xlen(key))
            first = client.xrange(key, count=1)
            age = (now_ms - _ms_of(_text(first[0][0]))) / 1000 if first else 0.0
            return Lag(length, max(age, 0.0), False)
        pending = int(info.get("pending") or 0)
        delivered = _text(info.get("last-delivered-id") or "0-0")
        undelivered_first = client.xrange(key, min=f"({delivered}", count=1)
        capped = False
        if info.get("lag") is not None:
            undelivered = int(info["lag"])
        elif undelivered_first:
            undelivered = len(client.xrange(key, min=f"({delivered}", count=LAG_COUNT_CAP))
            capped = undelivered >= LAG_COUNT_CAP
        else:
            undelivered = 0
        oldest: str | None = None
        if pending:
            summary = client.xpending(key, group)
            oldest = _text(summary["min"]) if summary.get("min") else None
        if oldest is None and undelivered_first:
            oldest = _text(undelivered_first[0][0])
    seconds = max((now_ms - _ms_of(oldest)) / 1000, 0.0) if oldest else 0.0
    return Lag(pending + undelivered, seconds, capped)
