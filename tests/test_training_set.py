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


# -- the multi-entity example: configs/rides.yaml ----------------------------------------

RIDES_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rides.yaml"


def _rides_project(tmp_path: Path, rows: int = 3000) -> Path:
    from mlpipe_cli.sample_data import generate_rides

    data = tmp_path / "rides"
    generate_rides(data, rows=rows, seed=11)
    text = RIDES_CONFIG.read_text().replace("../data/rides/", f"{data}/")
    path = tmp_path / "rides.yaml"
    path.write_text(text)
    return path


def test_rides_example_three_entities_match_the_oracle(tmp_path: Path) -> None:
    """Issue 12: rider, driver and zone features (derived columns, a derived created time with
    `null_created: never`, event windows, a lag offset, one source joined at two spine
    columns) in one run equal the brute-force oracle, and every feature matched."""
    from datetime import timedelta

    from mlpipe_cli.features import check_match_rates, compute_features

    path = _rides_project(tmp_path)
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    spine = pl.read_parquet(config.training_set.spine)
    result = compute_features(config, spine, timestamp="requested_at", stats=True)
    check_match_rates(result.stats)
    assert {s.feature: s.keys for s in result.stats}["dropoff_rain_mm"] == {"dropoff_zone": "zone"}
    rides = [
        dict(
            r,
            # the derived columns, independently: pickup instant and fare per km
            picked_up_at=None if r["wait_min"] is None else r["requested_at"] + timedelta(minutes=r["wait_min"]),
            fare_per_km=r["fare"] / r["distance_km"],
        )
        for r in pl.read_parquet(raw["sources"]["rides"]["path"]).to_dicts()
    ]  # fmt: skip
    tables = {
        "rides": rides,
        "drivers": pl.read_parquet(raw["sources"]["drivers"]["path"]).to_dicts(),
        "zone_weather": pl.read_parquet(raw["sources"]["zone_weather"]["path"]).to_dicts(),
    }
    sample = spine.gather_every(7)  # the oracle is quadratic; a seventh of the rows suffices
    out = result.frame.gather_every(7)
    expected = oracle(raw, tables, sample.to_dicts(), keys=["rider_id"], timestamp="requested_at")
    names = [f["name"] for f in raw["features"]]
    assert_matches_oracle(out, expected, names)
    # not vacuous: each feature has values besides its default
    for f in raw["features"]:
        column = out.get_column(f["name"])
        assert column.drop_nulls().filter(column.drop_nulls() != f.get("default", -1)).len() > 0


def test_rides_example_builds_with_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _rides_project(tmp_path, rows=1000)
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", path, "--out", out, "--no-publish")
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(out)
    assert frame.height == pl.read_parquet(tmp_path / "rides" / "labels.parquet").height
    assert "dropoff_rain_mm" in frame.columns


def test_rides_data_is_byte_identical_per_seed(tmp_path: Path) -> None:
    from mlpipe_cli.sample_data import RIDES_TABLES, generate_rides

    a = generate_rides(tmp_path / "a", rows=500, seed=3)
    b = generate_rides(tmp_path / "b", rows=500, seed=3)
    c = generate_rides(tmp_path / "c", rows=500, seed=4)
    assert tuple(a.files) == RIDES_TABLES
    for name in RIDES_TABLES:
        assert _sha(a.files[name]) == _sha(b.files[name])
    assert _sha(a.files["rides"]) != _sha(c.files["rides"])
    rides = pl.read_parquet(a.files["rides"])
    lengths = rides["rider_id"].str.len_chars().unique()
    assert lengths.len() >= 3  # string keys of different lengths
    assert rides["pickup_zone"].str.contains("[^\\x00-\\x7f]").any()  # and non-ASCII ones
    assert rides["wait_min"].null_count() > 0  # cancelled rides: never visible
