"""The server writes its latency histogram to the run ledger; `mlpipe slo` reads it back.

A REAL server (subprocess) serves N feature requests; its histogram reaches the ledger while
it runs (``serving.ledger_interval``) and, final, after SIGTERM; `mlpipe slo --json` then
reports the latency p99 from it. Oracles: the request count (exact) and the latencies the
client measured around each request (the server's own time per request is inside them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve import ServerPool, some_user_ids
from test_shadow import PIPELINE, make_project, shadow_base  # noqa: F401 (a fixture)


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def serve_records(artifacts: Path) -> list[dict[str, Any]]:
    runs = artifacts / PIPELINE / "runs"
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*-serve.json"))]


def test_server_latency_reaches_the_ledger_and_slo_reports_its_p99(
    tmp_path: Path,
    sample_data_dir: Path,
    shadow_base: dict,  # noqa: F811
    servers: Any,
    cli: Any,
) -> None:
    versions = shadow_base["versions"]
    config = make_project(
        tmp_path, sample_data_dir, shadow_base, serving={"ledger_interval": "200ms"}
    )
    artifacts = tmp_path / "artifacts"
    srv = servers(config, "--artifact", versions["live"], "--model", "none")
    ids = some_user_ids(sample_data_dir, 150)
    client_seconds = []
    for entity in ids[:120]:
        t0 = time.perf_counter()
        assert srv.get(f"/features/{entity}").status_code == 200
        client_seconds.append(time.perf_counter() - t0)
    for start in range(0, 30, 10):
        t0 = time.perf_counter()
        assert (
            srv.post("/features", {"entities": ids[120 + start : 130 + start]}).status_code == 200
        )
        client_seconds.append(time.perf_counter() - t0)
    for _ in range(5):  # not feature lookups: not in the latency objective
        assert srv.get("/healthz").status_code == 200

    deadline = time.monotonic() + 20  # a periodic snapshot while the server runs
    while True:
        records = serve_records(artifacts)
        if records and sum(records[0]["latency"]["counts"]) == 123:
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.05)
    (running,) = records
    assert running["status"] == "running"
    assert running["ended_at"] is None

    assert srv.stop() == 0
    (final,) = serve_records(artifacts)
    assert final["status"] == "ok"
    assert final["ended_at"] is not None
    latency = final["latency"]
    assert sum(latency["counts"]) == 123  # 120 GETs + 3 batches; /healthz is not counted
    assert len(latency["counts"]) == len(latency["buckets"]) + 1
    assert 0 < latency["sum"] <= sum(client_seconds)

    result = cli("slo", "-c", config, "--json")
    doc = json.loads(result.stdout)
    (objective,) = [o for o in doc["objectives"] if o["objective"] == "latency"]
    assert objective["status"] in ("ok", "breach")
    assert "over 123 requests" in objective["actual"]
    # the server's p99 lies below the client's slowest request plus one bucket's width
    client_ms = sorted(s * 1000 for s in client_seconds)
    assert 0 < objective["value"] <= max(client_ms) * 2.5 + 0.1
