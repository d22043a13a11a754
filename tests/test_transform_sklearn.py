"""scikit-learn as the oracle for fitted parameters and outputs (relative tolerance), plus
hand-worked numbers where our definition deliberately differs or sklearn has no equivalent."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)

from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import ConfigError, DataCheckFailed, InputError
from mlpipe_cli.transforms import fit_frame
from mlpipe_cli.transforms.base import to_category

RTOL = 1e-9


def fit(columns: dict[str, list[dict[str, Any]]], frame: pl.DataFrame, target: str | None = None):
    return fit_frame(TransformConfig.model_validate({"target": target, "columns": columns}), frame)


def out(outcome, frame: pl.DataFrame) -> pl.DataFrame:
    t = outcome.transform
    return t.transform_batch(frame.lazy()).select(t.output_columns).collect()


@pytest.fixture(scope="module")
def numeric() -> pl.DataFrame:
    rng = np.random.default_rng(2)
    return pl.DataFrame({"x": rng.lognormal(2, 1, 500) - 3})


def col_state(outcome, i: int = 0) -> dict[str, Any]:
    return outcome.state["columns"][i]["state"]


def test_standard_matches_standard_scaler(numeric: pl.DataFrame) -> None:
    outcome = fit({"x": [{"type": "standard"}]}, numeric)
    sk = StandardScaler().fit(numeric.to_numpy())
    step = col_state(outcome)["steps"][0]
    np.testing.assert_allclose(step["mean"], sk.mean_[0], rtol=RTOL)
    np.testing.assert_allclose(step["scale"], sk.scale_[0], rtol=RTOL)
    np.testing.assert_allclose(
        out(outcome, numeric)["x"], sk.transform(numeric.to_numpy())[:, 0], rtol=RTOL
    )


def test_standard_constant_column_has_scale_one() -> None:
    frame = pl.DataFrame({"x": [4.0] * 10})
    outcome = fit({"x": [{"type": "standard"}]}, frame)
    assert (
        col_state(outcome)["steps"][0]["scale"]
        == StandardScaler().fit(frame.to_numpy()).scale_[0]
        == 1.0
    )
    assert out(outcome, frame)["x"].to_list() == [0.0] * 10


@pytest.mark.parametrize("clip", [False, True])
def test_minmax_matches_minmax_scaler(numeric: pl.DataFrame, clip: bool) -> None:
    outcome = fit({"x": [{"type": "minmax", "feature_range": [-1, 2], "clip": clip}]}, numeric)
    sk = MinMaxScaler(feature_range=(-1, 2), clip=clip).fit(numeric.to_numpy())
    probe = pl.DataFrame({"x": [-100.0, *numeric["x"].to_list(), 1e4]})
    np.testing.assert_allclose(
        out(outcome, probe)["x"], sk.transform(probe.to_numpy())[:, 0], rtol=RTOL
    )
    step = col_state(outcome)["steps"][0]
    np.testing.assert_allclose([step["scale"], step["min"]], [sk.scale_[0], sk.min_[0]], rtol=RTOL)


def test_robust_matches_robust_scaler(numeric: pl.DataFrame) -> None:
    outcome = fit({"x": [{"type": "robust", "quantile_range": [10, 80]}]}, numeric)
    sk = RobustScaler(quantile_range=(10, 80)).fit(numeric.to_numpy())
    step = col_state(outcome)["steps"][0]
    np.testing.assert_allclose(
        [step["center"], step["scale"]], [sk.center_[0], sk.scale_[0]], rtol=RTOL
    )
    np.testing.assert_allclose(
        out(outcome, numeric)["x"], sk.transform(numeric.to_numpy())[:, 0], rtol=RTOL
    )


def test_numeric_steps_by_hand() -> None:
    frame = pl.DataFrame(
        {"a": [1.0, None, 3.0, 10.0], "b": [0.0, 3.0, None, 8.0], "c": [-3.0, -1.0, 0.0, 5.0]}
    )
    outcome = fit(
        {
            "a": [
                {"type": "fill_null", "strategy": "median"},
                {"type": "clip", "min": 0, "max": 5},
            ],
            "b": [{"type": "fill_null", "strategy": "mean"}, {"type": "log1p"}],
            "c": [{"type": "log1p", "on_invalid": "shift"}],
        },
        frame,
    )
    result = out(outcome, frame)
    assert result["a"].to_list() == [1.0, 3.0, 3.0, 5.0]  # median of 1,3,10 = 3; clip at 5
    assert result["b"].to_list() == [0.0, math.log1p(3.0), math.log1p(11 / 3), math.log1p(8.0)]
    # shift = -min = 3: log1p(x + 3)
    assert result["c"].to_list() == [0.0, math.log1p(2.0), math.log1p(3.0), math.log1p(8.0)]
    # below the training minimum the shifted argument can still be <= -1: a missing value,
    # which a column without fill_null refuses (on_null: error, the default) ...
    with pytest.raises(InputError, match=r"column 'c': -10.0 gives a missing value \(log1p"):
        outcome.transform.transform_one({"a": 1, "b": 1, "c": -10.0})
    # ... or passes on as missing with on_null: keep
    kept = fit(
        {"c": [{"type": "log1p", "on_invalid": "shift", "on_null": "keep"}]}, frame.select("c")
    )
    assert kept.transform.transform_one({"c": -10.0}) == [None]


def test_log1p_refuses_values_le_minus_one_with_clear_error() -> None:
    frame = pl.DataFrame({"x": [0.5, -1.0, 2.0]})
    with pytest.raises(InputError, match=r"log1p needs values > -1 .*-1\.0.*on_invalid: shift"):
        fit({"x": [{"type": "log1p"}]}, frame)


def test_fill_null_mean_is_exact_and_order_independent() -> None:
    values = [1e16, 1.0, -1e16, 1.0] * 3
    a = fit({"x": [{"type": "fill_null"}]}, pl.DataFrame({"x": values}))
    b = fit({"x": [{"type": "fill_null"}]}, pl.DataFrame({"x": values[::-1]}))
    assert col_state(a)["steps"][0]["value"] == col_state(b)["steps"][0]["value"] == 0.5


# -- categorical ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cats() -> pl.DataFrame:
    # tie-free counts: a 40, b 25, c 15, d 9, e 6, f 3, g 2
    values = ["a"] * 40 + ["b"] * 25 + ["c"] * 15 + ["d"] * 9 + ["e"] * 6 + ["f"] * 3 + ["g"] * 2
    rng = np.random.default_rng(1)
    order = rng.permutation(len(values))
    return pl.DataFrame({"k": [values[i] for i in order]})


PROBE = ["a", "b", "c", "d", "e", "f", "g", "zz", "b"]


@pytest.mark.parametrize(
    ("min_frequency", "max_categories"), [(None, None), (5, None), (0.1, None), (None, 4), (4, 3)]
)
def test_onehot_matches_onehot_encoder(cats: pl.DataFrame, min_frequency, max_categories) -> None:
    params = {"type": "onehot", "min_frequency": min_frequency, "max_categories": max_categories}
    outcome = fit({"k": [params]}, cats)
    sk = OneHotEncoder(
        handle_unknown="infrequent_if_exist",
        min_frequency=min_frequency,
        max_categories=max_categories,
        sparse_output=False,
    )
    sk.fit(cats.to_numpy())
    probe = pl.DataFrame({"k": PROBE})
    ours = out(outcome, probe)
    theirs = sk.transform(np.array(PROBE, dtype=object).reshape(-1, 1))
    names = list(sk.get_feature_names_out(["k"]))
    has_infrequent = "k_infrequent_sklearn" in names
    # vocabulary = sklearn's frequent categories, ordered by count desc (sklearn: sorted)
    frequent = [n.removeprefix("k_") for n in names if n != "k_infrequent_sklearn"]
    vocabulary = col_state(outcome)["vocabulary"]
    assert sorted(vocabulary) == frequent
    assert vocabulary == sorted(vocabulary, key=lambda v: -cats["k"].to_list().count(v))
    for j, name in enumerate(names):
        ours_name = "k__other" if name == "k_infrequent_sklearn" else f"k__{name[2:]}"
        np.testing.assert_array_equal(ours[ours_name].to_numpy(), theirs[:, j])
    # documented difference: `other` always exists; sklearn sends unknowns to all-zeros when
    # nothing was infrequent
    if has_infrequent:
        assert ours["k__other"].to_list() == list(theirs[:, names.index("k_infrequent_sklearn")])
    else:
        assert ours["k__other"].to_list() == [0.0] * 7 + [1.0, 0.0]
        assert theirs[7].sum() == 0.0


def test_onehot_ties_broken_by_value_and_other_name_collision() -> None:
    frame = pl.DataFrame({"k": ["z", "y", "other", "other", "z", "y"]})
    outcome = fit({"k": [{"type": "onehot"}]}, frame)
    assert outcome.transform.output_columns == ["k__other", "k__y", "k__z", "k__other_"]
    assert outcome.transform.transform_one({"k": None}) == [0.0, 0.0, 0.0, 1.0]


def test_ordinal_matches_ordinal_encoder(cats: pl.DataFrame) -> None:
    outcome = fit({"k": [{"type": "ordinal", "unknown_value": -1}]}, cats)
    sk = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(cats.to_numpy())
    probe = np.array(PROBE, dtype=object).reshape(-1, 1)
    np.testing.assert_array_equal(
        out(outcome, pl.DataFrame({"k": PROBE}))["k"].to_numpy(), sk.transform(probe)[:, 0]
    )


def test_ordinal_frequency_order_and_frequency_encoding_by_hand(cats: pl.DataFrame) -> None:
    outcome = fit({"k": [{"type": "ordinal", "order": "frequency", "unknown_value": 7}]}, cats)
    assert out(outcome, pl.DataFrame({"k": ["a", "g", "new", None]}))["k"].to_list() == [
        0.0,
        6.0,
        7.0,
        7.0,
    ]
    with pytest.raises(InputError, match="collides"):
        fit({"k": [{"type": "ordinal", "unknown_value": 3}]}, cats)
    freq = fit({"k": [{"type": "frequency", "unknown_value": -1.0}]}, cats)
    assert out(freq, pl.DataFrame({"k": ["a", "g", "new", None]}))["k"].to_list() == [
        0.4,
        0.02,
        -1.0,
        -1.0,
    ]


@pytest.fixture(scope="module")
def target_data() -> pl.DataFrame:
    rng = np.random.default_rng(4)
    k = rng.choice(["a", "b", "c", "d", "e"], 400, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    rate = {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.8, "e": 0.2}
    y = np.array([rng.random() < rate[v] for v in k])
    return pl.DataFrame({"k": k, "y": y})


@pytest.mark.parametrize("smooth", ["auto", 10.0, 0.0])
def test_target_encoding_matches_target_encoder(target_data: pl.DataFrame, smooth) -> None:
    outcome = fit({"k": [{"type": "target", "smooth": smooth, "cv": 4}]}, target_data, target="y")
    X = target_data.select("k").to_numpy()
    y = target_data["y"].to_numpy().astype(int)
    n = len(y)
    folds = np.arange(n) % 4
    splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(4)]
    sk = TargetEncoder(smooth=smooth, target_type="binary", cv=splits)
    cross = sk.fit_transform(X, y)[:, 0]
    state = col_state(outcome)
    assert state["vocabulary"] == list(sk.categories_[0])
    np.testing.assert_allclose(state["encoding"], sk.encodings_[0], rtol=RTOL)
    np.testing.assert_allclose(state["prior"], sk.target_mean_, rtol=RTOL)
    # training rows get out-of-fold encodings; new rows get the full-data encodings
    np.testing.assert_allclose(outcome.training_outputs()["k"].to_numpy(), cross, rtol=RTOL)
    probe = np.array(["a", "e", "unknown"], dtype=object).reshape(-1, 1)
    np.testing.assert_allclose(
        out(outcome, pl.DataFrame({"k": probe[:, 0]}))["k"].to_numpy(),
        sk.transform(probe)[:, 0],
        rtol=RTOL,
    )


def test_target_encoding_by_hand_and_null_category() -> None:
    # smooth m=2, prior = 2/6: a -> (2 + 2/3) / (3 + 2) = 8/15; b -> (0 + 2/3) / (2 + 2) = 1/6
    frame = pl.DataFrame({"k": ["a", "a", "a", "b", "b", None], "y": [1, 1, 0, 0, 0, 0]})
    outcome = fit({"k": [{"type": "target", "smooth": 2.0, "cv": 2}]}, frame, target="y")
    t = outcome.transform
    got = [t.transform_one({"k": v})[0] for v in ("a", "b", None, "zz")]
    np.testing.assert_allclose(got, [8 / 15, 1 / 6, 1 / 3, 1 / 3], rtol=1e-12)
    # cross-fit by hand, fold = row % 2: fold 0 = rows 0,2,4 is fitted on rows 1,3,5
    # (a:1, b:0, null:0 -> prior 1/3): row 0 (a) = (1 + 2/3) / 3 = 5/9
    assert math.isclose(outcome.training_outputs()["k"][0], 5 / 9, rel_tol=1e-12)


def test_target_with_nulls_is_refused() -> None:
    frame = pl.DataFrame({"k": ["a", "b"], "y": [1, None]})
    with pytest.raises(DataCheckFailed, match="null"):
        fit({"k": [{"type": "target"}]}, frame, target="y")


# -- temporal and embeddings (no sklearn equivalent: hand-worked) -----------------------


def test_temporal_by_hand() -> None:
    # 2026-11-27 is a Friday (ISO weekday 5); 2026-11-29 a Sunday (7)
    frame = pl.DataFrame(
        {
            "ts": [
                datetime(2026, 11, 27, 18, 30, tzinfo=UTC),
                datetime(2026, 11, 29, 0, 0, tzinfo=UTC),
            ],
            "ref": [
                datetime(2026, 11, 26, 6, 30, tzinfo=UTC),
                datetime(2026, 11, 30, 0, 0, tzinfo=UTC),
            ],
        }
    )
    features = [
        "hour",
        "dow",
        "month",
        "is_weekend",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "month_cos",
        "days_since",
    ]
    outcome = fit({"ts": [{"type": "temporal", "features": features, "reference": "ref"}]}, frame)
    assert outcome.transform.output_columns == [f"ts__{f}" for f in features]
    rows = out(outcome, frame).rows()
    two_pi = 2 * math.pi
    expected = [
        [
            18.0,
            5.0,
            11.0,
            0.0,
            math.sin(two_pi * 18 / 24),
            math.cos(two_pi * 18 / 24),
            math.sin(two_pi * 4 / 7),
            math.cos(two_pi * 10 / 12),
            1.5,
        ],
        [0.0, 7.0, 11.0, 1.0, 0.0, 1.0, math.sin(two_pi * 6 / 7), math.cos(two_pi * 10 / 12), -1.0],
    ]
    for got, want in zip(rows, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_temporal_uses_the_training_time_zone() -> None:
    tz = "America/New_York"
    frame = pl.DataFrame({"ts": [datetime(2026, 7, 1, 3, 0, tzinfo=UTC)]}).with_columns(
        pl.col("ts").dt.convert_time_zone(tz)
    )
    outcome = fit({"ts": [{"type": "temporal", "features": ["hour", "dow"]}]}, frame)
    # 03:00 UTC on Wednesday = 23:00 Tuesday in New York (EDT)
    assert out(outcome, frame).rows() == [(23.0, 2.0)]
    assert outcome.transform.transform_one({"ts": datetime(2026, 7, 1, 3, 0, tzinfo=UTC)}) == [
        23.0,
        2.0,
    ]
    utc_input = frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
    assert out(outcome, utc_input).rows() == [(23.0, 2.0)]


def test_embedding_lookup_unknown_and_mean(tmp_path: Path) -> None:
    table = pl.DataFrame(
        {
            "id": [3, 1, 2],
            "v": pl.Series([[3.0, 30.0], [1.0, 10.0], [2.0, 20.5]], dtype=pl.Array(pl.Float32, 2)),
        }
    )
    table.write_parquet(tmp_path / "emb.parquet")
    frame = pl.DataFrame({"pid": [1, 2, 99, None]})
    spec = {"type": "embedding", "table": str(tmp_path / "emb.parquet"), "key": "id", "vector": "v"}
    zero = fit({"pid": [spec]}, frame)
    assert zero.transform.output_columns == ["pid__emb_00", "pid__emb_01"]
    assert out(zero, frame).rows() == [(1.0, 10.0), (2.0, 20.5), (0.0, 0.0), (0.0, 0.0)]
    mean = fit({"pid": [{**spec, "unknown": "mean"}]}, frame)
    assert out(mean, frame).rows()[2:] == [(2.0, 20.5 / 3 + 40 / 3)] * 2
    assert mean.transform.transform_one({"pid": 99}) == [2.0, 20.5 / 3 + 40 / 3]
    # the table travels with the state: deleting the source does not matter any more
    (tmp_path / "emb.parquet").unlink()
    assert zero.transform.transform_one({"pid": 3}) == [3.0, 30.0]


def test_embedding_table_problems_are_input_errors(tmp_path: Path) -> None:
    pl.DataFrame({"id": [1, 1], "v": [[1.0], [2.0]]}).write_parquet(tmp_path / "dup.parquet")
    spec = {"type": "embedding", "table": str(tmp_path / "dup.parquet"), "key": "id", "vector": "v"}
    with pytest.raises(InputError, match="duplicate"):
        fit({"pid": [spec]}, pl.DataFrame({"pid": [1]}))
    with pytest.raises(InputError, match="no column 'vec'"):
        fit({"pid": [{**spec, "vector": "vec"}]}, pl.DataFrame({"pid": [1]}))


def test_training_schema_problems_are_data_failures() -> None:
    frame = pl.DataFrame({"x": ["a", "b"], "ts": [1, 2]})
    with pytest.raises(
        DataCheckFailed, match=r"'x' has dtype String, unusable for standard"
    ) as err:
        fit({"x": [{"type": "standard"}], "ts": [{"type": "temporal"}]}, frame)
    assert len(err.value.report["problems"]) == 2
    # a configured column the data lacks is a config error (a typo), not a data failure
    with pytest.raises(ConfigError, match=r"transforms.columns.gone \(onehot\): no column"):
        fit({"x": [{"type": "standard"}], "gone": [{"type": "onehot"}]}, frame)


def test_category_spelling_matches_polars_cast() -> None:
    for value in (True, False, 3, -7, "x", 1.5):
        assert to_category(value) == pl.Series([value]).cast(pl.String)[0]


def test_temporal_on_naive_datetimes_and_dates_before_1970() -> None:
    frame = pl.DataFrame(
        {
            "naive": [datetime(1969, 12, 31, 23, 0), datetime(1900, 1, 1, 5, 0), None],
            "day": [datetime(1969, 12, 31).date(), datetime(1900, 1, 1).date(), None],
        }
    )
    spec = {"type": "temporal", "features": ["hour", "dow", "month", "is_weekend"]}
    outcome = fit({"naive": [spec], "day": [spec]}, frame)
    # 1969-12-31 was a Wednesday (3); 1900-01-01 a Monday (1)
    assert out(outcome, frame).rows() == [
        (23.0, 3.0, 12.0, 0.0, 0.0, 3.0, 12.0, 0.0),
        (5.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0),
        (None,) * 8,
    ]
    for row in frame.iter_rows(named=True):
        assert outcome.transform.transform_one(row) == list(
            out(outcome, pl.DataFrame([row], schema=frame.schema)).row(0)
        )
