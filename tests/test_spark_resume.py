"""`materialize --resume --engine spark`: an interrupted Spark run is continued in the same
version, never made live half-written, and ends with the Polars run's rows.

Interruptions are real: the driver process group SIGKILLed mid-write (a subprocess on a real
redis-server), a redis-server out of memory failing some tasks' writes, and a Ctrl-C (a
KeyboardInterrupt from the progress callback) while the driver writes a SQLite store. The
oracle is the Polars run on the same inputs into a second store (tests/test_spark_materialize.py
compares raw rows, decoded rows and metadata).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mlpipe_cli.config import load_config
from mlpipe_cli.online import open_store
from tests.test_spark_materialize import AS_OF, _assert_same_store
from tests.test_spark_materialize import _sample_project as _small_project

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _sample_project(root: Path, online: dict[str, Any], orders: int = 20_000) -> Path:
    """The sample project over ``orders`` orders (one user per 20): enough chunks to interrupt."""
    from mlpipe_cli.sample_data import generate

    if not (root / "data").exists():
        generate(root / "data", rows=orders, seed=11)
    return _small_project(root, online)


def _materialize(config: Path, engine: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    from mlpipe_cli.ops.materialize import materialize
    from mlpipe_cli.ops.project import Project

    if not kwargs.get("resume"):
        kwargs["as_of"] = AS_OF
    return materialize(Project(config), engine=engine, **kwargs)


def _building(config: Path) -> list[str]:
    store = open_store(load_config(config), config.parent)
    try:
        return [meta.version for meta, _ in store.versions() if meta.status == "building"]
    finally:
        store.close()


def _abandoned(config: Path) -> bool:
    from mlpipe_cli.online.base import owner_alive

    store = open_store(load_config(config), config.parent)
    try:
        return any(not owner_alive(p) for _, p in store.versions() if p is not None)
    finally:
        store.close()


def _live(config: Path) -> str | None:
    store = open_store(load_config(config), config.parent)
    try:
        meta = store.live_metadata()
        return None if meta is None else meta.version
    finally:
        store.close()


def test_resume_after_the_driver_was_killed_mid_write(
    spark: object, tmp_path: Path, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """A `mlpipe materialize --engine spark -q` process group is killed once its tasks
    recorded some chunks; --resume continues that version, keeps those chunks, and the
    store then holds the Polars run's rows."""
    stores = [
        {"type": "redis", "url": redis_server.url, "key_prefix": f"k:{engine}", "chunk_size": 3}
        for engine in ("polars", "spark")
    ]
    on_polars = _sample_project(tmp_path, stores[0])
    on_spark = _sample_project(tmp_path, stores[1])
    _materialize(on_polars, "polars")
    client = redis_server.client()

    command = [sys.executable, "-m", "mlpipe_cli", "materialize", "-c", str(on_spark)]
    command += ["--as-of", AS_OF, "--engine", "spark", "-q"]
    killed = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # its JVM's log file too (never removed)
    )
    recorded = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and killed.poll() is None:
            ledgers = list(client.scan_iter(match="k:spark:spark-ledger:*"))
            recorded = client.hlen(ledgers[0]) - 1 if ledgers else 0  # less the partitions
            if recorded >= 3:
                break
            time.sleep(0.005)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)  # the driver, its JVM and Python workers
        killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert recorded >= 3
    # -q: the JVM's start-up and the tasks printed nothing either (their log is a file)
    assert killed.stderr.read() == b""  # type: ignore[union-attr]
    (abandoned,) = _building(on_spark)
    assert _live(on_spark) is None  # nothing half-written went live
    # the killed driver's Python workers (their own process group) may write on until they
    # notice; until then the run is not abandoned, and --resume says so
    while not _abandoned(on_spark):
        from mlpipe_cli.errors import UsageError

        with pytest.raises(UsageError, match=f"run {abandoned} is still being written"):
            _materialize(on_spark, "spark", resume=True)
        assert time.monotonic() < deadline
        time.sleep(0.5)

    result = _materialize(on_spark, "spark", resume=True)
    assert result.version == abandoned
    assert result.resumed_chunks >= recorded
    assert result.resumed_chunks < result.chunks
    assert _live(on_spark) == abandoned
    _assert_same_store(on_polars, on_spark)
    assert not list(client.scan_iter(match="k:spark:spark-ledger:*"))  # removed once live


def _spark_run_stopped_by_a_full_redis(
    root: Path,
    redis_server: Any,
    prefix: str,
) -> tuple[Path, Path]:
    """A Polars run into ``m:<prefix>-polars`` measures one version's bytes; redis-server gets
    room for about half of another, so the Spark run into ``m:<prefix>`` fails mid-write
    (out of memory) and leaves its version 'building'. Returns (Polars config, Spark config)."""
    from mlpipe_cli.errors import MlpipeError

    stores = [
        {"type": "redis", "url": redis_server.url, "key_prefix": f"m:{name}", "chunk_size": 20}
        for name in (f"{prefix}-polars", prefix)
    ]
    # 5,000 users (~1.3 MB a version): half a version is many chunks however much memory
    # the tasks' connections take (~0.2 MB; with 1,000 users sometimes no chunk fitted)
    on_polars = _sample_project(root, stores[0], orders=100_000)
    on_spark = _sample_project(root, stores[1], orders=100_000)
    client = redis_server.client()
    used = int(client.info("memory")["used_memory"])
    _materialize(on_polars, "polars")
    rows_bytes = int(client.info("memory")["used_memory"]) - used  # one version's rows
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + rows_bytes // 2))  # some chunks fit, not all
    try:
        with pytest.raises(MlpipeError, match=r"OOM|memory"):
            _materialize(on_spark, "spark")
    finally:
        client.config_set("maxmemory", "0")
    # the failure is reported only once no task writes any more (a task still running after
    # another's failure took the version's lease again, and --resume was refused for minutes)
    assert _abandoned(on_spark)
    return on_polars, on_spark


def test_resume_after_failed_writes_keeps_the_written_chunks(
    spark: object, tmp_path: Path, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """redis-server refuses writes (out of memory) while the tasks write: the job fails,
    the version stays 'building'. Once memory is back, --resume finishes that version."""
    on_polars, on_spark = _spark_run_stopped_by_a_full_redis(tmp_path, redis_server, "spark")
    client = redis_server.client()
    (abandoned,) = _building(on_spark)
    assert _live(on_spark) is None
    (ledger,) = client.scan_iter(match="m:spark:spark-ledger:*")
    written = client.hlen(ledger) - 1
    assert written > 0

    result = _materialize(on_spark, "spark", resume=True)
    assert result.version == abandoned
    assert result.resumed_chunks == written
    assert result.notes[0].startswith(f"resuming the abandoned run {abandoned}")
    _assert_same_store(on_polars, on_spark)


def test_resume_of_a_sqlite_store_written_by_the_driver(spark: object, tmp_path: Path) -> None:
    """Ctrl-C while the driver writes SQLite chunks: --resume skips the chunks the store
    recorded and writes the rest into the same version."""
    stores = [
        {"type": "sqlite", "path": str(tmp_path / f"{engine}.sqlite"), "chunk_size": 10}
        for engine in ("polars", "spark")
    ]
    on_polars = _small_project(tmp_path, stores[0])
    on_spark = _small_project(tmp_path, stores[1])
    _materialize(on_polars, "polars")
    seen = []

    def interrupt(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _materialize(on_spark, "spark", on_progress=interrupt)
    (abandoned,) = _building(on_spark)
    assert _live(on_spark) is None
    # a Polars --resume refuses a Spark run's version (its chunks are in another order)
    from mlpipe_cli.errors import UsageError

    with pytest.raises(UsageError, match="cannot resume"):
        _materialize(on_spark, "polars", resume=True)
    # and --chunk-size must be the run's
    with pytest.raises(UsageError, match="uses --chunk-size 10"):
        _materialize(on_spark, "spark", resume=True, chunk_size=7)
    result = _materialize(on_spark, "spark", resume=True)
    assert result.version == abandoned
    assert result.resumed_chunks == 3  # the third chunk was written, then interrupted
    _assert_same_store(on_polars, on_spark)


def test_resume_refuses_a_polars_run_before_starting_spark(tmp_path: Path) -> None:
    from mlpipe_cli.errors import UsageError

    store = {"type": "sqlite", "path": str(tmp_path / "p.sqlite"), "chunk_size": 25}
    config = _small_project(tmp_path, store)
    calls = []

    def interrupt(rows: int) -> None:
        calls.append(rows)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _materialize(config, "polars", on_progress=interrupt)
    with pytest.raises(UsageError, match="was written by the Polars engine; resume it with"):
        _materialize(config, "spark", resume=True)
    assert len(calls) == 1


def _change_every_revenue(config: Path) -> None:
    """Every order's revenue doubled: every entity's stored features change."""
    import polars as pl

    path = Path(load_config(config).sources["orders"].path)
    orders = pl.read_parquet(path)
    orders.with_columns(pl.col("revenue") * 2).write_parquet(path)


def test_a_sqlite_resume_refuses_rows_that_changed_since_the_interrupted_run(
    spark: object, tmp_path: Path
) -> None:
    """The driver skips the chunks the store counted; had the inputs changed, those chunks
    would hold stale rows. The run's rows hash is recorded, so the resume is refused, and a
    fresh run then stores what the Polars engine stores from the changed inputs."""
    from mlpipe_cli.errors import UsageError

    stores = [
        {"type": "sqlite", "path": str(tmp_path / f"{engine}.sqlite"), "chunk_size": 10}
        for engine in ("polars", "spark")
    ]
    on_polars = _small_project(tmp_path, stores[0])
    on_spark = _small_project(tmp_path, stores[1])
    seen: list[int] = []

    def interrupt(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _materialize(on_spark, "spark", on_progress=interrupt)
    (abandoned,) = _building(on_spark)
    _change_every_revenue(on_spark)
    with pytest.raises(UsageError, match="changed since the interrupted run"):
        _materialize(on_spark, "spark", resume=True)
    assert _live(on_spark) is None  # nothing half-written went live
    result = _materialize(on_spark, "spark")
    assert result.version != abandoned
    _materialize(on_polars, "polars")
    _assert_same_store(on_polars, on_spark)


def test_a_redis_resume_refuses_a_written_chunk_whose_rows_changed(
    spark: object, tmp_path: Path, redis_server
) -> None:  # type: ignore[no-untyped-def]
    """Tasks keep a chunk the ledger holds only if its keys and values hash the same; a
    written chunk that would now hold other rows stops the resume (rewriting it would leave
    removed keys in the version), and nothing goes live."""
    from mlpipe_cli.errors import UsageError

    _, on_spark = _spark_run_stopped_by_a_full_redis(tmp_path, redis_server, "ch")
    client = redis_server.client()
    (ledger,) = client.scan_iter(match="m:ch:spark-ledger:*")
    assert client.hlen(ledger) > 1  # some chunks were written and recorded
    _change_every_revenue(on_spark)
    with pytest.raises(UsageError, match="changed since the interrupted run"):
        _materialize(on_spark, "spark", resume=True)
    assert _live(on_spark) is None


def test_a_failed_job_is_reported_once_its_other_tasks_stopped(spark: Any, tmp_path: Path) -> None:
    """One task fails at once while another still works (as a task writing to the online
    store would, holding the version's lease): settled_on_failure re-raises only once no
    task of the job runs, and leaves the session's job group as it found it."""
    from mlpipe_cli.engines.spark.session import settled_on_failure

    ticks = tmp_path / "ticks"

    def task(index: int, rows: Any) -> Any:
        if index == 0:
            time.sleep(1.0)  # the other task is running by then
            raise ValueError("the first partition fails")
        for _ in range(300):  # 30 s unless Spark stops it
            with ticks.open("a") as out:
                out.write("x")
            time.sleep(0.1)
        yield from rows

    context = spark.sparkContext
    context.setJobGroup("the-callers-group", "the caller's own")
    try:
        with (
            pytest.raises(Exception, match="the first partition fails"),
            settled_on_failure(spark, "a test job"),
        ):
            context.parallelize(range(2), 2).mapPartitionsWithIndex(task).collect()
        assert context.getLocalProperty("spark.jobGroup.id") == "the-callers-group"
        assert context.getLocalProperty("spark.job.description") == "the caller's own"
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            context.setLocalProperty(key, None)
    assert ticks.exists()  # the second task ran
    seen = ticks.read_text()
    time.sleep(0.6)
    assert ticks.read_text() == seen  # and nothing of the failed job runs any more
