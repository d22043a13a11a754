"""Redis wire code for the feature server's event loop: RESP packing, reply parsing, and one
non-blocking connection per event loop with a deadline on every command.

Why not redis-py here: its connection connects, authenticates and reads replies with
blocking socket calls, so on an event loop a frozen server stalls every other request. The
connection is an asyncio Protocol (uvloop reads and writes in C, no reader registration per
command) and replies are parsed by hiredis' C reader: for a 10-key MGET reply 0.8 µs against
15 µs for the hand-written Python parser it replaced (docs/serve.md, "Redis replies").
redis-py still does everything else (the blocking read path, ``materialize``'s writes,
``rediss://``).

Everything here is bounded by a deadline (``time.monotonic()`` seconds): connecting,
authenticating, sending and reading. No step retries a timeout, so ``online_store.timeout``
is the whole budget of one lookup, not of each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import hiredis

from mlpipe_cli.errors import Signal

# Signals: redis_store turns each into a one-line ServiceUnavailable naming the store.


class WireSignal(Signal):
    """Any failure of a command on the wire (the three below)."""


class WireError(WireSignal):
    """The server answered with an error reply, or the reply made no sense."""


class WireTimeout(WireSignal):
    """No (complete) reply before the deadline."""


class WireClosed(WireSignal):
    """The connection could not be made, or the server closed it."""


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def get_command(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def values_of(reply: Any, count: int) -> list[bytes | None]:
    """The values of a parsed GET/HGET (count 1) or MGET reply; WireError otherwise."""
    if count == 1 and (reply is None or type(reply) is bytes):
        return [reply]
    if type(reply) is list and len(reply) == count:
        for value in reply:
            if value is not None and type(value) is not bytes:
                raise WireError(_describe(value))
        return reply
    raise WireError(_describe(reply))


def _describe(reply: Any) -> str:
    if isinstance(reply, hiredis.ReplyError):
        return str(reply)
    return f"unexpected reply {str(reply)[:40]!r}"


def parse_values_reply(data: bytes, count: int) -> list[bytes | None] | None:
    """The values of one complete GET (count 1) or MGET reply in ``data``, RESP2 or RESP3;
    None when more bytes are needed; ValueError for an error reply, a reply of another shape
    or bytes beyond one reply."""
    reader = hiredis.Reader()
    reader.feed(data)
    try:
        reply = reader.gets()
    except hiredis.ProtocolError as exc:
        raise ValueError(f"unexpected reply: {exc}") from None
    if reply is False:
        return None
    if reader.has_data():
        raise ValueError("more bytes than one reply")
    try:
        return values_of(reply, count)
    except WireError as exc:
        raise ValueError(f"unexpected reply: {exc}") from None


class _Protocol(asyncio.Protocol):
    """Feeds what arrives to hiredis and hands each complete reply to the waiting command."""

    __slots__ = ("closed", "deadline", "reader", "transport", "waiter")

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiter: asyncio.Future[Any] | None = None
        self.deadline = 0.0  # time.monotonic() by which the waiter's reply must have come
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody asked (a late reply): the connection is being closed
        try:
            reply = reader.gets()
        except hiredis.ProtocolError as exc:
            waiter.set_exception(WireError(f"protocol error: {exc}"))
            return
        if reply is not False:
            self.waiter = None
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(WireClosed("connection closed by the server"))


class LoopConnection:
    """One Redis connection used only by one event loop, one command at a time.

    ``command`` connects (and authenticates) when needed without blocking the loop. Any
    failure, timeout or cancellation closes the connection: a reply that arrives late can
    never be read as the answer to the next command.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
    ) -> None:
        self.host = host or "localhost"
        self.port = port
        self.path = path
        self.username = username
        self.password = password
        self.db = db
        self.protocol: _Protocol | None = None
        self.lock = asyncio.Lock()
        # One timer for the connection instead of one per command (uvloop's call_later +
        # cancel cost ~2.5 µs, a tenth of a lookup's Python): it fires at the earliest
        # deadline it was armed for and then expires the waiting command if that command's
        # own deadline has passed, else re-arms for it; with nothing waiting it stops.
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0  # time.monotonic() the watchdog fires at
        self._loop: Any = None  # the event loop it was connected on (the only one using it)

    def close(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.transport is None:
            return
        transport = protocol.transport
        try:
            transport.abort()
        except RuntimeError:  # its event loop is closed already: end the connection itself
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    async def command(self, packed: bytes, count: int, deadline: float) -> list[bytes | None]:
        """Send one GET/HGET/MGET-shaped command and return its values (``values_of``). A
        connection the server dropped since the last command (a restart) is re-made once,
        within the same deadline."""
        protocol = self.protocol
        if protocol is None or protocol.closed:  # not connected yet, or dropped and seen
            try:
                protocol = await self._connect(deadline)
                return values_of(await self._request(protocol, packed, deadline), count)
            except BaseException:
                self.close()
                raise
        try:  # connected: _request inlined, the path of nearly every lookup
            waiter = self._loop.create_future()
            protocol.waiter = waiter
            protocol.deadline = deadline
            protocol.transport.write(packed)  # type: ignore[union-attr]
            if self._watchdog is None or deadline < self._watch_at:
                self._arm(deadline)
            reply = await waiter
        except WireClosed:
            self.close()  # the server dropped it since the last command: re-made once
        except BaseException:
            self.close()
            raise
        else:
            if count == 1 and type(reply) is bytes:
                return [reply]
            return values_of(reply, count)
        try:
            protocol = await self._connect(deadline)
            return values_of(await self._request(protocol, packed, deadline), count)
        except BaseException:
            self.close()
            raise

    async def ping(self, deadline: float) -> None:
        try:
            protocol = self.protocol
            if protocol is None or protocol.closed:
                protocol = await self._connect(deadline)
            reply = await self._request(protocol, b"*1\r\n$4\r\nPING\r\n", deadline)
            if reply != b"PONG":
                raise WireError(_describe(reply))
        except BaseException:
            self.close()
            raise

    # -- internals -----------------------------------------------------------------------

    async def _connect(self, deadline: float) -> _Protocol:
        self.close()
        loop = self._loop = asyncio.get_running_loop()
        protocol = _Protocol()
        try:
            if self.path is not None:
                connecting = loop.create_unix_connection(lambda: protocol, self.path)
            else:
                connecting = loop.create_connection(lambda: protocol, self.host, self.port)
            await _within(connecting, deadline)
        except OSError as exc:
            raise WireClosed(exc.strerror or str(exc)) from None
        self.protocol = protocol
        if self.password:
            args = [b"AUTH"]
            if self.username:
                args.append(self.username.encode())
            args.append(self.password.encode())
            _expect_ok(await self._request(protocol, pack(*args), deadline))
        if self.db:
            _expect_ok(
                await self._request(protocol, pack(b"SELECT", str(self.db).encode()), deadline)
            )
        return protocol

    async def _request(self, protocol: _Protocol, packed: bytes, deadline: float) -> Any:
        transport = protocol.transport
        if transport is None or protocol.closed:
            raise WireClosed("not connected")
        waiter = self._loop.create_future()
        protocol.waiter = waiter
        protocol.deadline = deadline
        transport.write(packed)
        if self._watchdog is None or deadline < self._watch_at:
            self._arm(deadline)
        return await waiter

    def _arm(self, at: float) -> None:
        """(Re-)arm the watchdog to fire at ``at`` (``time.monotonic()``)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = at
        self._watchdog = self._loop.call_later(max(0.0, at - time.monotonic()), self._watch)

    def _watch(self) -> None:
        """The watchdog fired: expire the waiting command if its deadline has passed,
        re-arm for it if not; stop when nothing waits."""
        self._watchdog = None
        protocol = self.protocol
        waiter = protocol.waiter if protocol is not None else None
        if protocol is None or waiter is None or waiter.done():
            return
        if time.monotonic() >= protocol.deadline:
            _expire(waiter)
        else:
            self._arm(protocol.deadline)


def _expect_ok(reply: Any) -> None:
    if reply != b"OK":
        raise WireError(_describe(reply))


async def _within(awaitable: Any, deadline: float) -> Any:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise WireTimeout("no reply within online_store.timeout")
    try:
        return await asyncio.wait_for(awaitable, remaining)
    except TimeoutError:
        raise WireTimeout("no reply within online_store.timeout") from None


def _expire(ready: Any) -> None:
    if not ready.done():
        ready.set_exception(WireTimeout("no reply within online_store.timeout"))
