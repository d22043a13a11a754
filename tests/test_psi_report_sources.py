"""psi-report on what users have: a raw source batch, and serving logs whose request-time
features differ from training by construction. The core functions, on real Parquet files,
with reference profiles built by the real `fit` (transform artifact) and `validate
--save-profile` code paths."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config import load_config
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.drift.report import (
    REQUEST_TIME_REASON,
    default_request_time_columns,
    drift_report,
    feature_groups,
    guess_source,
    request_time_features,
    scan_parts,
    serving_log_parts,
)
from mlpipe_cli.errors import ArtifactNotFound, UsageError
from mlpipe_cli.ops.profiles import save_profile, source_reference
from mlpipe_cli.sample_data import DRIFT_DAYS, END, generate
from mlpipe_cli.transforms import load_transform, publish

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = END - timedelta(days=DRIFT_DAYS)


def _config(tmp: Path, data: Path, *, distribution_columns: bool = True) -> Path:
    doc = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())
    for name, source in doc["sources"].items():
        source["path"] = str(data / f"{name}.parquet")
    if not distribution_columns:
        doc["sources"]["orders"]["distribution"]["columns"] = None
    doc["artifact_dir"] = str(tmp / "artifacts")
    doc.pop("transforms", None)
    doc["training_set"]["spine"] = str(data / "labels.parquet")
    path = tmp / f"{data.name}-{int(distribution_columns)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _split_orders(data: Path, out: Path, *, last_days: bool) -> Path:
    orders = pl.read_parquet(data / "orders.parquet")
    keep = pl.col("order_ts") >= CUTOFF if last_days else pl.col("order_ts") < CUTOFF
    orders.filter(keep).write_parquet(out)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sources")
    generate(tmp / "clean", rows=6_000, seed=5)
    generate(tmp / "drift", rows=6_000, seed=5, faults=("drift",))
    config_path = _config(tmp, tmp / "clean")
    config = load_config(config_path)
    store = ArtifactStore(tmp / "artifacts", config.pipeline)
    reference = _split_orders(tmp / "clean", tmp / "orders_ref.parquet", last_days=False)
    save_profile(store, config, "orders", reference)  # what `validate --save-profile` does
    # a transform artifact (with its profile) fitted on a small training frame
    rng = np.random.default_rng(1)
    n = 2_000
    start = datetime(2026, 1, 1, tzinfo=UTC)
    train = pl.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "country": rng.choice(["US", "DE", "JP"], n, p=[0.6, 0.35, 0.05]),
            "label_ts": [start + timedelta(hours=int(h)) for h in rng.integers(0, 24 * 180, n)],
        }
    ).with_columns(pl.col("label_ts").dt.cast_time_unit("us"))
    train.write_parquet(tmp / "train.parquet")
    transform_config = TransformConfig.model_validate(
        {
            "columns": {
                "amount": [{"type": "log1p"}, {"type": "standard"}],
                "country": [{"type": "onehot"}],
                "label_ts": [
                    {
                        "type": "temporal",
                        "features": ["hour_sin", "hour_cos", "dow_sin", "is_weekend"],
                    }
                ],
            }
        }
    )
    result, _ = publish(store, transform_config, tmp / "train.parquet")
    return {
        "tmp": tmp,
        "config": config,
        "store": store,
        "train": train,
        "transform": load_transform(store, result.version.version),
    }


def _transform_profile(env) -> dict:
    from mlpipe_cli.drift import read_profile

    return read_profile(
        env["store"].get("transform", env["transform"].version).file("profile.json")
    )


# ----------------------------------------------------------------------------- --source


def test_raw_source_batch_against_its_validation_profile(env):
    tmp, config, store = env["tmp"], env["config"], env["store"]
    profile, info, features, exclude = source_reference(config, store, "orders")
    assert info["data_source"] == "orders"
    assert info["kind"] == "profile"
    assert not Path(info["path"]).is_absolute()
    # sources.orders.distribution.columns, in the profile's column order
    assert features == ["revenue", "product_id", "channel"]
    assert exclude == {}
    clean = _split_orders(tmp / "clean", tmp / "orders_clean_late.parquet", last_days=True)
    ok = drift_report(
        profile, scan_parts([clean]), default_features=features, exclude=exclude, profile_info=info
    )
    assert not ok.failed
    assert {f.column for f in ok.features} == {"revenue", "channel", "product_id"}
    drifted = _split_orders(tmp / "drift", tmp / "orders_drift_late.parquet", last_days=True)
    bad = drift_report(
        profile,
        scan_parts([drifted]),
        default_features=features,
        exclude=exclude,
        profile_info=info,
    )
    assert [f.column for f in bad.failed] == ["revenue"]


def test_source_without_distribution_columns_excludes_identifiers(env):
    config = load_config(_config(env["tmp"], env["tmp"] / "clean", distribution_columns=False))
    profile, info, features, exclude = source_reference(config, env["store"], "orders")
    # order_id (the primary key) and user_id (the entity key): new orders always have higher
    # ids, so their "drift" says nothing
    assert exclude == {"order_id": "identifier column", "user_id": "identifier column"}
    drifted = _split_orders(env["tmp"] / "drift", env["tmp"] / "d2.parquet", last_days=True)
    report = drift_report(
        profile,
        scan_parts([drifted]),
        default_features=features,
        exclude=exclude,
        profile_info=info,
    )
    status = {f.column: f.status for f in report.features}
    assert status["order_id"] == status["user_id"] == "excluded"
    assert status["revenue"] == "drifted"
    assert report.summary()["excluded"] == 2
    assert {f.column for f in report.failed} == {"revenue"}
    doc = report.to_dict()
    assert doc["features"][-1]["status"] == "excluded"
    assert doc["features"][-1]["message"] == "excluded: identifier column"
    # naming an excluded feature compares it
    named = drift_report(
        profile,
        scan_parts([drifted]),
        features=["order_id"],
        default_features=features,
        exclude=exclude,
    )
    assert [f.status for f in named.features] == ["drifted"]


def test_source_without_a_saved_profile_is_an_artifact_error(env):
    with pytest.raises(ArtifactNotFound, match="no reference profile saved for source 'users'"):
        source_reference(env["config"], env["store"], "users")
    with pytest.raises(UsageError, match="unknown source 'nope'"):
        source_reference(env["config"], env["store"], "nope")


def test_raw_batch_against_the_transform_profile_is_one_line_exit_2(env):
    """Today's 52 `column 'raw.age' not in the current data` rows become one actionable line
    (worded for the CLI here: the message names flags there, parameters from Python)."""
    from mlpipe_cli.argnames import cli_vocabulary

    tmp = env["tmp"]
    batch = _split_orders(tmp / "clean", tmp / "orders_day.parquet", last_days=True)
    sources = {name: list(s.columns) for name, s in env["config"].sources.items()}
    with pytest.raises(UsageError) as caught, cli_vocabulary():
        drift_report(
            _transform_profile(env),
            scan_parts([batch]),
            transform=env["transform"],
            sources=sources,
        )
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(
        "--current has none of the transform profile's features: it must "
        "hold the transform's inputs (amount, country, label_ts"
    )
    assert "--source orders" in text
    assert caught.value.exit_code == 2
    # without the config's sources it still says what --current must contain
    with pytest.raises(UsageError, match="must hold the transform's inputs"):
        drift_report(_transform_profile(env), scan_parts([batch]))


def test_guess_source_needs_half_of_a_contract():
    sources = {
        "orders": ["order_id", "user_id", "revenue", "channel"],
        "users": ["user_id", "age", "country", "plan"],
    }
    assert guess_source(["order_id", "user_id", "revenue"], sources) == "orders"
    assert guess_source(["user_id", "age", "plan", "x"], sources) == "users"
    assert guess_source(["user_id", "x"], sources) is None


# ----------------------------------------------------------------------------- serving logs


def _serving_log(env, log_dir: Path, hour: int) -> Path:
    """Segments as `serve` logs them: raw inputs with label_ts := the request time, and the
    transform's batch outputs. Requests all come at `hour` o'clock UTC on one Sunday; the
    amounts and countries are distributed as in training."""
    transform = env["transform"]
    rng = np.random.default_rng(9)
    n = 1_500
    served = datetime(2026, 7, 5, hour, tzinfo=UTC)  # a Sunday
    raw = pl.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n),
            "country": rng.choice(["US", "DE", "JP"], n, p=[0.6, 0.35, 0.05]),
            "label_ts": [served + timedelta(seconds=int(s)) for s in rng.integers(0, 3000, n)],
        }
    ).with_columns(pl.col("label_ts").dt.cast_time_unit("us"))
    vec = transform.transform_batch(raw.lazy()).collect().select(transform.output_columns)
    log = pl.concat(
        [
            raw.select(
                pl.col("label_ts").alias("served_at"),
                *[pl.col(c).alias(f"raw.{c}") for c in raw.columns],
            ),
            vec.select([pl.col(c).alias(f"vec.{c}") for c in vec.columns]),
        ],
        how="horizontal",
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        log.slice(i * 750, 750).write_parquet(log_dir / f"segment-2026070{i}-1-{i}.parquet")
    return log_dir


def test_request_time_features_are_excluded_by_default(env):
    profile = _transform_profile(env)
    transform = env["transform"]
    excluded = request_time_features(profile, transform.state, ["label_ts"])
    assert set(excluded) == {
        "vec.label_ts__hour_sin",
        "vec.label_ts__hour_cos",
        "vec.label_ts__dow_sin",
        "vec.label_ts__is_weekend",
        "raw.label_ts",
    }
    assert set(excluded.values()) == {REQUEST_TIME_REASON}
    log = _serving_log(env, env["tmp"] / "log", hour=3)
    start, end = datetime(2026, 7, 5, tzinfo=UTC), datetime(2026, 7, 6, tzinfo=UTC)
    parts, rows = serving_log_parts(log, start, end)
    report = drift_report(profile, parts, rows=rows, exclude=excluded)
    status = {f.column: f.status for f in report.features}
    for name in excluded:
        if name in status:  # raw.label_ts is a datetime: listed as unsupported, not a feature
            assert status[name] == "excluded"
    assert not report.failed, [(f.column, f.psi) for f in report.failed]
    assert {f.message for f in report.excluded} == {"excluded: request-time feature"}
    assert report.summary() == {
        "stable": report.summary()["stable"],
        "moderate": 0,
        "drifted": 0,
        "error": 0,
        "excluded": 4,
    }
    # --include-time-features: the same log compared on every feature; all requests at 3 am
    # on a Sunday against training label times spread over the day and the week
    included = drift_report(profile, parts, rows=rows)
    drifted = {f.column for f in included.failed}
    assert drifted == {
        "vec.label_ts__hour_sin",
        "vec.label_ts__hour_cos",
        "vec.label_ts__dow_sin",
        "vec.label_ts__is_weekend",
    }


def test_request_time_columns_default_to_the_training_set_timestamp(env):
    assert default_request_time_columns(env["config"]) == ["label_ts"]
    config = env["config"]
    explicit = config.model_copy(
        update={"serving": config.serving.model_copy(update={"request_time_columns": ["now_ts"]})}
    )
    assert default_request_time_columns(explicit) == ["now_ts"]
    assert default_request_time_columns(config.model_copy(update={"training_set": None})) == []


def test_days_since_a_request_time_reference_is_a_request_time_feature():
    state = {
        "columns": [
            {
                "column": "signup_ts",
                "state": {"reference": "label_ts"},
                "outputs": ["signup_ts__days_since"],
            },
            {"column": "amount", "state": {"mean": 1.0}, "outputs": ["amount"]},
        ]
    }
    profile = {
        "columns": {"vec.signup_ts__days_since": {}, "vec.amount": {}, "raw.amount": {}},
        "unsupported": {"raw.label_ts": "Datetime"},
    }
    assert request_time_features(profile, state, ["label_ts"]) == {
        "raw.label_ts": REQUEST_TIME_REASON,
        "vec.signup_ts__days_since": REQUEST_TIME_REASON,
    }


def test_request_time_features_by_name_without_a_transform_state():
    profile = {
        "columns": {
            "vec.label_ts__hour_sin": {},
            "vec.label_ts__is_weekend": {},
            "vec.label_tsx": {},
            "raw.amount": {},
            "vec.amount": {},
        },
        "unsupported": {"raw.label_ts": "Datetime"},
    }
    assert request_time_features(profile, None, ["label_ts"]) == {
        "raw.label_ts": REQUEST_TIME_REASON,
        "vec.label_ts__hour_sin": REQUEST_TIME_REASON,
        "vec.label_ts__is_weekend": REQUEST_TIME_REASON,
    }


def test_batch_with_raw_inputs_gets_its_outputs_computed(env):
    """--current with the transform's raw inputs: vec.* computed by the batch path."""
    train = env["train"]
    path = env["tmp"] / "train_copy.parquet"
    train.write_parquet(path)
    report = drift_report(_transform_profile(env), scan_parts([path]), transform=env["transform"])
    assert not report.failed
    assert {f.status for f in report.features} == {"stable"}
    groups = report.to_dict()["features"]
    assert {f["column"]: f["group"] for f in groups}["vec.country__JP"] == "country"
    assert report.warnings == []


def test_feature_groups_without_a_transform_state():
    columns = [
        "raw.country",
        "vec.country__US",
        "vec.country__DE",
        "raw.amount",
        "vec.amount",
        "vec.revenue_log",
        "vec.a__b",
        "raw.x__y",
        "vec.x__y",
        "plain",
    ]
    assert feature_groups(columns) == {
        "raw.country": "country",
        "vec.country__US": "country",
        "vec.country__DE": "country",
        "raw.amount": "amount",
        "vec.amount": "amount",
        "vec.revenue_log": "revenue_log",
        "vec.a__b": "a__b",
        "raw.x__y": "x__y",
        "vec.x__y": "x__y",
        "plain": "plain",
    }


def test_excluded_features_never_fail_and_sort_last(env):
    profile = _transform_profile(env)
    path = env["tmp"] / "train_copy2.parquet"
    env["train"].write_parquet(path)
    report = drift_report(
        profile, scan_parts([path]), transform=env["transform"], exclude={"vec.amount": "because"}
    )
    ordered = [f.column for f in report.sorted_features()]
    assert ordered[-1] == "vec.amount"
    assert report.features[[f.column for f in report.features].index("vec.amount")].psi is None
    assert math.isfinite(sum(f.psi for f in report.features if f.psi is not None))
