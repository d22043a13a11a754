"""Reference profiles, PSI and KS (mlpipe_cli.drift): hand-worked numbers and oracles."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlpipe_cli.drift import build_profile, compare_to_profile, psi, read_profile, write_profile
from mlpipe_cli.drift.profile import SKETCH_SIZE, dumps_profile
from mlpipe_cli.errors import InputError

EPS = 1e-4


def _by_bin(drift):
    return {row["bin"]: (row["reference"], row["current"]) for row in drift.bins}


# ----------------------------------------------------------------------------- psi()


def test_psi_hand_worked_two_bins():
    # (0.25-0.5)·ln(0.25/0.5) + (0.75-0.5)·ln(0.75/0.5) = 0.25·ln2 + 0.25·ln1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2746530722, rel=1e-9)


def test_psi_identical_is_zero_and_clip_is_not_renormalised():
    assert psi([0.2, 0.3, 0.5, 0.0], [0.2, 0.3, 0.5, 0.0]) == 0.0
    # empty current bin: clipped to 1e-4 and the others are NOT scaled down to sum to 1
    got = psi([0.5, 0.5], [0.0, 1.0])
    expected = (EPS - 0.5) * math.log(EPS / 0.5) + (1.0 - 0.5) * math.log(1.0 / 0.5)
    assert got == pytest.approx(expected, rel=1e-12)
    renormalised = [EPS / (1 + EPS), 1 / (1 + EPS)]
    assert got != pytest.approx(
        (renormalised[0] - 0.5) * math.log(renormalised[0] / 0.5)
        + (renormalised[1] - 0.5) * math.log(renormalised[1] / 0.5),
        rel=1e-9,
    )
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_psi_is_a_sum_of_nonnegative_terms_matching_a_python_loop(pairs):
    ref = [r for r, _ in pairs]
    cur = [c for _, c in pairs]
    total = 0.0
    for r, c in pairs:  # the documented formula, spelled out
        r, c = max(r, EPS), max(c, EPS)
        assert (c - r) * math.log(c / r) >= 0.0
        total += (c - r) * math.log(c / r)
    assert psi(ref, cur) == pytest.approx(total, rel=1e-12, abs=1e-300)
    assert psi(ref, cur) >= 0.0
    assert psi(ref, ref) == 0.0


# ----------------------------------------------------------------------------- profile + compare


@pytest.fixture
def ref_profile():
    # x = 1,2,3,4 → with bins=2 the median edge is 2.5: bins (-inf, 2.5) and [2.5, +inf)
    ref = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "a", "b", "b"]})
    return build_profile(ref, bins=2)


def test_profile_numeric_entry_hand_worked(ref_profile):
    x = ref_profile["columns"]["x"]
    assert x["edges"] == [2.5]
    assert x["proportions"] == [0.5, 0.5]
    assert x["missing_proportion"] == 0.0
    assert x["mean"] == 2.5
    assert x["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1), rel=1e-15)
    assert (x["min"], x["max"], x["count"], x["null_count"]) == (1.0, 4.0, 4, 0)
    assert len(x["quantiles"]) == SKETCH_SIZE + 1
    assert x["quantiles"] == pytest.approx(np.quantile([1, 2, 3, 4], np.arange(1001) / 1000))
    c = ref_profile["columns"]["c"]
    assert (c["values"], c["counts"], c["proportions"]) == (["a", "b"], [2, 2], [0.5, 0.5])


def test_out_of_range_values_land_in_open_edge_bins(ref_profile):
    cur = pl.DataFrame({"x": [-50.0, 100.0, 200.0, 300.0]})
    [d] = compare_to_profile(ref_profile, cur, ["x"], min_rows=1)
    assert _by_bin(d) == {"< 2.5": (0.5, 0.25), "≥ 2.5": (0.5, 0.75), "__missing__": (0.0, 0.0)}
    # missing bin: both clipped to eps → contributes exactly 0
    assert d.psi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    assert d.status == "drifted"
    assert d.bins[0]["lower"] is None
    assert d.bins[1]["upper"] is None


def test_empty_bins_clipped_at_eps_without_renormalisation(ref_profile):
    cur = pl.DataFrame({"x": [10.0, 20.0, 30.0, 40.0]})
    [d] = compare_to_profile(ref_profile, cur, ["x"], min_rows=1)
    assert _by_bin(d)["< 2.5"] == (0.5, 0.0)
    expected = (EPS - 0.5) * math.log(EPS / 0.5) + 0.5 * math.log(2.0)
    assert d.psi == pytest.approx(expected, rel=1e-12)
    assert d.psi == pytest.approx(4.6043185, rel=1e-7)


def test_all_null_current_goes_to_missing_bin_and_is_an_error(ref_profile):
    cur = pl.DataFrame({"x": [None, None, float("nan"), None]}, schema={"x": pl.Float64})
    [d] = compare_to_profile(ref_profile, cur, ["x"], min_rows=1)
    assert _by_bin(d)["__missing__"] == (0.0, 1.0)
    expected = 2 * (EPS - 0.5) * math.log(EPS / 0.5) + (1 - EPS) * math.log(1 / EPS)
    assert d.psi == pytest.approx(expected, rel=1e-12)
    assert d.psi == pytest.approx(17.7249, rel=1e-5)
    assert d.status == "error"
    assert "missing" in d.message
    assert d.null_rate_cur == 1.0


def test_brand_new_category_goes_to_other(ref_profile):
    cur = pl.DataFrame({"c": ["a", "a", "b", "c"]})
    [d] = compare_to_profile(ref_profile, cur, ["c"], min_rows=1)
    assert _by_bin(d) == {
        "a": (0.5, 0.5),
        "b": (0.5, 0.25),
        "__other__": (0.0, 0.25),
        "__missing__": (0.0, 0.0),
    }
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - EPS) * math.log(0.25 / EPS)
    assert d.psi == pytest.approx(expected, rel=1e-12)
    assert d.psi == pytest.approx(2.1285161, rel=1e-7)
    assert any("'c'" in w for w in d.warnings)


def test_null_surge_raises_psi_and_null_rates_reported():
    ref = pl.DataFrame({"x": [float(i) for i in range(100)]})
    prof = build_profile(ref)
    cur = pl.DataFrame({"x": [float(i) if i % 2 else None for i in range(100)]})
    [d] = compare_to_profile(prof, cur, min_rows=1)
    assert d.null_rate_ref == 0.0
    assert d.null_rate_cur == 0.5
    assert _by_bin(d)["__missing__"] == (0.0, 0.5)
    assert d.status == "drifted"


def test_status_thresholds_and_small_sample_warning(ref_profile):
    cur = pl.DataFrame({"x": [1.0, 3.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]})  # 3/8 vs 5/8
    [d] = compare_to_profile(ref_profile, cur, ["x"])
    expected = (0.375 - 0.5) * math.log(0.375 / 0.5) + (0.625 - 0.5) * math.log(0.625 / 0.5)
    assert d.psi == pytest.approx(expected)  # 0.0638
    assert d.status == "stable"
    assert any("only 8 current rows" in w for w in d.warnings)
    [d] = compare_to_profile(ref_profile, cur, ["x"], thresholds={"x": 0.05})
    assert d.status == "drifted"
    assert d.threshold == 0.05
    [d] = compare_to_profile(ref_profile, cur, ["x"], moderate=0.06)
    assert d.status == "moderate"


def test_one_bad_column_never_aborts_the_others(ref_profile):
    cur = pl.DataFrame({"c": [1, 2, 3, 4]})  # x missing, c has the wrong kind
    drifts = compare_to_profile(ref_profile, cur, ["x", "c", "nope"], min_rows=1)
    assert [d.status for d in drifts] == ["error", "error", "error"]
    assert "not in the current data" in drifts[0].message
    assert "cannot be compared" in drifts[1].message
    assert "not in the reference profile" in drifts[2].message
    ok = compare_to_profile(ref_profile, pl.DataFrame({"x": [1.0, 3.0], "c": [1, 2]}), min_rows=1)
    assert [d.status for d in ok] == ["stable", "error"]


def test_untyped_all_null_column_is_all_missing(ref_profile):
    cur = pl.DataFrame({"x": [None, None], "c": [None, None]})
    assert cur.schema["x"] == pl.Null
    drifts = compare_to_profile(ref_profile, cur, min_rows=1)
    assert [d.status for d in drifts] == ["error", "error"]
    assert all("all 2 current values are missing" in d.message for d in drifts)
    assert [_by_bin(d)["__missing__"] for d in drifts] == [(0.0, 1.0), (0.0, 1.0)]


def test_corrupt_input_is_an_input_error(tmp_path, ref_profile):
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"x": [1.0] * 1000}).write_parquet(bad)
    bad.write_bytes(bad.read_bytes()[:200] + b"\x00" * 50 + bad.read_bytes()[250:])
    lazy = pl.scan_parquet(bad)
    with pytest.raises(InputError):
        build_profile(lazy)
    with pytest.raises(InputError):
        compare_to_profile(ref_profile, lazy, ["x"])


def test_no_rows_is_an_error(ref_profile):
    empty = pl.DataFrame({"x": []}, schema={"x": pl.Float64})
    [d] = compare_to_profile(ref_profile, empty, ["x"])
    assert d.status == "error"
    assert d.message == "no current rows"
    assert d.psi is None


def test_rename_maps_profile_columns_to_current_names(ref_profile):
    cur = pl.DataFrame({"raw.x": [1.0, 2.0, 3.0, 4.0]})
    [d] = compare_to_profile(ref_profile, cur, ["x"], rename={"x": "raw.x"}, min_rows=1)
    assert d.psi == 0.0
    assert d.status == "stable"


def test_booleans_and_integers():
    ref = pl.DataFrame({"b": [True, True, False, None], "i": [1, 1, 2, 3]})
    prof = build_profile(ref, bins=2)
    b = prof["columns"]["b"]
    assert (b["values"], b["counts"], b["missing_proportion"]) == (["true", "false"], [2, 1], 0.25)
    i = prof["columns"]["i"]
    assert i["kind"] == "numeric"
    assert i["edges"] == [1.5]
    assert i["proportions"] == [0.5, 0.5]
    drifts = compare_to_profile(prof, ref, min_rows=1)
    assert [d.psi for d in drifts] == [0.0, 0.0]


def test_unsupported_dtypes_are_listed_not_fatal():
    from datetime import datetime

    ref = pl.DataFrame({"t": [datetime(2026, 1, 1)], "v": [[1.0, 2.0]], "x": [1.0]})
    prof = build_profile(ref)
    assert set(prof["unsupported"]) == {"t", "v"}
    assert list(prof["columns"]) == ["x"]
    [d] = compare_to_profile(prof, ref, ["t"])
    assert d.status == "error"
    assert "unsupported" in d.message


@settings(max_examples=40, deadline=None)
@given(
    ref=st.lists(st.integers(-5, 5), min_size=1, max_size=60),
    cur=st.lists(st.one_of(st.none(), st.integers(-8, 8)), min_size=1, max_size=60),
    bins=st.integers(2, 6),
)
def test_bin_counts_match_brute_force(ref, cur, bins):
    prof = build_profile(pl.DataFrame({"x": ref}, schema={"x": pl.Int64}), bins=bins)
    entry = prof["columns"]["x"]
    edges = entry["edges"]
    # reference proportions, brute force: bin i holds edges[i-1] <= v < edges[i]
    bounds = [-math.inf, *edges, math.inf]

    def brute(values):
        counts = [0] * (len(bounds) - 1)
        for v in values:
            for i in range(len(counts)):
                if bounds[i] <= v < bounds[i + 1]:
                    counts[i] += 1
        return counts

    assert entry["proportions"] == [c / len(ref) for c in brute(ref)]
    [d] = compare_to_profile(prof, pl.DataFrame({"x": cur}, schema={"x": pl.Int64}), min_rows=1)
    valid = [v for v in cur if v is not None]
    expected = [c / len(cur) for c in brute(valid)] + [(len(cur) - len(valid)) / len(cur)]
    assert [row["current"] for row in d.bins] == expected
    ref_props = [*entry["proportions"], 0.0]
    assert d.psi == pytest.approx(psi(ref_props, expected), rel=1e-12, abs=1e-15)


# ----------------------------------------------------------------------------- KS


def _ks_cases():
    rng = np.random.default_rng(7)
    yield "normal-shift", rng.normal(size=50_000), rng.normal(0.03, 1.0, size=20_000)
    yield "same", rng.exponential(size=30_000), rng.exponential(size=30_000)
    yield "integers", rng.integers(0, 20, 40_000).astype(float), rng.integers(0, 22, 9_000) * 1.0
    atoms = np.where(rng.random(40_000) < 0.3, 0.0, rng.lognormal(size=40_000))
    cur = np.where(rng.random(10_000) < 0.5, 0.0, rng.lognormal(0.2, size=10_000))
    yield "zero-inflated", atoms, cur
    yield "out-of-range", rng.uniform(0, 1, 20_000), rng.uniform(0.5, 3, 5_000)


@pytest.mark.parametrize(
    ("name", "ref", "cur"), list(_ks_cases()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_ks_from_sketch_within_documented_bound_of_ks_2samp(name, ref, cur):
    prof = build_profile(pl.DataFrame({"x": ref}))
    [d] = compare_to_profile(prof, pl.DataFrame({"x": cur}))
    exact = stats.ks_2samp(ref, cur, method="asymp")
    bound = 1.5 / SKETCH_SIZE + 2 / len(ref)  # documented in docs/psi-report.md
    assert abs(d.ks_statistic - exact.statistic) <= bound, name
    lo, hi = d.ks_bounds
    assert lo <= d.ks_statistic <= hi
    assert hi - lo <= 1 / SKETCH_SIZE + 1e-12
    en = len(ref) * len(cur) / (len(ref) + len(cur))
    if en <= 10_000:
        assert d.ks_pvalue == pytest.approx(stats.kstwo.sf(d.ks_statistic, round(en)), rel=1e-9)
    else:
        assert d.ks_pvalue == pytest.approx(
            stats.kstwobign.sf(d.ks_statistic * math.sqrt(en)), rel=1e-9
        )
    # decisions at the 1% level agree with the exact test whenever it is not borderline
    if exact.pvalue < 1e-4 or exact.pvalue > 0.2:
        assert (d.ks_pvalue < 0.01) == (exact.pvalue < 0.01), name


# ----------------------------------------------------------------------------- determinism + IO


def _frame(n=30_000, seed=3):
    rng = np.random.default_rng(seed)
    null_mask = pl.Series(rng.random(n) < 0.1)
    return pl.DataFrame(
        {
            "a": rng.normal(size=n) * 1e6 + 0.1,
            "b": rng.lognormal(size=n),
            "k": rng.integers(0, 50, n),
            "s": rng.choice(["x", "y", "z", "w"], n).tolist(),
            "f": rng.random(n) < 0.4,
        }
    ).with_columns(pl.when(null_mask).then(None).otherwise(pl.col("b")).alias("b"))


def test_build_profile_is_row_order_independent():
    df = _frame()
    base = dumps_profile(build_profile(df))
    for seed in (1, 2):
        shuffled = df.sample(fraction=1.0, shuffle=True, seed=seed)
        assert dumps_profile(build_profile(shuffled.lazy())) == base
    chunked = pl.concat([df.slice(0, 7000), df.slice(7000)], rechunk=False)
    assert dumps_profile(build_profile(chunked)) == base


_SCRIPT = """
import sys
from mlpipe_cli.io import scan_parquet
from mlpipe_cli.drift.profile import build_profile, dumps_profile
sys.stdout.write(dumps_profile(build_profile(scan_parquet(sys.argv[1]))))
"""


def test_build_profile_identical_across_thread_counts(tmp_path):
    path = tmp_path / "data.parquet"
    _frame(60_000, seed=5).write_parquet(path, row_group_size=5000)
    outs = []
    for threads in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
        if threads:
            env["POLARS_MAX_THREADS"] = threads
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outs.append(proc.stdout)
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["rows"] == 60_000


def test_profile_statistics_match_numpy():
    df = _frame()
    prof = build_profile(df, bins=10, max_categories=3)
    b = df.get_column("b").drop_nulls().to_numpy()
    e = prof["columns"]["b"]
    assert e["null_count"] == df.get_column("b").null_count()
    assert e["mean"] == pytest.approx(b.mean(), rel=1e-12)
    assert e["std"] == pytest.approx(b.std(ddof=1), rel=1e-12)
    assert e["edges"] == pytest.approx(np.quantile(b, np.arange(1, 10) / 10), rel=1e-12)
    assert math.fsum(e["proportions"]) + e["missing_proportion"] == pytest.approx(1.0)
    s = prof["columns"]["s"]
    counts = df.get_column("s").value_counts()
    assert len(s["values"]) == 3
    assert s["n_categories"] == 4
    assert s["other_count"] == df.height - sum(s["counts"])
    assert s["counts"] == sorted(counts.get_column("count").to_list(), reverse=True)[:3]


def test_write_read_round_trip_and_bad_files(tmp_path):
    prof = build_profile(_frame(2000))
    path = tmp_path / "sub" / "profile.json"
    write_profile(prof, path)
    assert read_profile(path) == prof
    assert path.read_text() == dumps_profile(prof)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read profile"):
        read_profile(bad)
    bad.write_text('{"kind": "something-else"}')
    with pytest.raises(InputError, match="not an mlpipe profile"):
        read_profile(bad)
    with pytest.raises(InputError, match="not found"):
        read_profile(tmp_path / "nope.json")
    with pytest.raises(InputError, match="not in the data"):
        build_profile(_frame(10), ["zzz"])


def test_compare_reads_lazy_parquet_in_chunks(tmp_path):
    df = _frame(20_000)
    prof = build_profile(df)
    path = tmp_path / "cur.parquet"
    df.write_parquet(path)
    lazy = compare_to_profile(prof, pl.scan_parquet(path), chunk_rows=3000)
    eager = compare_to_profile(prof, df)
    inexact = ("mean_cur", "std_cur")  # float sums: chunking moves the last ulp
    for x, y in zip(lazy, eager, strict=True):
        dx, dy = x.to_dict(), y.to_dict()
        for key in inexact:
            got, want = dx.pop(key), dy.pop(key)
            assert got == (None if want is None else pytest.approx(want, rel=1e-12))
        assert dx == dy
    assert all(d.psi == 0.0 and d.status == "stable" for d in eager)
    assert all(
        d.ks_statistic <= 1.5 / SKETCH_SIZE + 2 / df.height for d in eager if d.kind == "numeric"
    )
    assert Path(path).exists()


def test_compare_is_bit_identical_however_the_current_data_is_batched():
    """mean/std of the current data are sums of per-block sums; a block once ended wherever
    a reader batch ended (batch sizes vary with the thread count), so the report's last
    digits changed from run to run. Blocks are now cut by row number alone."""
    rng = np.random.default_rng(11)
    n = 200_003
    frame = pl.DataFrame({"x": rng.lognormal(3.0, 2.0, n), "y": rng.normal(1e6, 3.0, n)})
    profile = build_profile(frame.head(50_000))

    def summary(drifts):
        return [(d.column, d.mean_cur, d.std_cur, d.psi, d.ks_statistic) for d in drifts]

    base = summary(compare_to_profile(profile, frame, chunk_rows=65_536))
    assert all(s[2] is not None and s[2] > 0 for s in base)
    for chunk_rows in (1_000, 70_001, n):
        assert summary(compare_to_profile(profile, frame, chunk_rows=chunk_rows)) == base
    parts = [frame.slice(0, 12_345), frame.slice(12_345, 100_000), frame.slice(112_345)]
    assert summary(compare_to_profile(profile, parts, chunk_rows=50_000)) == base
