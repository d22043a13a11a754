"""Shadow serving (`serve --shadow`) and `psi-report --compare --serving-log`, end to end.

The REAL server as a subprocess on a SQLite store materialized by `mlpipe materialize`, with
three transform versions fitted by `mlpipe fit` from the sample data:

* ``live``: the example transform without the request-time column (so two runs answer the
  same request with the same bytes: nothing in a response depends on the clock);
* ``same``: the same columns and steps, another golden-example size: a new version whose
  outputs are identical (a shadow that must pass the comparison);
* ``changed``: ``age`` min-max scaled instead of standardised (a shadow that must be caught).

Oracles: the transforms' Polars batch path (``transform_batch``) for every logged vector,
scikit-learn for the shadow model's scores, numpy for the agreement figures.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import skops.io as sio
import yaml
from conftest import EXAMPLE_CONFIG, _repoint_paths, run_mlpipe
from test_serve import (
    UNKNOWN,
    ServerPool,
    build_fitted_base,
    materialize_store,
    parse_metrics,
    read_log,
    refuse_in_process,
    some_user_ids,
)

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.transforms import load_transform

PIPELINE = "churn"


# -- a project with three transform versions and two models, built once --------------------


def write_config(
    root: Path, sample_data_dir: Path, artifacts: Path, training: Path, *, variant: str = "live",
    serving: dict[str, Any] | None = None, name: str = "mlpipe.yaml",
) -> Path:  # fmt: skip
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    _repoint_paths(config, sample_data_dir)
    config["artifact_dir"] = str(artifacts)
    transforms = config["transforms"]
    transforms["data"] = str(training)
    transforms["columns"].pop("label_ts")  # no request-time input: responses are reproducible
    if variant == "same":
        transforms["golden_rows"] = 6  # a new version, identical outputs
    elif variant == "changed":
        transforms["columns"]["age"] = [
            {"type": "fill_null", "strategy": "median"}, {"type": "minmax"},
        ]  # fmt: skip
    config.pop("serving", None)
    if serving is not None:
        config["serving"] = serving
    path = root / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_and_register(
    config: Path, artifacts: Path, version: str, training: Path, out: Path
) -> str:
    from sklearn.linear_model import LogisticRegression

    transform = load_transform(ArtifactStore(artifacts, PIPELINE), version)
    frame = pl.read_parquet(training)
    outputs = transform.transform_batch(frame.lazy()).collect()
    x = np.nan_to_num(outputs.select(transform.output_columns).to_numpy().astype(np.float64))
    model = LogisticRegression(max_iter=1000).fit(x, frame["churned"].to_numpy())
    sio.dump(model, out)
    result = run_mlpipe("model", "register", out, "--artifact", version, "-c", config, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["model_version"]


@pytest.fixture(scope="module")
def shadow_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> dict:
    fitted = build_fitted_base(tmp_path_factory, sample_data_dir)  # the training set
    training = fitted / "training_set.parquet"
    base = tmp_path_factory.mktemp("shadow-base")
    artifacts = base / "artifacts"
    versions = {}
    for variant in ("same", "changed", "live"):  # live last: `latest` is the live version
        config = write_config(
            base, sample_data_dir, artifacts, training, variant=variant, name=f"{variant}.yaml"
        )
        result = run_mlpipe("fit", "-c", config, "--json")
        assert result.exit_code == 0, result.stderr
        versions[variant] = json.loads(result.stdout)["version"]
    assert len(set(versions.values())) == 3
    config = base / "live.yaml"
    models = {
        "live": train_and_register(config, artifacts, versions["live"], training,
                                   base / "live.skops"),
        "changed": train_and_register(config, artifacts, versions["changed"], training,
                                      base / "changed.skops"),
    }  # fmt: skip
    return {"base": base, "training": training, "versions": versions, "models": models}


def make_project(
    tmp_path: Path, sample_data_dir: Path, shadow_base: dict, serving: dict[str, Any] | None = None
) -> Path:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(shadow_base["base"] / "artifacts", artifacts, symlinks=True)
    config = write_config(
        tmp_path,
        sample_data_dir,
        artifacts,
        shadow_base["training"],
        serving=serving or {"logging": {"flush_interval": "1h"}},
    )
    materialize_store(config)
    return config


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def exchange(srv: Any, ids: list[int]) -> list[tuple[int, bytes]]:
    """The same requests every run: single GETs (known, unknown, bad keys), a batch, and
    /predict single and batch. Returns (status, body bytes) per request."""
    answers = []
    for entity in [*ids, UNKNOWN, "ünïcode", "0003"]:
        response = srv.get(f"/features/{entity}")
        answers.append((response.status_code, response.content))
    for path, body in (
        ("/features", {"entities": [*ids[:5], UNKNOWN]}),
        ("/predict", {"entity": ids[0]}),
        ("/predict", {"entities": ids[5:12]}),
        ("/predict", {"entities": [ids[1], "nope"]}),
    ):
        response = srv.post(path, body)
        answers.append((response.status_code, response.content))
    return answers


def batch_outputs(artifacts: Path, version: str, log: pl.DataFrame, training: Path) -> pl.DataFrame:
    """Transform ``version``'s batch path on the logged raw.* values (in training dtypes)."""
    transform = load_transform(ArtifactStore(artifacts, PIPELINE), version)
    schema = pl.read_parquet_schema(training)
    raw = log.select(pl.col(f"raw.{c}").cast(schema[c]).alias(c) for c in transform.input_columns)
    return transform.transform_batch(raw.lazy()).collect().select(transform.output_columns)


def assert_columns_close(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert actual.columns == expected.columns
    for name in actual.columns:
        a = actual[name].to_numpy().astype(np.float64)
        b = expected[name].to_numpy().astype(np.float64)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)


# -- tests ----------------------------------------------------------------------------------


def test_shadow_leaves_responses_byte_identical_and_logs_both_vectors_in_one_row(
    tmp_path: Path, sample_data_dir: Path, shadow_base: dict, servers: Any, cli: Any
) -> None:
    versions, models = shadow_base["versions"], shadow_base["models"]
    config = make_project(tmp_path, sample_data_dir, shadow_base)
    artifacts = tmp_path / "artifacts"
    ids = some_user_ids(sample_data_dir, 60)
    live_args = ["--artifact", versions["live"], "--model", models["live"]]

    off = servers(config, *live_args, "--log-dir", str(tmp_path / "log-off"))
    answers_off = exchange(off, ids)
    assert off.stop() == 0

    on = servers(
        config,
        *live_args,
        "--log-dir",
        str(tmp_path / "log-on"),
        "--shadow",
        versions["changed"],
        "--shadow-model",
        models["changed"],
    )
    answers_on = exchange(on, ids)
    deadline = time.monotonic() + 30  # the writer thread computes the shadow within a poll
    while True:
        metrics = parse_metrics(on.get("/metrics").text)
        if (
            metrics["mlpipe_serve_shadow_rows_total"] == metrics["mlpipe_serve_entities_total"]
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)
    assert on.stop() == 0

    # the response is unchanged, byte for byte, whatever the status (400s included)
    assert answers_on == answers_off
    assert {status for status, _ in answers_on} == {200, 400}
    served = sum(
        len(doc.get("results", [doc])) for status, body in answers_on if status == 200
        for doc in [json.loads(body)]
    )  # fmt: skip
    assert metrics["mlpipe_serve_shadow_rows_total"] == served
    assert metrics["mlpipe_serve_shadow_transform_failures_total"] == 0
    assert metrics["mlpipe_serve_shadow_model_failures_total"] == 0
    assert f"shadow {versions['changed']}: {served} rows, 0 transform and 0 model failures" in (
        on.stderr
    )

    log_off, log_on = read_log(tmp_path / "log-off"), read_log(tmp_path / "log-on")
    assert log_on.height == log_off.height == served  # no row lost, none added
    # the live columns are what the server without a shadow logged (order and values)
    live_cols = [c for c in log_off.columns if c != "served_at"]
    assert_frame_equal_unordered(log_on.select(live_cols), log_off.select(live_cols))

    shadow = load_transform(ArtifactStore(artifacts, PIPELINE), versions["changed"])
    assert log_on["shadow.transform_version"].unique().to_list() == [versions["changed"]]
    shadow_cols = [f"shadow.vec.{c}" for c in shadow.output_columns]
    assert set(shadow_cols) < set(log_on.columns)
    # oracle: the shadow's batch path on the logged raw values
    expected = batch_outputs(artifacts, versions["changed"], log_on, shadow_base["training"])
    assert_columns_close(
        log_on.select(shadow_cols).rename(dict(zip(shadow_cols, shadow.output_columns,
                                                   strict=True))), expected)  # fmt: skip
    live = load_transform(ArtifactStore(artifacts, PIPELINE), versions["live"])
    live_expected = batch_outputs(artifacts, versions["live"], log_on, shadow_base["training"])
    assert_columns_close(
        log_on.select(f"vec.{c}" for c in live.output_columns).rename(
            {f"vec.{c}": c for c in live.output_columns}), live_expected)  # fmt: skip
    # only age differs between the two versions
    differs = [
        c
        for c in live.output_columns
        if not np.allclose(
            log_on[f"vec.{c}"].to_numpy(), log_on[f"shadow.vec.{c}"].to_numpy(), equal_nan=True
        )
    ]
    assert differs == ["age"]
    # oracle: scikit-learn's own predict_proba with the registered shadow model file
    model = sio.load(
        shadow_base["base"] / "changed.skops",
        trusted=sio.get_untrusted_types(file=shadow_base["base"] / "changed.skops"),
    )
    x = np.nan_to_num(expected.to_numpy().astype(np.float64))
    np.testing.assert_allclose(
        log_on["shadow.prediction"].to_numpy(), model.predict_proba(x)[:, 1], rtol=1e-12
    )

    # psi-report --compare-shadow catches the changed feature, and only it
    log_dir = tmp_path / "log-on"
    caught = cli(
        "psi-report",
        "-c",
        config,
        "--compare-shadow",
        "--serving-log",
        log_dir,
        "--since",
        "1h",
        "--json",
    )
    assert caught.exit_code == 1, caught.stderr
    doc = caught.json()
    assert doc["unexpected_drift"] == ["vec.age"]
    assert (doc["live_version"], doc["shadow_version"]) == (versions["live"], versions["changed"])
    by_name = {f["column"]: f for f in doc["features"]}
    assert by_name["vec.age"]["status"] == "drifted"
    assert {f["status"] for n, f in by_name.items() if n != "vec.age"} == {"stable"}
    assert all(f["psi"] == 0 for n, f in by_name.items() if n != "vec.age")  # same values
    assert "not expected to change: vec.age" in caught.stderr
    # prediction agreement: numpy on the log, sharing nothing with the report
    live_p, shadow_p = log_on["prediction"].to_numpy(), log_on["shadow.prediction"].to_numpy()
    scored = ~np.isnan(live_p.astype(np.float64))
    live_p, shadow_p = live_p[scored].astype(float), shadow_p[scored].astype(float)
    agreement = doc["prediction_agreement"]
    assert agreement["rows"] == scored.sum() > 0
    assert agreement["mean_abs_diff"] == pytest.approx(np.abs(live_p - shadow_p).mean())
    flips = int(((live_p >= 0.3) != (shadow_p >= 0.3)).sum())

    html = tmp_path / "shadow.html"
    expected = cli(
        "psi-report",
        "-c",
        config,
        "--compare-shadow",
        "--serving-log",
        log_dir,
        "--since",
        "1h",
        "--expect-change",
        "age",
        "--threshold-decision",
        "0.3",
        "--html",
        html,
        "--json",
    )
    assert expected.exit_code == 0, expected.stderr
    doc = expected.json()
    assert doc["status"] == "passed"
    assert doc["expected_change"] == {
        "features": ["vec.age"],
        "changed": ["vec.age"],
        "unchanged": [],
    }
    assert doc["prediction_agreement"]["flipped"] == flips
    assert doc["prediction_agreement"]["flipped_share"] == pytest.approx(flips / scored.sum())
    page = html.read_text()
    assert "prediction agreement over" in page
    assert "expected to change: changed vec.age" in page

    # a log written without a shadow has nothing to compare: exit 2, one line
    none = cli(
        "psi-report",
        "-c",
        config,
        "--compare-shadow",
        "--serving-log",
        tmp_path / "log-off",
        "--since",
        "1h",
    )
    assert none.exit_code == 2
    assert "no shadow columns" in none.stderr
    wrong = cli(
        "psi-report",
        "-c",
        config,
        "--compare-shadow",
        "--serving-log",
        log_dir,
        "--since",
        "1h",
        "--expect-change",
        "no_such_feature",
    )
    assert wrong.exit_code == 2
    assert "no transform output named no_such_feature" in wrong.stderr


def test_an_unchanged_shadow_passes_the_comparison(
    tmp_path: Path, sample_data_dir: Path, shadow_base: dict, servers: Any, cli: Any
) -> None:
    versions = shadow_base["versions"]
    config = make_project(tmp_path, sample_data_dir, shadow_base)
    srv = servers(
        config,
        "--artifact",
        versions["live"],
        "--model",
        "none",
        "--log-dir",
        str(tmp_path / "log"),
        "--shadow",
        versions["same"],
    )
    ids = some_user_ids(sample_data_dir, 400)
    for start in range(0, len(ids), 50):
        assert srv.post("/features", {"entities": ids[start : start + 50]}).status_code == 200
    for entity in ids[:30]:
        assert srv.get(f"/features/{entity}").status_code == 200
    assert srv.stop() == 0
    result = cli(
        "psi-report",
        "-c",
        config,
        "--compare-shadow",
        "--serving-log",
        tmp_path / "log",
        "--since",
        "1h",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["status"] == "passed"
    assert doc["unexpected_drift"] == []
    assert doc["prediction_agreement"] is None  # no model on either side
    assert doc["current"]["rows"] == 430
    assert {f["status"] for f in doc["features"]} == {"stable"}


def assert_frame_equal_unordered(a: pl.DataFrame, b: pl.DataFrame) -> None:
    from polars.testing import assert_frame_equal

    key = ["endpoint", "entity", "prediction"]
    assert_frame_equal(a.sort(key, nulls_last=True), b.sort(key, nulls_last=True))


def test_shadow_failures_are_counted_and_never_lose_the_live_row(
    tmp_path: Path, shadow_base: dict
) -> None:
    """A shadow transform raising on a row nulls that row's shadow columns only."""
    from mlpipe_cli.serving.featurelog import FeatureLogger
    from mlpipe_cli.serving.shadow import Shadow, ShadowScorer, log_columns

    store = ArtifactStore(shadow_base["base"] / "artifacts", PIPELINE)
    live = load_transform(store, shadow_base["versions"]["live"])
    changed = load_transform(store, shadow_base["versions"]["changed"])
    shadow = Shadow(transform=changed, model=None, request_time_columns=[])
    raw_columns, raw_dtypes = log_columns(live, shadow)
    scorer = ShadowScorer(shadow, raw_columns)
    logger = FeatureLogger(
        tmp_path, transform_version=live.version, raw_columns=raw_columns, raw_dtypes=raw_dtypes,
        vec_columns=live.output_columns, poll_interval=0.001, shadow=scorer,
    )  # fmt: skip
    logger.start()
    training = pl.read_parquet(shadow_base["training"]).head(300)
    width = len(live.output_columns)
    for i, record in enumerate(training.iter_rows(named=True)):
        raw = tuple(record[c] for c in raw_columns)
        if i % 100 == 7:  # a value the shadow's log1p cannot take: it raises on this row
            raw = tuple(
                "not a number" if c == "total_orders" else v
                for c, v in zip(raw_columns, raw, strict=True)
            )
        logger.log(
            "/features/{entity_id}",
            f"[{i}]",
            "s1",
            False,
            raw,
            (0.5,) * width,
            None,
            served_at_us=1_782_864_000_000_000 + i,
        )
    logger.close()
    frame = read_log(tmp_path).sort("entity")
    assert (frame.height, logger.written, logger.failed) == (300, 300, 0)
    assert scorer.rows == 300
    assert scorer.transform_failures == 3
    assert (scorer.last_error or "").startswith("shadow transform: ")
    bad = frame.filter(pl.col("entity").is_in([f"[{i}]" for i in (7, 107, 207)]))
    assert bad.height == 3
    assert bad["shadow.vec.age"].null_count() == 3
    good = frame.filter(~pl.col("entity").is_in([f"[{i}]" for i in (7, 107, 207)]))
    assert good["shadow.vec.age"].null_count() == 0
    assert good["vec.age"].to_list() == [0.5] * 297  # the live row as logged


def test_shadow_that_cannot_be_verified_refuses_to_start(
    tmp_path: Path, sample_data_dir: Path, shadow_base: dict, cli: Any
) -> None:
    versions, models = shadow_base["versions"], shadow_base["models"]
    config = make_project(tmp_path, sample_data_dir, shadow_base)
    # a shadow model bound to another transform: exit 3 before binding, like the live model
    wrong = refuse_in_process(
        cli,
        config,
        "--artifact",
        versions["live"],
        "--model",
        "none",
        "--shadow",
        versions["same"],
        "--shadow-model",
        models["live"],
    )
    assert wrong.exit_code == 3, wrong.stderr
    assert "registered for transform" in wrong.stderr
    missing = refuse_in_process(cli, config, "--shadow", "0099-000000000000")
    assert missing.exit_code == 3, missing.stderr
    alone = refuse_in_process(cli, config, "--shadow-model", models["changed"])
    assert alone.exit_code == 2
    assert "--shadow-model needs --shadow" in alone.stderr
