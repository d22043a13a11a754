"""The sorted-block histogram of compare_to_profile and row-group parts of psi-report.

Oracles: numpy.histogram on the same fine points, a brute-force count, and math.fsum.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.drift import build_profile, compare_to_profile
from mlpipe_cli.drift import compare as compare_mod
from mlpipe_cli.drift.compare import _NumericAcc

SPECIAL = [-math.inf, math.inf, math.nan, -0.0, 0.0]


def _entry(ref: list[float], bins: int = 4) -> dict:
    return build_profile(pl.DataFrame({"x": ref}, schema={"x": pl.Float64}), bins=bins)["columns"][
        "x"
    ]


@settings(max_examples=60, deadline=None)
@given(
    ref=st.lists(st.integers(-6, 6).map(float), min_size=2, max_size=50),
    cur=st.lists(
        st.one_of(st.integers(-9, 9).map(float), st.sampled_from(SPECIAL), st.floats(-10, 10)),
        min_size=0,
        max_size=80,
    ),
    block=st.integers(1, 9),
    split=st.integers(0, 80),
)
def test_block_counts_equal_numpy_histogram(ref, cur, block, split):
    acc = _NumericAcc("x", _entry(ref))
    acc.block = block  # many sorted blocks on tiny data
    values = np.asarray(cur, dtype=np.float64)
    acc.update(values[:split])
    acc.update(values[split:])
    acc.flush()  # the last, unfinished block
    valid = values[~np.isnan(values)]
    expected, _ = np.histogram(valid, bins=np.concatenate([[-np.inf], acc.fine, [np.inf]]))
    assert acc.counts.tolist() == expected.tolist()
    assert (acc.rows, acc.valid, acc.missing) == (len(values), len(valid), len(values) - len(valid))
    finite = valid[np.isfinite(valid)]
    assert acc.finite == len(finite)
    if len(finite):
        total = math.fsum(acc.s1) + acc.shift * acc.finite
        assert total == pytest.approx(math.fsum(finite.tolist()), rel=1e-12, abs=1e-9)


def test_blocks_nulls_and_chunks_match_one_pass(monkeypatch):
    rng = np.random.default_rng(11)
    ref = pl.DataFrame({"x": rng.normal(size=5000)})
    prof = build_profile(ref)
    v = rng.normal(0.2, 1.1, size=9000)
    v[rng.random(9000) < 0.05] = np.nan
    v[:3] = [np.inf, -np.inf, 0.0]
    cur = pl.DataFrame({"x": v}).with_columns(
        pl.when(pl.int_range(pl.len()) % 13 == 0).then(None).otherwise(pl.col("x")).alias("x")
    )
    [whole] = compare_to_profile(prof, cur, min_rows=1)
    monkeypatch.setattr(compare_mod, "SORT_BLOCK", 1000)
    chunked = pl.concat([cur.slice(0, 2500), cur.slice(2500)], rechunk=False)
    [blocks] = compare_to_profile(prof, chunked, min_rows=1, chunk_rows=3000)
    a, b = whole.to_dict(), blocks.to_dict()
    for key in ("mean_cur", "std_cur"):
        assert a.pop(key) == pytest.approx(b.pop(key), rel=1e-12)
    assert a == b
    # brute force: missing = nulls + NaN; bins by [lower, upper)
    missing = int(cur.get_column("x").is_null().sum()) + int(cur.get_column("x").is_nan().sum())
    assert whole.null_rate_cur == missing / len(v)
    edges = prof["columns"]["x"]["edges"]
    vals = [x for x in cur.get_column("x").to_list() if x is not None and not math.isnan(x)]
    first = sum(1 for x in vals if x < edges[0])
    assert whole.bins[0]["current"] == first / len(v)
    finite = [x for x in vals if math.isfinite(x)]
    assert whole.mean_cur == pytest.approx(math.fsum(finite) / len(finite), rel=1e-12)
    assert whole.std_cur == pytest.approx(float(np.std(finite, ddof=1)), rel=1e-10)


def test_parts_are_whole_row_groups(tmp_path):
    from mlpipe_cli.drift import report

    df = pl.DataFrame({"x": [float(i % 31) for i in range(10_000)]})
    path = tmp_path / "a.parquet"
    df.write_parquet(path, row_group_size=1500)
    groups = report.parquet_row_groups(path)
    assert sum(groups) == 10_000
    assert len(groups) > 1
    old = report.PART_ROWS
    try:
        report.PART_ROWS = 4000  # 1500+1500 per part; never a row group cut in two
        slices = report._slices(path, None)
        assert slices == [(0, 3000), (3000, 3000), (6000, 4000)]  # groups: 6 x 1500 + 1000
        parts = report.scan_parts([path])
        assert [p.collect().height for p in parts] == [3000, 3000, 4000]
        assert pl.concat([p.collect() for p in parts]).equals(df)
        report.PART_ROWS = 1000  # a row group larger than a part is split into bounded slices
        assert report._slices(path, None)[:3] == [(0, 1000), (1000, 500), (1500, 1000)]
    finally:
        report.PART_ROWS = old
    prof = build_profile(df)
    by_parts = compare_to_profile(prof, report.scan_parts([path]))
    at_once = compare_to_profile(prof, df)
    assert [d.bins for d in by_parts] == [d.bins for d in at_once]
    assert by_parts[0].psi == 0.0
