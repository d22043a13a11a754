"""`materialize --engine spark` stores what the Polars run stores (docs/scale.md).

Oracle: the Polars engine's run on the same inputs into a second store of the same kind.
Compared are the live version's raw rows (every store key and packed value, byte for
byte, every namespace), every entity decoded through the store's read path, and the
metadata less its version id and finish time. Inputs are small (hundreds of rows) so the
Spark jobs stay short; stores are a real SQLite file and a real redis-server.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.online import open_store

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AS_OF = "2026-06-01T00:00:00Z"
REPO = Path(__file__).resolve().parent.parent

SAMPLE_FEATURES = [
    {"name": "total_orders", "source": "orders", "agg": "count", "default": 0},
    {"name": "lifetime_value", "source": "orders", "agg": "sum", "column": "revenue", "default": 0},
    {"name": "orders_30d", "source": "orders", "agg": "count", "window": "30d", "default": 0},
    {"name": "revenue_7d_mean", "source": "orders", "agg": "mean", "column": "revenue", "window": "7d"},
    {"name": "days_since_last_order", "source": "orders", "kind": "time_since_last", "unit": "d", "default": 999},
    {"name": "last_channel", "source": "orders", "agg": "last", "column": "channel", "default": "none"},
    {"name": "country", "source": "users", "kind": "attribute"},
    {"name": "age", "source": "users", "kind": "attribute"},
]  # fmt: skip


# -- projects ----------------------------------------------------------------------------------


def _sample_project(root: Path, online: dict[str, Any]) -> Path:
    """The example config over 600 generated orders; ttl on orders (event times are stored)."""
    from mlpipe_cli.sample_data import generate

    data = root / "data"
    if not data.exists():
        generate(data, rows=600, seed=11)
    doc = yaml.safe_load((REPO / "configs" / "example.yaml").read_text())
    for name, source in doc["sources"].items():
        source["path"] = str(data / Path(source["path"]).name)
        del name
    doc["sources"]["orders"]["ttl"] = "60d"
    doc["features"] = SAMPLE_FEATURES
    doc.pop("training_set", None)
    doc.pop("transforms", None)
    doc["artifact_dir"] = str(root / "artifacts")
    doc["online_store"] = online
    doc["spark"] = {"partitions": 3}  # more tasks than cores: several writers per run
    path = root / f"mlpipe-{len(list(root.glob('mlpipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _rides_project(root: Path, online: dict[str, Any]) -> Path:
    """configs/rides.yaml over 500 generated rides: four entity types (rider, driver, pickup
    and dropoff zone), string keys of different lengths, some non-ASCII."""
    from mlpipe_cli.sample_data import generate_rides

    data = root / "rides"
    if not data.exists():
        generate_rides(data, rows=500, seed=5)
    doc = yaml.safe_load((REPO / "configs" / "rides.yaml").read_text())
    for source in doc["sources"].values():
        source["path"] = str(data / Path(source["path"]).name)
    doc.pop("training_set", None)
    doc.pop("transforms", None)
    doc["artifact_dir"] = str(root / "artifacts")
    doc["online_store"] = online
    doc["spark"] = {"partitions": 3}
    path = root / f"rides-{len(list(root.glob('rides-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def _stores(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Two stores of one kind: one for the Polars run, one for the Spark run."""
    if kind == "sqlite":
        return [
            {"type": "sqlite", "path": str(tmp_path / f"{engine}.sqlite"), "chunk_size": 70}
            for engine in ("polars", "spark")
        ]
    server = request.getfixturevalue("redis_server")
    return [
        {"type": "redis", "url": server.url, "key_prefix": f"t:{engine}", "chunk_size": 70}
        for engine in ("polars", "spark")
    ]


# -- reading a store back --------------------------------------------------------------------


def _raw_rows(config_path: Path) -> tuple[dict[str, Any], dict[tuple[int, str], bytes]]:
    """The live version's metadata and every row: (namespace, store key) -> packed bytes."""
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        meta = store.live_metadata()
    finally:
        store.close()
    assert meta is not None
    settings = config.online_store
    rows: dict[tuple[int, str], bytes] = {}
    if settings.type == "sqlite":
        conn = sqlite3.connect(str(settings.path))
        base = "data_" + meta.version.replace("-", "_")
        for namespace in range(len(meta.key_sets())):
            table = base + (f"_ns{namespace}" if namespace else "")
            for key, value in conn.execute(f'SELECT k, v FROM "{table}"'):
                rows[(namespace, key)] = bytes(value)
        conn.close()
    else:
        # one node, or every master of a cluster (RedisCluster scans them all)
        reader = open_store(config, config.artifact_dir)
        client = reader.client
        prefix = f"{settings.key_prefix}:d:{meta.version}:"
        for key in client.scan_iter(match=prefix + "*", count=1000):
            rest = key.decode()[len(prefix) :]
            if rest.startswith("["):  # namespace 0 has no segment of its own
                namespace, store_key = "0", rest
            else:
                namespace, _, store_key = rest.partition(":")
            rows[(int(namespace), store_key)] = client.get(key)
        reader.close()
    doc = orjson_loads(meta.to_json())
    for volatile in ("version", "finished_at"):
        doc.pop(volatile)
    return doc, rows


def orjson_loads(data: bytes) -> Any:
    import orjson

    return orjson.loads(data)


def _decoded(config_path: Path, entities: list[dict[str, Any]]) -> list[Any]:
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        return [(r.found, r.values, r.expired, r.missing) for r in store.get_many(entities)]
    finally:
        store.close()


def _entities(config_path: Path) -> list[dict[str, Any]]:
    """Requests naming every entity of every type (from the Polars entity lists)."""
    from datetime import datetime

    from mlpipe_cli.online.materialize import key_set_entities, plan_key_sets

    config = load_config(config_path)
    when = datetime.fromisoformat(AS_OF.replace("Z", "+00:00"))
    lists = [
        key_set_entities(config, key_set, when).to_dicts()
        for key_set in plan_key_sets(config, config.features)
    ]
    # a request names one entity of every type: request i takes entity i of each type
    # (cycling through the shorter lists), so every entity of every type is looked up
    return [
        {k: v for entities in lists for k, v in entities[i % len(entities)].items()}
        for i in range(max(len(entities) for entities in lists))
    ]


def _materialize(config: Path, engine: str):  # type: ignore[no-untyped-def]
    from mlpipe_cli.ops.materialize import materialize
    from mlpipe_cli.ops.project import Project

    return materialize(Project(config), as_of=AS_OF, engine=engine)


def _assert_same_store(on_polars: Path, on_spark: Path) -> None:
    meta_polars, rows_polars = _raw_rows(on_polars)
    meta_spark, rows_spark = _raw_rows(on_spark)
    assert meta_spark == meta_polars
    assert len(rows_spark) == len(rows_polars) == meta_polars["entity_count"]
    assert rows_spark == rows_polars
    entities = _entities(on_polars)
    decoded = _decoded(on_polars, entities)
    assert sum(found for found, *_ in decoded) > 0
    assert _decoded(on_spark, entities) == decoded


# -- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_sample_store_equals_the_polars_run(
    spark: object, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    polars_store, spark_store = _stores(kind, tmp_path, request)
    on_polars = _sample_project(tmp_path, polars_store)
    on_spark = _sample_project(tmp_path, spark_store)
    expected = _materialize(on_polars, "polars")
    result = _materialize(on_spark, "spark")
    assert result.entity_count == expected.entity_count >= 50
    assert result.feature_hash == expected.feature_hash
    assert result.store_type == kind
    writer = "by the driver" if kind == "sqlite" else "by the Spark tasks"
    assert f"written {writer}" in result.notes[-1]
    _assert_same_store(on_polars, on_spark)
    # the materialization artifacts record the same facts
    assert result.artifact_version is not None


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_rides_store_equals_the_polars_run(
    spark: object, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    polars_store, spark_store = _stores(kind, tmp_path, request)
    on_polars = _rides_project(tmp_path, polars_store)
    on_spark = _rides_project(tmp_path, spark_store)
    expected = _materialize(on_polars, "polars")
    result = _materialize(on_spark, "spark")
    assert result.entity_count == expected.entity_count
    meta, rows = _raw_rows(on_spark)
    assert len(meta["namespaces"]) == 4
    # non-ASCII keys made it through Spark and into the store keys
    assert any(not key.isascii() for _, key in rows)
    _assert_same_store(on_polars, on_spark)


def test_cluster_store_equals_the_polars_run(spark: object, tmp_path: Path) -> None:
    """Redis Cluster (3 masters + 3 replicas on loopback): tasks group their rows by
    owning master, as the driver-side writer does; the stores hold the same rows."""
    from benchmarks._redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster(tmp_path / "cluster").start()
    try:
        stores = [
            {"type": "redis", "cluster": True, "url": cluster.url, "key_prefix": f"c:{engine}",
             "chunk_size": 70}
            for engine in ("polars", "spark")
        ]  # fmt: skip
        on_polars = _rides_project(tmp_path, stores[0])
        on_spark = _rides_project(tmp_path, stores[1])
        _materialize(on_polars, "polars")
        result = _materialize(on_spark, "spark")
        assert result.store_type == "redis-cluster"
        assert "written by the Spark tasks" in result.notes[-1]
        _assert_same_store(on_polars, on_spark)
    finally:
        cluster.stop()


def test_a_second_spark_run_switches_and_keeps_the_previous_for_rollback(
    spark: object, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    polars_store, spark_store = _stores("sqlite", tmp_path, None)  # type: ignore[arg-type]
    config = _sample_project(tmp_path, spark_store)
    first = cli("materialize", "-c", config, "--as-of", AS_OF, "--engine", "spark", "--json")
    assert first.exit_code == 0, first.stderr
    second = cli("materialize", "-c", config, "--as-of", AS_OF, "--engine", "spark", "--json")
    assert second.exit_code == 0, second.stderr
    assert second.json()["version"] != first.json()["version"]
    back = cli("materialize", "-c", config, "--rollback", "--json")
    assert back.exit_code == 0, back.stderr
    assert back.json()["live"]["version"] == first.json()["version"]
    # both runs went live: nothing was abandoned, so there is nothing to resume
    resumed = cli("materialize", "-c", config, "--resume", "--engine", "spark")
    assert resumed.exit_code == 2
    assert "no abandoned run to resume" in resumed.stderr
    del polars_store


def test_a_failing_task_leaves_the_live_version_untouched(
    spark: object, tmp_path: Path, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """A real write failure inside some tasks (redis-server out of memory, noeviction): the
    job fails, the error arrives as mlpipe's, and the version that was live stays live."""
    from mlpipe_cli.errors import MlpipeError

    store = {"type": "redis", "url": redis_server.url, "key_prefix": "t:oom", "chunk_size": 20}
    config = _sample_project(tmp_path, store)
    before = _materialize(config, "spark")
    _, rows_before = _raw_rows(config)
    client = redis_server.client()
    used = int(client.info("memory")["used_memory"])
    # room for the version's metadata, not for its rows
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 20_000))
    try:
        with pytest.raises(MlpipeError) as failure:
            _materialize(config, "spark")
    finally:
        client.config_set("maxmemory", "0")
    assert "OOM" in failure.value.message or "memory" in failure.value.message
    meta, rows_after = _raw_rows(config)
    live = open_store(load_config(config), tmp_path).live_metadata()
    assert live is not None
    assert live.version == before.version
    assert rows_after == rows_before
    # the next run succeeds and removes the abandoned version's rows
    again = _materialize(config, "spark")
    assert again.entity_count == before.entity_count
    versions = {k.split(b":")[3] for k in client.scan_iter(match="t:oom:d:*", count=1000)}
    assert versions <= {before.version.encode(), again.version.encode()}
    del meta


def test_engine_spark_with_an_empty_as_of_is_exit_1_and_writes_nothing(
    spark: object, tmp_path: Path, cli
) -> None:  # type: ignore[no-untyped-def]
    _, spark_store = _stores("sqlite", tmp_path, None)  # type: ignore[arg-type]
    config = _sample_project(tmp_path, spark_store)
    args = ["materialize", "-c", config, "--as-of", "2001-01-01T00:00:00Z"]
    args += ["--features", "total_orders,orders_30d"]  # orders only: users have no time
    on_polars = cli(*args, "--engine", "polars")
    early = cli(*args, "--engine", "spark")
    assert early.exit_code == on_polars.exit_code == 1, early.stderr
    assert "no entity has a row at or before" in early.stderr
    assert not Path(spark_store["path"]).exists() or _no_versions(Path(spark_store["path"]))


def _no_versions(path: Path) -> bool:
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT COUNT(*) FROM mlpipe_versions").fetchone()[0] == 0
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()
