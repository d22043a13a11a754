"""FittedTransform API behaviour (docs/architecture.md §3): schema checks, column handling,
online input normalisation, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import ArtifactError, ConfigError, InputError
from mlpipe_cli.transforms import fit_frame

FRAME = pl.DataFrame(
    {
        "id": [1, 2, 3, 4],
        "x": [1.0, 2.0, None, 4.0],
        "city": ["a", "b", "a", None],
        "ts": [datetime(2026, 1, d, 12, tzinfo=UTC) for d in range(1, 5)],
        "junk": ["p", "q", "r", "s"],
    }
)


def fitted(columns: dict) -> object:
    return fit_frame(TransformConfig.model_validate({"columns": columns}), FRAME).transform


@pytest.fixture(scope="module")
def transform():  # type: ignore[no-untyped-def]
    return fitted(
        {
            "x": [{"type": "fill_null", "strategy": "constant", "value": 0}, {"type": "standard"}],
            "city": [{"type": "onehot"}],
            "ts": [{"type": "temporal", "features": ["hour", "dow"]}],
            "junk": [{"type": "drop"}],
        }
    )


def test_public_attributes(transform) -> None:  # type: ignore[no-untyped-def]
    assert transform.version == "unpublished"
    assert transform.input_columns == ["x", "city", "ts"]
    assert transform.input_schema == {
        "x": "Float64",
        "city": "String",
        "ts": "Datetime(time_unit='us', time_zone='UTC')",
    }
    assert transform.output_columns == [
        "x",
        "city__a",
        "city__b",
        "city__other",
        "ts__hour",
        "ts__dow",
    ]


def test_batch_keeps_other_columns_replaces_inputs_and_drops(transform) -> None:  # type: ignore[no-untyped-def]
    out = transform.transform_batch(FRAME.lazy()).collect()
    assert out.columns == ["id", *transform.output_columns]
    assert out["id"].to_list() == [1, 2, 3, 4]
    assert out["city__other"].to_list() == [0.0, 0.0, 0.0, 1.0]
    # works without the dropped column too
    assert transform.transform_batch(FRAME.drop("junk").lazy()).collect().equals(out)


def test_compatible_dtypes_are_accepted(transform) -> None:  # type: ignore[no-untyped-def]
    frame = FRAME.with_columns(pl.col("x").cast(pl.Int32), pl.col("city").cast(pl.Categorical))
    out = transform.transform_batch(frame.lazy()).collect()
    assert out["city__a"].to_list() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("city"), "input has no column 'city'"),
        (lambda f: f.with_columns(pl.col("x").cast(pl.String)), "column 'x' has dtype String"),
        (
            lambda f: f.with_columns(pl.col("city").cast(pl.Categorical).to_physical()),
            "column 'city'",
        ),
        (lambda f: f.with_columns(pl.col("ts").dt.replace_time_zone(None)), "column 'ts'"),
    ],
)
def test_incompatible_schema_is_an_artifact_error(transform, change, message) -> None:  # type: ignore[no-untyped-def]
    frame = change(FRAME)
    with pytest.raises(ArtifactError, match=message):
        transform.check_input_schema(frame.collect_schema())
    with pytest.raises(ArtifactError):
        transform.transform_batch(frame.lazy())


def test_online_input_normalisation(transform) -> None:  # type: ignore[no-untyped-def]
    base = {"x": 2, "city": "b", "ts": datetime(2026, 1, 5, 23, tzinfo=UTC)}
    out = transform.transform_one(base)
    assert transform.transform_one({**base, "x": "2.0"}) == out
    assert transform.transform_one({**base, "ts": "2026-01-05T23:00:00+00:00"}) == out
    # another zone is converted to the training zone (UTC) first
    assert transform.transform_one({**base, "ts": "2026-01-06T01:00:00+02:00"}) == out
    assert (
        transform.transform_one({**base, "x": float("nan")})[0]
        == transform.transform_one({**base, "x": None})[0]
    )
    with pytest.raises(InputError, match="record has no column 'city'"):
        transform.transform_one({"x": 1, "ts": None})
    with pytest.raises(InputError, match="column 'x': expected a number"):
        transform.transform_one({**base, "x": "abc"})
    with pytest.raises(InputError, match="column 'ts': expected a timestamp"):
        transform.transform_one({**base, "ts": "yesterday"})


def test_output_name_collision_is_refused() -> None:
    frame = pl.DataFrame({"a": ["x", "y"], "a__x": [1.0, 2.0]})
    with pytest.raises(InputError, match="collide: a__x"):
        fit_frame(
            TransformConfig.model_validate(
                {"columns": {"a": [{"type": "onehot"}], "a__x": [{"type": "standard"}]}}
            ),
            frame,
        )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            {"x": [{"type": "onehot"}, {"type": "standard"}]},
            "onehot must be the column's only step",
        ),
        ({"x": []}, "has no steps"),
        ({"x": [{"type": "target"}]}, "no target is set"),
        ({"x": [{"type": "clip"}]}, "clip needs either"),
        ({"x": [{"type": "fill_null", "strategy": "constant"}]}, "needs a value"),
        ({"ts": [{"type": "temporal", "features": ["days_since"]}]}, "days_since and reference"),
        ({"x": [{"type": "standrad"}]}, "standrad"),
    ],
)
def test_config_mistakes_are_config_errors(tmp_path, columns, message) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from mlpipe_cli.config.loader import load_config_text

    text = yaml.safe_dump({"pipeline": "p", "transforms": {"columns": columns}})
    with pytest.raises(ConfigError, match=message):
        load_config_text(text, source_name="t.yaml", base_dir=tmp_path)
