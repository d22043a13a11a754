"""Multi-part sources (a directory or a glob of Parquet parts) are checked part by part.

Polars takes the schema of a scan's first part: a naive part after a UTC one is silently read
as UTC (wrong instants, wrong features), a Float32 part fails late with a hint about Polars'
scan options. mlpipe reads every part's footer first and refuses parts that disagree, with
one line naming the part and the difference (#13).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from mlpipe_cli.errors import InputError
from mlpipe_cli.io import scan_parquet

BERLIN = "Europe/Berlin"


def orders_frame(first_id: int, users: list[str], start: datetime, rows: int) -> pl.DataFrame:
    """Orders in UTC: string user keys of different lengths, non-ASCII, nulls in revenue."""
    return pl.DataFrame(
        {
            "order_id": list(range(first_id, first_id + rows)),
            "user_id": [users[i % len(users)] for i in range(rows)],
            "order_ts": [start + timedelta(hours=7 * i + (i % 5) * 0.37) for i in range(rows)],
            "revenue": [None if i % 11 == 0 else 10.0 + i for i in range(rows)],
        },
        schema={"order_id": pl.Int64, "user_id": pl.String,
                "order_ts": pl.Datetime("us", "UTC"), "revenue": pl.Float64},
    )  # fmt: skip


USERS = ["a", "bb", "ccc-ü", "Дмитрий", "e"]
T0 = datetime(2026, 3, 20, tzinfo=UTC)  # the parts straddle Berlin's DST switch (29 March)


def healthy_parts() -> list[pl.DataFrame]:
    return [orders_frame(i * 100, USERS, T0 + timedelta(days=9 * i), 30) for i in range(3)]


# Each kind of disagreement: how part-1 is spoiled, and the difference the message must state.
DISAGREEMENTS = {
    "float32": (
        lambda f: f.with_columns(pl.col("revenue").cast(pl.Float32)),
        "column 'revenue' is float32 but part-0.parquet has float64",
    ),
    "naive-datetime": (
        lambda f: f.with_columns(
            pl.col("order_ts").dt.convert_time_zone(BERLIN).dt.replace_time_zone(None)
        ),
        "column 'order_ts' is datetime[us, naive] but part-0.parquet has datetime[us, UTC]",
    ),
    "other-zone": (
        lambda f: f.with_columns(pl.col("order_ts").dt.convert_time_zone(BERLIN)),
        "column 'order_ts' is datetime[us, Europe/Berlin] but part-0.parquet has datetime[us, UTC]",
    ),
    "time-unit": (
        lambda f: f.with_columns(pl.col("order_ts").dt.cast_time_unit("ns")),
        "column 'order_ts' is datetime[ns, UTC] but part-0.parquet has datetime[us, UTC]",
    ),
    "missing-column": (
        lambda f: f.drop("revenue"),
        "column 'revenue' is missing but part-0.parquet has it (float64)",
    ),
    "extra-column": (
        lambda f: f.with_columns(pl.lit("x").alias("coupon")),
        "has column 'coupon' (string) that part-0.parquet lacks",
    ),
    "int32-vs-int64": (
        lambda f: f.with_columns(pl.col("order_id").cast(pl.Int32)),
        "column 'order_id' is int32 but part-0.parquet has int64",
    ),
}

# Wording that would send the user to Polars' API or blame a healthy file.
FORBIDDEN_WORDS = ("corrupt", "cast_options", "ScanCastOptions", "missing_columns", "Traceback",
                   "consider passing", "hint: pass")  # fmt: skip


def write_parts(directory: Path, frames: list[pl.DataFrame]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = directory / f"part-{i}.parquet"
        frame.write_parquet(path)
        paths.append(path)
    return paths


def spine_frame() -> pl.DataFrame:
    """One spine row per user every 2.3 days across all parts (labels for training-set)."""
    rows = [(u, T0 + timedelta(days=2.3 * k, hours=3)) for k in range(1, 14) for u in USERS]
    return pl.DataFrame(
        {"user_id": [u for u, _ in rows], "label_ts": [t for _, t in rows],
         "churned": [k % 3 == 0 for k in range(len(rows))]},
        schema={"user_id": pl.String, "label_ts": pl.Datetime("us", "UTC"), "churned": pl.Boolean},
    )  # fmt: skip


def project(tmp_path: Path, orders_path: str) -> Path:
    spine = tmp_path / "labels.parquet"
    spine_frame().write_parquet(spine)
    config = {
        "pipeline": "parts",
        "entity_keys": ["user_id"],
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {
            "orders": {
                "path": orders_path,
                "timestamp": "order_ts",
                "columns": {
                    "order_id": {"dtype": "int64", "unique": True},
                    "user_id": {"dtype": "string"},
                    "order_ts": {"dtype": "datetime", "timezone": "UTC"},
                    "revenue": {"dtype": "float64", "nullable": True, "min": 0},
                },
            },
            "labels": {"path": str(spine), "timestamp": "label_ts"},
        },
        "features": [
            {
                "name": "days_since_last_order",
                "source": "orders",
                "kind": "time_since_last",
                "unit": "d",
                "default": 999,
            },
            {
                "name": "total_orders",
                "source": "orders",
                "agg": "count",
                "window": "lifetime",
                "default": 0,
            },
        ],
        "training_set": {"spine": str(spine), "timestamp": "label_ts"},
    }
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def assert_one_line_naming(result, part: Path, difference: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {part}: {difference}"), lines[0]
    for word in FORBIDDEN_WORDS:
        assert word not in lines[0], lines[0]


@pytest.mark.parametrize("kind", sorted(DISAGREEMENTS))
@pytest.mark.parametrize("form", ["directory", "glob"])
@pytest.mark.parametrize("command", ["validate", "training-set"])
def test_disagreeing_part_is_refused_before_any_value(cli, tmp_path, kind, form, command) -> None:
    spoil, difference = DISAGREEMENTS[kind]
    frames = healthy_parts()[:2]
    frames[1] = spoil(frames[1])
    parts = write_parts(tmp_path / "orders", frames)
    source = (
        str(tmp_path / "orders")
        if form == "directory"
        else str(tmp_path / "orders" / "part-*.parquet")
    )
    config = project(tmp_path, source)
    out = tmp_path / "ts.parquet"
    if command == "validate":
        result = cli("validate", "-c", config, "--source", "orders", "--no-publish")
    else:
        result = cli("training-set", "-c", config, "--out", out)
    assert_one_line_naming(result, parts[1], difference)
    assert not out.exists()
    assert not (tmp_path / "artifacts").exists() or not any(
        (tmp_path / "artifacts").rglob("*.parquet")
    )


def test_validate_data_flag_with_a_glob_checks_every_part(cli, tmp_path) -> None:
    frames = healthy_parts()
    frames[2] = DISAGREEMENTS["naive-datetime"][0](frames[2])
    parts = write_parts(tmp_path / "orders", frames)
    config = project(tmp_path, str(parts[0]))
    result = cli("validate", "-c", config, "--source", "orders", "--no-publish",
                 "--data", tmp_path / "orders" / "part-?.parquet")  # fmt: skip
    assert_one_line_naming(result, parts[2], DISAGREEMENTS["naive-datetime"][1])


def test_the_odd_part_is_named_even_when_it_sorts_first(tmp_path) -> None:
    frames = healthy_parts()
    frames[0] = frames[0].with_columns(pl.col("revenue").cast(pl.Float32))
    parts = write_parts(tmp_path / "orders", frames)
    with pytest.raises(InputError) as caught:
        scan_parquet(tmp_path / "orders")
    assert caught.value.message == (
        f"{parts[0]}: column 'revenue' is float32 but part-1.parquet has float64"
    )


def test_several_differences_are_counted_in_the_one_line(tmp_path) -> None:
    frames = healthy_parts() + healthy_parts()[:1]
    frames[1] = (
        frames[1].drop("revenue").with_columns(pl.col("order_ts").dt.replace_time_zone(None))
    )
    frames[3] = frames[3].with_columns(pl.col("revenue").cast(pl.Float32))
    parts = write_parts(tmp_path / "orders", frames)
    with pytest.raises(InputError) as caught:
        scan_parquet(tmp_path / "orders")
    assert caught.value.message == (
        f"{parts[1]}: column 'order_ts' is datetime[us, naive] but part-0.parquet has "
        "datetime[us, UTC] (1 more difference in this part; 1 more part differs)"
    )


def test_parts_with_the_same_columns_in_another_order_agree(cli, tmp_path) -> None:
    frames = healthy_parts()
    frames[1] = frames[1].select(reversed(frames[1].columns))
    write_parts(tmp_path / "orders", frames)
    config = project(tmp_path, str(tmp_path / "orders"))
    result = cli("validate", "-c", config, "--source", "orders", "--no-publish", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"rows": 90' in result.stdout


def test_nested_directories_are_parts_too(tmp_path) -> None:
    frames = healthy_parts()
    write_parts(tmp_path / "orders" / "day=1", frames[:2])
    write_parts(
        tmp_path / "orders" / "day=2", [frames[2].with_columns(pl.col("revenue").cast(pl.Float32))]
    )
    with pytest.raises(InputError) as caught:
        scan_parquet(tmp_path / "orders")
    odd = tmp_path / "orders" / "day=2" / "part-0.parquet"
    reference = tmp_path / "orders" / "day=1" / "part-0.parquet"
    assert caught.value.message == f"{odd}: column 'revenue' is float32 but {reference} has float64"


# -- the scenario: a UTC part and a naive part holding Berlin wall-clock times -------


def days_since_oracle(orders: list[tuple[str, datetime]], spine: pl.DataFrame) -> list[float]:
    """Brute force over Python datetimes: days from the user's newest earlier order."""
    out = []
    for user, t in spine.select("user_id", "label_ts").iter_rows():
        before = [ts for u, ts in orders if u == user and ts < t]
        out.append((t - max(before)).total_seconds() / 86400 if before else 999.0)
    return out


def test_naive_berlin_part_no_longer_gives_wrong_days_since(cli, tmp_path) -> None:
    frames = healthy_parts()
    true_orders = [(u, ts) for f in frames for u, ts in f.select("user_id", "order_ts").iter_rows()]
    berlin_wall_clock = frames[1].with_columns(
        pl.col("order_ts").dt.convert_time_zone(BERLIN).dt.replace_time_zone(None)
    )
    write_parts(tmp_path / "mixed", [frames[0], berlin_wall_clock, frames[2]])
    out = tmp_path / "ts.parquet"

    # What Polars alone makes of it: the naive part read as UTC, so 1-2 hours off.
    silently = pl.scan_parquet(sorted((tmp_path / "mixed").glob("*.parquet"))).collect()
    assert silently["order_ts"].to_list() != [ts for _, ts in true_orders]

    result = cli("training-set", "-c", project(tmp_path, str(tmp_path / "mixed")), "--out", out)
    assert_one_line_naming(result, tmp_path / "mixed" / "part-1.parquet",
                           DISAGREEMENTS["naive-datetime"][1])  # fmt: skip
    assert not out.exists()

    # The fix the message asks for (localize the part) gives the right values.
    localized = berlin_wall_clock.with_columns(
        pl.col("order_ts").dt.replace_time_zone(BERLIN).dt.convert_time_zone("UTC")
    )
    write_parts(tmp_path / "fixed", [frames[0], localized, frames[2]])
    result = cli("training-set", "-c", project(tmp_path, str(tmp_path / "fixed")), "--out", out)
    assert result.exit_code == 0, result.stderr
    got = pl.read_parquet(out)
    expected = days_since_oracle(true_orders, spine_frame())
    assert got.height == len(expected)
    for value, want in zip(got["days_since_last_order"].to_list(), expected, strict=True):
        assert value == pytest.approx(want, abs=1e-9)
