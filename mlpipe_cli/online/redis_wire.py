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


class WireError(Signal):
    """The server answered with an error reply, or the reply made no sense."""


class WireTimeout(Signal):
    """No (complete) reply before the deadline."""


class WireClosed(Signal):
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

    __slots__ = ("closed", "reader", "transport", "waiter")

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiter: asyncio.Future[Any] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # nobody asked (a late reply): the connection is being closed
        try:
            reply = self.reader.gets()
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

    def close(self) -> None:
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
        fresh = protocol is None or protocol.closed
        try:
            if protocol is None or fresh:
                protocol = await self._connect(deadline)
            return values_of(await self._request(protocol, packed, deadline), count)
        except WireClosed:
            self.close()
            if fresh:
                raise
        except BaseException:
            self.close()
            raise
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
        loop = asyncio.get_running_loop()
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

    @staticmethod
    async def _request(protocol: _Protocol, packed: bytes, deadline: float) -> Any:
        transport = protocol.transport
        if transport is None or protocol.closed:
            raise WireClosed("not connected")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        protocol.waiter = waiter
        transport.write(packed)
        timer = loop.call_later(deadline - time.monotonic(), _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()


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
