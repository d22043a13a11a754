"""The whole example pipeline on sample data, in order, through the CLI.

Each step consumes what the previous one published; a feature's training data compared with
its own reference profile must show no drift (a regression: the reference once profiled
out-of-fold target encodings, which made unchanged data look drifted).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl


def test_example_pipeline_end_to_end(cli, project: Path, tmp_path: Path) -> None:
    training = tmp_path / "training_set.parquet"
    features = tmp_path / "features.parquet"

    validated = cli("validate", "-c", project, "--save-profile", "--json")
    assert validated.exit_code == 0, validated.stderr

    built = cli("training-set", "-c", project, "--out", training, "--json")
    assert built.exit_code == 0, built.stderr
    assert pl.read_parquet(training).height == built.json()["rows"]

    fitted = cli("fit", "-c", project, "--data", training, "--json")
    assert fitted.exit_code == 0, fitted.stderr
    version = fitted.json()["version"]

    transformed = cli("transform", "-c", project, "--data", training, "--out", features)
    assert transformed.exit_code == 0, transformed.stderr
    assert pl.read_parquet(features).height == pl.read_parquet(training).height

    drift = cli("psi-report", "-c", project, "--current", training, "--artifact", version, "--json")
    assert drift.exit_code == 0, drift.stdout[-2000:]
    statuses = {f["column"]: f["status"] for f in drift.json()["features"]}
    assert statuses, "psi-report compared no features"
    assert set(statuses.values()) == {"stable"}, {
        k: v for k, v in statuses.items() if v != "stable"
    }

    materialized = cli("materialize", "-c", project, "--as-of", "2026-07-01T00:00:00Z", "--json")
    assert materialized.exit_code == 0, materialized.stderr

    verified = cli("artifacts", "verify", "--all", "-c", project, "--json")
    assert verified.exit_code == 0
    kinds = {r["kind"] for r in verified.json()["results"]}
    assert {"validation", "profile", "training-set", "transform", "materialization"} <= kinds
