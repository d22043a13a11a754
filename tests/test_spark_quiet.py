"""`mlpipe ... --engine spark -q` keeps stderr for mlpipe's one-line errors: the JVM that
pyspark starts (log4j's profile notice, the NativeCodeLoader and hostname WARNs, "Using
incubator modules") writes to a log file instead, removed when the run ends well.

Real subprocesses, each starting its own JVM (the in-process `spark` fixture would hide
exactly what is tested here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _run(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlpipe_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp)},  # where the JVM's log file goes
    )


def test_quiet_spark_run_prints_nothing_and_a_failure_one_line(
    project: Path, tmp_path: Path
) -> None:
    jvm_tmp = tmp_path / "tmp"
    jvm_tmp.mkdir()
    out = tmp_path / "train.parquet"
    done = _run("training-set", "-c", project, "--out", out, "--engine", "spark", "-q", tmp=jvm_tmp)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == ""
    assert pl.read_parquet(out).height > 0
    assert not list(jvm_tmp.glob("mlpipe-spark-driver-*.log"))  # a run that went well

    # a failure found by a Spark job (null spine times): exit 1, one line, nothing else
    config = yaml.safe_load(project.read_text())
    spine = pl.read_parquet(config["training_set"]["spine"])
    time_column = config["training_set"]["timestamp"]
    broken = spine.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col(time_column))
        .alias(time_column)
    )  # fmt: skip
    broken.write_parquet(tmp_path / "spine.parquet")
    config["training_set"]["spine"] = str(tmp_path / "spine.parquet")
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    nulls = broken.get_column(time_column).null_count()
    failed = _run(
        "training-set", "-c", project, "--out", tmp_path / "x.parquet", "--engine", "spark", "-q",
        tmp=jvm_tmp,
    )  # fmt: skip
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"error: spine column {time_column!r} has {nulls} null")
    lines = failed.stderr.splitlines()
    assert len(lines) <= 2, failed.stderr  # the error, and at most its hint
    assert all("WARN" not in line and "log4j" not in line for line in lines)
    assert not (tmp_path / "x.parquet").exists()


def test_a_jvm_that_cannot_start_says_why_in_one_line(project: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(project.read_text())
    config["spark"] = {"conf": {"spark.driver.memory": "lots"}}  # the JVM refuses -Xmxlots
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    failed = _run(
        "training-set", "-c", project, "--out", tmp_path / "x.parquet", "--engine", "spark", "-q",
        tmp=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 2
    (line,) = failed.stderr.splitlines()
    assert line.startswith("error: cannot start Spark (master local[2]): Invalid maximum heap")
    (log,) = tmp_path.glob("mlpipe-spark-driver-*.log")  # kept, and named in the hint
    assert f"the Spark driver's output is in {log}" in line
    assert "-Xmxlots" in log.read_text()
