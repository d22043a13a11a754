"""`mlpipe materialize` end to end: real Parquet sample data, a real SQLite file, a real
redis-server, real subprocesses killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.features.engine import compute_features
from mlpipe_cli.online import open_store

AS_OF_A = "2026-04-01T00:00:00Z"
AS_OF_B = "2026-07-01T00:00:00Z"

FEATURES = [
    {"name": "total_orders", "source": "orders", "agg": "count", "default": 0},
    {"name": "lifetime_value", "source": "orders", "agg": "sum", "column": "revenue", "default": 0},
    {"name": "orders_30d", "source": "orders", "agg": "count", "window": "30d", "default": 0},
    {"name": "revenue_7d_mean", "source": "orders", "agg": "mean", "column": "revenue", "window": "7d"},
    {"name": "days_since_last_order", "source": "orders", "kind": "time_since_last", "unit": "d", "default": 999},
    {"name": "last_channel", "source": "orders", "agg": "last", "column": "channel", "default": "none"},
    {"name": "country", "source": "users", "kind": "attribute"},
    {"name": "age", "source": "users", "kind": "attribute"},
]  # fmt: skip
NAMES = [f["name"] for f in FEATURES]


def write_config(project: Path, *, online: dict | None = None, orders_ttl: str | None = None,
                 entity_keys: list[str] | None = None, features: list[dict] | None = None) -> Path:  # fmt: skip
    config = yaml.safe_load(project.read_text())
    config["features"] = features or FEATURES
    config.pop("training_set", None)
    if entity_keys:
        config["entity_keys"] = entity_keys
    if orders_ttl:
        config["sources"]["orders"]["ttl"] = orders_ttl
    config["online_store"] = online or {"chunk_size": 400}
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    return project


def redis_online(server, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"type": "redis", "url": server.url, "key_prefix": "test:churn", **extra}


def offline(config_path: Path, users: list[int], as_of: str, names=NAMES) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    """What training-set computes for spine rows (user, as_of): the oracle for the store."""
    config = load_config(config_path)
    when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
    spine = pl.DataFrame({"user_id": users, "ts": [when] * len(users)}).with_columns(
        pl.col("ts").dt.cast_time_unit("us")
    )
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="ts", features=names)
    return {row["user_id"]: {n: row[n] for n in names} for row in out.iter_rows(named=True)}


def online(config_path: Path, users: list[int]) -> dict[int, object]:  # type: ignore[no-untyped-def]
    config = load_config(config_path)
    store = open_store(config, config.artifact_dir)
    try:
        return dict(zip(users, store.get_many(users), strict=True))
    finally:
        store.close()


SAMPLE_USERS = [1, 2, 3, 17, 94, 393, 500, 999, 1000]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, project):  # type: ignore[no-untyped-def]
    """(config path, redis server or None) for each backend."""
    if request.param == "sqlite":
        return write_config(project), None
    server = request.getfixturevalue("redis_server")
    return write_config(project, online=redis_online(server, chunk_size=400, ttl="30d")), server


def test_online_values_equal_training_set_values(backend, cli, sample_data_dir) -> None:  # type: ignore[no-untyped-def]
    config, _ = backend
    result = cli("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    users = pl.read_parquet(sample_data_dir / "users.parquet")["user_id"]
    orders = pl.read_parquet(sample_data_dir / "orders.parquet")["user_id"]
    assert doc["entity_count"] == len(set(users) | set(orders)) == 1000
    assert doc["features"] == NAMES
    assert doc["chunks"] == 3
    expected = offline(config, SAMPLE_USERS, AS_OF_B)
    got = online(config, SAMPLE_USERS)
    for uid in SAMPLE_USERS:
        assert got[uid].found, uid
        assert got[uid].version == doc["version"]
        assert got[uid].values == expected[uid], uid
    # ... and equal to what the `training-set` command writes for the same (entity, as-of) rows
    when = datetime(2026, 7, 1, tzinfo=UTC)
    spine_path = config.parent / "spine.parquet"
    pl.DataFrame({"user_id": SAMPLE_USERS, "ts": [when] * len(SAMPLE_USERS)}).with_columns(
        pl.col("ts").dt.cast_time_unit("us")
    ).write_parquet(spine_path)
    out_path = config.parent / "train.parquet"
    built = cli("training-set", "-c", config, "--out", out_path, "--spine", spine_path,
                "--timestamp", "ts", "--no-publish")  # fmt: skip
    assert built.exit_code == 0, built.stderr
    for row in pl.read_parquet(out_path).iter_rows(named=True):
        assert got[row["user_id"]].values == {n: row[n] for n in NAMES}
    # An independent brute-force oracle for two features (plain Python over the orders).
    cutoff = datetime(2026, 7, 1, tzinfo=UTC)
    rows = pl.read_parquet(sample_data_dir / "orders.parquet").to_dicts()
    for uid in SAMPLE_USERS[:4]:
        mine = [r for r in rows if r["user_id"] == uid and r["order_ts"] < cutoff]
        assert got[uid].values["total_orders"] == len(mine)
        recent = [r for r in mine if r["order_ts"] >= cutoff - timedelta(days=30)]
        assert got[uid].values["orders_30d"] == len(recent)


def test_composite_entity_keys(project, cli, sample_data_dir) -> None:  # type: ignore[no-untyped-def]
    features = [
        {"name": "n_orders", "source": "orders", "agg": "count", "default": 0},
        {"name": "spend", "source": "orders", "agg": "sum", "column": "revenue", "default": 0},
    ]
    config = write_config(project, entity_keys=["user_id", "channel"], features=features)
    result = cli("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert result.exit_code == 0, result.stderr
    orders = pl.read_parquet(sample_data_dir / "orders.parquet").filter(
        pl.col("order_ts") < datetime(2026, 7, 1, tzinfo=UTC)
    )
    pairs = orders.select("user_id", "channel").unique()
    assert result.json()["entity_count"] == pairs.height
    counts = orders.group_by("user_id", "channel").agg(pl.len().alias("n"), pl.col("revenue").sum())
    store = open_store(load_config(config), load_config(config).artifact_dir)
    for row in counts.sort("user_id", "channel").head(5).iter_rows(named=True):
        hit = store.get([row["user_id"], row["channel"]])
        assert hit.found
        assert hit.values["n_orders"] == row["n"]
        assert hit.values["spend"] == pytest.approx(row["revenue"], rel=1e-12)
    assert store.get({"user_id": 1, "channel": "nope"}).found is False
    # the store key is the compact JSON of the key values (the serving log's entity column)
    meta = store.live_metadata()
    assert (meta.entity_keys, meta.key_types) == (["user_id", "channel"], ["int", "str"])


def test_killed_writer_leaves_old_version_live_and_resume_finishes(backend) -> None:  # type: ignore[no-untyped-def]
    config, _ = backend
    first = _run("materialize", "-c", config, "--as-of", AS_OF_A, "--json")
    assert first.returncode == 0, first.stderr
    v1 = json.loads(first.stdout)["version"]

    proc = subprocess.Popen(
        # 40 chunks of 25: plenty of time to kill it mid-run
        [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(config), "--as-of", AS_OF_B,
         "--chunk-size", "25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    loaded = load_config(config)
    store = open_store(loaded, loaded.artifact_dir)
    try:
        building = _wait_for_progress(store, proc, min_chunks=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        # readers see only the old version, with the old values
        assert store.live_metadata().version == v1
        expected_a = offline(config, SAMPLE_USERS, AS_OF_A)
        for uid, hit in zip(SAMPLE_USERS, store.get_many(SAMPLE_USERS), strict=True):
            assert hit.version == v1
            assert hit.values == expected_a[uid]
        # the abandoned version is recorded, with how far it got
        abandoned = {m.version: p for m, p in store.versions() if m.status == "building"}
        assert building in abandoned
        assert abandoned[building].chunks_done >= 30
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
    assert doc["resumed_chunks"] >= 30
    assert doc["as_of"] == "2026-07-01T00:00:00+00:00"
    assert "continuing version" in second.stderr
    store = open_store(loaded, loaded.artifact_dir)
    assert store.pointers() == {"live": building, "previous": v1}
    expected_b = offline(config, SAMPLE_USERS, AS_OF_B)
    for uid, hit in zip(SAMPLE_USERS, store.get_many(SAMPLE_USERS), strict=True):
        assert hit.version == building
        assert hit.values == expected_b[uid]
    assert store.live_metadata().entity_count == 1000


def test_redis_restart_between_runs_and_mid_run(project, redis_server, cli) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project, online=redis_online(redis_server))
    assert cli("materialize", "-c", config, "--as-of", AS_OF_A).exit_code == 0
    redis_server.restart()  # data is gone; the next run must work against the empty server
    result = cli("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert result.exit_code == 0, result.stderr
    loaded = load_config(config)
    store = open_store(loaded, loaded.artifact_dir)
    assert store.pointers() == {"live": result.json()["version"]}
    assert store.get(1).values == offline(config, [1], AS_OF_B)[1]

    # the server goes away in the middle of a run: exit 4, one line, nothing switched
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(config), "--as-of", AS_OF_A,
         "--chunk-size", "25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_progress(store, proc, min_chunks=1)
        redis_server.stop()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, err
    assert err.startswith("error: online store redis://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1
    assert "materialized" not in out
    redis_server.start()
    assert cli("materialize", "-c", config, "--as-of", AS_OF_A).exit_code == 0


def test_wrong_password_and_unreachable_exit_4(
    project, redis_server_with_password, cli, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    server = redis_server_with_password
    monkeypatch.setenv("MLPIPE_TEST_REDIS_PASSWORD", "wrong-pw-123")
    online_cfg = {
        "type": "redis",
        "url": server.url_without_password,
        "password": "${MLPIPE_TEST_REDIS_PASSWORD}",
    }
    config = write_config(project, online=online_cfg)
    for args in ([], ["--check-freshness", "--max-age", "1h"], ["--rollback"]):
        result = cli("materialize", "-c", config, *args)
        assert result.exit_code == 4, result.stderr
        assert "rejected the credentials" in result.stderr
        assert "wrong-pw-123" not in result.stderr + result.stdout
        assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("MLPIPE_TEST_REDIS_PASSWORD", "s3cret-pw")
    assert cli("materialize", "-c", config, "--as-of", AS_OF_A).exit_code == 0
    server.stop()
    result = cli("materialize", "-c", config)
    assert result.exit_code == 4
    assert "unreachable" in result.stderr
    assert "s3cret-pw" not in result.stderr


def test_rollback_freshness_and_artifact(project, cli) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project)
    nothing = cli("materialize", "-c", config, "--check-freshness", "--max-age", "1h", "--json")
    assert nothing.exit_code == 1
    assert nothing.json()["version"] is None
    assert cli("materialize", "-c", config, "--rollback").exit_code == 2

    old = cli("materialize", "-c", config, "--as-of", AS_OF_A, "--json").json()
    stale = cli("materialize", "-c", config, "--check-freshness", "--max-age", "1h", "--json")
    assert stale.exit_code == 1
    assert stale.json()["ok"] is False
    assert stale.json()["version"] == old["version"]
    new = cli("materialize", "-c", config, "--json").json()  # as of now
    fresh = cli("materialize", "-c", config, "--check-freshness", "--max-age", "1h", "--json")
    assert fresh.exit_code == 0
    assert fresh.json()["ok"] is True
    assert fresh.json()["age_seconds"] < 3600

    back = cli("materialize", "-c", config, "--rollback", "--json")
    assert back.exit_code == 0
    assert back.json()["live"]["version"] == old["version"]
    assert online(config, [1])[1].values == offline(config, [1], AS_OF_A)[1]
    assert cli("materialize", "-c", config, "--rollback").exit_code == 0
    assert online(config, [1])[1].version == new["version"]

    # artifacts: content (as-of, entity count, features, feature hash) is hashed, wall-clock
    # time and the store's version id are not, so the same inputs give the same content hash
    listed = cli("artifacts", "list", "materialization", "-c", config, "--json").json()
    assert len(listed["artifacts"]) == 2
    again = cli("materialize", "-c", config, "--as-of", AS_OF_A, "--allow-older", "--json").json()
    assert again["artifact_version"] == old["artifact_version"]
    artifact_dir = load_config(config).artifact_dir
    manifest_dir = artifact_dir / "churn" / "materialization" / old["artifact_version"]
    doc = json.loads((manifest_dir / "materialization.json").read_text())
    assert doc["as_of"] == "2026-04-01T00:00:00+00:00"
    assert doc["entity_count"] == old["entity_count"]
    assert doc["feature_hash"] == old["feature_hash"]
    assert doc["features"] == NAMES
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    assert "finished_at" in manifest
    assert "finished_at" not in doc


def test_feature_ttl_enforced_on_read(project, cli, sample_data_dir) -> None:  # type: ignore[no-untyped-def]
    # ttl chosen so that, read now, entities whose last order before the as-of is older
    # than mid-June have expired while later ones have not
    now = datetime.now(UTC)
    ttl_days = (now - datetime(2026, 6, 15, tzinfo=UTC)).days
    config = write_config(project, orders_ttl=f"{ttl_days}d")
    result = cli("materialize", "-c", config, "--as-of", AS_OF_B, "--json")
    assert result.exit_code == 0, result.stderr
    cutoff = datetime(2026, 7, 1, tzinfo=UTC)
    last = (
        pl.read_parquet(sample_data_dir / "orders.parquet")
        .filter(pl.col("order_ts") < cutoff)
        .group_by("user_id")
        .agg(pl.col("order_ts").max())
    )
    last_order = dict(last.iter_rows())
    ttl = timedelta(days=ttl_days)
    users = sorted(last_order)[:60]
    expected = offline(config, users, AS_OF_B)
    got = online(config, users)
    orders_features = [f["name"] for f in FEATURES if f["source"] == "orders"]
    defaults = {f["name"]: f.get("default") for f in FEATURES}
    seen = {"expired": 0, "fresh": 0}
    for uid in users:
        hit, want = got[uid], expected[uid]
        assert hit.found
        e = last_order[uid]
        if cutoff - e > ttl:  # already stale at the as-of: the engine gave defaults
            assert hit.expired == []
            assert hit.values == want
        elif datetime.now(UTC) - e > ttl:  # fresh at the as-of, expired by now
            seen["expired"] += 1
            assert hit.status == "expired"
            assert hit.expired == orders_features
            assert {n: hit.values[n] for n in orders_features} == {
                n: defaults[n] for n in orders_features
            }
            assert hit.values["country"] == want["country"]
        else:
            seen["fresh"] += 1
            assert hit.expired == []
            assert hit.values == want
    assert seen["expired"] > 0
    assert seen["fresh"] > 0


def test_usage_errors_exit_2(project, cli) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project)
    cases = [
        (["--rollback", "--as-of", AS_OF_A], "takes no"),
        (["--check-freshness"], "needs --max-age"),
        (["--max-age", "1h"], "only applies"),
        (["--check-freshness", "--rollback"], "cannot be combined"),
        (["--as-of", "yesterday-ish"], "not a timestamp"),
        (["--as-of", "2099-01-01T00:00:00Z"], "in the future"),
        (["--features", "nope"], "unknown feature 'nope'"),
        (["--check-freshness", "--max-age", "soon"], "--max-age"),
    ]
    for args, message in cases:
        result = cli("materialize", "-c", config, *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_features_subset_and_progress_on_tty(project, cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project)
    monkeypatch.setenv("MLPIPE_FORCE_TTY", "1")
    result = cli(
        "materialize", "-c", config, "--as-of", AS_OF_B, "--features", "country,total_orders"
    )
    assert result.exit_code == 0, result.stderr
    assert "materialized 1000 entities x 2 features" in result.stdout
    assert "/1,000 entities" in result.stderr  # the progress bar: written / total
    assert "materialize: 1,000 entities x 2 features in " in result.stderr  # the summary
    hit = online(config, [1])[1]
    assert list(hit.values) == ["country", "total_orders"]


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlpipe_cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait_for_progress(store, proc, *, min_chunks: int) -> str:  # type: ignore[no-untyped-def]
    """Poll the store until the subprocess has written ``min_chunks`` chunks of a new version."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the writer finished before it could be interrupted"
        for meta, progress in store.versions():
            if (
                meta.status == "building"
                and progress is not None
                and progress.chunks_done >= min_chunks
            ):
                return meta.version
        time.sleep(0.005)
    raise AssertionError("the writer made no progress within 60 s")


def test_resume_with_nothing_abandoned_is_a_usage_error(project, cli) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project)
    assert cli("materialize", "-c", config, "--as-of", AS_OF_A).exit_code == 0
    result = cli("materialize", "-c", config, "--resume")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no abandoned run to resume; run without --resume"
    loaded = load_config(config)
    assert (
        open_store(loaded, loaded.artifact_dir)
        .live_metadata()
        .as_of.isoformat()
        .startswith(AS_OF_A[:10])
    )


def test_resume_refuses_an_as_of_of_its_own(project, cli) -> None:  # type: ignore[no-untyped-def]
    config = write_config(project)
    result = cli("materialize", "-c", config, "--resume", "--as-of", AS_OF_B)
    assert result.exit_code == 2
    assert "--resume continues the newest abandoned run" in result.stderr
