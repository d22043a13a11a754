"""`mlpipe export --format sklearn`: the joblib ColumnTransformer gives the same outputs as
`mlpipe transform` on the same data (missing values: null there, NaN here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler


@pytest.fixture
def fitted_project(tmp_path: Path, cli) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    n = 400
    emb = pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(20)],
            "vec": pl.Series(
                rng.normal(0, 1, (20, 3)).astype(np.float32), dtype=pl.Array(pl.Float32, 3)
            ),
        }
    )
    emb.write_parquet(tmp_path / "emb.parquet")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "a": pl.Series(rng.normal(5, 2, n)).set(pl.Series(rng.random(n) < 0.1), None),
            "b": rng.lognormal(1, 1, n),
            "c": pl.Series(rng.integers(0, 100, n), dtype=pl.Int32),
            "d": rng.normal(0, 1, n),
            "r": rng.normal(0, 1, n),
            "flag": rng.random(n) < 0.5,
            "city": pl.Series(
                rng.choice(["x", "y", "z", "w", "rare"], n, p=[0.4, 0.3, 0.2, 0.09, 0.01])
            ).set(pl.Series(rng.random(n) < 0.05), None),
            "tier": rng.choice(["t1", "t2", "t3"], n),
            "seg": rng.choice(["s1", "s2", "s3", "s4"], n),
            "ts": [start + timedelta(minutes=int(m)) for m in rng.integers(0, 500_000, n)],
            "since": [start - timedelta(hours=int(h)) for h in rng.integers(0, 5000, n)],
            # naive (UTC) instants across both 2026 DST changes, read on New York's wall clock
            "seen": [
                datetime(2026, 1, 1) + timedelta(minutes=int(m))
                for m in rng.integers(0, 500_000, n)
            ],
            "pid": pl.Series([f"p{i}" for i in rng.integers(0, 25, n)]).set(
                pl.Series(rng.random(n) < 0.05), None
            ),
            "y": rng.random(n) < 0.4,
        }
    )
    frame.write_parquet(tmp_path / "train.parquet")
    config = {
        "pipeline": "exp",
        "artifact_dir": str(tmp_path / "artifacts"),
        "transforms": {
            "target": "y",
            "columns": {
                "a": [{"type": "fill_null", "strategy": "mean"}, {"type": "standard"}],
                "b": [
                    {"type": "clip", "quantiles": [0.01, 0.95]},
                    {"type": "log1p"},
                    {"type": "minmax", "feature_range": [-1, 1], "clip": True},
                ],
                "c": [{"type": "robust"}],
                "d": [{"type": "log1p", "on_invalid": "shift"}],
                "r": [{"type": "standard", "on_inf": "clip", "on_null": "keep"}],
                "flag": [{"type": "passthrough"}],
                "city": [{"type": "onehot", "min_frequency": 0.05}],
                "tier": [{"type": "ordinal", "order": "frequency"}],
                "seg": [{"type": "target", "smooth": 5.0}],
                "ts": [
                    {
                        "type": "temporal",
                        "features": [
                            "hour",
                            "dow",
                            "month",
                            "is_weekend",
                            "hour_sin",
                            "dow_cos",
                            "month_sin",
                            "days_since",
                        ],
                        "reference": "since",
                    }
                ],
                "seen": [
                    {
                        "type": "temporal",
                        "timezone": "America/New_York",
                        "features": ["hour", "dow", "is_weekend", "hour_cos"],
                    }
                ],
                "pid": [
                    {
                        "type": "embedding",
                        "table": str(tmp_path / "emb.parquet"),
                        "key": "id",
                        "vector": "vec",
                        "unknown": "mean",
                    }
                ],
            },
        },
    }
    (tmp_path / "mlpipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("fit", "-c", tmp_path / "mlpipe.yaml", "--data", tmp_path / "train.parquet")
    assert result.exit_code == 0, result.stderr
    return {
        "tmp": tmp_path,
        "config": tmp_path / "mlpipe.yaml",
        "train": tmp_path / "train.parquet",
    }


def test_export_matches_transform(cli, fitted_project) -> None:  # type: ignore[no-untyped-def]
    tmp = fitted_project["tmp"]
    out = tmp / "prep.joblib"
    result = cli(
        "export",
        "-c",
        fitted_project["config"],
        "--artifact",
        "latest",
        "--format",
        "sklearn",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    outputs = result.json()["output_columns"]
    ct = joblib.load(out)
    assert isinstance(ct, ColumnTransformer)
    assert list(ct.get_feature_names_out()) == outputs
    # real sklearn estimators where sklearn has an equivalent
    kinds = {
        type(step).__name__
        for _, frozen, _ in ct.transformers_
        if hasattr(frozen, "estimator")
        for _, step in frozen.estimator.steps
    }
    assert {StandardScaler.__name__, MinMaxScaler.__name__, OrdinalEncoder.__name__} <= kinds

    # new data with unknown categories, unseen ids and nulls
    new = pl.read_parquet(fitted_project["train"]).with_columns(
        city=pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit("new-city")).otherwise("city"),
        pid=pl.when(pl.int_range(pl.len()) % 5 == 0).then(pl.lit("p999")).otherwise("pid"),
        # the value policy of `r`: ±inf clipped to the training range, null kept as missing
        r=pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(float("inf"))
        .when(pl.int_range(pl.len()) % 13 == 0)
        .then(float("-inf"))
        .when(pl.int_range(pl.len()) % 17 == 0)
        .then(None)
        .otherwise("r"),
    )
    new.write_parquet(tmp / "new.parquet")
    assert (
        cli(
            "transform",
            "-c",
            fitted_project["config"],
            "--data",
            tmp / "new.parquet",
            "--out",
            tmp / "t.parquet",
        ).exit_code
        == 0
    )
    expected = pl.read_parquet(tmp / "t.parquet").select(outputs).to_numpy().astype(np.float64)
    got = ct.transform(new.to_pandas())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert np.isnan(got[:, outputs.index("r")]).sum() == new["r"].null_count() > 0
    # a value the policy refuses: refused by the export too (`b` refuses missing values)
    with pytest.raises(ValueError, match=r"column 'b': 1 missing values and nothing fills them"):
        ct.transform(new.head(1).with_columns(b=pl.lit(None, pl.Float64)).to_pandas())
    with pytest.raises(ValueError, match=r"column 'b': ±inf is refused \(on_inf: error\)"):
        ct.transform(new.head(1).with_columns(b=pl.lit(float("inf"))).to_pandas())


def test_export_refits_nothing(cli, fitted_project) -> None:  # type: ignore[no-untyped-def]
    out = fitted_project["tmp"] / "prep.joblib"
    assert cli("export", "-c", fitted_project["config"], "--out", out).exit_code == 0
    ct = joblib.load(out)
    frame = pl.read_parquet(fitted_project["train"]).to_pandas()
    before = ct.transform(frame)
    ct.fit(frame.head(10))  # frozen: fitting on other data changes nothing
    np.testing.assert_array_equal(ct.transform(frame), before)
    onehot = [
        s
        for _, f, _ in ct.transformers_
        if hasattr(f, "estimator")
        for _, s in f.estimator.steps
        if hasattr(s, "transformer_list")
    ]
    assert isinstance(onehot[0].transformer_list[0][1], OneHotEncoder)


def test_export_usage_errors(cli, fitted_project) -> None:  # type: ignore[no-untyped-def]
    tmp = fitted_project["tmp"]
    result = cli(
        "export", "-c", fitted_project["config"], "--format", "onnx", "--out", tmp / "x.joblib"
    )
    assert result.exit_code == 2
    assert "sklearn" in result.stderr
    result = cli("export", "-c", fitted_project["config"], "--out", tmp / "x.pkl")
    assert result.exit_code == 2
    result = cli(
        "export", "-c", fitted_project["config"], "--artifact", "0099", "--out", tmp / "x.joblib"
    )
    assert result.exit_code == 3
