"""`psi-report --skew` and `--compare` against real published transform artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.ops.skew import skew_check
from mlpipe_cli.sample_data import END, generate
from mlpipe_cli.transforms import load_transform, publish

COLUMNS = {
    "revenue": [
        {"type": "fill_null", "strategy": "median"},
        {"type": "log1p"},
        {"type": "standard"},
    ],
    "channel": [{"type": "onehot"}],
    "age": [{"type": "fill_null", "strategy": "mean"}, {"type": "minmax"}],
}
SINCE = ["--since", "400d", "--until", END.isoformat()]


def _orders(data_dir: Path) -> pl.DataFrame:
    orders = pl.read_parquet(data_dir / "orders.parquet")
    users = pl.read_parquet(data_dir / "users.parquet")
    return orders.join(users, on="user_id", how="left").select(
        "user_id", "order_ts", "revenue", "channel", "age"
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("skew")
    generate(root / "data", rows=6000, seed=11)
    df = _orders(root / "data")
    train = df.head(4000).select("revenue", "channel", "age")
    train.write_parquet(root / "train_a.parquet")
    train.with_columns(pl.col("revenue") * 3).write_parquet(root / "train_b.parquet")
    serve = df.tail(2000)
    serve.select("revenue", "channel", "age").write_parquet(root / "current.parquet")

    store = ArtifactStore(root / "artifacts", "churn")
    config = TransformConfig.model_validate({"columns": COLUMNS, "golden_rows": 3})
    v1 = publish(store, config, root / "train_a.parquet")[0].version.version
    v2 = publish(store, config, root / "train_b.parquet")[0].version.version
    t1 = load_transform(store, v1)

    # a serving log written by version 1 through the ONLINE path (transform_one)
    records = serve.select("revenue", "channel", "age").to_dicts()
    vectors = [t1.transform_one(r) for r in records]
    log = pl.DataFrame(
        {
            "served_at": serve.get_column("order_ts"),
            "endpoint": ["/features"] * serve.height,
            "entity": [f"[{u}]" for u in serve.get_column("user_id")],
            "transform_version": [v1] * serve.height,
            "store_version": pl.Series([None] * serve.height, dtype=pl.String),
            "cold_start": [False] * serve.height,
            **{f"raw.{c}": serve.get_column(c) for c in ("revenue", "channel", "age")},
            **{
                f"vec.{name}": pl.Series([v[i] for v in vectors], dtype=pl.Float64)
                for i, name in enumerate(t1.output_columns)
            },
            "prediction": pl.Series([None] * serve.height, dtype=pl.Float64),
        }
    )
    log_dir = root / "log"
    log_dir.mkdir()
    log.head(900).write_parquet(log_dir / "segment-20260601T000000-1-0.parquet")
    log.slice(900).write_parquet(log_dir / "segment-20260615T000000-1-1.parquet")
    cfg = root / "mlpipe.yaml"
    cfg.write_text(f"pipeline: churn\nartifact_dir: {root / 'artifacts'}\n")
    return {
        "root": root,
        "config": cfg,
        "v1": v1,
        "v2": v2,
        "log": log_dir,
        "frame": log,
        "store": store,
    }


def test_log_written_by_the_same_version_has_no_skew(env, cli):
    res = cli(
        "psi-report",
        "-c",
        env["config"],
        "--skew",
        "--serving-log",
        env["log"],
        "--artifact",
        env["v1"],
        *SINCE,
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["status"] == "passed"
    assert doc["rows"] == 2000
    assert doc["rows_mismatched"] == 0
    assert doc["log_transform_versions"] == {env["v1"]: 2000}
    assert {c["column"] for c in doc["columns"]} == {
        f"vec.{c}" for c in load_transform(env["store"], env["v1"]).output_columns
    }
    assert all(c["mismatches"] == 0 for c in doc["columns"])


def test_skew_catches_a_log_written_with_another_artifact_version(env, cli):
    # latest is v2 (fitted on revenue x3): the logged v1 vectors no longer match
    res = cli(
        "psi-report", "-c", env["config"], "--skew", "--serving-log", env["log"], *SINCE, "--json"
    )
    assert res.exit_code == 1
    doc = res.json()
    assert doc["transform_version"] == env["v2"]
    assert doc["rows_mismatched"] > 0
    by = {c["column"]: c for c in doc["columns"]}
    assert by["vec.revenue"]["mismatches"] > 1900  # nearly every row moves
    assert by["vec.revenue"]["max_abs_diff"] > 0.1
    assert by["vec.revenue"]["example_entity"].startswith("[")
    assert by["vec.channel__web"]["mismatches"] == 0  # same categories in both fits
    assert "training-serving skew" in res.stderr
    plain = cli("psi-report", "-c", env["config"], "--skew", "--serving-log", env["log"], *SINCE)
    assert plain.exit_code == 1
    assert "vec.revenue" in plain.stdout


def test_skew_tolerance_is_1e9(env, tmp_path):
    t1 = load_transform(env["store"], env["v1"])
    frame = env["frame"]
    tiny = frame.with_columns(pl.col("vec.age") + 1e-12)
    assert not skew_check(t1, tiny.lazy()).failed
    bumped = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 17)
        .then(pl.col("vec.age") + 1e-6)
        .otherwise(pl.col("vec.age"))
        .alias("vec.age")
    )
    report = skew_check(t1, bumped.lazy())
    assert report.failed
    assert report.rows_mismatched == 1
    [age] = [c for c in report.columns if c.column == "vec.age"]
    assert age.mismatches == 1
    assert age.example_entity == frame.get_column("entity")[17]
    assert age.max_abs_diff == pytest.approx(1e-6, rel=1e-3)
    # a served null where the batch path gives a number is a mismatch too
    nulled = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("vec.revenue"))
        .alias("vec.revenue")
    )
    assert skew_check(t1, nulled.lazy()).rows_mismatched == 1
    # a log without one of the transform's raw inputs cannot be checked: a failure
    report = skew_check(t1, frame.drop("raw.age").lazy())
    assert report.failed
    assert "raw.age" in report.problems[0]


def test_skew_needs_rows_and_a_serving_log(env, cli):
    res = cli(
        "psi-report",
        "-c",
        env["config"],
        "--skew",
        "--serving-log",
        env["log"],
        "--since",
        "1d",
        "--until",
        "2020-01-01T00:00:00Z",
    )
    assert res.exit_code == 2
    assert "no current rows" in res.stderr or "no serving-log rows" in res.stderr
    res = cli(
        "psi-report", "-c", env["config"], "--skew", "--current", env["root"] / "current.parquet"
    )
    assert res.exit_code == 2


def test_shadow_compare_flags_outputs_that_moved(env, cli, tmp_path):
    current = env["root"] / "current.parquet"
    same = cli(
        "psi-report",
        "-c",
        env["config"],
        "--compare",
        env["v1"],
        env["v1"],
        "--current",
        current,
        "--json",
    )
    assert same.exit_code == 0, same.stderr
    assert {f["psi"] for f in same.json()["features"]} == {0.0}
    html = tmp_path / "shadow.html"
    res = cli(
        "psi-report",
        "-c",
        env["config"],
        "--compare",
        env["v1"],
        env["v2"],
        "--current",
        current,
        "--json",
        "--html",
        html,
    )
    assert res.exit_code == 1
    doc = res.json()
    assert doc["profile"]["version"] == env["v1"]
    assert doc["current"]["version"] == env["v2"]
    status = {f["column"]: f["status"] for f in doc["features"]}
    assert status["vec.revenue"] == "drifted"
    assert {c for c, s in status.items() if s == "drifted"} == {"vec.revenue"}
    assert all(s == "stable" for c, s in status.items() if c != "vec.revenue")
    assert html.read_text().count('<tr class="feature"') == len(status)
    res = cli(
        "psi-report",
        "-c",
        env["config"],
        "--compare",
        env["v1"],
        env["v2"],
        "--serving-log",
        env["log"],
    )
    assert res.exit_code == 2


def test_current_batch_against_artifact_computes_transform_outputs(env, cli):
    """--current raw data + --artifact: vec.* features come from the transform's batch path."""
    res = cli(
        "psi-report",
        "-c",
        env["config"],
        "--artifact",
        env["v1"],
        "--current",
        env["root"] / "current.parquet",
        "--json",
    )
    doc = res.json()
    names = {f["column"] for f in doc["features"]}
    t1 = load_transform(env["store"], env["v1"])
    assert names == {f"raw.{c}" for c in ("revenue", "channel", "age")} | {
        f"vec.{c}" for c in t1.output_columns
    }
    assert all(f["status"] != "error" for f in doc["features"]), json.dumps(
        [f for f in doc["features"] if f["status"] == "error"]
    )[:500]
    # same distribution as training (later rows of the same sample): nothing drifted
    assert res.exit_code == 0, [(f["column"], f["psi"]) for f in doc["features"]]
    assert doc["current"]["rows"] == 2000


def test_batch_that_cannot_be_transformed_errors_only_its_features(env, cli, tmp_path):
    bad = tmp_path / "bad-dtype.parquet"
    pl.read_parquet(env["root"] / "current.parquet").with_columns(
        pl.col("age").cast(pl.String)
    ).write_parquet(bad)
    res = cli(
        "psi-report", "-c", env["config"], "--artifact", env["v1"], "--current", bad, "--json"
    )
    assert res.exit_code == 1
    by = {f["column"]: f for f in res.json()["features"]}
    assert by["raw.age"]["status"] == "error"
    assert "cannot be compared" in by["raw.age"]["message"]
    assert by["raw.revenue"]["status"] == "stable"
    assert by["raw.channel"]["status"] == "stable"
    vec = [f for c, f in by.items() if c.startswith("vec.")]
    assert vec
    assert all(f["status"] == "error" for f in vec)
    assert "transform outputs not computed" in res.stderr
