"""`mlpipe psi-report` end to end: real Parquet files, real serving-log segments, real CLI."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.drift import build_profile, write_profile
from mlpipe_cli.sample_data import DRIFT_DAYS, END, generate

CUTOFF = END - timedelta(days=DRIFT_DAYS)
REVENUE_DERIVED = {"raw.revenue", "vec.revenue_log", "vec.revenue_high"}


def _features(data_dir: Path) -> pl.DataFrame:
    """Orders joined to users, named like a transform's raw inputs and outputs."""
    orders = pl.read_parquet(data_dir / "orders.parquet")
    users = pl.read_parquet(data_dir / "users.parquet")
    df = orders.join(users, on="user_id", how="left")
    return df.select(
        pl.col("order_ts").alias("served_at"),
        pl.col("user_id"),
        pl.col("revenue").alias("raw.revenue"),
        pl.col("product_id").alias("raw.product_id"),
        pl.col("channel").alias("raw.channel"),
        pl.col("age").alias("raw.age"),
        pl.col("country").alias("raw.country"),
        pl.col("plan").alias("raw.plan"),
        pl.col("revenue").log1p().alias("vec.revenue_log"),
        (pl.col("revenue") > 100).cast(pl.Float64).alias("vec.revenue_high"),
        (pl.col("channel") == "web").cast(pl.Float64).alias("vec.channel__web"),
        (pl.col("age").cast(pl.Float64) / 100).alias("vec.age_scaled"),
    )


def _write_serving_log(frame: pl.DataFrame, log_dir: Path, segments: int = 3) -> None:
    log = frame.with_columns(
        pl.lit("/features").alias("endpoint"),
        pl.format("[{}]", pl.col("user_id")).alias("entity"),
        pl.lit("0001-abcdefabcdef").alias("transform_version"),
        pl.lit(None, pl.String).alias("store_version"),
        pl.lit(False).alias("cold_start"),
        pl.lit(None, pl.Float64).alias("prediction"),
    ).drop("user_id")
    log_dir.mkdir(parents=True, exist_ok=True)
    size = math.ceil(log.height / segments)
    for i in range(segments):
        part = log.slice(i * size, size)
        part.write_parquet(log_dir / f"segment-20260701T00000{i}-123-{i}.parquet")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("psi")
    generate(root / "clean", rows=20_000, seed=7)
    generate(root / "drift", rows=20_000, seed=7, faults=("drift",))
    clean = _features(root / "clean")
    drift = _features(root / "drift")
    reference = clean.filter(pl.col("served_at") < CUTOFF).drop("served_at", "user_id")
    profile = root / "profile.json"
    write_profile(build_profile(reference), profile)
    _write_serving_log(drift.filter(pl.col("served_at") >= CUTOFF), root / "log-drift")
    _write_serving_log(clean.filter(pl.col("served_at") >= CUTOFF), root / "log-clean")
    # a raw batch with plain column names (as a user would pass with --current)
    batch = drift.filter(pl.col("served_at") >= CUTOFF).select(
        [pl.col(c).alias(c.split(".", 1)[1]) for c in drift.columns if c.startswith("raw.")]
    )
    batch.write_parquet(root / "batch.parquet")
    config = root / "mlpipe.yaml"
    config.write_text(
        "pipeline: churn\n"
        f"artifact_dir: {root / 'artifacts'}\n"
        "monitoring:\n"
        "  min_rows: 50\n"
        "  features:\n"
        "    revenue: {psi: 1000}\n"
    )
    return root


def _window(root: Path, log: str) -> list[str]:
    return [
        "--profile",
        root / "profile.json",
        "--serving-log",
        root / log,
        "--since",
        f"{DRIFT_DAYS}d",
        "--until",
        END.isoformat(),
    ]


def test_drift_fault_flags_revenue_derived_features_and_nothing_else(env, cli):
    res = cli("psi-report", *_window(env, "log-drift"), "--json")
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    status = {f["column"]: f["status"] for f in doc["features"]}
    assert {c for c, s in status.items() if s == "drifted"} == REVENUE_DERIVED
    assert {c for c, s in status.items() if s != "drifted"} == {
        "raw.product_id",
        "raw.channel",
        "raw.age",
        "raw.country",
        "raw.plan",
        "vec.channel__web",
        "vec.age_scaled",
    }
    assert all(s == "stable" for c, s in status.items() if c not in REVENUE_DERIVED)
    assert doc["status"] == "failed"
    assert doc["summary"] == {"stable": 7, "moderate": 0, "drifted": 3, "error": 0, "excluded": 0}
    assert doc["current"]["source"] == "serving-log"
    assert doc["current"]["rows"] == sum(
        pl.read_parquet(p).height for p in (env / "log-drift").glob("segment-*.parquet")
    )
    # sorted by PSI, descending; every feature carries its per-bin table
    psis = [f["psi"] for f in doc["features"]]
    assert psis == sorted(psis, reverse=True)
    rev = next(f for f in doc["features"] if f["column"] == "raw.revenue")
    assert [b["bin"] for b in rev["bins"]][-1] == "__missing__"
    assert len(rev["bins"]) == 11
    assert math.fsum(b["reference"] for b in rev["bins"]) == pytest.approx(1.0)
    assert math.fsum(b["current"] for b in rev["bins"]) == pytest.approx(1.0)
    assert rev["psi"] == pytest.approx(math.fsum(b["contribution"] for b in rev["bins"]))
    assert rev["mean_cur"] > 5 * rev["mean_ref"]
    assert rev["ks_pvalue"] < 1e-6
    assert "drifted or failed" in res.stderr


def test_clean_serving_window_passes(env, cli):
    res = cli("psi-report", *_window(env, "log-clean"), "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["status"] == "passed"
    assert {f["status"] for f in doc["features"]} == {"stable"}


def test_plain_table_output_sorted_by_psi(env, cli):
    res = cli("psi-report", *_window(env, "log-drift"))
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("feature"))
    rows = [line.split()[0] for line in lines[header + 1 : header + 11]]
    assert set(rows[:3]) == REVENUE_DERIVED
    assert "3 drifted, 0 moderate, 7 stable, 0 error, 0 excluded (PSI gate 0.2)" in res.stdout
    assert "\x1b[" not in res.stdout


def test_empty_window_and_empty_log_exit_2(env, cli, tmp_path):
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--serving-log",
        env / "log-drift",
        "--since",
        "1d",
        "--until",
        "2020-01-01T00:00:00Z",
    )
    assert res.exit_code == 2
    assert "no current rows" in res.stderr
    (tmp_path / "empty").mkdir()
    res = cli("psi-report", "--profile", env / "profile.json", "--serving-log", tmp_path / "empty")
    assert res.exit_code == 2
    assert "no serving-log segments" in res.stderr
    res = cli(
        "psi-report", "--profile", env / "profile.json", "--serving-log", tmp_path / "missing"
    )
    assert res.exit_code == 2
    assert "not found" in res.stderr


def test_html_report_has_one_row_per_feature_grouped_in_cards(env, cli, tmp_path):
    out = tmp_path / "report.html"
    res = cli("psi-report", *_window(env, "log-drift"), "--html", out)
    assert res.exit_code == 1
    text = out.read_text()

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, str | None]] = []
            self.cards: list[dict[str, str | None]] = []
            self.svgs = 0
            self.external: list[str] = []
            self.tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.tags.append(tag)
            if tag == "tr" and a.get("class") == "feature":
                self.rows.append(a)
            if tag == "section" and a.get("class") == "card":
                self.cards.append(a)
            if tag == "svg":
                self.svgs += 1
            for key in ("src", "href"):
                value = a.get(key)
                if value and not value.startswith("#"):
                    self.external.append(value)

    parser = Parser()
    parser.feed(text)
    parser.close()
    names = [s["data-feature"] for s in parser.rows]
    assert sorted(names) == sorted(
        REVENUE_DERIVED
        | {
            "raw.product_id",
            "raw.channel",
            "raw.age",
            "raw.country",
            "raw.plan",
            "vec.channel__web",
            "vec.age_scaled",
        }
    )
    assert parser.svgs == len(names)
    assert parser.external == []
    assert "script" not in parser.tags
    assert "link" not in parser.tags
    drifted = {s["data-feature"] for s in parser.rows if s["data-status"] == "drifted"}
    assert drifted == REVENUE_DERIVED
    # raw.channel and vec.channel__web share one card; drifted cards come first
    groups = [c["data-group"] for c in parser.cards]
    assert "channel" in groups
    assert len(groups) == len(names) - 1
    statuses = [c["data-status"] for c in parser.cards]
    assert statuses == sorted(statuses, key=lambda s: s != "drifted")
    # paths are relative (../../tmp/...), never absolute machine paths
    assert re.search(rf"(?<![./]){re.escape(str(env))}", text) is None
    assert "log-drift</code>" in text


def test_current_batch_matches_raw_names_and_features_flag(env, cli):
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--current",
        env / "batch.parquet",
        "--features",
        "revenue,channel",
        "--features",
        "raw.plan",
        "--json",
    )
    assert res.exit_code == 1
    doc = res.json()
    assert {f["column"]: f["status"] for f in doc["features"]} == {
        "raw.revenue": "drifted",
        "raw.channel": "stable",
        "raw.plan": "stable",
    }
    # vec.* outputs are not in a raw batch and there is no transform artifact: error status
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--current",
        env / "batch.parquet",
        "--features",
        "channel,vec.age_scaled",
        "--json",
    )
    assert res.exit_code == 1
    by = {f["column"]: f for f in res.json()["features"]}
    assert by["vec.age_scaled"]["status"] == "error"
    assert "not in the current data" in by["vec.age_scaled"]["message"]
    assert by["raw.channel"]["status"] == "stable"
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--current",
        env / "batch.parquet",
        "--features",
        "nope",
    )
    assert res.exit_code == 2
    assert "'nope' is not in the reference profile" in res.stderr


def test_thresholds_from_config_and_flag(env, cli):
    # monitoring.features.revenue.psi = 1000 in the config: revenue itself no longer drifts
    res = cli("psi-report", "-c", env / "mlpipe.yaml", *_window(env, "log-drift"), "--json")
    doc = res.json()
    by = {f["column"]: f for f in doc["features"]}
    assert by["raw.revenue"]["threshold"] == 1000
    assert 0.2 < by["raw.revenue"]["psi"] < 1000
    assert by["raw.revenue"]["status"] == "moderate"
    assert by["vec.revenue_log"]["status"] == "drifted"
    assert res.exit_code == 1
    # a global --threshold above every PSI passes the run
    top = max(f["psi"] for f in doc["features"] if f["column"] != "raw.revenue")
    res = cli(
        "psi-report",
        *_window(env, "log-drift"),
        "--threshold",
        str(top * 2 + 1),
        "--features",
        "vec.revenue_log,vec.revenue_high,raw.channel",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    assert res.json()["threshold"] == top * 2 + 1


def test_min_rows_warning(env, cli):
    res = cli(
        "psi-report",
        *_window(env, "log-clean"),
        "--min-rows",
        "1000000",
        "--json",
        "--features",
        "raw.channel",
    )
    assert res.exit_code == 0
    [f] = res.json()["features"]
    assert any("PSI is noisy" in w for w in f["warnings"])
    res = cli("psi-report", *_window(env, "log-clean"), "--json", "--features", "raw.channel")
    assert res.json()["features"][0]["warnings"] == []


def test_profile_from_transform_artifact(env, cli, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts", "churn")
    raw_only = json.loads((env / "profile.json").read_text())
    keep = [c for c in raw_only["column_order"] if c.startswith("raw.")]
    raw_only["columns"] = {c: raw_only["columns"][c] for c in keep}
    raw_only["column_order"] = keep

    def write(staging: Path) -> None:
        write_profile(raw_only, staging / "profile.json")

    published = store.publish("transform", write)
    config = tmp_path / "mlpipe.yaml"
    config.write_text(f"pipeline: churn\nartifact_dir: {tmp_path / 'artifacts'}\n")
    res = cli("psi-report", "-c", config, "--current", env / "batch.parquet", "--json")
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["profile"]["version"] == published.version.version
    assert doc["profile"]["source"] == "artifact"
    drifted = {f["column"] for f in doc["features"] if f["status"] == "drifted"}
    assert drifted == {"raw.revenue"}
    res = cli("psi-report", "-c", config, "--artifact", "9999", "--current", env / "batch.parquet")
    assert res.exit_code == 3


def test_usage_errors(env, cli, tmp_path):
    res = cli("psi-report", "--profile", env / "profile.json")
    assert res.exit_code == 2
    assert "exactly one of --current" in res.stderr
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--current",
        env / "batch.parquet",
        "--serving-log",
        env / "log-drift",
    )
    assert res.exit_code == 2
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--current",
        env / "batch.parquet",
        "--since",
        "1d",
    )
    assert res.exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    res = cli("psi-report", "--profile", bad, "--current", env / "batch.parquet")
    assert res.exit_code == 2
    assert "not an mlpipe profile" in res.stderr
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--serving-log",
        env / "log-drift",
        "--until",
        "yesterday-ish",
    )
    assert res.exit_code == 2
    assert "cannot parse time" in res.stderr


def test_match_column_rules():
    from mlpipe_cli.drift.report import match_column

    profiled = ["raw.revenue", "vec.revenue", "vec.channel__web"]
    assert match_column("raw.revenue", ["revenue"], profiled) == "revenue"
    assert match_column("raw.revenue", ["raw.revenue", "revenue"], profiled) == "raw.revenue"
    # a plain `revenue` is the raw input here, never the transformed output
    assert match_column("vec.revenue", ["revenue"], profiled) is None
    assert match_column("vec.channel__web", ["channel__web"], profiled) == "channel__web"
    assert match_column("revenue", ["raw.revenue"]) == "raw.revenue"
    assert match_column("x", ["vec.x"]) == "vec.x"
    assert match_column("raw.x", ["vec.x"]) is None


def test_scan_parts_bounded_slices_and_union_schema(tmp_path):
    from mlpipe_cli.drift import compare_to_profile
    from mlpipe_cli.drift.report import scan_parts

    a = pl.DataFrame({"x": [float(i % 97) for i in range(2500)], "c": ["a", "b"] * 1250})
    b = pl.DataFrame({"x": list(range(700))})  # Int64 here, no column c at all
    a.write_parquet(tmp_path / "a.parquet", row_group_size=300)
    b.write_parquet(tmp_path / "b.parquet")
    parts = scan_parts([tmp_path / "a.parquet", tmp_path / "b.parquet"], part_rows=1000)
    assert len(parts) == 4  # 1000 + 1000 + 500 rows of a, 700 rows of b
    frames = [p.collect() for p in parts]
    assert [f.height for f in frames] == [1000, 1000, 500, 700]
    assert all(f.schema == pl.Schema({"x": pl.Float64, "c": pl.String}) for f in frames)
    assert frames[3].get_column("c").null_count() == 700
    whole = pl.concat(frames)
    profile = build_profile(a.head(1000))
    by_parts = compare_to_profile(profile, parts, chunk_rows=256)
    at_once = compare_to_profile(profile, whole)
    for x, y in zip(by_parts, at_once, strict=True):
        dx, dy = x.to_dict(), y.to_dict()
        for key in ("mean_cur", "std_cur"):
            got, want = dx.pop(key), dy.pop(key)
            assert got == (None if want is None else pytest.approx(want, rel=1e-12))
        assert dx == dy
    assert by_parts[1].null_rate_cur == pytest.approx(700 / 3200)


def test_serving_log_segments_with_different_columns(env, cli, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    segs = sorted((env / "log-clean").glob("segment-*.parquet"))
    pl.read_parquet(segs[0]).write_parquet(log / segs[0].name)
    # an older segment written before raw.plan existed
    pl.read_parquet(segs[1]).drop("raw.plan").write_parquet(log / segs[1].name)
    res = cli(
        "psi-report",
        "--profile",
        env / "profile.json",
        "--serving-log",
        log,
        "--since",
        f"{DRIFT_DAYS}d",
        "--until",
        END.isoformat(),
        "--json",
        "--features",
        "raw.plan,raw.channel",
    )
    by = {f["column"]: f for f in res.json()["features"]}
    rows = sum(pl.read_parquet(p).height for p in log.glob("*.parquet"))
    missing = pl.read_parquet(segs[1]).height
    assert by["raw.plan"]["null_rate_cur"] == pytest.approx(missing / rows)
    assert by["raw.plan"]["status"] == "drifted"  # a surge of nulls
    assert by["raw.channel"]["status"] == "stable"
    assert res.exit_code == 1


def test_source_batch_against_its_saved_validation_profile(
    project, cli, sample_data_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """`psi-report --source orders` compares a raw day of orders with the profile saved by
    `validate --save-profile`, on the columns the source's distribution checks name."""
    assert cli("validate", "-c", project, "--source", "orders", "--save-profile").exit_code == 0
    orders = pl.read_parquet(sample_data_dir / "orders.parquet")
    orders.head(5000).write_parquet(tmp_path / "day.parquet")
    same = cli("psi-report", "-c", project, "--source", "orders", "--current",
               tmp_path / "day.parquet", "--json")  # fmt: skip
    assert same.exit_code == 0, same.stderr
    doc = same.json()
    statuses = {f["column"]: f["status"] for f in doc["features"]}
    assert set(statuses) == {"revenue", "channel", "product_id"}  # sources.orders.distribution
    assert "drifted" not in statuses.values()
    drifted = orders.head(5000).with_columns(pl.col("revenue") * 10)
    drifted.write_parquet(tmp_path / "drifted.parquet")
    bad = cli("psi-report", "-c", project, "--source", "orders", "--current",
              tmp_path / "drifted.parquet")  # fmt: skip
    assert bad.exit_code == 1
    assert re.search(r"^revenue\s+drifted", bad.stdout, re.M)


def test_current_without_any_reference_feature_is_one_line_exit_2(
    project, cli, sample_data_dir
) -> None:  # type: ignore[no-untyped-def]
    assert cli("validate", "-c", project, "--source", "orders", "--save-profile").exit_code == 0
    res = cli("psi-report", "-c", project, "--source", "orders", "--current",
              sample_data_dir / "users.parquet")  # fmt: skip
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "--current" in res.stderr


def test_source_and_time_feature_flags_are_checked(project, cli, sample_data_dir) -> None:  # type: ignore[no-untyped-def]
    both = cli("psi-report", "-c", project, "--source", "orders", "--artifact", "latest",
               "--current", sample_data_dir / "orders.parquet")  # fmt: skip
    assert both.exit_code == 2
    assert "--source" in both.stderr
    loose = cli("psi-report", "-c", project, "--include-time-features", "--current",
                sample_data_dir / "orders.parquet")  # fmt: skip
    assert loose.exit_code == 2
    assert "--serving-log" in loose.stderr
