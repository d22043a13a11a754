"""ColumnDrift.to_dict (a hand-written copy, #19) equals dataclasses.asdict, on a real report."""

from __future__ import annotations

import dataclasses
import math

import polars as pl

from mlpipe_cli.drift.compare import ColumnDrift, compare_to_profile
from mlpipe_cli.drift.profile import build_profile


def _asdict(drift: ColumnDrift) -> dict:
    doc = dataclasses.asdict(drift)
    doc["ks_bounds"] = list(drift.ks_bounds) if drift.ks_bounds is not None else None
    return doc


def test_to_dict_is_asdict_and_a_copy() -> None:
    rows = 4000
    reference = pl.DataFrame(
        {
            "x": [i / 7 if i % 11 else None for i in range(rows)],
            "atoms": [[0.0, -0.0, 1.0, math.inf, -math.inf, math.nan][i % 6] for i in range(rows)],
            "city": [["Zürich", "東京", "São Paulo", None][i % 4] for i in range(rows)],
            "flag": [i % 3 == 0 for i in range(rows)],
        }
    )
    current = reference.with_columns(
        (pl.col("x") * 1.5).alias("x"), pl.col("city").fill_null("Oslo")
    ).head(3000)
    drifts = compare_to_profile(build_profile(reference), current)
    assert {d.column for d in drifts} >= {"x", "atoms", "city", "flag"}
    assert any(d.bins for d in drifts)
    for drift in drifts:
        doc = drift.to_dict()
        assert doc == _asdict(drift)
        assert list(doc) == [f.name for f in dataclasses.fields(ColumnDrift)]
        if drift.bins:  # a copy: changing it leaves the drift as it was
            doc["bins"][0]["bin"] = "changed"
            assert drift.bins[0].get("bin") != "changed"
