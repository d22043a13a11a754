"""`mlpipe promote` and a running `mlpipe serve` following the serving pointer.

The project of tests/test_shadow.py (three transform versions fitted by `mlpipe fit`, two
models registered, a SQLite store materialized by `mlpipe materialize`); the REAL server as a
subprocess; promotions by the REAL CLI while clients hammer the server from threads.

Oracles: the transforms' Polars batch path on the raw values each response carries (a
response's vector must be the one of the version it names), exact counting for failures.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import run_mlpipe
from test_serve import ServerPool, parse_metrics, read_log, some_user_ids
from test_shadow import PIPELINE, make_project, shadow_base  # noqa: F401 (a fixture)

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.transforms import load_transform


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def promote(config: Path, *args: str) -> Any:
    return run_mlpipe("promote", *args, "-c", config, "--json")


def test_promote_verifies_before_publishing_and_rolls_back(
    tmp_path: Path,
    sample_data_dir: Path,
    shadow_base: dict,  # noqa: F811
) -> None:
    versions, models = shadow_base["versions"], shadow_base["models"]
    config = make_project(tmp_path, sample_data_dir, shadow_base)
    store = ArtifactStore(tmp_path / "artifacts", PIPELINE)

    nothing = promote(config, "--rollback")
    assert nothing.exit_code == 2
    assert "no version was promoted yet" in nothing.stderr

    first = promote(config, versions["live"])  # default model: the one bound to it
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["transform_version"], doc["model_version"]) == (versions["live"], models["live"])
    assert doc["previous"] is None
    assert doc["created"] is True
    assert store.latest("serving") == doc["pointer_version"]
    p1 = doc["pointer_version"]

    again = promote(config, versions["live"])
    assert json.loads(again.stdout)["already_live"] is True
    assert store.latest("serving") == p1

    # a model bound to another transform: exit 3, nothing published
    wrong = promote(config, versions["changed"], "--model", models["live"])
    assert wrong.exit_code == 3
    assert "registered for transform" in wrong.stderr
    assert store.latest("serving") == p1
    assert len(store.versions("serving")) == 1

    second = promote(config, versions["changed"], "--model", models["changed"])
    assert second.exit_code == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["previous"] == p1
    p2 = doc["pointer_version"]
    assert store.latest("serving") == p2

    back = promote(config, "--rollback")
    assert back.exit_code == 0, back.stderr
    doc = json.loads(back.stdout)
    assert (doc["pointer_version"], doc["rollback"]) == (p1, True)
    assert (doc["transform_version"], doc["model_version"]) == (versions["live"], models["live"])
    assert store.latest("serving") == p1
    once_more = promote(config, "--rollback")
    assert once_more.exit_code == 2
    assert "was the first one promoted" in once_more.stderr

    # a tampered transform is refused (sha256), exit 3, the pointer stays
    victim = tmp_path / "artifacts" / PIPELINE / "transform" / versions["same"]
    target = next(p for p in sorted(victim.iterdir()) if p.name != "manifest.json" and p.is_file())
    target.chmod(target.stat().st_mode | stat.S_IWUSR)
    target.write_bytes(target.read_bytes() + b" ")
    tampered = promote(config, versions["same"], "--model", "none")
    assert tampered.exit_code == 3
    assert store.latest("serving") == p1


def test_a_running_server_follows_promote_and_rollback_without_a_failed_request(
    tmp_path: Path,
    sample_data_dir: Path,
    shadow_base: dict,  # noqa: F811
    servers: Any,
) -> None:
    versions, models = shadow_base["versions"], shadow_base["models"]
    config = make_project(
        tmp_path,
        sample_data_dir,
        shadow_base,
        serving={"follow_interval": "200ms", "logging": {"flush_interval": "1h"}},
    )
    assert promote(config, versions["live"]).exit_code == 0
    srv = servers(config, "--log-dir", str(tmp_path / "log"))  # no --artifact: follows
    ids = some_user_ids(sample_data_dir, 200)
    pairs = {(versions["live"], models["live"]), (versions["changed"], models["changed"])}

    stop = threading.Event()
    seen: list[tuple[str, str | None, str, dict, list]] = []
    problems: list[str] = []

    def client(seed: int) -> None:
        import httpx

        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30) as http:
            while not stop.is_set():
                entity = int(rng.choice(ids))
                kind = int(rng.integers(3))
                try:
                    if kind == 0:
                        r = http.get(f"/features/{entity}")
                    elif kind == 1:
                        r = http.post("/predict", json={"entity": entity})
                    else:
                        r = http.post("/predict", json={"entities": [entity, int(ids[0])]})
                except httpx.HTTPError as exc:
                    problems.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    problems.append(f"{r.status_code} {r.text[:200]}")
                    continue
                doc = r.json()
                results = doc.get("results", [doc])
                names = {res["transform_version"] for res in results} | {doc["transform_version"]}
                if len(names) != 1:
                    problems.append(f"several versions in one response: {names}")
                for res in results:
                    seen.append(
                        (
                            doc["transform_version"],
                            doc.get("model_version"),
                            str(kind),
                            res["features"],
                            res["vector"],
                        )
                    )

    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if srv.get("/readyz").json()["transform_version"] == version:
                return
            time.sleep(0.05)
        raise AssertionError(f"the server never switched to {version}: {srv.stderr}")

    try:
        time.sleep(1.0)
        assert promote(config, versions["changed"], "--model", models["changed"]).exit_code == 0
        wait_for(versions["changed"])
        time.sleep(1.0)
        assert promote(config, "--rollback").exit_code == 0
        wait_for(versions["live"])
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    metrics = parse_metrics(srv.get("/metrics").text)
    assert srv.stop() == 0

    assert problems == []  # 0 failed requests, each response names one version
    by_version: dict[str, list] = {}
    for transform_version, model_version, kind, features, vector in seen:
        if kind != "0":
            assert (transform_version, model_version) in pairs
        by_version.setdefault(transform_version, []).append((features, vector))
    assert set(by_version) == {versions["live"], versions["changed"]}
    assert metrics["mlpipe_serve_pointer_switches_total"] == 2
    assert metrics["mlpipe_serve_pointer_switch_failures_total"] == 0

    # oracle: each response's vector is the batch path of the version it names
    store = ArtifactStore(tmp_path / "artifacts", PIPELINE)
    schema = pl.read_parquet_schema(shadow_base["training"])
    for version, answers in by_version.items():
        transform = load_transform(store, version)
        sample = answers[:: max(1, len(answers) // 40)]
        frame = pl.DataFrame(
            [{c: f[c] for c in transform.input_columns} for f, _ in sample],
            schema={c: schema[c] for c in transform.input_columns},
        )
        expected = (
            transform.transform_batch(frame.lazy())
            .collect()
            .select(transform.output_columns)
            .to_numpy()
            .astype(np.float64)
        )
        served = np.array(
            [[np.nan if v is None else v for v in vec] for _, vec in sample], dtype=np.float64
        )
        np.testing.assert_allclose(served, expected, rtol=1e-9, atol=1e-9, equal_nan=True)

    # the log: every served entity accounted for, rows of both versions
    assert "unaccounted" not in srv.stderr
    assert "switched to serving pointer" in srv.stderr
    log = read_log(tmp_path / "log")
    assert set(log["transform_version"].unique()) == {versions["live"], versions["changed"]}
    assert log.height == metrics["mlpipe_serve_entities_total"]


def test_a_pointer_that_fails_verification_leaves_the_old_version_serving(
    tmp_path: Path,
    sample_data_dir: Path,
    shadow_base: dict,  # noqa: F811
    servers: Any,
) -> None:
    from mlpipe_cli.serving.pointer import pointer_document, publish_pointer

    versions = shadow_base["versions"]
    config = make_project(
        tmp_path, sample_data_dir, shadow_base, serving={"follow_interval": "200ms"}
    )
    assert promote(config, versions["live"], "--model", "none").exit_code == 0
    srv = servers(config)
    # the transform is damaged after it was promoted (promote itself would refuse it)
    victim = tmp_path / "artifacts" / PIPELINE / "transform" / versions["same"]
    for path in victim.iterdir():
        if path.name == "golden.json":
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
            path.write_bytes(path.read_bytes().replace(b"0", b"1", 1))
    store = ArtifactStore(tmp_path / "artifacts", PIPELINE)
    publish_pointer(
        store, pointer_document(versions["same"], None, None, None, store.latest("serving"))
    )
    deadline = time.monotonic() + 30
    while (
        parse_metrics(srv.get("/metrics").text).get("mlpipe_serve_pointer_switch_failures_total", 0)
        < 1
    ):
        assert time.monotonic() < deadline, "the failed switch was never counted"
        time.sleep(0.05)
    answer = srv.get(f"/features/{some_user_ids(sample_data_dir, 1)[0]}")
    assert answer.status_code == 200
    assert answer.json()["transform_version"] == versions["live"]
    assert srv.stop() == 0
    assert "not applied, still serving transform " + versions["live"] in srv.stderr


def test_the_follower_takes_the_loop_a_granian_worker_hands_the_app_before_it_runs(
    tmp_path: Path,
) -> None:
    """With --workers N, Granian calls __rsgi_init__(loop) (and so the follower's start)
    before that loop runs: the follower must still swap services on that loop, between
    requests, not on its watcher thread."""
    from types import SimpleNamespace

    import uvloop

    from mlpipe_cli.serving.follow import PointerFollower

    loop = uvloop.new_event_loop()
    app = SimpleNamespace(metrics=SimpleNamespace(counters={}), loop=loop)
    config = SimpleNamespace(pipeline="churn")
    follower = PointerFollower(app, config, tmp_path, current=None, interval=3600, grace=5)  # type: ignore[arg-type]
    try:
        follower.start()  # no loop is running in this thread, as in a worker's init
        assert follower._loop is loop
    finally:
        follower.stop()
        loop.close()
