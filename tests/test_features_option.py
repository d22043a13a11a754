"""One --features parser (cli/common.py) for training-set, materialize and psi-report.

Comma-separated and repeatable, names stripped, duplicates dropped; a flag that names
nothing is a usage error (exit 2) in every command — psi-report once read it as "all".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_cli.cli.common import parse_features
from mlpipe_cli.errors import UsageError


def test_parse_features() -> None:
    assert parse_features(None) is None
    assert parse_features("a,b") == ["a", "b"]
    assert parse_features(["a, b", "c"]) == ["a", "b", "c"]
    assert parse_features([" a ", "b,a", "a"]) == ["a", "b"]
    assert parse_features(["größe,ünits"]) == ["größe", "ünits"]
    for empty in ("", ",", " , ", [""], [",", " "]):
        with pytest.raises(UsageError, match="--features is empty"):
            parse_features(empty)


@pytest.mark.parametrize(
    "command",
    [
        ("training-set", "--out", "{tmp}/t.parquet", "--no-publish"),
        ("materialize", "--as-of", "2026-07-01T00:00:00Z"),
        ("psi-report", "--current", "{tmp}/none.parquet"),
    ],
)
@pytest.mark.parametrize("value", [",", ""])
def test_every_command_rejects_an_empty_features_flag(
    cli,
    project: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    command: tuple[str, ...],
    value: str,
) -> None:
    args = [a.format(tmp=tmp_path) for a in command]
    result = cli(*args, "-c", project, "--features", value)
    assert result.exit_code == 2, result.stderr
    assert "--features is empty" in result.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_repeated_and_comma_forms_agree(cli, project: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    one = cli(
        "training-set",
        "-c",
        project,
        "--out",
        tmp_path / "a.parquet",
        "--no-publish",
        "--features",
        "total_orders,lifetime_value",
        "--json",
    )
    two = cli(
        "training-set",
        "-c",
        project,
        "--out",
        tmp_path / "b.parquet",
        "--no-publish",
        "--features",
        "total_orders",
        "--features",
        "lifetime_value,total_orders",
        "--json",
    )
    assert one.exit_code == two.exit_code == 0, (one.stderr, two.stderr)
    assert [f["feature"] for f in one.json()["features"]] == ["total_orders", "lifetime_value"]
    assert one.json()["output_sha256"] == two.json()["output_sha256"]
