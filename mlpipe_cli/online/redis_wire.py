"""Redis wire code for the feature server's event loop: RESP packing, reply parsing, and one
non-blocking connection per event loop with a deadline on every command.

Why not redis-py here: its connection connects, authenticates and reads replies with
blocking socket calls, so on an event loop a frozen server stalls every other request, and
its parser costs ~3x more per key than the one below (docs/serve.md). redis-py still does
everything else (the blocking read path, ``materialize``'s writes, ``rediss://``).

Everything in this module is bounded by a deadline (``time.monotonic()`` seconds): connecting,
authenticating, sending and reading. No step retries a timeout, so ``online_store.timeout``
is the whole budget of one lookup, not of each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any


class WireError(Exception):
    """The server answered with an error reply, or the reply made no sense."""


class WireTimeout(TimeoutError):
    """No (complete) reply before the deadline."""


class WireClosed(ConnectionError):
    """The connection could not be made, or the server closed it."""


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


def get_command(key: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)


def parse_values_reply(data: bytes, count: int) -> list[bytes | None] | None:
    """The values of a complete GET/HGET (count 1) or MGET reply, RESP2 or RESP3; None when
    more bytes are needed. ValueError on anything else (an error reply, a protocol mix-up)."""
    pos = 0
    if count != 1 or data[:1] == b"*":
        end = data.find(b"\r\n")
        if end < 0:
            return None
        if data[:1] != b"*" or int(data[1:end]) != count:
            raise ValueError(f"unexpected reply {data[:40]!r}")
        pos = end + 2
    values: list[bytes | None] = []
    size = len(data)
    for _ in range(count):
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        kind = data[pos : pos + 1]
        if kind == b"$":
            length = int(data[pos + 1 : end])
            if length < 0:  # RESP2 null
                values.append(None)
                pos = end + 2
                continue
            start = end + 2
            stop = start + length
            if size < stop + 2:
                return None
            values.append(data[start:stop])
            pos = stop + 2
        elif kind == b"_":  # RESP3 null
            values.append(None)
            pos = end + 2
        else:
            raise ValueError(f"unexpected reply {data[pos : pos + 40]!r}")
    if pos != size:
        raise ValueError("more bytes than one reply")
    return values


def _simple_reply(data: bytes) -> bytes | None:
    """A complete ``+OK``-style line (without CRLF), None when more bytes are needed;
    WireError for an error reply."""
    end = data.find(b"\r\n")
    if end < 0:
        return None
    if data[:1] == b"-":
        raise WireError(data[1:end].decode(errors="replace"))
    if data[:1] != b"+" or end + 2 != len(data):
        raise WireError(f"unexpected reply {data[:40]!r}")
    return data[1:end]


class LoopConnection:
    """One Redis connection used only by one event loop, one command at a time.

    ``command`` connects (and authenticates) when needed without blocking the loop. Any
    failure, timeout or cancellation closes the socket: a reply that arrives late can never
    be read as the answer to the next command.
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
        self.sock: socket.socket | None = None
        self.lock = asyncio.Lock()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    async def command(
        self, packed: bytes, count: int, deadline: float
    ) -> list[bytes | None]:
        """Send one GET/HGET/MGET-shaped command and return its values (see
        ``parse_values_reply``). A connection the server dropped since the last command
        (a restart) is re-made once, within the same deadline."""
        fresh = self.sock is None
        try:
            if fresh:
                await self._connect(deadline)
            return await self._roundtrip(packed, count, deadline)
        except WireClosed:
            self.close()
            if fresh:
                raise
        except BaseException:
            self.close()
            raise
        try:
            await self._connect(deadline)
            return await self._roundtrip(packed, count, deadline)
        except BaseException:
            self.close()
            raise

    async def ping(self, deadline: float) -> None:
        try:
            if self.sock is None:
                await self._connect(deadline)
            reply = await self._read(b"*1\r\n$4\r\nPING\r\n", _simple_reply, deadline)
        except BaseException:
            self.close()
            raise
        if reply != b"PONG":
            self.close()
            raise WireError(f"unexpected PING reply {reply!r}")

    # -- internals -----------------------------------------------------------------------

    async def _connect(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.path
        else:
            infos = await _within(
                loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM), deadline
            )
            if not infos:
                raise WireClosed(f"cannot resolve {self.host}")
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            await _within(loop.sock_connect(sock, address), deadline)
        except OSError as exc:
            sock.close()
            raise WireClosed(exc.strerror or str(exc)) from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        if self.password:
            args = [b"AUTH"]
            if self.username:
                args.append(self.username.encode())
            args.append(self.password.encode())
            await self._read(pack(*args), _simple_reply, deadline)
        if self.db:
            await self._read(pack(b"SELECT", str(self.db).encode()), _simple_reply, deadline)

    async def _roundtrip(self, packed: bytes, count: int, deadline: float) -> list[bytes | None]:
        def parse(data: bytes) -> list[bytes | None] | None:
            try:
                return parse_values_reply(data, count)
            except ValueError as exc:
                if data[:1] == b"-":
                    end = data.find(b"\r\n")
                    raise WireError(data[1:end].decode(errors="replace")) from None
                raise WireError(str(exc)) from None

        return await self._read(packed, parse, deadline)

    async def _read(self, packed: bytes, parse: Any, deadline: float) -> Any:
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        try:
            sock.send(packed)  # a few hundred bytes: fits the socket buffer at once
        except BlockingIOError:
            await _within(loop.sock_sendall(sock, packed), deadline)
        except OSError as exc:
            raise WireClosed(exc.strerror or str(exc)) from None
        fd = sock.fileno()
        buffer = b""
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            timer = loop.call_later(deadline - time.monotonic(), _expire, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
                timer.cancel()
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise WireClosed(exc.strerror or str(exc)) from None
            if not chunk:
                raise WireClosed("connection closed by the server")
            buffer += chunk
            reply = parse(buffer)
            if reply is not None:
                return reply


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


def _wake(ready: Any) -> None:
    if not ready.done():  # the socket stays readable until the reply is read
        ready.set_result(None)


def _expire(ready: Any) -> None:
    if not ready.done():
        ready.set_exception(WireTimeout("no reply within online_store.timeout"))
