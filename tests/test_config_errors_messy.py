"""Config mistakes a new user makes on messy data: exit 2 with one line that says where.

* A transform naming a column the training data does not have (a typo) is a config error
  (exit 2) naming the transform, the unknown column and the nearest existing names — not a
  failed data check (exit 1).
* Config errors name list items the way users count them: from 1, with the item's name
  (`features[#7 'fare_per_km_30d'].agg`), never pydantic's 0-based `features.6.agg`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.config.names import nearest_names, render_key_path
from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import ConfigError
from mlpipe_cli.transforms import fit_frame

# -- a transform naming a column that is not in the data -----------------------------------


def training_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u-1", "ü-22", "用户-333", "u-4"],  # string keys, lengths vary
            "fare_km": [1.5, math.nan, None, 4.0],
            "Straße_km": [0.5, 1.0, -math.inf, 2.0],
            "city": ["Köln", "東京", None, "Köln"],
            "pickup_ts": pl.Series(
                ["2026-03-29 00:30", "2026-03-29 03:30", "2026-10-25 02:30", "2026-01-01 00:00"]
            )
            .str.to_datetime()
            .dt.replace_time_zone("UTC"),
            "signup_ts": pl.Series(["2025-01-01 00:00"] * 4)
            .str.to_datetime()
            .dt.replace_time_zone("UTC"),
            "churned": [0, 1, 0, 1],
        }
    )


def write_project(tmp: Path, transforms: dict[str, Any]) -> Path:
    training_frame().write_parquet(tmp / "train.parquet")
    config = {"pipeline": "rides", "artifact_dir": str(tmp / "artifacts"), "transforms": transforms}
    path = tmp / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def fit(cli, tmp: Path, transforms: dict[str, Any]):  # type: ignore[no-untyped-def]
    config = write_project(tmp, transforms)
    return cli("fit", "-c", config, "--data", tmp / "train.parquet")


def nothing_published(tmp: Path) -> bool:
    return not any((tmp / "artifacts").rglob("state.json"))


def test_a_typo_in_a_transform_column_exits_2_naming_the_nearest_column(cli, tmp_path) -> None:
    result = fit(
        cli,
        tmp_path,
        {
            "columns": {
                "fare_kms": [{"type": "fill_null", "strategy": "median"}, {"type": "standard"}],
                "city": [{"type": "onehot"}],
            }
        },
    )
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        "error: transforms.columns.fare_kms (fill_null): no column 'fare_kms' in the training "
        "data; nearest: 'fare_km' (fix the name in the config, or pass training data that has "
        "the column)"
    )
    assert "Traceback" not in result.stderr
    assert nothing_published(tmp_path)


def test_the_nearest_names_ignore_case_and_fold_non_ascii(cli, tmp_path) -> None:
    result = fit(
        cli, tmp_path, {"columns": {"strasse_KM": [{"type": "passthrough", "on_inf": "clip"}]}}
    )
    assert result.exit_code == 2, result.stderr
    assert "no column 'strasse_KM' in the training data; nearest: 'Straße_km'" in result.stderr


def test_a_typo_in_a_days_since_reference_or_the_target_exits_2(cli, tmp_path) -> None:
    result = fit(
        cli,
        tmp_path,
        {
            "target": "churn",
            "columns": {
                "pickup_ts": [
                    {
                        "type": "temporal",
                        "features": ["hour", "days_since"],
                        "reference": "signup_tss",
                    }
                ],
                "city": [{"type": "target"}],
            },
        },
    )
    assert result.exit_code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (
        "transforms.columns.pickup_ts (temporal) reference: no column 'signup_tss' in the "
        "training data; nearest: 'signup_ts', 'pickup_ts' (and 1 more: transforms.target: no "
        "column 'churn' in the training data; nearest: 'churned')"
    ) in result.stderr
    assert nothing_published(tmp_path)


def test_a_typo_in_a_dropped_column_is_caught_too(cli, tmp_path) -> None:
    """`drop` of a misspelt name would leave the real column (say, an e-mail) in the
    `transform` output, where other columns are kept."""
    result = fit(
        cli,
        tmp_path,
        {
            "columns": {
                "fare_km": [{"type": "passthrough", "on_null": "keep"}],
                "cty": [{"type": "drop"}],
            }
        },
    )
    assert result.exit_code == 2, result.stderr
    assert (
        "transforms.columns.cty (drop): no column 'cty' in the training data; nearest: "
        "'city'" in result.stderr
    )


def test_with_nothing_close_the_error_lists_the_columns(cli, tmp_path) -> None:
    result = fit(cli, tmp_path, {"columns": {"zzz": [{"type": "standard"}]}})
    assert result.exit_code == 2, result.stderr
    assert (
        "no column 'zzz' in the training data; nothing close; columns: 'user_id', 'fare_km', "
        "'Straße_km', 'city', 'pickup_ts', 'signup_ts', 'churned'"
    ) in result.stderr


def test_fit_frame_raises_config_error_for_the_python_api() -> None:
    config = TransformConfig.model_validate({"columns": {"fare_kms": [{"type": "standard"}]}})
    with pytest.raises(ConfigError, match=r"no column 'fare_kms' .*nearest: 'fare_km'"):
        fit_frame(config, training_frame())


def test_a_column_that_is_there_still_fits(cli, tmp_path) -> None:
    """The check does not get in the way: the same config with the right names fits."""
    result = fit(
        cli,
        tmp_path,
        {
            "columns": {
                "fare_km": [{"type": "fill_null", "strategy": "median"}, {"type": "standard"}],
                "Straße_km": [{"type": "passthrough", "on_inf": "clip"}],
            }
        },
    )
    assert result.exit_code == 0, result.stderr


# -- where config errors point -------------------------------------------------------------


def load(text_or_doc: Any, tmp: Path) -> str:
    text = text_or_doc if isinstance(text_or_doc, str) else yaml.safe_dump(text_or_doc)
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source_name="mlpipe.yaml", base_dir=tmp)
    return str(info.value)


def rides_config(**overrides: Any) -> dict[str, Any]:
    features = [
        {"name": f"rides_{n}d", "source": "rides", "agg": "count", "window": f"{n}d"}
        for n in (1, 7, 30, 90, 180, 365)
    ]
    features.append(
        {"name": "fare_per_km_30d", "source": "rides", "agg": "meen", "column": "fare_km"}
    )
    doc = {
        "pipeline": "rides",
        "entity_keys": ["user_id"],
        "sources": {"rides": {"path": "rides.parquet", "timestamp": "pickup_ts"}},
        "features": features,
    }
    doc.update(overrides)
    return doc


def test_a_bad_feature_is_named_and_counted_from_1(tmp_path) -> None:
    message = load(rides_config(), tmp_path)
    assert message.startswith("mlpipe.yaml: features[#7 'fare_per_km_30d'].agg: input should be")
    assert "features.6" not in message


def test_an_item_without_a_name_is_counted_from_1(tmp_path) -> None:
    doc = rides_config()
    doc["features"][6]["agg"] = "mean"
    doc["features"].append({"source": "rides", "agg": "count"})
    assert load(doc, tmp_path) == "mlpipe.yaml: features[#8].name: required key is missing"


def test_row_checks_and_transform_steps_are_named_alike(tmp_path) -> None:
    doc = rides_config()
    doc["features"] = []
    doc["sources"]["rides"]["checks"] = [
        {"name": "positive_fare", "expr": "fare_km > 0"},
        {"name": "kein_négatif", "exp": "fare_km >= 0"},
    ]
    doc["transforms"] = {
        "columns": {"fare_km": [{"type": "fill_null"}, {"type": "standard", "with_meen": True}]}
    }
    message = load(doc, tmp_path)
    assert message.startswith(
        "mlpipe.yaml: sources.rides.checks[#2 'kein_négatif'].expr: required key is missing"
    )
    assert "sources.rides.checks[#2 'kein_négatif'].exp: unknown key 'exp'" in message
    # the step's discriminator tag ('standard') is not a key of the YAML: left out
    assert "transforms.columns.fare_km[#2].with_meen: unknown key 'with_meen'" in message


def test_an_unset_environment_variable_in_a_list_item(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLPIPE_TEST_UNSET_WINDOW", raising=False)
    doc = rides_config()
    doc["features"][2]["window"] = "${MLPIPE_TEST_UNSET_WINDOW}"
    message = load(doc, tmp_path)
    assert message.startswith(
        "mlpipe.yaml: features[#3 'rides_30d'].window: environment variable "
        "MLPIPE_TEST_UNSET_WINDOW is not set"
    )


def test_the_cli_shows_the_same_path(cli, tmp_path) -> None:
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(rides_config()), encoding="utf-8")
    result = cli("validate", "-c", path)
    assert result.exit_code == 2
    assert "mlpipe.yaml: features[#7 'fare_per_km_30d'].agg: input should be" in result.stderr


def test_a_policy_set_on_two_steps_counts_steps_from_1(tmp_path) -> None:
    doc = rides_config(features=[])
    doc["transforms"] = {
        "columns": {
            "fare_km": [
                {"type": "log1p", "on_nan": "error"},
                {"type": "standard", "on_nan": "null"},
            ]
        }
    }
    message = load(doc, tmp_path)
    assert message == (
        "mlpipe.yaml: transforms: column 'fare_km': on_nan is set on steps #1 (log1p) and #2 "
        "(standard); set it once (it applies to the column's input)"
    )


# -- the two helpers, on their own ---------------------------------------------------------


def test_nearest_names() -> None:
    names = ["fare_km", "fare", "Straße_km", "pickup_ts", "pickup_tz"]
    assert nearest_names("fare_kms", names) == ["fare_km", "fare"]
    assert nearest_names("STRASSE_KM", names) == ["Straße_km"]
    assert nearest_names("pickup_t", names) == ["pickup_ts", "pickup_tz"]
    assert nearest_names("zzz", names) == []


def test_render_key_path() -> None:
    data = {"features": [{"name": "a"}, {"window": "7d"}], "sources": {"1": {"checks": []}}}
    assert render_key_path(["features", 0, "agg"], data) == "features[#1 'a'].agg"
    assert render_key_path(["features", 1, "window"], data) == "features[#2].window"
    assert render_key_path(["features", 5, "agg"], data) == "features[#6].agg"  # not in data
    assert render_key_path(["sources", "1", "checks"], data) == "sources.1.checks"
    assert render_key_path(["serving", "ports", 0]) == "serving.ports[#1]"
