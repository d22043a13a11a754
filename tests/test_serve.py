"""`mlpipe serve` end to end: the REAL server as a subprocess on a free port, against a real
SQLite store and a real redis-server, with a transform fitted by `mlpipe fit` and features
loaded by `mlpipe materialize` from the sample data.

Oracles: the point-in-time engine (`compute_features`) for raw values, the transform's Polars
batch path (`transform_batch`) for vectors, sklearn for predictions (tests/test_model.py),
exact counting for the feature log.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from conftest import EXAMPLE_CONFIG, REPO_ROOT, _repoint_paths, free_port, run_mlpipe

AS_OF = "2026-07-01T00:00:00Z"
AS_OF_DT = datetime(2026, 7, 1, tzinfo=UTC)
UNKNOWN = 987654321


# -- project set-up through the real commands --------------------------------------------


@pytest.fixture(scope="module")
def fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    return build_fitted_base(tmp_path_factory, sample_data_dir)


_FITTED: dict[Path, Path] = {}


def build_fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    """Sample data → training set (features engine) → `mlpipe fit`, once per process."""
    if sample_data_dir in _FITTED:
        return _FITTED[sample_data_dir]
    _FITTED[sample_data_dir] = base = _build_fitted_base(tmp_path_factory, sample_data_dir)
    return base


def _build_fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    from mlpipe_cli.cli.main import run
    from mlpipe_cli.config import load_config
    from mlpipe_cli.features.engine import compute_features
    from mlpipe_cli.io import read_parquet

    base = tmp_path_factory.mktemp("serve-base")
    config_path = write_config(base, sample_data_dir, base / "artifacts")
    config = load_config(config_path)
    spine = read_parquet(config.training_set.spine)
    training = compute_features(config, spine, entity_keys=["user_id"], timestamp="label_ts")
    training.write_parquet(base / "training_set.parquet")
    assert run(["fit", "-c", str(config_path), "-q"]) == 0
    return base


def write_config(
    root: Path,
    sample_data_dir: Path,
    artifact_dir: Path,
    *,
    online: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
    base: Path | None = None,
) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    _repoint_paths(config, sample_data_dir)
    config["artifact_dir"] = str(artifact_dir)
    config["transforms"]["data"] = str((base or root) / "training_set.parquet")
    config.pop("serving", None)
    if online is not None:
        config["online_store"] = online
    if serving is not None:
        config["serving"] = serving
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def make_project(
    tmp_path: Path,
    sample_data_dir: Path,
    fitted_base: Path,
    *,
    online: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
    materialize: bool = True,
) -> Path:
    """A project with the module's fitted transform copied in, materialized at AS_OF."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(fitted_base / "artifacts", artifacts, symlinks=True)
    config = write_config(
        tmp_path, sample_data_dir, artifacts, online=online, serving=serving, base=fitted_base
    )
    if materialize:
        materialize_store(config)
    return config


def materialize_store(config: Path) -> None:
    from mlpipe_cli.cli.main import run

    assert run(["materialize", "-c", str(config), "--as-of", AS_OF, "-q"]) == 0


# -- the server subprocess ------------------------------------------------------------------


class Server:
    """`python -m mlpipe_cli serve ...` on a free port; HTTP helpers; graceful stop."""

    def __init__(self, config: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(config),
             "--port", str(self.port), *args],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.stderr = ""

    def wait_up(self, timeout: float = 60) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stderr = self.proc.stderr.read()
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("server did not come up")

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, body: Any = None, content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return self.client.post(path, content=content)
        return self.client.post(path, json=body)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics").text)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr = self.proc.stderr.read()
        return self.proc.returncode


class ServerPool:
    """Starts servers for one test and kills any still running at the end."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(self, config: Path, *args: str) -> Server:
        server = Server(config, *args)
        self.started.append(server)
        return server.wait_up()

    def close(self) -> None:
        for server in self.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def read_log(log_dir: Path) -> pl.DataFrame:
    files = sorted(log_dir.glob("segment-*.parquet"))
    assert files, f"no segments in {log_dir}"
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")


# -- oracles --------------------------------------------------------------------------------


def offline_features(config_path: Path, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """What the point-in-time engine says each user's features are at AS_OF."""
    from mlpipe_cli.config import load_config
    from mlpipe_cli.features.engine import compute_features

    config = load_config(config_path)
    spine = pl.DataFrame(
        {"user_id": user_ids, "ts": [AS_OF_DT] * len(user_ids)},
        schema={"user_id": pl.Int64, "ts": pl.Datetime("us", "UTC")},
    )
    frame = compute_features(config, spine, entity_keys=["user_id"], timestamp="ts")
    return {row["user_id"]: row for row in frame.iter_rows(named=True)}


def batch_vector(artifacts: Path, features: dict[str, Any], training: Path) -> list[float]:
    """The transform's Polars batch path on a 1-row frame of the served raw features."""
    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.transforms import load_transform

    transform = load_transform(ArtifactStore(artifacts, "churn"))
    schema = pl.read_parquet_schema(training)
    row = {}
    for column in transform.input_columns:
        value = features[column]
        if column == "label_ts":
            value = datetime.fromisoformat(value)
        row[column] = pl.Series(column, [value], dtype=schema[column])
    out = transform.transform_batch(pl.DataFrame(row).lazy()).collect()
    return [out[c][0] for c in transform.output_columns]


def assert_close(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None
            assert y is None
        else:
            assert x == pytest.approx(y, rel=1e-9, abs=1e-9)


def some_user_ids(sample_data_dir: Path, n: int) -> list[int]:
    users = pl.read_parquet(sample_data_dir / "orders.parquet")["user_id"].unique().sort()
    return users.head(n).to_list()


def refuse_in_process(cli: Any, config: Path, *args: str) -> Any:
    """`mlpipe serve` in-process for cases that must fail BEFORE binding: the port given is
    held by another socket, so a server that wrongly got that far exits 2 instead of hanging."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        return cli("serve", "-c", config, "--port", busy.getsockname()[1], *args)


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_sqlite_every_endpoint_cold_start_and_sigterm_flushes_the_log(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, interface: str
) -> None:
    """The same app through both of its entry points (RSGI is the default, ASGI the option)."""
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"max_batch": 5, "cold_start": {"country": "US"}, "max_body_bytes": 4096,
                 "logging": {"flush_interval": "1h"}},
    )  # fmt: skip
    srv = servers(config, "--interface", interface)
    ids = some_user_ids(sample_data_dir, 3)
    offline = offline_features(config, ids)

    # GET /features/{id}: raw values == the offline engine; vector == the batch transform
    one = srv.get(f"/features/{ids[0]}")
    assert one.status_code == 200
    doc = one.json()
    assert doc["entity"] == ids[0]
    assert doc["cold_start"] is False
    for name, value in doc["features"].items():
        if name != "label_ts":  # request time, see below
            expected = offline[ids[0]][name]
            assert value == (pytest.approx(expected) if isinstance(expected, float) else expected)
    served_at = datetime.fromisoformat(doc["features"]["label_ts"])
    assert abs((datetime.now(UTC) - served_at).total_seconds()) < 60
    assert_close(
        doc["vector"],
        batch_vector(tmp_path / "artifacts", doc["features"], fitted_base / "training_set.parquet"),
    )
    transform_version = doc["transform_version"]
    from mlpipe_cli.artifacts import ArtifactStore

    assert transform_version == ArtifactStore(tmp_path / "artifacts", "churn").latest("transform")
    assert doc["as_of"].startswith("2026-07-01T00:00:00")
    assert doc["store_version"]

    # cold start: defaults from the feature config, serving.cold_start override, flagged
    cold = srv.get(f"/features/{UNKNOWN}").json()
    assert cold["cold_start"] is True
    assert cold["features"]["total_orders"] == 0  # feature default
    assert cold["features"]["days_since_last_order"] == 999
    assert cold["features"]["revenue_7d_mean"] is None  # no default configured
    assert cold["features"]["country"] == "US"  # serving.cold_start
    assert_close(
        cold["vector"],
        batch_vector(
            tmp_path / "artifacts", cold["features"], fitted_base / "training_set.parquet"
        ),
    )

    # POST /features: order kept, one result per entity, cold start per entity
    batch = srv.post("/features", {"entities": [ids[1], UNKNOWN, str(ids[2])]})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["entity"] for r in results] == [ids[1], UNKNOWN, ids[2]]
    assert [r["cold_start"] for r in results] == [False, True, False]
    assert results[0]["features"]["total_orders"] == offline[ids[1]]["total_orders"]

    # malformed requests: 4xx with a JSON error, never a traceback
    big = b'{"entities": [' + b"1," * 3000 + b"1]}"
    chunked = iter([b'{"entities": [', b"1," * 1500, b"1," * 1500, b"1]}"])  # no length
    bad = [
        (srv.post("/features", content=big), 413, "body_too_large"),
        (srv.post("/features", content=chunked), 413, "body_too_large"),
        (srv.post("/features", {"entities": list(range(6))}), 413, "batch_too_large"),
        (srv.post("/features", content=b"{not json"), 400, "invalid_json"),
        (srv.post("/features", {"entities": 5}), 400, "bad_request"),
        (srv.post("/features", {"entities": []}), 400, "bad_request"),
        (srv.post("/features", {"entities": [1], "extra": 1}), 400, "bad_request"),
        (srv.post("/features", [1, 2]), 400, "bad_request"),
        (srv.get("/features/abc"), 400, "bad_entity"),
        (srv.get("/features/1,2"), 400, "bad_entity"),
        (srv.post("/features", {"entities": [[1, 2]]}), 400, "bad_entity"),
        (srv.get("/nope"), 404, "not_found"),
        (srv.get("/features"), 405, "method_not_allowed"),
        (srv.post("/healthz", {}), 405, "method_not_allowed"),
        (srv.post("/predict", {"entity": ids[0]}), 404, "no_model"),
    ]
    for response, status, code in bad:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == code
        assert "Traceback" not in response.text

    # health, readiness, info, OpenAPI
    assert srv.get("/healthz").json() == {"status": "ok"}
    ready = srv.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["transform_version"] == transform_version
    info = srv.get("/info").json()
    assert "label_ts" in info["input_columns"]
    assert info["output_columns"]
    assert len(doc["vector"]) == len(info["output_columns"])
    assert info["vector_columns"] == info["output_columns"]  # the vector's names, by position
    spec = srv.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) >= {
        "/features/{entity_id}", "/features", "/predict", "/healthz", "/readyz", "/metrics",
        "/openapi.json",
    }  # fmt: skip

    # metrics: exact counts, sub-millisecond buckets
    m = srv.metrics()
    assert m['mlpipe_serve_requests_total{endpoint="/features/{entity_id}",code="200"}'] == 2
    assert m['mlpipe_serve_requests_total{endpoint="/features",code="200"}'] == 1
    assert m['mlpipe_serve_requests_total{endpoint="/features",code="413"}'] == 3
    assert m["mlpipe_serve_cold_starts_total"] == 2
    assert m["mlpipe_serve_entities_total"] == 5
    assert m["mlpipe_serve_store_errors_total"] == 0
    assert m["mlpipe_serve_log_rows_dropped_total"] == 0
    assert "mlpipe_serve_log_queue_depth" in m
    bucket = 'mlpipe_serve_request_duration_seconds_bucket{endpoint="/features/{entity_id}",le='
    # 2 served + 2 rejected (/features/abc, /features/1,2): every status is timed
    assert m[bucket + '"0.0001"}'] <= m[bucket + '"0.001"}'] <= m[bucket + '"+Inf"}'] == 4

    # SIGTERM: graceful, exit 0, every served entity in the log (flush_interval is 1h, so
    # only the shutdown flush can have written it)
    log_dir = tmp_path / "artifacts" / "churn" / "serving-logs"
    assert not list(log_dir.glob("segment-*.parquet"))
    assert srv.stop(signal.SIGTERM) == 0, srv.stderr
    assert f"listening on http://127.0.0.1:{srv.port}" in srv.stderr  # loopback by default
    log = read_log(log_dir)
    assert log.height == 5
    assert log["entity"].to_list() == [
        f"[{ids[0]}]",
        f"[{UNKNOWN}]",
        f"[{ids[1]}]",
        f"[{UNKNOWN}]",
        f"[{ids[2]}]",
    ]
    assert log["cold_start"].to_list() == [False, True, False, True, False]
    assert log["endpoint"].to_list() == ["/features/{entity_id}"] * 2 + ["/features"] * 3
    assert log["transform_version"].unique().to_list() == [transform_version]
    assert log["store_version"].unique().to_list() == [doc["store_version"]]
    assert log["prediction"].null_count() == 5
    assert log.schema["served_at"] == pl.Datetime("us", "UTC")
    assert log.schema["raw.total_orders"] == pl.Int64
    assert log.schema["raw.country"] == pl.String
    assert log.schema["raw.label_ts"] == pl.Datetime("us", "UTC")
    vec_cols = [c for c in log.columns if c.startswith("vec.")]
    assert vec_cols == [f"vec.{c}" for c in info["output_columns"]]
    assert all(log.schema[c] == pl.Float64 for c in vec_cols)
    first = log.row(0, named=True)
    assert_close([first[c] for c in vec_cols], doc["vector"])
    assert first["raw.lifetime_value"] == pytest.approx(doc["features"]["lifetime_value"])
    assert log.row(1, named=True)["raw.country"] == "US"

    # the drift engineer's psi-report reads the segments as they are
    report = run_mlpipe(
        "psi-report", "-c", config, "--serving-log", log_dir, "--since", "1h", "--json",
        "--min-rows", "1",
    )  # fmt: skip
    assert report.exit_code in (0, 1), report.stderr
    assert json.loads(report.stdout)["features"]


def test_redis_outage_gives_503_and_recovers_without_restart(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, redis_server: Any
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        online={"type": "redis", "url": redis_server.url, "timeout": "500ms"},
    )  # fmt: skip
    srv = servers(config)
    ids = some_user_ids(sample_data_dir, 2)
    before = srv.get(f"/features/{ids[0]}")
    assert before.status_code == 200
    assert before.json()["cold_start"] is False
    assert srv.get("/readyz").status_code == 200

    # concurrent GETs are coalesced into shared store calls; every client still gets its own
    # entity's answer (the same as the batch endpoint's)
    from concurrent.futures import ThreadPoolExecutor

    pool_ids = [*some_user_ids(sample_data_dir, 40), UNKNOWN, UNKNOWN + 1]
    reference = {
        r["entity"]: r for r in srv.post("/features", {"entities": pool_ids}).json()["results"]
    }

    def hammer(seed: int) -> list[tuple[int, dict[str, Any]]]:
        # single GETs (coalesced) interleaved with batch POSTs, which share the loop's Redis
        # connection with them
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            picks = [pool_ids[(seed * 7 + k * 13) % len(pool_ids)] for k in range(25)]
            out = []
            for k, u in enumerate(picks):
                out.append((u, client.get(f"/features/{u}").json()))
                if k % 5 == 0:
                    batch = picks[k : k + 3]
                    results = client.post("/features", json={"entities": batch}).json()
                    out.extend(zip(batch, results["results"], strict=True))
            return out

    with ThreadPoolExecutor(16) as executor:
        answers = [a for batch in executor.map(hammer, range(16)) for a in batch]
    assert len(answers) == 400 + 16 * 5 * 3
    for user, answer in answers:
        assert answer["entity"] == user
        assert answer["cold_start"] == reference[user]["cold_start"]
        expected = dict(reference[user]["features"], label_ts=answer["features"]["label_ts"])
        assert answer["features"] == expected
    m = srv.metrics()
    assert m["mlpipe_serve_coalesced_entities_total"] > m["mlpipe_serve_coalesced_calls_total"]

    redis_server.stop()
    for path in (f"/features/{ids[0]}", f"/features/{ids[1]}"):
        down = srv.get(path)
        assert down.status_code == 503
        assert down.json()["error"] == "store_unavailable"
        assert "Traceback" not in down.text
    batch = srv.post("/features", {"entities": ids})
    assert batch.status_code == 503
    assert batch.json()["error"] == "store_unavailable"
    ready = srv.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert srv.get("/healthz").status_code == 200  # alive, just not ready
    assert srv.metrics()["mlpipe_serve_store_errors_total"] >= 4

    # Redis comes back (empty: no persistence) and is materialized again: the same server
    # process recovers by itself and serves the new store version.
    redis_server.start()
    # reachable but empty: not ready (503 with a JSON reason), exactly like /features
    deadline = time.monotonic() + 10
    while True:
        empty = srv.get("/readyz")
        assert empty.status_code == 503, empty.text
        assert empty.json()["status"] == "not_ready"
        if "no live materialized version" in empty.json()["reason"]:
            break
        assert time.monotonic() < deadline, empty.text
        time.sleep(0.05)
    assert srv.get(f"/features/{ids[0]}").status_code == 503
    materialize_store(config)
    deadline = time.monotonic() + 10
    while srv.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "server did not recover"
        time.sleep(0.1)
    after = srv.get(f"/features/{ids[0]}")
    assert after.status_code == 200
    assert after.json()["features"] == {
        **before.json()["features"],
        "label_ts": after.json()["features"]["label_ts"],
    }
    assert after.json()["store_version"] != before.json()["store_version"]

    # a new live version the pinned transform cannot read: 503 store_incompatible, not ready;
    # a compatible version again: serving resumes, still without a restart
    from mlpipe_cli.cli.main import run

    assert run(["materialize", "-c", str(config), "--as-of", AS_OF, "--features",
                "total_orders,age", "-q"]) == 0  # fmt: skip
    deadline = time.monotonic() + 10
    while (bad := srv.get(f"/features/{ids[0]}")).status_code == 200:
        assert time.monotonic() < deadline, "the incompatible version was never noticed"
        time.sleep(0.1)
    assert bad.status_code == 503
    assert bad.json()["error"] == "store_incompatible"
    assert "lifetime_value" in bad.json()["message"]
    assert srv.get("/readyz").status_code == 503
    materialize_store(config)
    deadline = time.monotonic() + 10
    while srv.get(f"/features/{ids[0]}").status_code != 200:
        assert time.monotonic() < deadline, "did not recover from the incompatible version"
        time.sleep(0.1)
    assert srv.get("/readyz").status_code == 200
    assert srv.stop() == 0, srv.stderr


def post_growing_batches(srv: Any, ids: list[int], batches: int) -> int:
    """POST /features the first 50, 60, 70... of ``ids``; the entities served."""
    served = 0
    for i in range(batches):
        response = srv.post("/features", {"entities": ids[: 50 + 10 * i]})
        assert response.status_code == 200
        served += response.json()["count"]
    return served


def test_dropped_log_rows_are_counted_exactly(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"max_batch": 200, "logging": {"queue_rows": 3, "flush_interval": "1h"}},
    )  # fmt: skip
    srv = servers(config)
    ids = some_user_ids(sample_data_dir, 150)
    served = post_growing_batches(srv, ids, 8)
    m = srv.metrics()
    dropped = m["mlpipe_serve_log_rows_dropped_total"]
    assert dropped > 0
    assert m["mlpipe_serve_entities_total"] == served
    assert srv.stop() == 0, srv.stderr
    written = read_log(tmp_path / "artifacts" / "churn" / "serving-logs").height
    assert written + dropped == served


def test_sampled_log_rows_are_counted_exactly(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"max_batch": 200, "logging": {"sample_rate": 0.3}},
    )  # fmt: skip
    srv = servers(config)
    ids = some_user_ids(sample_data_dir, 150)
    served = post_growing_batches(srv, ids, 6)
    for user in ids[:100]:  # the generated single-entity path samples too
        assert srv.get(f"/features/{user}").status_code == 200
        served += 1
    m = srv.metrics()
    sampled_out = m["mlpipe_serve_log_rows_sampled_out_total"]
    assert m["mlpipe_serve_entities_total"] == served
    assert srv.stop() == 0, srv.stderr
    log = read_log(tmp_path / "artifacts" / "churn" / "serving-logs")
    assert log.height + sampled_out == served  # nothing dropped or failed here
    assert 0.15 * served < log.height < 0.45 * served  # ~30 % of 550, a 6-sigma band
    assert set(log["endpoint"]) == {"/features", "/features/{entity_id}"}
    assert f"{int(sampled_out)} sampled out (sample_rate 0.3)" in srv.stderr


@pytest.mark.parametrize("rate", [0, 1.5, "nan"])
def test_a_sample_rate_outside_0_1_is_a_config_error(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any, rate: object
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    doc = yaml.safe_load(config.read_text())
    doc.setdefault("serving", {})["logging"] = {"sample_rate": rate}
    config.write_text(yaml.safe_dump(doc))
    result = refuse_in_process(cli, config)
    assert result.exit_code == 2
    assert "sample_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_tampered_transform_artifact_refuses_to_start(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    transform_dir = next(p for p in (tmp_path / "artifacts" / "churn" / "transform").iterdir()
                         if p.name[0].isdigit())  # fmt: skip
    state = transform_dir / "state.json"
    state.chmod(0o644)
    state.write_text(state.read_text().replace('"mean"', '"mean" ', 1) + " ")
    port = free_port()
    result = run_mlpipe("serve", "-c", config, "--port", port, timeout=60)
    assert result.exit_code == 3
    assert "failed verification" in result.stderr
    assert "Traceback" not in result.stderr


def test_transform_needing_columns_the_store_lacks_refuses_to_start(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    # the store only has some features: the transform's inputs are not all online
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    from mlpipe_cli.cli.main import run

    assert run(["materialize", "-c", str(config), "--as-of", AS_OF, "--features",
                "total_orders,age", "-q"]) == 0  # fmt: skip
    result = refuse_in_process(cli, config)
    assert result.exit_code == 3
    assert "lifetime_value" in result.stderr
    assert "does not have" in result.stderr


def test_cold_start_value_the_transform_cannot_read_refuses_to_start(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base, serving={"cold_start": {"age": "old"}}
    )
    result = refuse_in_process(cli, config)
    assert result.exit_code == 3
    assert "rejects the online features" in result.stderr
    assert "'age'" in result.stderr


def test_unreachable_store_at_start_exits_4(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base, materialize=False,
        online={"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "200ms"},
    )  # fmt: skip
    result = run_mlpipe("serve", "-c", config, "--port", free_port(), timeout=60)
    assert result.exit_code == 4
    assert "Traceback" not in result.stderr


def test_two_workers_serve_and_flush_on_sigint(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any
) -> None:
    config = make_project(
        tmp_path, sample_data_dir, fitted_base,
        serving={"coalesce": False, "logging": {"flush_interval": "1h"}},  # the direct path
    )  # fmt: skip
    srv = servers(config, "--workers", "2")
    ids = some_user_ids(sample_data_dir, 40)
    for user in ids:
        assert srv.get(f"/features/{user}").status_code == 200
    assert srv.stop(signal.SIGINT) == 0, srv.stderr
    log = read_log(tmp_path / "artifacts" / "churn" / "serving-logs")
    assert sorted(log["entity"].to_list()) == sorted(f"[{u}]" for u in ids)


def test_port_in_use_exits_2(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    result = refuse_in_process(cli, config)
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1:" in result.stderr


def test_serve_help_has_an_example(cli: Any) -> None:
    result = cli("serve", "--help")
    assert result.exit_code == 0
    assert "Example: mlpipe serve" in result.stdout


def test_port_0_picks_a_free_port_and_the_listening_line_means_it_accepts(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    # scripts (the demo's smoke check, Makefiles) wait for this line and connect at once
    import re

    config = make_project(tmp_path, sample_data_dir, fitted_base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_cli", "serve", "-c", str(config), "--port", "0"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = None
        deadline = time.monotonic() + 60
        while base is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "serve exited before listening"
            match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
            if match:
                base = match.group(1)
                assert int(match.group(2)) > 0
        assert base is not None
        assert httpx.get(base + "/healthz", timeout=5).json() == {"status": "ok"}  # no retry
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
