"""`mlpipe training-set` on messy real-world data: string keys of random lengths with
non-ASCII text, composite keys, two entities per spine row, NaN and ±inf in the values,
multi-part Parquet directories, and the spine's time column stored in ns or in us.

What each test pins down (each failed before its fix):

* the summary (table, --json, manifest) counts NaN and ±inf apart from nulls, equal to a
  count done here value by value in plain Python;
* a null entity key in the spine (any column a selected feature joins on) is exit 2 with a
  one-line message naming the column, the count and the first rows, and writes nothing;
* the same spine stored as Datetime('ns') and as Datetime('us') gives bit-identical feature
  values (time_since_last and mean_interval used to differ in the last bit).
"""

from __future__ import annotations

import json
import math
import random
import struct
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config import load_config
from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.errors import InputError
from mlpipe_cli.features import compute_features

T0 = datetime(2021, 3, 1, tzinfo=UTC)
# multi-year histories: a float64 holds ns counts exactly only up to ~104 days
SPAN_SECONDS = 3 * 365 * 86_400
ALPHABET = "aZ09_-é東京🙂ßøñ "
REGIONS = ["north", "süd", "ост", "南"]


def _random_key(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 9)))


def _write_parts(frame: pl.DataFrame, directory: Path, parts: int) -> Path:
    """``frame`` as a directory of ``parts`` Parquet files (row order kept across them)."""
    directory.mkdir(parents=True, exist_ok=True)
    size = -(-frame.height // parts)
    for i in range(parts):
        frame.slice(i * size, size).write_parquet(directory / f"part-{i:03d}.parquet")
    return directory


def _amount(rng: random.Random) -> float | None:
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.10:
        return math.nan
    if roll < 0.13:
        return math.inf
    if roll < 0.16:
        return -math.inf
    return round(rng.uniform(-50, 500), 2)


def _time(rng: random.Random, span: int = SPAN_SECONDS) -> datetime:
    # microseconds that are not round: the ns and us files must hold the same instants
    return T0 + timedelta(seconds=rng.randint(0, span), microseconds=rng.randint(0, 999_999))


def messy_project(tmp_path: Path, *, seed: int = 7, spine_rows: int = 600) -> dict[str, Any]:
    """Events keyed by (user, region) in a 3-part directory, payments keyed by merchant,
    a 2-part spine directory with both entities per row; returns the config path, the
    spine frame and the feature names."""
    rng = random.Random(seed)
    users = sorted({_random_key(rng) for _ in range(40)})
    merchants = [rng.randint(-(2**40), 2**40) for _ in range(15)]
    events = pl.DataFrame(
        [
            {
                "user": rng.choice(users),
                "region": rng.choice(REGIONS),
                "ts": _time(rng),
                "amount": _amount(rng),
            }
            for _ in range(2500)
        ],
        schema={
            "user": pl.String,
            "region": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "amount": pl.Float64,
        },
        orient="row",
    )
    payments = pl.DataFrame(
        [
            {"merchant": rng.choice(merchants), "paid_at": _time(rng), "fee": _amount(rng)}
            for _ in range(800)
        ],
        schema={"merchant": pl.Int64, "paid_at": pl.Datetime("us", "UTC"), "fee": pl.Float64},
        orient="row",
    )
    spine = pl.DataFrame(
        [
            {
                "user": rng.choice(users),
                "region": rng.choice(REGIONS),
                "merchant": rng.choice(merchants),
                "label_ts": _time(rng, SPAN_SECONDS + 200 * 86_400),
                "label": rng.randint(0, 1),
            }
            for _ in range(spine_rows)
        ],
        schema={
            "user": pl.String,
            "region": pl.String,
            "merchant": pl.Int64,
            "label_ts": pl.Datetime("us", "UTC"),
            "label": pl.Int8,
        },
        orient="row",
    )
    data = tmp_path / "data"
    _write_parts(events, data / "events", 3)
    _write_parts(payments, data / "payments", 2)
    _write_parts(spine, data / "spine", 2)
    features = [
        {"name": "amount_mean", "source": "events", "agg": "mean", "column": "amount"},
        {"name": "amount_last", "source": "events", "agg": "last", "column": "amount"},
        {
            "name": "amount_sum_90d",
            "source": "events",
            "agg": "sum",
            "column": "amount",
            "window": "90d",
            "default": 0,
        },
        {"name": "amount_std", "source": "events", "agg": "std", "column": "amount"},
        {"name": "events_total", "source": "events", "agg": "count", "default": 0},
        {
            "name": "days_since_event",
            "source": "events",
            "kind": "time_since_last",
            "unit": "d",
            "default": 9999,
        },
        {"name": "weeks_since_event", "source": "events", "kind": "time_since_last", "unit": "w"},
        {"name": "event_gap_days", "source": "events", "kind": "mean_interval", "unit": "d"},
        {
            "name": "event_gap_hours_400d",
            "source": "events",
            "kind": "mean_interval",
            "unit": "h",
            "window": "400d",
        },
        {"name": "fee_max", "source": "payments", "agg": "max", "column": "fee"},
        {
            "name": "hours_since_payment",
            "source": "payments",
            "kind": "time_since_last",
            "unit": "h",
        },
        {"name": "payment_gap_minutes", "source": "payments", "kind": "mean_interval", "unit": "m"},
    ]
    config = {
        "pipeline": "messy",
        "entity_keys": ["user", "region"],
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {
            "events": {"path": str(data / "events"), "timestamp": "ts"},
            "payments": {
                "path": str(data / "payments"),
                "timestamp": "paid_at",
                "entity_keys": ["merchant"],
            },
        },
        "features": features,
        "training_set": {"spine": str(data / "spine"), "timestamp": "label_ts"},
    }
    path = tmp_path / "messy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return {"config": path, "spine": spine, "features": [f["name"] for f in features]}


def _count_by_hand(values: list[Any]) -> dict[str, int]:
    """nulls / NaN / ±inf / valid, one value at a time (shares no code with mlpipe)."""
    counts = {"nulls": 0, "nans": 0, "infs": 0, "valid": 0}
    for value in values:
        if value is None:
            counts["nulls"] += 1
        elif isinstance(value, float) and math.isnan(value):
            counts["nans"] += 1
        elif isinstance(value, float) and math.isinf(value):
            counts["infs"] += 1
        else:
            counts["valid"] += 1
    return counts


# -- 1. NaN and ±inf are not "non-null, complete" -------------------------------------------


def test_summary_counts_nan_and_inf_apart_from_nulls(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = messy_project(tmp_path)
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", project["config"], "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    frame = pl.read_parquet(out)
    expected = {
        name: _count_by_hand(frame.get_column(name).to_list()) for name in project["features"]
    }
    # the data is messy enough for this to mean something: NaN and inf (+ and -) in the
    # output of several features, and nulls too
    assert sum(c["nans"] for c in expected.values()) > 0
    assert sum(c["infs"] for c in expected.values()) > 0
    assert expected["amount_last"]["nans"] > 0
    assert expected["amount_last"]["infs"] > 0
    assert expected["amount_std"]["nulls"] > 0
    assert frame.get_column("amount_last").is_infinite().any()

    by_name = {entry["feature"]: entry for entry in doc["features"]}
    assert list(by_name) == project["features"]
    for name, counts in expected.items():
        got = {k: by_name[name][k] for k in counts}
        assert got == counts, name
        assert sum(got.values()) == frame.height
    # integer features have no NaN to count, and say so with a 0 (the key is always there)
    assert by_name["events_total"]["nans"] == by_name["events_total"]["infs"] == 0

    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert manifest["values"] == expected
    # "nulls" kept its meaning (Polars' null count), for readers of the old key
    assert {n: by_name[n]["nulls"] for n in expected} == {
        n: frame.get_column(n).null_count() for n in expected
    }


def test_human_table_shows_nan_and_inf_columns(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = messy_project(tmp_path, seed=11, spine_rows=300)
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", project["config"], "--out", out, "--no-publish")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("feature"))
    assert lines[start].split() == ["feature", "dtype", "nulls", "nan", "inf", "matched"]
    frame = pl.read_parquet(out)
    rows = {line.split()[0]: line.split() for line in lines[start + 1 :] if line.split()}
    for name in project["features"]:
        counts = _count_by_hand(frame.get_column(name).to_list())
        _, _dtype, nulls, nans, infs, *_ = rows[name]
        assert (int(nulls), int(nans), int(infs)) == (
            counts["nulls"],
            counts["nans"],
            counts["infs"],
        ), name
    assert int(rows["amount_last"][3]) > 0
    assert int(rows["amount_last"][4]) > 0


# -- 2. a null entity key in the spine fails loudly ------------------------------------------


def _spine_with_nulls(
    project: dict[str, Any], tmp_path: Path, column: str, rows: list[int]
) -> Path:
    spine = project["spine"]
    is_null = pl.int_range(pl.len()).is_in(rows)
    broken = spine.with_columns(pl.when(is_null).then(None).otherwise(pl.col(column)).alias(column))
    return _write_parts(broken, tmp_path / f"spine-null-{column}", 2)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("column", "rows"),
    [
        ("user", [3, 11]),  # the first part of the composite key (String, non-ASCII values)
        ("region", [0, 299, 300, 301, 450, 598, 599]),  # the second part; rows in both files
        ("merchant", [17]),  # the second entity of each row (Int64)
    ],
)
def test_null_spine_key_exits_2_naming_column_count_and_rows(
    cli, tmp_path: Path, column: str, rows: list[int]
) -> None:  # type: ignore[no-untyped-def]
    project = messy_project(tmp_path)
    spine = _spine_with_nulls(project, tmp_path, column, rows)
    out = tmp_path / "train.parquet"
    result = cli("training-set", "-c", project["config"], "--spine", spine, "--out", out)
    assert result.exit_code == 2, result.stdout + result.stderr
    line = _error_line(result.stderr)
    assert f"spine column {column!r} is null in {len(rows)} of 600 rows" in line
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    assert f"0-based rows {shown};" in line
    assert "drop or fill" in line  # the hint says what to do
    # nothing written: no output, no manifest, no training-set artifact (the run ledger
    # records the failed run, as for every command)
    assert not out.exists()
    assert not (tmp_path / "train.parquet.manifest.json").exists()
    assert not [p for p in (tmp_path / "artifacts").rglob("*") if "training-set" in p.name]


def test_null_keys_in_several_columns_are_all_named(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = messy_project(tmp_path)
    spine = project["spine"].with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("user")).alias("user"),
        pl.when(pl.int_range(pl.len()) == 9)
        .then(None)
        .otherwise(pl.col("merchant"))
        .alias("merchant"),
    )
    path = tmp_path / "spine.parquet"
    spine.write_parquet(path)
    result = cli(
        "training-set", "-c", project["config"], "--spine", path, "--out", tmp_path / "o.parquet"
    )
    assert result.exit_code == 2
    line = _error_line(result.stderr)
    assert "spine column 'user' is null in 1 of 600 rows (0-based rows 5;" in line
    assert "spine column 'merchant' is null in 1 of 600 rows (0-based rows 9;" in line
    assert "features 'amount_mean' and 8 more join on it" in line
    assert "features 'fee_max' and 2 more join on it" in line


def test_a_null_in_a_column_no_selected_feature_joins_on_is_just_data(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only the keys of the features computed are keys: with only the (user, region)
    features selected, a null merchant is a passthrough column like the label."""
    project = messy_project(tmp_path)
    spine = _spine_with_nulls(project, tmp_path, "merchant", [2, 40])
    out = tmp_path / "train.parquet"
    result = cli(
        "training-set",
        "-c",
        project["config"],
        "--spine",
        spine,
        "--out",
        out,
        "--features",
        "amount_mean,days_since_event",
        "--no-publish",
    )
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(out)
    assert frame.get_column("merchant").null_count() == 2
    failing = cli(
        "training-set",
        "-c",
        project["config"],
        "--spine",
        spine,
        "--out",
        out,
        "--features",
        "fee_max",
        "--no-publish",
    )
    assert failing.exit_code == 2
    assert "spine column 'merchant' is null in 2 of 600 rows" in failing.stderr


def test_null_spine_key_through_the_python_api(tmp_path: Path) -> None:
    project = messy_project(tmp_path, spine_rows=50)
    config = load_config(project["config"])
    spine = project["spine"].with_columns(
        pl.when(pl.int_range(pl.len()) >= 10).then(None).otherwise(pl.col("region")).alias("region")
    )
    with pytest.raises(InputError) as caught:
        compute_features(config, spine, timestamp="label_ts")
    assert (
        "spine column 'region' is null in 40 of 50 rows (0-based rows 10, 11, 12, 13, 14, ...;"
        in (caught.value.message)
    )
    assert caught.value.exit_code == 2


def test_null_spine_key_refused_before_the_spark_engine_starts(tmp_path: Path) -> None:
    """The Spark engine would meet the null inside its tasks; the check runs first, on the
    driver, and needs no Spark session."""
    from mlpipe_cli.ops.training_set import build_training_set

    project = messy_project(tmp_path, spine_rows=40)
    spine = _spine_with_nulls(project, tmp_path, "user", [39])
    config = load_config(project["config"])
    with pytest.raises(
        InputError, match=r"spine column 'user' is null in 1 of 40 rows \(0-based rows 39;"
    ):
        build_training_set(config, out=tmp_path / "o.parquet", spine=spine, engine="spark")


# -- 3. the spine's time unit never changes a value -----------------------------------------


def _bits(value: Any) -> Any:
    """A value with floats as their exact IEEE bytes (so NaN equals NaN and -0.0 != 0.0)."""
    return struct.pack("<d", value) if isinstance(value, float) else value


@pytest.mark.parametrize("seed", [7, 2024])
def test_spine_in_ns_and_in_us_give_identical_feature_values(
    cli, tmp_path: Path, seed: int
) -> None:  # type: ignore[no-untyped-def]
    project = messy_project(tmp_path, seed=seed)
    spine = project["spine"]
    outputs = {}
    for unit in ("us", "ns"):
        stored = spine.with_columns(pl.col("label_ts").dt.cast_time_unit(unit))
        directory = _write_parts(stored, tmp_path / f"spine-{unit}", 3)
        out = tmp_path / f"train-{unit}.parquet"
        result = cli(
            "training-set",
            "-c",
            project["config"],
            "--spine",
            directory,
            "--out",
            out,
            "--no-publish",
        )
        assert result.exit_code == 0, result.stderr
        frame = pl.read_parquet(out)
        assert frame.schema["label_ts"] == pl.Datetime(unit, "UTC")  # passed through as is
        outputs[unit] = frame
    us, ns = outputs["us"], outputs["ns"]
    assert us.select(pl.exclude("label_ts")).schema == ns.select(pl.exclude("label_ts")).schema
    checked = 0
    for name in project["features"]:
        a, b = us.get_column(name).to_list(), ns.get_column(name).to_list()
        mismatched = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if _bits(x) != _bits(y)]
        assert not mismatched, (
            f"{name}: rows {mismatched[:5]} differ ({a[mismatched[0]]!r} vs {b[mismatched[0]]!r})"
        )
        checked += sum(1 for x in a if isinstance(x, float) and math.isfinite(x))
    assert checked > 1000
    # the duration features are the ones that used to differ; they hold real values here
    assert us.get_column("event_gap_days").drop_nulls().len() > 100
    assert (us.get_column("days_since_event") != 9999).sum() > 100


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def test_durations_in_ns_and_us_equal_an_exact_fraction_oracle(tmp_path: Path) -> None:
    """The values both units agree on are the right ones: the float nearest the exact ratio
    (Fraction arithmetic here, no floats until the end) of the time since the entity's
    newest event strictly before t, and of the mean gap between its events."""
    project = messy_project(tmp_path, seed=5, spine_rows=250)
    config = load_config(project["config"])
    events = pl.read_parquet(tmp_path / "data" / "events").to_dicts()
    history: dict[tuple[str, str], list[datetime]] = {}
    for row in events:
        history.setdefault((row["user"], row["region"]), []).append(row["ts"])
    day = 86_400 * 10**6
    names = ["days_since_event", "weeks_since_event", "event_gap_days"]
    checked = 0
    for unit in ("us", "ns"):
        spine = project["spine"].with_columns(pl.col("label_ts").dt.cast_time_unit(unit))
        frame = compute_features(config, spine, timestamp="label_ts", features=names)
        for row in frame.to_dicts():
            t = row["label_ts"]
            seen = sorted(e for e in history.get((row["user"], row["region"]), []) if e < t)
            if not seen:
                assert row["days_since_event"] == 9999
                assert row["weeks_since_event"] is None
                continue
            since = Fraction(_micros(t - seen[-1]))
            assert row["days_since_event"] == float(since / day), row
            assert row["weeks_since_event"] == float(since / (7 * day)), row
            if len(seen) < 2:
                assert row["event_gap_days"] is None
                continue
            span = Fraction(_micros(seen[-1] - seen[0]))
            assert row["event_gap_days"] == float(span / ((len(seen) - 1) * day)), row
            checked += 1
    assert checked > 200


def test_sub_microsecond_spine_times_keep_their_nanoseconds(tmp_path: Path) -> None:
    """Only whole microseconds are divided as microseconds: a spine time 1 ns after a day
    past the event is a little more than 1 day, as the exact ratio says."""
    project = messy_project(tmp_path, spine_rows=5)
    config = load_config(project["config"])
    events = pl.read_parquet(tmp_path / "data" / "events")
    first = events.row(0, named=True)
    newest = (
        events.filter((pl.col("user") == first["user"]) & (pl.col("region") == first["region"]))
        .get_column("ts")
        .max()
    )
    at = pl.Series("label_ts", [newest], pl.Datetime("us", "UTC")).dt.cast_time_unit("ns")
    spine = pl.DataFrame({"user": [first["user"]], "region": [first["region"]]}).with_columns(
        (at + pl.duration(days=1, nanoseconds=1)).alias("label_ts")
    )
    frame = compute_features(config, spine, timestamp="label_ts", features=["days_since_event"])
    day_ns = 86_400 * 10**9
    assert frame.item(0, "days_since_event") == float(Fraction(day_ns + 1, day_ns))
    assert frame.item(0, "days_since_event") > 1.0


def test_spark_engine_counts_nan_and_inf_like_the_polars_engine(
    spark: object, tmp_path: Path
) -> None:
    """Spark's tasks count nulls only; NaN and ±inf are counted in its written part files,
    and every count equals the Polars engine's on the same messy data."""
    from mlpipe_cli.ops.training_set import build_training_set

    project = messy_project(tmp_path, spine_rows=300)
    config = load_config(project["config"])
    on_polars = build_training_set(config, out=tmp_path / "p.parquet", engine="polars")
    on_spark = build_training_set(config, out=tmp_path / "s", engine="spark")  # part files
    assert on_spark.feature_stats == on_polars.feature_stats
    assert on_spark.manifest["values"] == on_polars.manifest["values"]
    assert sum(s["nans"] for s in on_spark.feature_stats) > 0
    assert sum(s["infs"] for s in on_spark.feature_stats) > 0


@st.composite
def _histories(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Event and spine times (microseconds after T0, up to ~30 years) for a few string
    entities, including ones whose spine rows come before any event."""
    names = st.sampled_from(["", "é", "東京", "a" * 11])
    micros = st.integers(0, 30 * 365 * 86_400 * 10**6)
    events = draw(st.lists(st.tuples(names, micros), max_size=25))
    spine = draw(st.lists(st.tuples(names, micros), min_size=1, max_size=15))
    return events, spine


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_histories())
def test_duration_features_ignore_the_spine_unit_property(tmp_path: Path, case) -> None:  # type: ignore[no-untyped-def]
    events, spine_rows = case
    path = tmp_path / "events.parquet"
    at = [T0 + timedelta(microseconds=m) for _, m in events]
    pl.DataFrame(
        {"k": [k for k, _ in events], "ts": at},
        schema={"k": pl.String, "ts": pl.Datetime("us", "UTC")},
    ).write_parquet(path)
    config = PipelineConfig.model_validate(
        {
            "pipeline": "p",
            "entity_keys": ["k"],
            "sources": {"e": {"path": str(path), "timestamp": "ts"}},
            "features": [
                {"name": "since_h", "source": "e", "kind": "time_since_last", "unit": "h"},
                {"name": "gap_d", "source": "e", "kind": "mean_interval", "unit": "d"},
                {"name": "gap_w_2y", "source": "e", "kind": "mean_interval", "unit": "w",
                 "window": "730d"},
            ],
        }
    )  # fmt: skip
    spine = pl.DataFrame(
        {"k": [k for k, _ in spine_rows],
         "t": [T0 + timedelta(microseconds=m) for _, m in spine_rows]},
        schema={"k": pl.String, "t": pl.Datetime("us", "UTC")},
    )  # fmt: skip
    got = {
        unit: compute_features(
            config, spine.with_columns(pl.col("t").dt.cast_time_unit(unit)), timestamp="t"
        )
        for unit in ("us", "ns")
    }
    names = ["since_h", "gap_d", "gap_w_2y"]
    rows_us, rows_ns = got["us"].select(names).rows(), got["ns"].select(names).rows()
    assert [[_bits(v) for v in r] for r in rows_us] == [[_bits(v) for v in r] for r in rows_ns]
    hour, day = 3600 * 10**6, 86_400 * 10**6
    for (k, t), row in zip(spine_rows, rows_us, strict=True):
        seen = sorted(m for key, m in events if key == k and m < t)
        since = float(Fraction(t - seen[-1], hour)) if seen else None
        gap = float(Fraction(seen[-1] - seen[0], (len(seen) - 1) * day)) if len(seen) > 1 else None
        window = [m for m in seen if m >= t - 730 * day]
        gap_w = (
            float(Fraction(window[-1] - window[0], (len(window) - 1) * 7 * day))
            if len(window) > 1
            else None
        )
        assert row == (since, gap, gap_w), (k, t)
