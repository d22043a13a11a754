"""Choosing the engine: config key, --engine flag, loud refusals, pyspark never loaded for Polars.

These run without starting Spark (fast); the parity tests are in test_spark_engine.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def _set(project: Path, **keys: object) -> None:
    config = yaml.safe_load(project.read_text())
    config.update(keys)
    project.write_text(yaml.safe_dump(config))


def test_engine_key_is_validated(cli, project: Path) -> None:
    _set(project, engine="dask")
    result = cli("training-set", "-c", project, "--out", project.parent / "t.parquet")
    assert result.exit_code == 2
    assert "engine" in result.stderr
    assert "polars" in result.stderr


def test_spark_settings_are_strings_for_spark(project: Path) -> None:
    from mlpipe_cli.config import load_config

    _set(
        project,
        engine="spark",
        spark={
            "master": "spark://h:7077",
            "conf": {"spark.executor.cores": 4, "spark.dynamicAllocation.enabled": True},
        },
    )
    config = load_config(project)
    assert config.engine == "spark"
    assert config.spark.conf == {
        "spark.executor.cores": "4",
        "spark.dynamicAllocation.enabled": "true",
    }


def test_flag_overrides_the_config_engine(cli, project: Path, tmp_path: Path) -> None:
    # engine: spark in the config, a run Spark refuses (before its JVM starts), --engine
    # polars: runs
    _set(project, engine="spark")
    refused = cli("materialize", "-c", project, "--resume")
    assert refused.exit_code == 2
    assert "no abandoned run to resume" in refused.stderr
    done = cli(
        "materialize",
        "-c",
        project,
        "--as-of",
        "2026-07-01T00:00:00Z",
        "--engine",
        "polars",
        "--json",
    )
    assert done.exit_code == 0, done.stderr


def test_polars_engine_never_imports_pyspark(project: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mlpipe_cli.cli.main import run\n"
        f"code = run(['training-set', '-c', {str(project)!r}, '--out', "
        f"{str(tmp_path / 't.parquet')!r}, '-q'])\n"
        "assert code == 0, code\n"
        "loaded = [m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_engines_package_respects_the_layering() -> None:
    from tests.test_import_rules import violations

    assert violations(("engines",), ("mlpipe_cli.cli", "mlpipe_cli.ops", "mlpipe_cli.api")) == []
