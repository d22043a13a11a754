"""The online stores against real backends: a SQLite file and a real redis-server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.errors import ServiceUnavailable, UsageError
from mlpipe_cli.online import entity_store_key, open_store, pack_row
from mlpipe_cli.online.codec import KeyNormalizer
from mlpipe_cli.online.redis_store import RedisStore, mask_url
from mlpipe_cli.online.sqlite_store import SqliteStore
from mlpipe_cli.online.store import RunProgress, StoreMetadata
from mlpipe_cli.online.writer import finish_version, new_version_id, start_version, write_version

FEATURES = ["orders_30d", "revenue_sum", "country"]
DEFAULTS = {"orders_30d": 0, "revenue_sum": 0.0, "country": "unknown"}
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "online.sqlite", pointer_refresh=0.0)
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix="t:churn", ttl_seconds=3600, pointer_refresh=0.0)
    yield s
    s.close()


def publish(store, rows: dict[int, list], *, as_of=NOW, ttls=None, event_times=None):  # type: ignore[no-untyped-def]
    """Write {user_id: values} as one version and switch to it."""
    items = []
    for uid, values in sorted(rows.items()):
        extra = event_times[uid] if event_times else ()
        items.append((entity_store_key(uid), pack_row(values, extra)))
    meta, removed = write_version(
        store,
        features=FEATURES,
        rows=[items[:2], items[2:]],
        as_of=as_of,
        feature_hash="h" * 64,
        entity_keys=["user_id"],
        key_types=["int"],
        defaults=DEFAULTS,
        ttls=ttls or {},
        event_times=bool(event_times),
        expected=len(rows),
    )
    return meta, removed


def test_round_trip_found_missing_and_metadata(store) -> None:  # type: ignore[no-untyped-def]
    assert store.live_metadata() is None
    nothing = store.get(1)
    assert (nothing.found, nothing.version, nothing.values) == (False, None, {})
    meta, _ = publish(store, {1: [3, 12.5, "DE"], 2: [0, None, "US"], 7: [1, 2.25, "FR"]})
    live = store.live_metadata()
    assert live is not None
    assert (live.version, live.entity_count, live.features) == (meta.version, 3, FEATURES)
    assert live.as_of == NOW
    assert live.finished_at is not None
    assert live.status == "complete"
    hit = store.get(1)
    assert hit.found
    assert hit.status == "ok"
    assert hit.version == meta.version
    assert hit.as_of == NOW
    assert hit.values == {"orders_30d": 3, "revenue_sum": 12.5, "country": "DE"}
    assert store.get([2]).values == {"orders_30d": 0, "revenue_sum": None, "country": "US"}
    assert store.get({"user_id": 7}).values["country"] == "FR"
    assert store.get("7").values["country"] == "FR"  # numeric string coerced to the int key
    miss = store.get(99)
    assert (miss.found, miss.status, miss.values) == (False, "missing", DEFAULTS)
    many = store.get_many([7, 99, 1])
    assert [r.found for r in many] == [True, False, True]
    assert [r.values["orders_30d"] for r in many] == [1, 0, 3]
    assert store.get_many([]) == []


def test_entity_key_arity_and_type_errors(store) -> None:  # type: ignore[no-untyped-def]
    publish(store, {1: [3, 12.5, "DE"], 2: [1, 1.0, "US"], 3: [1, 1.0, "US"]})
    with pytest.raises(UsageError, match=r"has 2 key value\(s\); expected 1 \(user_id\)"):
        store.get([1, 2])
    with pytest.raises(UsageError, match="must be an integer"):
        store.get("abc")


def test_switch_keeps_previous_removes_older_and_rollback_swaps(store) -> None:  # type: ignore[no-untyped-def]
    v1, removed = publish(store, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    assert removed == []
    v2, removed = publish(store, {1: [2, 2.0, "DE"], 2: [2, 2.0, "DE"], 3: [2, 2.0, "DE"]})
    assert removed == []
    assert store.get(1).values["orders_30d"] == 2
    v3, removed = publish(store, {1: [3, 3.0, "DE"], 2: [3, 3.0, "DE"], 3: [3, 3.0, "DE"]})
    assert removed == [v1.version]
    assert [m.version for m, _ in store.versions()] == [v2.version, v3.version]
    assert store.pointers() == {"live": v3.version, "previous": v2.version}
    assert store.rollback() == (v2.version, v3.version)
    assert store.get(1).values["orders_30d"] == 2
    assert store.live_metadata().version == v2.version
    assert store.rollback() == (v3.version, v2.version)
    assert store.get(2).values["orders_30d"] == 3


def test_rollback_without_previous_is_a_usage_error(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="nothing to roll back"):
        store.rollback()
    publish(store, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    with pytest.raises(UsageError, match="nothing to roll back"):
        store.rollback()


def test_version_being_written_is_invisible_to_readers(store) -> None:  # type: ignore[no-untyped-def]
    v1, _ = publish(store, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    meta = v1.replace(version=new_version_id(store), status="building", finished_at=None)
    progress = start_version(store, meta, chunk_size=2, entities_hash="e")
    store.write_chunk(progress, [(entity_store_key(1), pack_row([9, 9.0, "JP"]))])
    assert store.get(1).values["orders_30d"] == 1
    assert store.get_many([1, 2])[0].version == v1.version
    assert store.live_metadata().version == v1.version
    # the half-written version is listed as building, with its progress
    building = {m.version: p for m, p in store.versions() if m.status == "building"}
    assert building[meta.version].written == 1
    assert building[meta.version].chunks_done == 1


def test_cached_pointer_lags_at_most_one_switch_and_never_mixes(tmp_path: Path) -> None:
    writer = SqliteStore(tmp_path / "s.sqlite")
    reader = SqliteStore(tmp_path / "s.sqlite", pointer_refresh=3600.0)
    v1, _ = publish(writer, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    assert reader.get(1).version == v1.version
    v2, _ = publish(writer, {1: [2, 2.0, "DE"], 2: [2, 2.0, "DE"], 3: [2, 2.0, "DE"]})
    # the reader's cached pointer still says v1, which is kept as `previous`: consistent old data
    results = reader.get_many([1, 2, 3])
    assert {(r.version, r.values["orders_30d"]) for r in results} == {(v1.version, 1)}
    # a miss forces a pointer re-read
    assert reader.get(99).version == v2.version
    assert reader.get(1).values["orders_30d"] == 2
    # two switches while a reader slept: its version is gone; it re-reads instead of failing
    reader2 = SqliteStore(tmp_path / "s.sqlite", pointer_refresh=3600.0)
    assert reader2.get(1).version == v2.version
    publish(writer, {1: [3, 3.0, "DE"], 2: [3, 3.0, "DE"], 3: [3, 3.0, "DE"]})
    v4, removed = publish(writer, {1: [4, 4.0, "DE"], 2: [4, 4.0, "DE"], 3: [4, 4.0, "DE"]})
    assert v2.version in removed
    assert reader2.get(1).values["orders_30d"] == 4
    assert {r.version for r in reader2.get_many([1, 2])} == {v4.version}


def test_feature_ttl_is_enforced_on_read_from_as_of(store) -> None:  # type: ignore[no-untyped-def]
    old = NOW - timedelta(hours=2)
    publish(
        store,
        {1: [3, 12.5, "DE"], 2: [1, 1.0, "US"], 3: [1, 1.0, "US"]},
        as_of=old,
        ttls={"orders_30d": 3600.0, "country": 86400.0},
    )
    result = store.get(1)
    assert result.found
    assert result.status == "expired"
    assert result.expired == ["orders_30d"]
    assert result.values == {"orders_30d": 0, "revenue_sum": 12.5, "country": "DE"}


def test_feature_ttl_on_read_uses_per_entity_event_times(store) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    publish(
        store,
        {1: [3, 12.5, "DE"], 2: [1, 1.0, "US"], 3: [0, 0.0, "unknown"]},
        ttls={"orders_30d": 3600.0},
        event_times={1: [now - 7200], 2: [now - 60], 3: [None]},
    )
    one, two, three = store.get_many([1, 2, 3])
    assert (one.expired, one.values["orders_30d"]) == (["orders_30d"], 0)
    assert (two.expired, two.values["orders_30d"]) == ([], 1)
    assert (three.expired, three.status) == ([], "ok")


def test_redis_keys_carry_the_online_ttl(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_server.url, prefix="t:churn", ttl_seconds=600)
    meta, _ = publish(store, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    client = redis_server.client()
    key = f"t:churn:d:{meta.version}:[1]"
    assert 590 <= client.ttl(key) <= 600
    assert orjson.loads(client.get(key)) == [1, 1.0, "DE"]
    assert client.ttl("t:churn:live") == -1  # pointers never expire


def test_redis_restart_loses_data_and_readers_recover(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_server.url, prefix="t:churn", pointer_refresh=0.0)
    publish(store, {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    assert store.get(1).found
    redis_server.restart()  # not persisted: the store is empty afterwards
    assert store.get(1).version is None
    assert store.live_metadata() is None
    publish(store, {1: [5, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]})
    assert store.get(1).values["orders_30d"] == 5


def test_redis_ping_down_and_wrong_password_are_service_unavailable(
    redis_server_with_password, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = redis_server_with_password
    good = RedisStore(server.url_without_password, password="s3cret-pw", prefix="p")
    good.ping()
    wrong = RedisStore(server.url_without_password, password="not-the-pw", prefix="p")
    with pytest.raises(ServiceUnavailable) as info:
        wrong.ping()
    assert "rejected the credentials" in str(info.value)
    assert "not-the-pw" not in str(info.value)
    none = RedisStore(server.url_without_password, prefix="p")
    with pytest.raises(ServiceUnavailable, match="rejected the credentials"):
        none.ping()
    in_url = RedisStore(server.url.replace("s3cret-pw", "bad-url-pw"), prefix="p")
    with pytest.raises(ServiceUnavailable) as info:
        in_url.get(1)
    assert "bad-url-pw" not in str(info.value)
    assert "***" in str(info.value)
    port = server.port
    server.stop()
    with pytest.raises(ServiceUnavailable, match="unreachable") as info:
        good.ping()
    assert str(port) in str(info.value)
    assert "\n" not in str(info.value)


def test_mask_url_hides_passwords() -> None:
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"


def test_open_store_from_config_interpolates_password(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLPIPE_TEST_REDIS_PW", "from-env-pw")
    text = (
        "pipeline: churn\nentity_keys: [user_id]\n"
        "online_store:\n  type: redis\n  url: redis://127.0.0.1:1/0\n"
        "  password: ${MLPIPE_TEST_REDIS_PW}\n  ttl: 2d\n  timeout: 200ms\n"
    )
    config = load_config_text(text, source_name="x.yaml", base_dir=tmp_path)
    assert "from-env-pw" not in repr(config)
    assert "from-env-pw" not in str(config.model_dump())
    store = open_store(config, tmp_path)
    assert isinstance(store, RedisStore)
    assert (store.prefix, store.ttl_seconds) == ("mlpipe:churn", 172800)
    with pytest.raises(ServiceUnavailable) as info:
        store.ping()
    assert "from-env-pw" not in str(info.value)
    default = load_config_text("pipeline: churn\n", source_name="x.yaml", base_dir=tmp_path)
    sqlite = open_store(default, tmp_path / "art")
    assert isinstance(sqlite, SqliteStore)
    assert sqlite.path == tmp_path / "art" / "churn" / "online.sqlite"
    assert sqlite.get(1).version is None
    assert not sqlite.path.exists()


def test_sqlite_write_progress_is_transactional(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    meta = StoreMetadata("0001-aaaaaaaa", NOW, None, 2, FEATURES, "h", ["user_id"], ["int"])
    progress = start_version(store, meta, chunk_size=1, entities_hash="e")
    store.write_chunk(progress, [(entity_store_key(1), pack_row([1, 1.0, "DE"]))])
    ((_, saved),) = store.versions()
    assert isinstance(saved, RunProgress)
    assert (saved.chunks_done, saved.written) == (1, 1)
    assert store.count(meta.version) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.integers(-(2**62), 2**62), st.text(max_size=8)), min_size=2, max_size=2)
)
def test_composite_keys_map_to_compact_json(values: list) -> None:  # type: ignore[type-arg]
    meta = StoreMetadata("1", NOW, None, 0, [], "h", ["a", "b"], ["other", "other"])
    key = KeyNormalizer(meta).key(values)
    assert key == entity_store_key(tuple(values)) == orjson.dumps(values).decode()
    assert orjson.loads(key) == values


def _start(store, rows: int, value: bytes = b'[1,1.0,"DE"]'):  # type: ignore[no-untyped-def]
    meta = StoreMetadata(
        new_version_id(store), NOW, None, rows, FEATURES, "h", ["user_id"], ["int"]
    )
    progress = start_version(store, meta, chunk_size=rows, entities_hash="e")
    store.write_chunk(progress, [(entity_store_key(i), value) for i in range(rows)])
    return meta, progress


def test_redis_restart_after_writing_is_caught_before_the_switch(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_server.url, prefix="t", pointer_refresh=0.0)
    meta, progress = _start(store, 10)
    redis_server.restart()
    with pytest.raises(ServiceUnavailable, match="restarted while version"):
        finish_version(store, meta, progress, expected=10)
    assert store.pointers() == {}
    # an abandoned version cannot be resumed across a restart either
    assert store.claim(progress) is False


def test_redis_rows_deleted_while_writing_are_caught_before_the_switch(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_server.url, prefix="t", pointer_refresh=0.0)
    meta, progress = _start(store, 10)
    redis_server.client().delete(f"t:d:{meta.version}:[0]")
    with pytest.raises(ServiceUnavailable, match="1 sampled rows of version"):
        finish_version(store, meta, progress, expected=10)
    assert store.pointers() == {}


def test_redis_eviction_while_writing_is_caught_by_an_exact_count(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    client.config_set("maxmemory", "2mb")
    client.config_set("maxmemory-policy", "allkeys-random")
    store = RedisStore(redis_server.url, prefix="t", pointer_refresh=0.0)
    meta, progress = _start(store, 4000, value=orjson.dumps(["x" * 1000]))
    assert client.info("stats")["evicted_keys"] > 0
    with pytest.raises(ServiceUnavailable, match=r"evicted \d+ of 4000 rows"):
        finish_version(store, meta, progress, expected=4000)
    assert store.pointers() == {}


def test_redis_error_reply_while_writing_fails_the_chunk(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    client.config_set("maxmemory", "1mb")
    client.config_set("maxmemory-policy", "noeviction")
    store = RedisStore(redis_server.url, prefix="t", pointer_refresh=0.0)
    with pytest.raises(ServiceUnavailable, match="OOM"):
        _start(store, 4000, value=orjson.dumps(["x" * 1000]))


def test_non_ascii_string_keys_round_trip(store) -> None:  # type: ignore[no-untyped-def]
    write_version(
        store,
        features=["n"],
        rows=[
            [(entity_store_key("Zürich"), pack_row([1])), (entity_store_key("東京"), pack_row([2]))]
        ],
        as_of=NOW,
        feature_hash="h",
        entity_keys=["city"],
        key_types=["str"],
        expected=2,
    )
    assert store.get("Zürich").values == {"n": 1}
    assert store.get(["東京"]).values == {"n": 2}
    assert store.get("Zurich").found is False


def test_redis_server_gone_mid_write_is_service_unavailable(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(redis_server.url, prefix="t", pointer_refresh=0.0)
    _meta, progress = _start(store, 100)  # opens the bulk connection
    redis_server.stop()
    big = [(entity_store_key(i), pack_row([i, 1.0, "DE"])) for i in range(100, 50_100)]
    with pytest.raises(ServiceUnavailable, match=r"unreachable|timed out"):
        store.write_chunk(progress, big)
    assert progress.chunks_done == 1


def test_a_version_being_written_survives_other_runs_switching(store) -> None:  # type: ignore[no-untyped-def]
    building, progress = _start(store, 5)  # still being written by this process
    rows = {1: [1, 1.0, "DE"], 2: [1, 1.0, "DE"], 3: [1, 1.0, "DE"]}
    v2, _ = publish(store, rows)
    _v3, removed = publish(store, rows)
    assert removed == []  # v2 is previous, the building one is alive
    v4, removed = publish(store, rows)
    assert removed == [v2.version]
    assert building.version in {m.version for m, _ in store.versions()}
    final, _ = finish_version(store, building, progress, expected=5)
    assert store.pointers() == {"live": building.version, "previous": v4.version}
    assert store.get(0).version == final.version


# -- the event loop's read path (get_many_async) -------------------------------------------


def _on_loop(coro):  # type: ignore[no-untyped-def]
    import uvloop  # the server's event loop

    return uvloop.run(coro)


@given(st.lists(st.one_of(st.integers(1, 9), st.integers(100, 120)), min_size=1, max_size=30))
# the store fixture is meant to be shared across examples: one published version, many reads
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_async_reads_answer_exactly_what_get_many_answers(store, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    # Redis reads on the event loop without blocking it; SQLite answers synchronously. Either
    # way the answers equal the blocking path's, for hits, misses and single keys alike.
    if store.live_metadata() is None:
        publish(store, {i: [i, i * 1.5, f"c{i}"] for i in range(1, 10)})
    got = _on_loop(store.get_many_async(ids))
    want = store.get_many(ids)
    assert [(r.found, r.values, r.version) for r in got] == [
        (r.found, r.values, r.version) for r in want
    ]
    assert store.async_reads == (store.kind == "redis")


def test_async_reads_time_out_recover_and_survive_a_restart(redis_server) -> None:  # type: ignore[no-untyped-def]
    import redis as redis_py

    store = RedisStore(redis_server.url, prefix="t:async", pointer_refresh=60.0, timeout=0.3)
    publish(store, {1: [1, 1.0, "DE"], 2: [2, 2.0, "FR"], 3: [3, 3.0, "US"]})
    assert [r.values["orders_30d"] for r in _on_loop(store.get_many_async([1, 3]))] == [1, 3]

    # a server that stops answering: one-line ServiceUnavailable after online_store.timeout
    admin = redis_py.Redis.from_url(redis_server.url)
    admin.execute_command("CLIENT", "PAUSE", "1200", "ALL")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="timed out") as info:
        _on_loop(store.get_many_async([1, 2]))
    assert time.monotonic() - started < 1.0
    assert "\n" not in str(info.value)
    time.sleep(1.3)  # the pause ends; the late reply must not be taken for the next answer
    assert [r.values["country"] for r in _on_loop(store.get_many_async([2, 1]))] == ["FR", "DE"]

    # a restarted server (same port): the dropped connection is re-made once, transparently
    redis_server.stop()
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        _on_loop(store.get_many_async([1]))
    redis_server.start()
    publish(store, {1: [9, 1.0, "DE"], 2: [2, 2.0, "FR"], 3: [3, 3.0, "US"]})
    store._current(force=True)
    assert _on_loop(store.get_many_async([1]))[0].values["orders_30d"] == 9
    store.close()
    admin.close()


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=1, max_size=6),
    st.sampled_from([2, 3]),
)
def test_raw_reply_parser_reads_resp2_and_resp3_and_waits_for_partial_replies(
    values: list, protocol: int
) -> None:  # type: ignore[type-arg]
    from mlpipe_cli.online.redis_store import parse_values_reply

    null = b"$-1\r\n" if protocol == 2 else b"_\r\n"
    items = [null if v is None else b"$%d\r\n%s\r\n" % (len(v), v) for v in values]
    single = len(values) == 1 and protocol == 2  # a GET reply has no array header
    data = b"".join(items) if single else b"*%d\r\n" % len(values) + b"".join(items)
    assert parse_values_reply(data, len(values)) == values
    for cut in range(len(data)):  # values may contain \r\n: only lengths delimit them
        assert parse_values_reply(data[:cut], len(values)) is None
    with pytest.raises(ValueError, match="more bytes"):
        parse_values_reply(data + b"_\r\n", len(values))


def test_raw_reply_parser_rejects_error_replies() -> None:
    from mlpipe_cli.online.redis_store import parse_values_reply

    with pytest.raises(ValueError, match="unexpected reply"):
        parse_values_reply(b"-WRONGTYPE Operation against a key\r\n", 1)
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_values_reply(b"*2\r\n-ERR x\r\n_\r\n", 2)
    with pytest.raises(ValueError, match="unexpected reply"):
        parse_values_reply(b"*3\r\n_\r\n_\r\n_\r\n", 2)


def test_concurrent_async_reads_each_get_their_own_answers(redis_server) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    store = RedisStore(redis_server.url, prefix="t:conc", pointer_refresh=60.0)
    rows = {i: [i, i * 0.5, f"c{i}"] for i in range(1, 41)}
    publish(store, rows)
    requests = [[(k * 7 + j) % 45 + 1 for j in range(k % 5 + 1)] for k in range(60)]

    async def many() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(store.get_many_async(ids) for ids in requests))

    answers = _on_loop(many())
    for ids, got in zip(requests, answers, strict=True):
        assert [r.values["orders_30d"] if r.found else None for r in got] == [
            i if i in rows else None for i in ids
        ]
    store.close()


def test_a_read_cancelled_mid_reply_never_answers_the_next_one(redis_server) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import redis as redis_py

    store = RedisStore(redis_server.url, prefix="t:cancel", pointer_refresh=60.0, timeout=5)
    publish(store, {1: [1, 1.0, "DE"], 2: [2, 2.0, "FR"], 3: [3, 3.0, "US"]})
    admin = redis_py.Redis.from_url(redis_server.url)

    async def cancel_then_read() -> list:  # type: ignore[type-arg]
        await store.get_many_async([3])  # the loop's connection is open and idle
        admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
        task = asyncio.ensure_future(store.get_many_async([1, 2]))
        await asyncio.sleep(0.05)  # the MGET for 1, 2 is out; its reply is not
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.4)  # the pause ends and the cancelled reply arrives
        return await store.get_many_async([2, 1])  # same shape as the cancelled one

    got = _on_loop(cancel_then_read())
    assert [r.values["country"] for r in got] == ["FR", "DE"]
    store.close()
    admin.close()


def test_a_hung_server_costs_each_read_one_timeout_not_three(redis_server) -> None:  # type: ignore[no-untyped-def]
    import signal as signals

    store = RedisStore(redis_server.url, prefix="t:hung", pointer_refresh=60.0, timeout=0.3)
    publish(store, {1: [1, 1.0, "DE"], 2: [2, 2.0, "FR"], 3: [3, 3.0, "US"]})
    assert _on_loop(store.get_many_async([1]))[0].found
    redis_server.process.send_signal(signals.SIGSTOP)  # accepts connections, never answers
    try:
        for _ in range(3):  # the first times out reading; later ones while reconnecting
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="timed out"):
                _on_loop(store.get_many_async([1, 2]))
            assert time.monotonic() - started < 0.9
    finally:
        redis_server.process.send_signal(signals.SIGCONT)
    assert [r.values["country"] for r in _on_loop(store.get_many_async([2, 3]))] == ["FR", "US"]
    store.close()


def test_two_event_loops_at_once_never_share_a_connection(redis_server) -> None:  # type: ignore[no-untyped-def]
    import threading

    store = RedisStore(redis_server.url, prefix="t:loops", pointer_refresh=60.0)
    rows = {i: [i, 0.0, f"c{i}"] for i in range(1, 31)}
    publish(store, rows)
    wrong: list[tuple[int, object]] = []

    async def reads(offset: int) -> None:
        for k in range(300):
            ids = [(offset + k) % 30 + 1, (offset + 2 * k) % 30 + 1]
            got = await store.get_many_async(ids)
            wrong.extend((i, r.values.get("orders_30d")) for i, r in zip(ids, got, strict=True)
                         if r.values.get("orders_30d") != i)  # fmt: skip

    threads = [threading.Thread(target=_on_loop, args=(reads(n * 7),)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    store.close()
