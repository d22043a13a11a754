"""Committed golden transform artifacts keep loading and reproducing their outputs.

An artifact published by an earlier mlpipe must still verify (sha256), pass its own golden
example, and transform the recorded input into exactly the recorded output, on the batch
path and the online path alike. See tests/golden/make_golden.py.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.transforms import load_transform

GOLDEN = Path(__file__).resolve().parent / "golden"
VERSIONS = ArtifactStore(GOLDEN / "artifacts", "golden").versions("transform")


@pytest.fixture
def golden_store(tmp_path: Path) -> ArtifactStore:
    # A copy, so nothing a test does can touch the committed files.
    shutil.copytree(GOLDEN / "artifacts", tmp_path / "artifacts")
    return ArtifactStore(tmp_path / "artifacts", "golden")


def test_there_is_a_golden_version() -> None:
    assert VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_version_reproduces_batch_output(golden_store: ArtifactStore, version: str) -> None:
    transform = load_transform(golden_store, version)  # verifies sha256 + golden example
    frame = pl.read_parquet(GOLDEN / "input.parquet")
    expected = pl.read_parquet(GOLDEN / "expected.parquet")
    actual = transform.transform_batch(frame.lazy()).collect()
    assert_frame_equal(actual, expected, check_exact=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_version_reproduces_online_output(golden_store: ArtifactStore, version: str) -> None:
    transform = load_transform(golden_store, version)
    frame = pl.read_parquet(GOLDEN / "input.parquet")
    expected = pl.read_parquet(GOLDEN / "expected.parquet").select(transform.output_columns)
    for record, want in zip(frame.iter_rows(named=True), expected.iter_rows(), strict=True):
        got = transform.transform_one(record)
        assert len(got) == len(want)
        for name, g, w in zip(transform.output_columns, got, want, strict=True):
            if w is None or (isinstance(w, float) and math.isnan(w)):
                assert g is None or math.isnan(g), (record, name)
            else:
                assert g == pytest.approx(w, rel=1e-12, abs=1e-12), (record, name)


def test_cli_transform_with_a_golden_version(cli, tmp_path: Path) -> None:
    shutil.copytree(GOLDEN / "artifacts", tmp_path / "artifacts")
    out = tmp_path / "out.parquet"
    result = cli(
        "transform", "-c", GOLDEN / "golden.yaml", "--artifact-dir", tmp_path / "artifacts",
        "--artifact", VERSIONS[0], "--data", GOLDEN / "input.parquet", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert_frame_equal(pl.read_parquet(out), pl.read_parquet(GOLDEN / "expected.parquet"))
