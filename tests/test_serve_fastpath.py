"""The Redis lookup's fast path (issue 19 §2): store keys made once, one timer per connection.

- serving/keys.py's KeyParser makes the store key of every entity it parses; the online store
  uses it as given when the live version has the same key columns and types
  (``KnownKeys``), instead of normalising the key again. Checked here against an oracle that
  shares no code with either (``json.dumps`` with compact separators) and, end to end, by
  reading real stores both ways.
- redis_wire.LoopConnection bounds each command by its deadline with one watchdog timer per
  connection instead of a timer per command: checked against a frozen real redis-server
  (SIGSTOP), including a command whose deadline is earlier than the one the watchdog was
  armed for.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.errors import ServiceUnavailable
from mlpipe_cli.online import pack_row
from mlpipe_cli.online.codec import KeyNormalizer
from mlpipe_cli.online.redis_store import RedisStore
from mlpipe_cli.online.redis_wire import LoopConnection, WireTimeout, get_command, pack
from mlpipe_cli.online.sqlite_store import SqliteStore
from mlpipe_cli.online.store import StoreMetadata
from mlpipe_cli.online.writer import write_version
from mlpipe_cli.serving.keys import KeyParser

NOW = datetime.now(UTC).replace(microsecond=0)

# Messy string keys: non-ASCII, different lengths, quotes and backslashes, empty.
STR_KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1), max_size=40
)
INT_KEYS = st.integers(-(1 << 63), (1 << 64) - 1)


def oracle_key(values: list[Any]) -> str:
    """The store key by the documented rule (compact JSON of the key values), written with
    the standard library: no code shared with orjson, KeyParser or KeyNormalizer."""
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def meta_for(entity_keys: list[str], key_types: list[str], features: list[str]) -> StoreMetadata:
    return StoreMetadata(
        version="0001-aa", as_of=NOW, finished_at=NOW, entity_count=0, features=features,
        feature_hash="h" * 64, entity_keys=entity_keys, key_types=key_types,
    )  # fmt: skip


@given(st.one_of(
    st.tuples(st.just(["user_id"]), st.just(["int"]), st.tuples(INT_KEYS)),
    st.tuples(st.just(["device"]), st.just(["str"]), st.tuples(STR_KEYS)),
    st.tuples(st.just(["zone", "driver"]), st.just(["int", "str"]), st.tuples(INT_KEYS, STR_KEYS)),
))  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_parsed_keys_are_the_store_keys(case: tuple[list[str], list[str], tuple[Any, ...]]) -> None:
    names, types, values = case
    parser = KeyParser(names, types)
    normalizer = KeyNormalizer(meta_for(names, types, ["f"]))
    entity: Any = values[0] if len(values) == 1 else list(values)
    parsed, key = parser.parse(entity)
    assert parser.signature == normalizer.signature
    assert key == oracle_key(list(values)) == normalizer.key(parsed)
    if types == ["int"]:  # the decimal text a URL path carries parses to the same key
        assert parser.parse(str(values[0]), from_path=True)[1] == key


@pytest.fixture(params=["sqlite", "redis"])
def string_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A store whose live version has one string key column, published with messy keys."""
    if request.param == "sqlite":
        store: Any = SqliteStore(tmp_path / "online.sqlite", pointer_refresh=60.0)
    else:
        server = request.getfixturevalue("redis_server")
        store = RedisStore(server.url, prefix="t:fast", pointer_refresh=60.0)
    keys = ["a", "é", "日本語-ключ", 'q"uote\\', "x" * 300, ""]
    items = sorted((oracle_key([k]), pack_row([i, f"v{i}"])) for i, k in enumerate(keys))
    write_version(
        store, features=["n", "label"], rows=[items], as_of=NOW, feature_hash="h" * 64,
        entity_keys=["device"], key_types=["str"], defaults={"n": 0, "label": "none"},
        ttls={}, event_times=False, expected=len(items),
    )  # fmt: skip
    yield store, keys
    store.close()


def test_known_keys_read_what_normalised_keys_read(string_store: Any) -> None:
    store, keys = string_store
    parser = KeyParser(["device"], ["str"])
    entities = [*keys, "missing-ü", keys[1]]
    parsed = [parser.parse(e) for e in entities]
    known = (parser.signature, [p[1] for p in parsed])
    want = [(r.found, r.values, r.version) for r in store.get_many(entities)]
    assert [r.found for r in store.get_many(entities)] == [True] * len(keys) + [False, True]
    by_sync = store.get_many([p[0] for p in parsed], keys=known)
    by_loop = uvloop.run(store.get_many_async([p[0] for p in parsed], keys=known))
    assert [(r.found, r.values, r.version) for r in by_sync] == want
    assert [(r.found, r.values, r.version) for r in by_loop] == want


def test_known_keys_of_another_signature_are_not_used(string_store: Any) -> None:
    # Keys made for other key columns (a version the server has not re-checked yet) must not
    # be read as this version's: the store normalises the entities itself.
    store, keys = string_store
    wrong = ((("user_id",), ("int",)), ['["nope"]'] * len(keys))
    for got in (
        store.get_many(keys, keys=wrong),
        uvloop.run(store.get_many_async(keys, keys=wrong)),
    ):
        assert [r.found for r in got] == [True] * len(keys)
        assert [r.values["n"] for r in got] == list(range(len(keys)))


@given(st.lists(STR_KEYS, min_size=1, max_size=8))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_known_keys_hypothesis(string_store: Any, entities: list[str]) -> None:
    store, _ = string_store
    parser = KeyParser(["device"], ["str"])
    parsed = [parser.parse(e) for e in entities]
    known = (parser.signature, [p[1] for p in parsed])
    want = [(r.found, r.values) for r in store.get_many(entities)]
    got = uvloop.run(store.get_many_async([p[0] for p in parsed], keys=known))
    assert [(r.found, r.values) for r in got] == want


# -- one watchdog per connection ---------------------------------------------------------------


def _connection(redis_server: Any) -> LoopConnection:
    return LoopConnection(host=redis_server.host, port=redis_server.port)


def test_one_watchdog_serves_many_commands(redis_server: Any) -> None:
    async def run() -> tuple[int, bool]:
        conn = _connection(redis_server)
        handles = set()
        try:
            for i in range(200):
                deadline = time.monotonic() + 5.0
                assert await conn.command(get_command(b"k%d" % i), 1, deadline) == [None]
                handles.add(id(conn._watchdog))
            return len(handles), conn._watchdog is not None
        finally:
            conn.close()

    handles, armed = uvloop.run(run())
    # later deadlines than the armed one never re-arm it: one timer for all 200 commands
    assert handles == 1
    assert armed


def test_watchdog_stops_when_nothing_waits(redis_server: Any) -> None:
    async def run() -> Any:
        conn = _connection(redis_server)
        try:
            assert await conn.command(get_command(b"k"), 1, time.monotonic() + 0.05) == [None]
            await asyncio.sleep(0.2)  # the deadline passed with nothing waiting
            return conn._watchdog, conn.protocol is not None and not conn.protocol.closed
        finally:
            conn.close()

    watchdog, connected = uvloop.run(run())
    assert watchdog is None  # it fired once, found nothing waiting and did not re-arm
    assert connected  # and a command that had answered was not expired


def _seconds_to_time_out_on_a_frozen_server(
    redis_server: Any, armed_for: float, deadline: float
) -> float:
    """A command that answered arms the watchdog for ``armed_for`` seconds ahead; the server
    is then frozen (SIGSTOP) and the next command, due in ``deadline`` seconds, times out:
    how long that took."""

    async def run() -> float:
        conn = _connection(redis_server)
        try:
            assert await conn.command(get_command(b"k"), 1, time.monotonic() + armed_for) == [None]
            os.kill(redis_server.process.pid, signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(WireTimeout):
                await conn.command(get_command(b"k"), 1, started + deadline)
            return time.monotonic() - started
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
            conn.close()

    return uvloop.run(run())


def test_an_earlier_deadline_rearms_the_watchdog(redis_server: Any) -> None:
    # The watchdog was armed for a deadline 30 s away; a command with a 0.3 s deadline on a
    # frozen server must still time out after 0.3 s, not 30 s.
    took = _seconds_to_time_out_on_a_frozen_server(redis_server, armed_for=30.0, deadline=0.3)
    assert 0.29 <= took < 0.6


def test_a_later_deadline_is_kept_after_an_early_wakeup(redis_server: Any) -> None:
    # Armed for an early deadline (a command that answered), the watchdog fires while a
    # later command waits: it must re-arm for that command's own deadline, not expire it.
    took = _seconds_to_time_out_on_a_frozen_server(redis_server, armed_for=0.1, deadline=0.5)
    assert 0.49 <= took < 0.8


def test_store_answers_after_a_timeout_on_the_fast_path(redis_server: Any) -> None:
    client_store = RedisStore(redis_server.url, prefix="t:wd", pointer_refresh=60.0, timeout=0.3)
    items = [(oracle_key([1]), pack_row([5, "a"]))]
    write_version(
        client_store, features=["n", "label"], rows=[items], as_of=NOW, feature_hash="h" * 64,
        entity_keys=["user_id"], key_types=["int"], defaults={"n": 0, "label": "none"},
        ttls={}, event_times=False, expected=1,
    )  # fmt: skip
    parser = KeyParser(["user_id"], ["int"])
    known = (parser.signature, ["[1]"])

    async def run() -> list[Any]:
        answers = [(await client_store.get_many_async([[1]], keys=known))[0].values]
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="timed out"):
                await client_store.get_many_async([[1]], keys=known)
            answers.append(time.monotonic() - started)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        answers.append((await client_store.get_many_async([[1]], keys=known))[0].values)
        return answers

    try:
        before, took, after = uvloop.run(run())
    finally:
        client_store.close()
    assert before == after == {"n": 5, "label": "a"}
    assert took < 0.3 + 0.2


# -- values through the loop's connection vs redis-py (the oracle) -----------------------------

VALUES = st.one_of(
    st.binary(max_size=64),  # binary-ish: CR/LF, NUL, '$' and '*' inside values
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),  # non-ASCII
    st.just(b""),
    st.binary(min_size=70_000, max_size=70_001),  # larger than one socket read
    st.just(b"\r\n$-1\r\n*0\r\n"),
)


@given(st.lists(st.one_of(st.none(), VALUES), min_size=1, max_size=6))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_loop_connection_reads_what_redis_py_reads(redis_server: Any, values: list[Any]) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    keys = [b"hv:%d" % i for i in range(len(values))]
    client.delete(*keys)
    for key, value in zip(keys, values, strict=True):
        if value is not None:  # None: the key is absent
            client.set(key, value)
    want = client.mget(keys)
    client.close()

    async def read() -> tuple[list[Any], list[Any]]:
        conn = _connection(redis_server)
        try:
            deadline = time.monotonic() + 5.0
            singles = [(await conn.command(get_command(k), 1, deadline))[0] for k in keys]
            if len(keys) == 1:
                return singles, singles
            many = await conn.command(pack(b"MGET", *keys), len(keys), deadline)
            return singles, many
        finally:
            conn.close()

    singles, many = uvloop.run(read())
    assert singles == want
    assert many == want
