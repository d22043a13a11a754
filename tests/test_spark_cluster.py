"""engine: spark on a real Spark standalone cluster: a master and two workers on loopback.

The cluster is built from the pyspark distribution's own launcher (``bin/spark-class``
running ``deploy.master.Master`` and ``deploy.worker.Worker``), each bound to 127.0.0.1 on
free ports, and torn down after. mlpipe runs as a separate process (its driver cannot share
this test process's JVM with the local-mode session of test_spark_engine.py), pointed at the
cluster by one config line, and must write the Polars engine's bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


class StandaloneCluster:
    """A Spark master and ``workers`` workers (1 core, 1 GB each) on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.ui_port = free_port()
        self.workers = workers
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _launch(self, name: str, *args: str) -> None:
        env = {
            **os.environ,
            "SPARK_HOME": str(_spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
        }
        log = (self.workdir / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [str(_spark_home() / "bin" / "spark-class"), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

    def start(self) -> None:
        self._launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(self.ui_port),
        )
        for i in range(self.workers):
            work = self.workdir / f"worker-{i}"
            work.mkdir()
            self._launch(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(work),
            )
        deadline = time.monotonic() + 180  # JVM start-up is slow on a busy 2-core machine
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited: see {self.workdir}/*.log")
            if self.alive_workers() == self.workers:
                return
            time.sleep(1)
        raise RuntimeError(f"cluster not up within 180 s: see {self.workdir}/*.log")

    def alive_workers(self) -> int:
        try:
            url = f"http://127.0.0.1:{self.ui_port}/json/"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(json.load(response).get("aliveworkers", 0))
        except OSError:
            return 0

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    running = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_training_set_on_a_standalone_cluster_equals_polars(
    cluster: StandaloneCluster, project: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(project.read_text())
    config["engine"] = "spark"  # the one line a user changes (plus where the cluster is)
    config["spark"] = {
        "master": cluster.url,
        "conf": {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.memory": "512m",
            "spark.cores.max": "2",
            "spark.ui.enabled": "false",
        },
    }
    project.write_text(yaml.safe_dump(config))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    base = [sys.executable, "-m", "mlpipe_cli", "training-set", "-c", str(project), "--json"]
    on_cluster = subprocess.run(
        [*base, "--out", str(tmp_path / "a" / "train.parquet")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    on_polars = subprocess.run(
        [*base, "--out", str(tmp_path / "b" / "train.parquet"), "--engine", "polars"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert on_polars.returncode == 0, on_polars.stderr[-3000:]
    a, b = json.loads(on_cluster.stdout), json.loads(on_polars.stdout)
    assert a["output_sha256"] == b["output_sha256"]
    assert (tmp_path / "a" / "train.parquet").read_bytes() == (
        tmp_path / "b" / "train.parquet"
    ).read_bytes()
    # the work ran on the cluster's executors, not in a local-mode driver
    finished = _finished_apps(cluster)
    assert [app["name"] for app in finished] == ["mlpipe-churn"]


def _finished_apps(cluster: StandaloneCluster) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{cluster.ui_port}/json/"
    with urllib.request.urlopen(url, timeout=5) as response:
        return list(json.load(response).get("completedapps", []))
