"""Naive times in the skipped or repeated hour of the config's `timezone:` are refused.

2026-03-29 02:30 never happened in Europe/Berlin (clocks jump 02:00 -> 03:00); 2026-10-25
02:30 happened twice (at 00:30Z, then again at 01:30Z).
Before, the first was a Polars ComputeError reported as a bug (exit 70) in training-set and
silently 01:30Z in `materialize --as-of`; the second silently the earlier instant.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml


def _berlin(project: Path) -> Path:
    config = yaml.safe_load(project.read_text())
    config["timezone"] = "Europe/Berlin"
    path = project.with_name("tz.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _naive_spine(project: Path, tmp_path: Path, when: datetime) -> Path:
    config = yaml.safe_load(project.read_text())
    labels = pl.read_parquet(config["sources"]["labels"]["path"]).head(50)
    naive = labels["label_ts"].dt.replace_time_zone(None)
    spine = labels.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(when)).otherwise(naive).alias("label_ts")
    )
    path = tmp_path / "spine_naive.parquet"
    spine.write_parquet(path)
    return path


def test_training_set_refuses_a_naive_time_in_the_spring_gap(
    project: Path, tmp_path: Path, cli: Any
) -> None:
    spine = _naive_spine(project, tmp_path, datetime(2026, 3, 29, 2, 30))
    out = tmp_path / "ts.parquet"
    result = cli("training-set", "-c", _berlin(project), "--spine", spine, "--out", out, "-q")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip() == (
        "error: spine column 'label_ts': 2026-03-29 02:30:00 does not exist in time zone "
        "Europe/Berlin (the clocks skip that hour) (give UTC or offset timestamps "
        "(e.g. 2026-03-29T01:30:00Z) for such times)"
    )
    assert not out.exists()


def test_training_set_refuses_a_naive_time_in_the_repeated_hour_naming_both_instants(
    project: Path, tmp_path: Path, cli: Any
) -> None:
    spine = _naive_spine(project, tmp_path, datetime(2026, 10, 25, 2, 30))
    out = tmp_path / "ts.parquet"
    result = cli("training-set", "-c", _berlin(project), "--spine", spine, "--out", out, "-q")
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(
        "error: spine column 'label_ts': 2026-10-25 02:30:00 is ambiguous in time zone "
        "Europe/Berlin (it happens twice: 2026-10-25T00:30:00Z and 2026-10-25T01:30:00Z)"
    ), line
    assert not out.exists()


def test_training_set_still_reads_ordinary_naive_times_in_the_zone(
    project: Path, tmp_path: Path, cli: Any
) -> None:
    spine = _naive_spine(project, tmp_path, datetime(2026, 3, 29, 3, 30))
    out = tmp_path / "ts.parquet"
    result = cli("training-set", "-c", _berlin(project), "--spine", spine, "--out", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert pl.read_parquet(out).height == 50


@pytest.mark.parametrize(
    ("as_of", "fragment"),
    [
        ("2026-03-29T02:30:00", "does not exist in time zone Europe/Berlin"),
        (
            "2026-10-25T02:30:00",
            "is ambiguous in time zone Europe/Berlin (it happens twice: "
            "2026-10-25T00:30:00Z and 2026-10-25T01:30:00Z)",
        ),
    ],
)
def test_materialize_refuses_a_naive_as_of_the_zone_skips_or_repeats(
    project: Path, cli: Any, as_of: str, fragment: str
) -> None:
    result = cli("materialize", "-c", _berlin(project), "--as-of", as_of, "-q")
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"error: --as-of: {as_of.replace('T', ' ')} "), line
    assert fragment in line


def test_materialize_refuses_a_naive_source_time_in_the_repeated_hour(
    project: Path, tmp_path: Path, cli: Any
) -> None:
    """A source's naive event times are read in the zone too (which rows are visible at
    --as-of): a repeated wall-clock time there is refused like one in a spine."""
    config = yaml.safe_load(project.read_text())
    orders = pl.read_parquet(config["sources"]["orders"]["path"])
    naive = orders["order_ts"].dt.replace_time_zone(None)
    orders = orders.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit(datetime(2026, 10, 25, 2, 30)))
        .otherwise(naive)
        .alias("order_ts")
    )
    path = tmp_path / "orders_naive.parquet"
    orders.write_parquet(path)
    config["timezone"] = "Europe/Berlin"
    config["sources"]["orders"]["path"] = str(path)
    edited = tmp_path / "tz-orders.yaml"
    edited.write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("materialize", "-c", edited, "--as-of", "2026-11-01T00:00:00Z", "-q")
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(
        "error: source 'orders' column 'order_ts': 2026-10-25 02:30:00 is ambiguous in time "
        "zone Europe/Berlin (it happens twice: 2026-10-25T00:30:00Z and 2026-10-25T01:30:00Z)"
    ), line
