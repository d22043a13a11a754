"""Null, NaN and ±inf: what each numeric column's policy does, and that everything is counted.

The batch report (transforms/report.py) is checked against counts taken by a plain Python
loop over the same records; refusals against the online path; `fit` on NaN/inf training data
against the one-line messages it must give, with every warning an error (no numpy
RuntimeWarning noise); format-1 states (before the policy existed) keep their behaviour.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import DataCheckFailed, InputError
from mlpipe_cli.transforms import (
    FittedTransform,
    apply_with_report,
    fit_frame,
    load_transform,
    transform_frame,
)

GOLDEN = Path(__file__).resolve().parent / "golden"

TRAIN = pl.DataFrame(
    {
        "a": [1.0, 2.0, 3.0, 4.0, 10.0],
        "b": [0.5, 1.5, 2.5, 3.5, 4.5],
        "n": [1, 2, 3, 4, 5],
    }
)


def fit(columns: dict[str, Any], frame: pl.DataFrame = TRAIN) -> FittedTransform:
    return fit_frame(TransformConfig.model_validate({"columns": columns}), frame).transform


POLICIES: dict[str, dict[str, Any]] = {
    # name -> the steps of column "a"
    "defaults": [{"type": "standard"}],
    "fill": [{"type": "fill_null", "strategy": "median"}, {"type": "minmax"}],
    "keep": [{"type": "standard", "on_null": "keep"}],
    "nan_error": [{"type": "fill_null", "strategy": "mean", "on_nan": "error"}],
    "inf_clip": [{"type": "robust", "on_inf": "clip", "on_null": "keep"}],
    "all": [{"type": "clip", "min": 0, "on_inf": "clip", "on_nan": "error"},
            {"type": "fill_null", "strategy": "constant", "value": 0.5}],
    "passthrough": [{"type": "passthrough", "on_null": "keep", "on_inf": "clip"}],
}  # fmt: skip

values = st.one_of(
    st.none(),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 2.5, 1e300]),
    st.floats(-20, 20),
)


def brute_counts(xs: list[float | None]) -> dict[str, int]:
    return {
        "null": sum(x is None for x in xs),
        "nan": sum(x is not None and math.isnan(x) for x in xs),
        "inf": sum(x is not None and math.isinf(x) for x in xs),
    }


@pytest.mark.parametrize("policy", sorted(POLICIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xs=st.lists(values, min_size=0, max_size=30))
def test_report_counts_are_the_brute_force_counts(policy: str, xs: list[float | None]) -> None:
    transform = _fitted(policy)
    frame = pl.DataFrame({"a": xs, "b": [1.0] * len(xs)}, schema={"a": pl.Float64, "b": pl.Float64})
    report = transform_frame(transform, frame.lazy()).report()
    want = brute_counts(xs)
    (column,) = [c for c in report.columns if c.column == "a"]
    assert report.rows == len(xs)
    assert (column.null, column.nan, column.inf) == (want["null"], want["nan"], want["inf"])
    # the rows the online path refuses are exactly the ones that make the report refuse
    refused = 0
    outputs = transform.transform_batch(frame.lazy()).collect()["a"].to_list()
    for x, batch_value in zip(xs, outputs, strict=True):
        try:
            (online,) = [
                v
                for v, name in zip(
                    transform.transform_one({"a": x, "b": 1.0}),
                    transform.output_columns,
                    strict=True,
                )
                if name == "a"
            ]
        except InputError as exc:
            message = str(exc)
            refused += 1
            assert message.startswith("column 'a': ")
            continue
        assert (online is None) == (batch_value is None)
        if online is not None:
            assert online == pytest.approx(batch_value, rel=1e-12, abs=1e-12)
    assert bool(refused) == bool(report.problems())
    assert column.missing_out == sum(v is None for v in outputs)
    if refused:
        with pytest.raises(DataCheckFailed) as info:
            report.check()
        assert "\n" not in str(info.value)
        assert info.value.report["problems"]  # type: ignore[attr-defined]
    else:
        report.check()


_FITS: dict[str, FittedTransform] = {}


def _fitted(policy: str) -> FittedTransform:
    if policy not in _FITS:
        _FITS[policy] = fit({"a": POLICIES[policy], "b": [{"type": "standard"}]})
    return _FITS[policy]


def test_what_each_policy_does_by_hand() -> None:
    xs = [None, math.nan, math.inf, -math.inf, 3.0]
    frame = pl.DataFrame({"a": xs, "b": [1.0] * 5})
    # robust on a = 1,2,3,4,10: median 3, IQR 2; ±inf clipped to the training range [1, 10]
    clip = _fitted("inf_clip")
    out = clip.transform_batch(frame.lazy()).collect()["a"].to_list()
    assert out == [None, None, (10 - 3) / 2, (1 - 3) / 2, 0.0]
    assert [clip.transform_one({"a": x, "b": 1.0})[0] for x in xs] == out
    report = transform_frame(clip, frame.lazy()).report()
    assert report.handled() == {"a": {"nan_read_as_null": 1, "nulls_kept": 2, "inf_clipped": 2}}
    report.check()
    # fill_null median (3.0) then minmax over 1..10: null and NaN filled; ±inf refused
    fill = _fitted("fill")
    report = transform_frame(fill, frame.lazy()).report()
    assert report.handled()["a"] == {"nan_read_as_null": 1, "nulls_filled": 2}
    assert report.problems() == [
        "column 'a': 2 ±inf values and nothing handles them (fit with `on_inf: clip` to map "
        "them to the training range)"
    ]
    with pytest.raises(DataCheckFailed, match=r"^transform unpublished: column 'a': 2 ±inf"):
        report.check()
    with pytest.raises(InputError, match=r"column 'a': inf is refused \(on_inf: error\)"):
        fill.transform_one({"a": math.inf, "b": 1.0})
    assert fill.transform_one({"a": math.nan, "b": 1.0})[0] == (3.0 - 1.0) / 9.0
    # the defaults without fill_null: null and NaN refused, naming the column and the count
    plain = _fitted("defaults")
    report = transform_frame(plain, frame.head(2).lazy()).report()
    assert report.problems() == [
        "column 'a': 2 values would come out missing (1 null, 1 NaN inputs) and no step fills "
        "them (fit with a fill_null step, or `on_null: keep` to pass missing values on)"
    ]
    for x in (None, math.nan):
        with pytest.raises(InputError, match=r"column 'a': .* nothing fills it"):
            plain.transform_one({"a": x, "b": 1.0})
    # on_nan: error refuses NaN even where a fill_null would fill it
    with pytest.raises(InputError, match=r"column 'a': NaN is refused \(on_nan: error\)"):
        _fitted("nan_error").transform_one({"a": math.nan, "b": 1.0})
    assert _fitted("nan_error").transform_one({"a": None, "b": 1.0})[0] == 4.0


def test_apply_with_report_all_nulls_fails_loudly() -> None:
    """The issue's case: an all-null column used to come out all-null, silently."""
    transform = _fitted("defaults")
    frame = pl.DataFrame(
        {"a": [None] * 4, "b": [1.0] * 4}, schema={"a": pl.Float64, "b": pl.Float64}
    )
    with pytest.raises(DataCheckFailed, match=r"column 'a': 4 values would come out missing"):
        apply_with_report(transform, frame)
    kept = _fitted("keep")
    out, report = apply_with_report(kept, frame)
    assert out["a"].to_list() == [None] * 4
    assert report.handled() == {"a": {"nulls_kept": 4}}
    assert report.to_dict()["columns"][0]["policy"] == {
        "null": "keep",
        "nan": "null",
        "inf": "error",
    }


def test_counts_ride_along_with_a_streaming_write(tmp_path: Path) -> None:
    """One pass: the counts collected together with `sink_parquet` give the same report."""
    transform = _fitted("inf_clip")
    xs = [None, math.nan, math.inf, 3.0] * 2500
    pl.DataFrame({"a": xs, "b": [1.0] * len(xs)}).write_parquet(tmp_path / "in.parquet")
    run = transform_frame(transform, pl.scan_parquet(tmp_path / "in.parquet"))
    counts, _ = pl.collect_all(
        [run.counts, run.output.sink_parquet(tmp_path / "o.parquet", lazy=True)]
    )
    assert run.report_from(counts) == run.report()
    assert run.report().handled() == {"a": {"nan_read_as_null": 2500, "nulls_kept": 5000,
                                            "inf_clipped": 2500}}  # fmt: skip
    assert pl.read_parquet(tmp_path / "o.parquet").height == len(xs)


# -- fit on NaN / inf / null training data ------------------------------------------------


@pytest.mark.parametrize(
    ("column", "steps", "message"),
    [
        ([1.0, math.inf, 2.0, -math.inf], [{"type": "standard"}],
         r"^column 'a': 2 training values are ±inf \(first at row 1\) and nothing handles them "
         r"\(fix the data, or set `on_inf: clip` on the column's steps"),
        ([1.0, 2.0, math.nan, None], [{"type": "minmax"}],
         r"^column 'a': 2 training values are missing \(1 null, 1 NaN; first at row 2\) and no "
         r"step fills them \(add a fill_null step to the column, or set `on_null: keep`"),
        ([1.0, math.nan, 2.0], [{"type": "fill_null", "on_nan": "error"}],
         r"^column 'a': 1 training values are NaN \(first at row 1\) and the column refuses "
         r"NaN \(on_nan: error\)"),
        ([math.inf, -math.inf], [{"type": "standard", "on_inf": "clip"}],
         r"^column 'a': no finite training values to clip ±inf to"),
    ],
)  # fmt: skip
def test_fit_on_nan_and_inf_is_one_line_without_warnings(
    column: list[float | None], steps: list[dict[str, Any]], message: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        with pytest.raises(DataCheckFailed, match=message) as info:
            fit({"a": steps}, pl.DataFrame({"a": column}, schema={"a": pl.Float64}))
    assert "\n" not in str(info.value)


def test_fit_with_inf_clip_fits_on_the_clipped_values() -> None:
    """±inf become the finite training min/max before the steps are fitted, as at transform."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform = fit(
            {"a": [{"type": "standard", "on_inf": "clip"}]},
            pl.DataFrame({"a": [1.0, 3.0, math.inf, -math.inf]}),
        )
    state = transform.state["columns"][0]["state"]
    assert state["policy"] == {
        "null": "error",
        "nan": "null",
        "inf": "clip",
        "inf_bounds": [1.0, 3.0],
    }
    assert state["steps"][0]["mean"] == 2.0  # mean of 1, 3, 3, 1


def test_cli_fit_on_inf_data(cli: Any, tmp_path: Path) -> None:
    pl.DataFrame({"a": [1.0, math.inf, 2.0]}).write_parquet(tmp_path / "t.parquet")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({
        "pipeline": "p", "artifact_dir": str(tmp_path / "art"),
        "transforms": {"columns": {"a": [{"type": "log1p"}, {"type": "standard"}]}}}))  # fmt: skip
    result = cli("fit", "-c", tmp_path / "m.yaml", "--data", tmp_path / "t.parquet")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "column 'a': 1 training values are ±inf (first at row 1)" in result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").rglob("state.json"))


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"type": "standard", "on_null": "keep"}, {"type": "minmax", "on_null": "error"}],
         r"column 'a': on_null is set on steps #1 \(standard\) and #2 \(minmax\); set it once"),
        ([{"type": "standard", "on_null": "fill"}], "on_null: fill needs a fill_null step"),
        ([{"type": "fill_null"}, {"type": "standard", "on_null": "keep"}],
         "on_null: keep contradicts its fill_null step"),
        ([{"type": "passthrough", "on_null": "fill"}], "on_null: fill needs a fill_null step"),
        ([{"type": "standard", "on_inf": "zero"}], "on_inf"),
        ([{"type": "onehot", "on_null": "keep"}], "on_null"),
    ],
)  # fmt: skip
def test_policy_config_errors(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransformConfig.model_validate({"columns": {"a": steps}})


def test_unset_policy_keys_leave_params_and_steps_alone() -> None:
    """A config that does not use the new keys keeps its config hash (params) and step list."""
    from mlpipe_cli.transforms.fit import effective_params

    config = TransformConfig.model_validate({"columns": {"a": [{"type": "standard"}]}})
    assert effective_params(config)["columns"]["a"] == [
        {"type": "standard", "with_mean": True, "with_std": True}
    ]
    outcome = fit_frame(config, TRAIN)
    assert outcome.state["columns"][0]["steps"] == [
        {"type": "standard", "with_mean": True, "with_std": True}
    ]
    assert outcome.state["format_version"] == 2


# -- artifacts from before the policy -----------------------------------------------------


def test_format_1_golden_keeps_its_behaviour(tmp_path: Path) -> None:
    """The committed format-1 artifact: missing stays missing, ±inf flows through as it did,
    nothing is refused; the report counts what happened."""
    shutil.copytree(GOLDEN / "artifacts", tmp_path / "artifacts")
    store = ArtifactStore(tmp_path / "artifacts", "golden")
    transform = load_transform(store, "0001")
    assert transform.state["format_version"] == 1
    frame = pl.read_parquet(GOLDEN / "input.parquet")
    report = transform_frame(transform, frame.lazy()).report()
    assert report.problems() == []
    assert report.handled()["amount"] == {"nulls_kept": 1}
    assert report.handled()["visits"] == {"nulls_kept": 1}
    assert "score" not in report.handled() or report.handled()["score"].get("nulls_filled")
    weird = frame.head(1).with_columns(pl.lit(math.inf).alias("visits"))
    out = transform.transform_batch(weird.lazy()).collect()["visits"][0]
    assert (
        out
        == math.inf
        == transform.transform_one(weird.row(0, named=True))[
            transform.output_columns.index("visits")
        ]
    )
    assert transform_frame(transform, weird.lazy()).report().handled()["visits"] == {"inf_kept": 1}


def test_a_newer_state_format_is_refused() -> None:
    state = json.loads(
        (GOLDEN / "artifacts/golden/transform/0001-4fe5e7cfb4c1/state.json").read_text()
    )
    state["format_version"] = 3
    from mlpipe_cli.errors import ArtifactError

    with pytest.raises(ArtifactError, match="format_version 3 is not one this mlpipe reads"):
        FittedTransform(state, {})
