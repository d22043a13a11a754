"""`mlpipe training-set` end to end on the sample data, and its failure modes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from test_features_oracle import assert_matches_oracle, oracle

from mlpipe_cli.config import load_config

SPARK_FEATURES = ["total_orders", "lifetime_value", "avg_days_between_orders"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_config(project: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(project.read_text())
    edit(data)
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def test_builds_training_set_matching_the_oracle(cli, project: Path, tmp_path: Path) -> None:
    """All example features (incl. the seed's Spark example) equal the brute-force oracle."""
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", project, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout

    config = load_config(project)
    spine = pl.read_parquet(config.training_set.spine)
    frame = pl.read_parquet(out)
    assert frame.height == spine.height
    assert frame.select(spine.columns).equals(spine)  # spine order and values untouched
    names = [f.name for f in config.features]
    assert frame.columns == [*spine.columns, *names]

    raw = yaml.safe_load(project.read_text())
    tables = {
        name: pl.read_parquet(raw["sources"][name]["path"]).to_dicts()
        for name in ("orders", "users")
    }
    expected = oracle(raw, tables, spine.to_dicts(), keys=["user_id"], timestamp="label_ts")
    assert_matches_oracle(frame, expected, names)
    # the seed's example is not trivially constant: first-time buyers get 999, others don't
    gaps = frame["avg_days_between_orders"]
    assert (gaps == 999).sum() > 0
    assert (gaps < 999).sum() > 0
    assert (frame["total_orders"] == 0).sum() > 0


def test_output_is_byte_identical_and_manifest_records_inputs(
    cli, project: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "a" / "train.parquet", tmp_path / "b" / "train.parquet"
    assert cli("training-set", "-c", project, "--out", first).exit_code == 0
    result = cli("training-set", "-c", project, "--out", second, "--json")
    assert result.exit_code == 0, result.stderr
    assert _sha(first) == _sha(second)

    doc = result.json()
    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert manifest == json.loads((first.parent / "train.parquet.manifest.json").read_text())
    assert manifest["output"]["sha256"] == _sha(second) == doc["output_sha256"]
    assert manifest["rows"]["spine"] == manifest["rows"]["output"] == doc["rows"]
    assert manifest["features"] == [f["feature"] for f in doc["features"]]
    assert set(manifest["inputs"]["sources"]) == {"orders", "users"}
    assert manifest["inputs"]["spine"]["files"][0]["name"] == "labels.parquet"
    assert len(manifest["config_hash"]) == 64
    assert doc["validated_sources"] == ["orders", "users", "labels"]
    # the same manifest is published once as a training-set artifact (idempotent)
    listed = cli("artifacts", "list", "training-set", "-c", project, "--json").json()
    assert [a["version"] for a in listed["artifacts"]] == [doc["artifact_version"]]


def test_feature_subset_and_spine_override(cli, project: Path, tmp_path: Path) -> None:
    config = load_config(project)
    spine = pl.read_parquet(config.training_set.spine)
    # duplicated and reordered rows, plus an entity that never ordered
    custom = pl.concat([spine.tail(5), spine.head(3), spine.head(3)]).with_columns(
        pl.Series("note", [f"r{i}" for i in range(11)])
    )
    custom[10, "user_id"] = 10_000_000
    spine_path = tmp_path / "spine.parquet"
    custom.write_parquet(spine_path)
    out = tmp_path / "train.parquet"
    result = cli(
        "training-set", "-c", project, "--spine", spine_path, "--out", out,
        "--features", "days_since_last_order,total_orders", "--no-publish",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(out)
    assert frame.columns == [*custom.columns, "days_since_last_order", "total_orders"]
    assert frame.select(custom.columns).equals(custom)
    assert frame.row(8, named=True)["total_orders"] == frame.row(5, named=True)["total_orders"]
    assert frame.row(10, named=True)["total_orders"] == 0
    assert frame.row(10, named=True)["days_since_last_order"] == 999
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--features", "nope"], 2, "unknown feature 'nope'"),
        (["--features", ","], 2, "--features is empty"),
        (["--timestamp", "when"], 2, "spine has no column 'when'"),
    ],
)
def test_bad_flags(cli, project: Path, tmp_path: Path, args, code, message) -> None:  # type: ignore[no-untyped-def]
    result = cli("training-set", "-c", project, "--out", tmp_path / "o.parquet", *args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_out_may_not_overwrite_an_input(cli, project: Path) -> None:
    config = load_config(project)
    result = cli("training-set", "-c", project, "--out", config.training_set.spine)
    assert result.exit_code == 2
    assert "is also an input (same path)" in result.stderr


def test_null_spine_timestamps_fail_with_exit_1(cli, project: Path, tmp_path: Path) -> None:
    config = load_config(project)
    spine = pl.read_parquet(config.training_set.spine).with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("label_ts"))
        .alias("label_ts")
    )
    path = tmp_path / "spine.parquet"
    spine.write_parquet(path)
    result = cli("training-set", "-c", project, "--spine", path, "--out", tmp_path / "o.parquet")
    assert result.exit_code == 1
    assert "1 null timestamp(s)" in result.stderr


def test_naive_spine_against_aware_sources(cli, project: Path, tmp_path: Path) -> None:
    config = load_config(project)
    spine = pl.read_parquet(config.training_set.spine).with_columns(
        pl.col("label_ts").dt.replace_time_zone(None)
    )
    path = tmp_path / "spine.parquet"
    spine.write_parquet(path)
    out = tmp_path / "o.parquet"
    result = cli("training-set", "-c", project, "--spine", path, "--out", out)
    assert result.exit_code == 2
    assert "naive timestamps (spine.label_ts)" in result.stderr
    assert "set `timezone:`" in result.stderr

    # naming the zone makes them comparable: the naive values are read as UTC wall time
    _edit_config(project, lambda d: d.update(timezone="UTC"))
    assert cli("training-set", "-c", project, "--spine", path, "--out", out).exit_code == 0
    reference = tmp_path / "ref.parquet"
    assert cli("training-set", "-c", project, "--out", reference).exit_code == 0
    names = [f.name for f in config.features]
    assert pl.read_parquet(out).select(names).equals(pl.read_parquet(reference).select(names))


def test_invalid_source_data_fails_validation_first(cli, tmp_path: Path, project: Path) -> None:
    from mlpipe_cli.sample_data import generate

    data = tmp_path / "bad"
    generate(data, rows=2000, seed=3, faults=("out-of-range",))

    def repoint(d):  # type: ignore[no-untyped-def]
        for source in d["sources"].values():
            source["path"] = str(data / Path(source["path"]).name)
        d["training_set"]["spine"] = str(data / "labels.parquet")

    _edit_config(project, repoint)
    result = cli("training-set", "-c", project, "--out", tmp_path / "o.parquet")
    assert result.exit_code == 1
    assert "failed validation" in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_help_has_an_example(cli) -> None:
    result = cli("training-set", "--help")
    assert result.exit_code == 0
    assert "Example: mlpipe training-set" in result.stdout
