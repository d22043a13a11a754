"""End to end on the real pipeline: point-in-time features → fitted transform artifact (with its
reference profile) → `psi-report --artifact latest`. The sample data's drift fault (revenue ×10
in the last 21 days) must flag the revenue-derived features, raw and transformed, and nothing
else."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config import load_config
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.features import compute_features
from mlpipe_cli.sample_data import END, generate
from mlpipe_cli.transforms import publish

ROOT = Path(__file__).resolve().parents[1]
REVENUE_FEATURES = {"lifetime_value", "revenue_30d", "revenue_7d_mean"}


def _config(tmp: Path, data: Path) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())
    for name, source in doc["sources"].items():
        source["path"] = str(data / f"{name}.parquet")
    doc["artifact_dir"] = str(tmp / "artifacts")
    doc.pop("training_set", None)
    doc.pop("transforms", None)
    path = tmp / f"{data.name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _features(config_path: Path, data: Path) -> pl.DataFrame:
    """Every user's features as of the end of the sample period (what serving sees)."""
    config = load_config(config_path)
    users = pl.read_parquet(data / "users.parquet").select("user_id")
    spine = users.with_columns(pl.lit(END).dt.cast_time_unit("us").alias("as_of"))
    out = compute_features(config, spine, entity_keys=["user_id"], timestamp="as_of")
    return out.drop("user_id", "as_of")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    generate(tmp / "clean", rows=20_000, seed=7)
    generate(tmp / "drift", rows=20_000, seed=7, faults=("drift",))
    clean_cfg = _config(tmp, tmp / "clean")
    drift_cfg = _config(tmp, tmp / "drift")
    _features(clean_cfg, tmp / "clean").write_parquet(tmp / "clean_features.parquet")
    _features(drift_cfg, tmp / "drift").write_parquet(tmp / "drift_features.parquet")
    example = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())["transforms"]
    columns = {k: v for k, v in example["columns"].items() if k not in ("plan", "label_ts")}
    columns["last_product_id"][0]["table"] = str(tmp / "clean" / "product_embeddings.parquet")
    columns["plan"] = [{"type": "onehot"}]
    transform_config = TransformConfig.model_validate({"columns": columns})
    store = ArtifactStore(tmp / "artifacts", "churn")
    result, _ = publish(store, transform_config, tmp / "clean_features.parquet")
    return {"tmp": tmp, "config": clean_cfg, "version": result.version.version}


def test_drift_fault_flags_revenue_derived_features_raw_and_transformed(pipeline, cli):
    tmp = pipeline["tmp"]
    res = cli(
        "psi-report",
        "-c",
        pipeline["config"],
        "--artifact",
        "latest",
        "--current",
        tmp / "drift_features.parquet",
        "--json",
    )
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["profile"]["version"] == pipeline["version"]
    status = {f["column"]: f["status"] for f in doc["features"]}
    raw = {c for c in status if c.startswith("raw.")}
    vec = {c for c in status if c.startswith("vec.")}
    assert {c[4:] for c in raw} == {
        "total_orders",
        "lifetime_value",
        "avg_days_between_orders",
        "orders_30d",
        "revenue_30d",
        "revenue_7d_mean",
        "days_since_last_order",
        "last_product_id",
        "country",
        "plan",
        "age",
    }
    assert len(vec) > 16  # one-hot and embedding outputs included
    drifted = {c for c, s in status.items() if s == "drifted"}
    expected = {f"raw.{f}" for f in REVENUE_FEATURES} | {f"vec.{f}" for f in REVENUE_FEATURES}
    assert drifted == expected
    assert {s for c, s in status.items() if c not in expected} == {"stable"}
    # same rows, only revenue changed: every other feature is identical, PSI exactly 0
    others = [f for f in doc["features"] if f["column"] not in expected]
    assert {f["psi"] for f in others} == {0.0}


def test_clean_features_against_their_own_artifact_pass(pipeline, cli):
    res = cli(
        "psi-report",
        "-c",
        pipeline["config"],
        "--current",
        pipeline["tmp"] / "clean_features.parquet",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    assert {f["status"] for f in res.json()["features"]} == {"stable"}
