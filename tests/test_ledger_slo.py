"""The run ledger, `mlpipe runs` and `mlpipe slo`: real command runs against the sample project,
real processes for concurrency and kill -9, and the Prometheus textfile read back with
prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mlpipe_cli.ledger import mask_args, read_runs, write_serving_snapshot
from mlpipe_cli.slo import histogram_quantile

AS_OF = "2026-03-01T00:00:00Z"


def _artifact_dir(config: Path) -> Path:
    return Path(yaml.safe_load(config.read_text())["artifact_dir"])


def _pipeline(config: Path) -> str:
    return yaml.safe_load(config.read_text())["pipeline"]


def _runs(config: Path, **kw):  # type: ignore[no-untyped-def]
    return read_runs(_artifact_dir(config), _pipeline(config), **kw)


def _with_slo(config: Path, slo: dict) -> Path:
    doc = yaml.safe_load(config.read_text())
    doc["slo"] = slo
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def test_each_run_is_recorded_with_exit_code_rows_and_versions(project, cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("validate", "-c", project).exit_code == 0
    assert cli("materialize", "-c", project, "--as-of", AS_OF).exit_code == 0
    assert (
        cli("transform", "-c", project, "--data", "nope.parquet", "--out", "x.parquet").exit_code
        == 3  # no transform published yet: an artifact error
    )

    runs = _runs(project)
    assert [r.command for r in runs] == ["validate", "materialize", "transform"]
    validate, materialize, transform = runs
    assert validate.status == "ok"
    assert validate.record["exit_code"] == 0
    assert validate.record["rows_in"] > 0
    assert validate.record["rows_failed"] == 0
    assert any(v.startswith("validation/") for v in validate.record["versions_written"])
    assert materialize.record["rows_out"] == 1000  # entities written
    assert materialize.record["as_of"].startswith("2026-03-01")
    assert materialize.record["switched_at"] is not None
    assert transform.status == "error"
    assert transform.record["exit_code"] == 3
    for run in runs:
        assert run.ended_at is not None
        assert run.ended_at >= run.started_at
        assert run.triggered_at == run.started_at  # no trigger given: the start


def test_runs_lists_json_when_piped_and_filters(project, cli) -> None:  # type: ignore[no-untyped-def]
    cli("validate", "-c", project)
    cli("artifacts", "list", "-c", project)
    listed = cli("runs", "-c", project)  # not a TTY: JSON
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert [r["command"] for r in doc["runs"]] == ["validate", "artifacts list"]
    only = json.loads(cli("runs", "-c", project, "--command", "validate").stdout)
    assert [r["command"] for r in only["runs"]] == ["validate"]
    bad = cli("runs", "-c", project, "--since", "1fortnight")
    assert bad.exit_code == 2
    assert "us, ms, s, m, h, d or w" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_secrets_are_masked_in_recorded_arguments() -> None:
    assert mask_args(["--password", "hunter2", "--token=abc", "redis://:pw@host:6379/0", "x"]) == [
        "--password",
        "***",
        "--token=***",
        "redis://:***@host:6379/0",
        "x",
    ]
    assert mask_args(["redis://user:pw@h/1"]) == ["redis://user:***@h/1"]


def test_concurrent_runs_each_write_their_own_record(project) -> None:  # type: ignore[no-untyped-def]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mlpipe_cli", "artifacts", "list", "-c", str(project)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    runs = _runs(project)
    assert len(runs) == 6
    assert len({r.record["run_id"] for r in runs}) == 6
    assert all(r.status == "ok" for r in runs)


def test_a_killed_run_counts_as_failed(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A run killed with SIGKILL never writes its end: once its process is gone it is 'killed'
    and breaks the availability objective."""
    script = (
        "import sys, time\n"
        "from mlpipe_cli import ledger\n"
        "with ledger.recording('materialize', ['materialize']):\n"
        f"    ledger.attach({str(_artifact_dir(project))!r}, {_pipeline(project)!r})\n"
        "    print('attached', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "attached"
    (running,) = _runs(project)
    assert running.status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    (killed,) = _runs(project)
    assert killed.status == "killed"
    assert killed.record["exit_code"] is None
    from mlpipe_cli.cli.main import run

    assert run(["slo", "-c", str(project), "--json"]) == 1


def test_freshness_breach_exits_1_with_one_line_per_breach(project, cli) -> None:  # type: ignore[no-untyped-def]
    _with_slo(project, {"freshness": {"max_delay": "1h"}})
    late = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert (
        cli("--triggered-at", late, "materialize", "-c", project, "--as-of", AS_OF).exit_code == 0
    )
    result = cli("slo", "-c", project)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: SLO breached: freshness:")
    assert "2.0" in lines[0]
    doc = json.loads(cli("slo", "-c", project, "--json").stdout)
    (fresh,) = [o for o in doc["objectives"] if o["objective"] == "freshness"]
    assert fresh["status"] == "breach"
    assert 7200 <= fresh["value"] < 7200 + 120


def test_freshness_is_measured_from_recorded_times_not_the_clock(project, cli) -> None:  # type: ignore[no-untyped-def]
    trigger = datetime.now(UTC) - timedelta(minutes=10)
    env_before = os.environ.get("MLPIPE_TRIGGERED_AT")
    os.environ["MLPIPE_TRIGGERED_AT"] = trigger.isoformat()
    try:
        assert cli("materialize", "-c", project, "--as-of", AS_OF).exit_code == 0
    finally:
        if env_before is None:
            del os.environ["MLPIPE_TRIGGERED_AT"]
        else:
            os.environ["MLPIPE_TRIGGERED_AT"] = env_before
    (run,) = _runs(project)
    switched = datetime.fromisoformat(run.record["switched_at"])
    expected = (switched - trigger).total_seconds()
    values = []
    for now in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=3)):
        doc = json.loads(
            cli("slo", "-c", project, "--json", "--now", now.isoformat(), "--window", "30d").stdout
        )
        (fresh,) = [o for o in doc["objectives"] if o["objective"] == "freshness"]
        values.append(fresh["value"])
        assert fresh["status"] == "ok"
    assert values[0] == values[1] == pytest.approx(expected, abs=1e-3)


def test_quality_objective_from_validate_runs(project, cli, tmp_path, sample_data_dir) -> None:  # type: ignore[no-untyped-def]
    import polars as pl

    orders = pl.read_parquet(sample_data_dir / "orders.parquet")
    bad = orders.with_columns(
        pl.when(pl.int_range(pl.len()) < 100)
        .then(-1.0)
        .otherwise(pl.col("revenue"))
        .alias("revenue")
    )
    bad.write_parquet(tmp_path / "bad.parquet")
    assert (
        cli(
            "validate", "-c", project, "--source", "orders", "--data", tmp_path / "bad.parquet"
        ).exit_code
        == 1
    )
    doc = json.loads(cli("slo", "-c", project, "--json").stdout)
    (quality,) = [o for o in doc["objectives"] if o["objective"] == "quality"]
    assert quality["status"] == "breach"
    assert quality["value"] == pytest.approx((orders.height - 100) / orders.height)
    (avail,) = [o for o in doc["objectives"] if o["objective"] == "availability"]
    assert avail["status"] == "ok"  # exit 1 is a data verdict: the run itself completed


def test_histogram_quantile_hand_worked() -> None:
    # 100 requests: 90 in (0, 1ms], 9 in (1, 2ms], 1 in (2, 5ms]
    buckets = [0.001, 0.002, 0.005]
    counts = [90, 9, 1, 0]
    # rank 99 falls at the end of the second bucket: 1ms + 1ms * (99 - 90) / 9 = 2ms
    assert histogram_quantile(0.99, buckets, counts) == pytest.approx(0.002)
    # rank 50 inside the first bucket: 0 + 1ms * 50 / 90
    assert histogram_quantile(0.5, buckets, counts) == pytest.approx(0.001 * 50 / 90)
    assert histogram_quantile(0.99, buckets, [0, 0, 0, 0]) is None
    assert histogram_quantile(0.99, buckets, [0, 0, 0, 5]) == 0.005  # only +Inf: last bound


def test_latency_from_server_snapshots_and_prometheus_textfile(project, cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    buckets = [0.001, 0.002, 0.005, 0.01]
    started = datetime.now(UTC) - timedelta(hours=1)
    artifact_dir, pipeline = _artifact_dir(project), _pipeline(project)
    # two server processes; merged: 180 fast, 15 in (2, 5ms], 5 in (5, 10ms]
    write_serving_snapshot(
        artifact_dir,
        pipeline,
        started_at=started,
        snapshot={"buckets": buckets, "counts": [90, 0, 5, 5, 0], "sum": 0.2},
    )
    time.sleep(0.001)  # a distinct start stamp for the second server's file
    write_serving_snapshot(
        artifact_dir,
        pipeline,
        started_at=datetime.now(UTC),
        final=True,
        snapshot={"buckets": buckets, "counts": [90, 0, 10, 0, 0], "sum": 0.2},
    )
    prom = tmp_path / "mlpipe.prom"
    result = cli("slo", "-c", project, "--json", "--prometheus", prom)
    doc = json.loads(result.stdout)
    (latency,) = [o for o in doc["objectives"] if o["objective"] == "latency"]
    # rank 198 of 200: inside (5, 10ms] (ranks 196..200): 5 + 5 * (198 - 195) / 5 = 8 ms
    assert latency["value"] == pytest.approx(8.0)
    assert latency["status"] == "breach"
    assert result.exit_code == 1
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    met = {s.labels["objective"]: s.value for s in families["mlpipe_slo_met"].samples}
    assert met["latency"] == 0
    values = {s.labels["objective"]: s.value for s in families["mlpipe_slo_value"].samples}
    assert values["latency"] == pytest.approx(8.0)
    assert {s.labels["objective"] for s in families["mlpipe_slo_threshold"].samples} >= {
        "freshness",
        "quality",
        "latency",
    }


def test_a_bad_triggered_at_in_the_environment_is_one_line_exit_2(project) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-m", "mlpipe_cli", "validate", "-c", str(project), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLPIPE_TRIGGERED_AT": "garbage"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "MLPIPE_TRIGGERED_AT" in proc.stderr


def test_python_api_runs_are_recorded_and_guarded(project, sample_data_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Pipeline method is one run: recorded in the ledger like the CLI's, and refused
    (exit-2 error, input untouched) when an output is one of its inputs."""
    import hashlib

    import mlpipe_cli as mlpipe

    p = mlpipe.Pipeline.from_yaml(project)
    p.validate(sources=["orders"])
    orders = tmp_path / "orders.parquet"
    orders.write_bytes((sample_data_dir / "orders.parquet").read_bytes())
    before = hashlib.sha256(orders.read_bytes()).hexdigest()
    with pytest.raises(mlpipe.MlpipeError, match="also an input"):
        p.validate(sources=["orders"], data=orders, out=orders, quarantine=tmp_path / "q.parquet")
    assert hashlib.sha256(orders.read_bytes()).hexdigest() == before
    runs = _runs(project)
    assert [r.command for r in runs] == ["validate", "validate"]
    assert runs[0].status == "ok"
    assert runs[0].record["rows_in"] > 0
    assert runs[1].status == "error"
    assert runs[1].record["exit_code"] == 2
