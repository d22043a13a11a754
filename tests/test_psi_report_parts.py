"""psi-report checks the parts of --current like every other reading command.

Before, psi-report unified the parts' schemas itself: a part lacking a column became a null
surge (`amount drifted 1.162, null 0.01704 → 0.3534`, exit 1), a naive part among zoned ones
gave Polars' "failed to determine supertype" without naming the part, and a Float32 part among
Float64 ones was read silently. Now the same footer check as validate/training-set/fit/
transform (io.check_parts_agree) refuses them: one line naming the part, exit 2, for
`--source NAME --current`, `--artifact --current` (a training-set output directory) and
`--profile FILE --current`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.test_io_parts import (
    DISAGREEMENTS,
    assert_one_line_naming,
    healthy_parts,
    project,
    write_parts,
)

# psi-report against a source profile compares every profiled column of the raw batch.
KINDS = ["float32", "naive-datetime", "other-zone", "missing-column", "extra-column"]


@pytest.fixture
def orders_project(cli, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A project whose `orders` source (one healthy file) has a saved validation profile."""
    reference = tmp_path / "reference"
    write_parts(reference, healthy_parts())
    config = project(tmp_path, str(reference))
    saved = cli("validate", "-c", config, "--source", "orders", "--save-profile")
    assert saved.exit_code == 0, saved.stdout + saved.stderr
    return config


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["directory", "glob"])
def test_source_batch_with_a_disagreeing_part_is_refused(
    cli, tmp_path: Path, orders_project: Path, kind: str, form: str
) -> None:  # type: ignore[no-untyped-def]
    spoil, difference = DISAGREEMENTS[kind]
    frames = healthy_parts()
    frames[1] = spoil(frames[1])
    parts = write_parts(tmp_path / "batch", frames)
    current = tmp_path / "batch" if form == "directory" else tmp_path / "batch" / "part-*.parquet"
    html = tmp_path / "drift.html"
    result = cli("psi-report", "-c", orders_project, "--source", "orders",
                 "--current", current, "--html", html)  # fmt: skip
    assert_one_line_naming(result, parts[1], difference)
    assert "drifted" not in result.stdout
    assert not html.exists()


def test_healthy_parts_still_compare(cli, tmp_path: Path, orders_project: Path) -> None:  # type: ignore[no-untyped-def]
    """The same batch without the spoiled part: a report, every profiled column compared."""
    write_parts(tmp_path / "batch", healthy_parts())
    result = cli("psi-report", "-c", orders_project, "--source", "orders",
                 "--current", tmp_path / "batch", "--json")  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    document = result.json()
    assert document["current"]["rows"] == 90
    statuses = {f["column"]: f["status"] for f in document["features"]}
    assert statuses["revenue"] == "stable"  # identical data: PSI 0
    assert "error" not in statuses.values()


def test_training_set_output_dir_with_a_spoiled_part_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--current <training-set output directory> against the transform profile (--artifact)
    and against that profile as a file (--profile): a part that lost a feature column is
    named, not reported as a feature whose nulls surged."""
    orders = tmp_path / "orders"
    write_parts(orders, healthy_parts())
    config = project(tmp_path, str(orders))
    with_transforms = yaml.safe_load(config.read_text())
    with_transforms["transforms"] = {
        "columns": {
            "total_orders": [{"type": "log1p"}, {"type": "standard"}],
            "days_since_last_order": [{"type": "clip", "min": 0, "max": 365}],
        }
    }
    config.write_text(yaml.safe_dump(with_transforms, sort_keys=False))
    made = cli("training-set", "-c", config, "--out", tmp_path / "train.parquet")
    assert made.exit_code == 0, made.stdout + made.stderr
    # The shape `training-set --engine spark --out DIR` writes: part files in spine order.
    rows = pl.read_parquet(tmp_path / "train.parquet")
    train = tmp_path / "train"
    thirds = [rows.slice(i * len(rows) // 3, len(rows) // 3 + (i == 2)) for i in range(3)]
    parts = write_parts(train, thirds)
    fitted = cli("fit", "-c", config, "--data", train, "--json")
    assert fitted.exit_code == 0, fitted.stdout + fitted.stderr
    healthy = cli("psi-report", "-c", config, "--current", train)
    assert healthy.exit_code == 0, healthy.stdout + healthy.stderr

    odd = parts[-1]
    pl.read_parquet(odd).drop("total_orders").write_parquet(odd)
    reference = parts[0].name
    difference = f"column 'total_orders' is missing but {reference} has it (int64)"
    by_artifact = cli("psi-report", "-c", config, "--current", train)
    assert_one_line_naming(by_artifact, odd, difference)
    profile = Path(fitted.json()["path"]) / "profile.json"
    by_file = cli("psi-report", "--profile", profile, "--current", train)
    assert_one_line_naming(by_file, odd, difference)
