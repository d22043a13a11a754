"""`mlpipe fit` and `mlpipe transform` end to end: real Parquet files, real artifact store."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import run_mlpipe

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.errors import ArtifactError
from mlpipe_cli.transforms import load_transform

COLUMNS = {
    "total_orders": [{"type": "log1p"}, {"type": "standard"}],
    "revenue_7d_mean": [{"type": "fill_null", "strategy": "mean"}, {"type": "robust"}],
    "age": [{"type": "fill_null", "strategy": "median"}, {"type": "minmax", "clip": True}],
    "country": [{"type": "onehot", "min_frequency": 0.05}],
    "plan": [{"type": "target", "smooth": "auto"}],
    "label_ts": [
        {
            "type": "temporal",
            "features": ["hour_sin", "hour_cos", "dow", "days_since"],
            "reference": "signup_ts",
        }
    ],
    "last_product_id": [
        {
            "type": "embedding",
            "table": "EMB",
            "key": "product_id",
            "vector": "embedding",
            "unknown": "mean",
        }
    ],
    "email": [{"type": "drop"}],
}


def make_training_set(
    sample_dir: Path, path: Path, *, seed: int = 0, rows: int | None = None
) -> Path:
    """A training-set-shaped table built from the sample data (labels + users + numbers)."""
    labels = pl.read_parquet(sample_dir / "labels.parquet")
    users = pl.read_parquet(sample_dir / "users.parquet")
    frame = labels.join(users, on="user_id", how="left", maintain_order="left")
    if rows is not None:
        frame = frame.head(rows)
    rng = np.random.default_rng(seed)
    n = frame.height
    mean7 = rng.lognormal(3, 1, n)
    frame = frame.with_columns(
        total_orders=pl.Series(rng.poisson(8, n), dtype=pl.Int64),
        revenue_7d_mean=pl.Series(mean7).set(pl.Series(rng.random(n) < 0.3), None),
        last_product_id=pl.Series(rng.integers(1, 260, n), dtype=pl.Int64),
    )
    frame.write_parquet(path)
    return path


@pytest.fixture
def setup(tmp_path: Path, sample_data_dir: Path) -> dict[str, Path]:
    columns = json.loads(
        json.dumps(COLUMNS).replace("EMB", str(sample_data_dir / "product_embeddings.parquet"))
    )
    config = {
        "pipeline": "churn",
        "artifact_dir": str(tmp_path / "artifacts"),
        "transforms": {
            "target": "churned",
            "contract": {
                "churned": {"dtype": "bool"},
                "age": {"dtype": "int64", "nullable": True, "min": 0, "max": 130},
            },
            "columns": columns,
        },
    }
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config))
    train = make_training_set(sample_data_dir, tmp_path / "train.parquet")
    return {
        "config": path,
        "train": train,
        "tmp": tmp_path,
        "sample": sample_data_dir,
        "artifacts": tmp_path / "artifacts",
    }


def fit_ok(cli, setup, data: Path | None = None) -> dict:
    result = cli("fit", "-c", setup["config"], "--data", data or setup["train"], "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_fit_publishes_a_verified_artifact(cli, setup) -> None:
    doc = fit_ok(cli, setup)
    assert doc["created"] is True
    version = doc["version"]
    assert "country__other" in doc["output_columns"]
    assert "label_ts__hour_sin" in doc["output_columns"]
    assert "last_product_id__emb_15" in doc["output_columns"]
    assert "email" not in doc["input_columns"]
    store = ArtifactStore(setup["artifacts"], "churn")
    artifact = store.get("transform", version)
    files = set(artifact.manifest["files"])
    assert {
        "state.json",
        "schema.json",
        "golden.json",
        "golden.parquet",
        "profile.json",
        "embedding__last_product_id.parquet",
    } <= files
    manifest = artifact.manifest
    # resolved params: every default spelled out, no machine-specific path
    plan = manifest["params"]["columns"]["plan"][0]
    assert plan == {"type": "target", "smooth": "auto", "cv": 5}
    assert (
        manifest["params"]["columns"]["last_product_id"][0]["table"] == "product_embeddings.parquet"
    )
    assert manifest["inputs"]["rows"] == pl.read_parquet(setup["train"]).height
    schema = json.loads(artifact.file("schema.json").read_text())
    assert schema["input"]["label_ts"] == "Datetime(time_unit='us', time_zone='UTC')"
    assert [o["name"] for o in schema["output"]] == doc["output_columns"]
    profile = json.loads(artifact.file("profile.json").read_text())
    profiled = json.dumps(profile)
    assert '"raw.country"' in profiled
    assert '"vec.country__other"' in profiled
    # fitting again is idempotent
    again = fit_ok(cli, setup)
    assert again["version"] == version
    assert again["created"] is False


def test_fit_is_deterministic_across_thread_counts(setup) -> None:
    hashes = []
    for threads, name in (("1", "a1"), (None, "a2")):
        env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
        if threads:
            env["POLARS_MAX_THREADS"] = threads
        result = run_mlpipe(
            "fit",
            "-c",
            setup["config"],
            "--data",
            setup["train"],
            "--json",
            "--artifact-dir",
            setup["tmp"] / name,
            env=env,
        )
        assert result.exit_code == 0, result.stderr
        version = result.json()["version"]
        hashes.append(
            ArtifactStore(setup["tmp"] / name, "churn").get("transform", version).content_hash
        )
    assert hashes[0] == hashes[1]


def test_fit_fails_the_contract_with_exit_1(cli, setup) -> None:
    bad = pl.read_parquet(setup["train"]).with_columns(
        age=pl.when(pl.col("user_id") == 3).then(200).otherwise(pl.col("age"))
    )
    bad.write_parquet(setup["tmp"] / "bad.parquet")
    result = cli("fit", "-c", setup["config"], "--data", setup["tmp"] / "bad.parquet")
    assert result.exit_code == 1
    assert "age" in result.stderr
    assert "contract" in result.stderr
    wrong = pl.read_parquet(setup["train"]).with_columns(pl.col("total_orders").cast(pl.String))
    wrong.write_parquet(setup["tmp"] / "wrong.parquet")
    result = cli("fit", "-c", setup["config"], "--data", setup["tmp"] / "wrong.parquet")
    assert result.exit_code == 1
    assert "'total_orders' has dtype String" in result.stderr
    assert not (setup["artifacts"] / "churn" / "transform").exists() or not ArtifactStore(
        setup["artifacts"], "churn"
    ).versions("transform")


def test_transform_writes_outputs_equal_to_the_online_path(cli, setup) -> None:
    version = fit_ok(cli, setup)["version"]
    out = setup["tmp"] / "out" / "features.parquet"
    result = cli(
        "transform", "-c", setup["config"], "--data", setup["train"], "--out", out, "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["version"] == version
    written = pl.read_parquet(out)
    fitted = load_transform(ArtifactStore(setup["artifacts"], "churn"), version)
    # other columns (keys, label) are kept in front; inputs and dropped columns are replaced
    assert written.columns == ["user_id", "churned", *fitted.output_columns]
    source = pl.read_parquet(setup["train"])
    for i in range(0, source.height, 97):
        online = fitted.transform_one(source.row(i, named=True))
        batch = written.select(fitted.output_columns).row(i)
        np.testing.assert_allclose(
            np.array(online, dtype=float), np.array(batch, dtype=float), rtol=1e-12, atol=1e-12
        )


def test_transform_refuses_schema_mismatch_with_exit_3(cli, setup) -> None:
    version = fit_ok(cli, setup)["version"]
    out = setup["tmp"] / "o.parquet"
    missing = pl.read_parquet(setup["train"]).drop("country")
    missing.write_parquet(setup["tmp"] / "missing.parquet")
    result = cli(
        "transform", "-c", setup["config"], "--data", setup["tmp"] / "missing.parquet", "--out", out
    )
    assert result.exit_code == 3
    assert "'country'" in result.stderr
    assert version in result.stderr
    wrong = pl.read_parquet(setup["train"]).with_columns(pl.col("label_ts").cast(pl.String))
    wrong.write_parquet(setup["tmp"] / "wrong.parquet")
    result = cli(
        "transform", "-c", setup["config"], "--data", setup["tmp"] / "wrong.parquet", "--out", out
    )
    assert result.exit_code == 3
    assert "'label_ts'" in result.stderr
    assert version in result.stderr
    assert not out.exists()


def _tamper(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(edit(path.read_text()))


def test_tampered_state_is_refused_with_exit_3(cli, setup) -> None:
    version = fit_ok(cli, setup)["version"]
    state = setup["artifacts"] / "churn" / "transform" / version / "state.json"
    _tamper(state, lambda text: text.replace('"mean": ', '"mean": 1', 1))
    out = setup["tmp"] / "o.parquet"
    result = cli("transform", "-c", setup["config"], "--data", setup["train"], "--out", out)
    assert result.exit_code == 3
    assert "state.json" in result.stderr
    assert not out.exists()


def test_golden_example_mismatch_is_refused(setup, cli) -> None:
    """Even with consistent hashes, a state that no longer reproduces its golden outputs fails."""
    version = fit_ok(cli, setup)["version"]
    store = ArtifactStore(setup["artifacts"], "churn")
    artifact = store.get("transform", version)
    golden = json.loads(artifact.file("golden.json").read_text())
    golden["expected"][0][0] += 1e-6
    from mlpipe_cli.transforms.fit import GOLDEN_DATA, STATE_FILE
    from mlpipe_cli.transforms.fitted import FittedTransform

    fitted = FittedTransform(
        json.loads(artifact.file(STATE_FILE).read_text()),
        load_transform(store, version).tables,
        version,
    )
    with pytest.raises(ArtifactError, match="does not reproduce its golden example"):
        fitted.check_golden(pl.read_parquet(artifact.file(GOLDEN_DATA)), golden["expected"])


def test_old_version_still_reproduces_its_outputs(cli, setup) -> None:
    first = fit_ok(cli, setup)["version"]
    out1 = setup["tmp"] / "v1.parquet"
    assert (
        cli("transform", "-c", setup["config"], "--data", setup["train"], "--out", out1).exit_code
        == 0
    )
    newer_data = make_training_set(setup["sample"], setup["tmp"] / "train2.parquet", seed=9)
    second = fit_ok(cli, setup, newer_data)["version"]
    assert second != first
    out_latest = setup["tmp"] / "latest.parquet"
    out_old = setup["tmp"] / "old.parquet"
    assert (
        cli(
            "transform", "-c", setup["config"], "--data", setup["train"], "--out", out_latest
        ).exit_code
        == 0
    )
    assert (
        cli(
            "transform",
            "-c",
            setup["config"],
            "--data",
            setup["train"],
            "--out",
            out_old,
            "--artifact",
            first,
        ).exit_code
        == 0
    )
    assert pl.read_parquet(out_old).equals(pl.read_parquet(out1))
    assert not pl.read_parquet(out_latest).equals(pl.read_parquet(out1))


def test_fit_out_writes_cross_fitted_training_rows(cli, setup) -> None:
    out = setup["tmp"] / "train_out.parquet"
    result = cli("fit", "-c", setup["config"], "--data", setup["train"], "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "published transform" in result.stdout
    written = pl.read_parquet(out)
    fitted = load_transform(ArtifactStore(setup["artifacts"], "churn"))
    plain = fitted.transform_batch(pl.scan_parquet(setup["train"])).collect()
    # target encoding differs (out of fold), every other output is identical
    assert not written["plan"].equals(plain["plan"])
    assert written.drop("plan").equals(plain.drop("plan"))


def test_fit_usage_errors(cli, setup, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("pipeline: churn\n")
    result = cli("fit", "-c", empty, "--data", setup["train"])
    assert result.exit_code == 2
    assert "transforms" in result.stderr
    result = cli("fit", "-c", setup["config"])
    assert result.exit_code == 2
    assert "--data" in result.stderr
    result = cli(
        "transform",
        "-c",
        setup["config"],
        "--data",
        setup["train"],
        "--out",
        tmp_path / "x.parquet",
    )
    assert result.exit_code == 3
    assert "mlpipe fit" in result.stderr


def test_example_config_fits_a_training_set(
    cli, project: Path, sample_data_dir: Path, tmp_path: Path
) -> None:
    """The example config's transforms section fits the training-set columns it names."""
    labels = pl.read_parquet(sample_data_dir / "labels.parquet")
    users = pl.read_parquet(sample_data_dir / "users.parquet")
    rng = np.random.default_rng(1)
    n = labels.height
    frame = labels.join(
        users.select("user_id", "country", "plan", "age"), on="user_id", maintain_order="left"
    ).with_columns(
        total_orders=pl.Series(rng.poisson(5, n), dtype=pl.UInt32),
        lifetime_value=rng.lognormal(4, 1, n),
        avg_days_between_orders=rng.uniform(0, 999, n),
        orders_30d=pl.Series(rng.poisson(1, n), dtype=pl.UInt32),
        revenue_30d=rng.lognormal(2, 1, n),
        revenue_7d_mean=pl.Series(rng.lognormal(2, 1, n)).set(pl.Series(rng.random(n) < 0.5), None),
        days_since_last_order=rng.uniform(0, 999, n),
        last_product_id=pl.Series(rng.integers(1, 300, n), dtype=pl.Int64),
    )
    frame.write_parquet(tmp_path / "training_set.parquet")
    result = cli("fit", "-c", project, "--data", tmp_path / "training_set.parquet", "--json")
    assert result.exit_code == 0, result.stderr
    outputs = result.json()["output_columns"]
    assert outputs[:3] == ["total_orders", "lifetime_value", "avg_days_between_orders"]
    assert "country__US" in outputs
    assert "country__other" in outputs
    assert "label_ts__is_weekend" in outputs


def test_source_contracts_apply_to_training_columns(cli, setup) -> None:
    config = yaml.safe_load(setup["config"].read_text())
    config["sources"] = {
        "users": {
            "path": str(setup["sample"] / "users.parquet"),
            "columns": {
                "age": {"dtype": "int64", "nullable": True, "min": 13, "max": 120},
                "plan": {"dtype": "string", "allowed": ["free", "pro", "enterprise"]},
            },
        }
    }
    config["transforms"]["contract"] = {}
    config["transforms"]["source_contracts"] = {"users": ["age", "plan"]}
    setup["config"].write_text(yaml.safe_dump(config))
    fit_ok(cli, setup)
    bad = pl.read_parquet(setup["train"]).with_columns(plan=pl.lit("gold"))
    bad.write_parquet(setup["tmp"] / "bad.parquet")
    result = cli("fit", "-c", setup["config"], "--data", setup["tmp"] / "bad.parquet", "--json")
    assert result.exit_code == 1
    assert any("plan" in p for p in result.json()["problems"])
    config["transforms"]["source_contracts"] = {"users": ["email"]}
    setup["config"].write_text(yaml.safe_dump(config))
    result = cli("fit", "-c", setup["config"], "--data", setup["train"])
    assert result.exit_code == 2
    assert "no contract for column 'email'" in result.stderr


def test_transform_counts_what_the_policy_handled_and_refuses_inf(cli, setup) -> None:
    """NaN in a fill_null column is filled and counted; +inf (refused by default) fails the
    run with exit 1 naming the column and the count, and nothing is written."""
    fit_ok(cli, setup)
    source = pl.read_parquet(setup["train"])
    nan_rows = source.with_columns(
        pl.when(pl.int_range(pl.len()) < 7).then(float("nan")).otherwise(pl.col("revenue_7d_mean"))
        .alias("revenue_7d_mean")
    )  # fmt: skip
    nan_rows.write_parquet(setup["tmp"] / "nan.parquet")
    out = setup["tmp"] / "nan_out.parquet"
    ok = cli("transform", "-c", setup["config"], "--data", setup["tmp"] / "nan.parquet", "--out", out,
             "--json")  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    (column,) = [c for c in ok.json()["values"]["columns"] if c["column"] == "revenue_7d_mean"]
    assert column["nan"] == 7
    assert (
        pl.read_parquet(out)
        .select(pl.all().exclude("user_id", "churned"))
        .null_count()
        .sum_horizontal()
        .item()
        == 0
    )

    inf_rows = source.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(float("inf")).otherwise(pl.col("revenue_7d_mean"))
        .alias("revenue_7d_mean")
    )  # fmt: skip
    inf_rows.write_parquet(setup["tmp"] / "inf.parquet")
    refused = setup["tmp"] / "inf_out.parquet"
    bad = cli("transform", "-c", setup["config"], "--data", setup["tmp"] / "inf.parquet", "--out",
              refused)  # fmt: skip
    assert bad.exit_code == 1
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "revenue_7d_mean" in bad.stderr
    assert "3" in bad.stderr
    assert not refused.exists()
