"""PSI on 0/1 flags, one-hot outputs, small integer codes and zero-inflated features.

Deciles put a 5%-ones flag into a single bin, so PSI was 0.0 whatever happened to it. Columns
with at most `bins` distinct values are binned by value, and a value holding several deciles
gets a bin of its own. Oracles: PSI worked by hand from the stated proportions with the
documented rule (each proportion clipped at eps = 1e-4, natural log, no renormalisation).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.documents import DriftProfile
from mlpipe_cli.drift import build_profile, compare_to_profile, read_profile, write_profile
from mlpipe_cli.drift.compare import bin_labels, format_number

EPS = 1e-4
ROOT = Path(__file__).resolve().parents[1]
GOLDEN_PROFILE = (
    ROOT
    / "tests"
    / "golden"
    / "artifacts"
    / "golden"
    / "transform"
    / "0001-4fe5e7cfb4c1"
    / "profile.json"
)


def term(r: float, c: float) -> float:
    """One bin's PSI term, by the documented rule."""
    r, c = max(r, EPS), max(c, EPS)
    return (c - r) * math.log(c / r)


def flag(n: int, ones: int) -> list[float]:
    return [1.0] * ones + [0.0] * (n - ones)


def by_bin(drift) -> dict[str, tuple[float, float]]:
    return {b["bin"]: (b["reference"], b["current"]) for b in drift.bins}


def test_flag_from_5_to_50_percent_ones_is_drifted():
    prof = build_profile(pl.DataFrame({"f": flag(1000, 50)}))
    entry = prof["columns"]["f"]
    assert prof["format_version"] == DriftProfile.FORMAT_VERSION == 2
    assert (entry["binning"], entry["values"], entry["edges"]) == ("values", [0.0, 1.0], [0.5])
    assert entry["proportions"] == [0.95, 0.05]
    [d] = compare_to_profile(prof, pl.DataFrame({"f": flag(400, 200)}))
    # bins 0: 0.95 → 0.5, 1: 0.05 → 0.5, __missing__: 0 → 0
    expected = term(0.95, 0.5) + term(0.05, 0.5) + term(0.0, 0.0)
    assert expected == pytest.approx(1.3249975, abs=1e-6)  # 0.45·ln(0.95/0.5) + 0.45·ln 10
    assert d.psi == pytest.approx(expected, rel=1e-12)
    assert d.status == "drifted"
    assert by_bin(d) == {"0": (0.95, 0.5), "1": (0.05, 0.5), "__missing__": (0.0, 0.0)}
    assert [b["value"] for b in d.bins[:2]] == [0.0, 1.0]


def test_the_old_decile_profile_was_blind_to_it():
    """A format-1 entry of the same flag (all deciles 0 → one edge at 0) scores PSI 0."""
    prof = build_profile(pl.DataFrame({"f": flag(1000, 50)}))
    entry = prof["columns"]["f"]
    old = {k: v for k, v in entry.items() if k not in ("binning", "values")}
    old.update(edges=[0.0], proportions=[0.0, 1.0])
    v1 = {**prof, "format_version": 1, "columns": {"f": old}}
    [d] = compare_to_profile(v1, pl.DataFrame({"f": flag(400, 200)}))
    assert d.psi == 0.0


def test_one_hot_output_under_ten_percent_share_shows_drift():
    # country__JP: 3% of training rows, 20% of today's; nulls are their own bin on both sides
    ref = [1.0] * 30 + [0.0] * 960 + [None] * 10
    cur = [1.0] * 40 + [0.0] * 158 + [None] * 2
    prof = build_profile(
        pl.DataFrame({"vec.country__JP": ref}, schema={"vec.country__JP": pl.Float64})
    )
    [d] = compare_to_profile(prof, pl.DataFrame({"vec.country__JP": cur}))
    expected = term(0.96, 0.79) + term(0.03, 0.20) + term(0.01, 0.01)
    assert expected == pytest.approx(0.3556435, abs=1e-6)
    assert d.psi == pytest.approx(expected, rel=1e-12)
    assert d.status == "drifted"
    # a smaller move stays below the gate but is not invisible: 3% → 5%
    [small] = compare_to_profile(prof, pl.DataFrame({"vec.country__JP": flag(1000, 50)}))
    assert small.psi == pytest.approx(
        term(0.96, 0.95) + term(0.03, 0.05) + term(0.01, 0.0), rel=1e-12
    )
    assert small.psi > 0.01


def test_small_integer_code_bins_by_value_and_between_values_go_to_the_nearer():
    # codes 1, 2, 5: edges halfway, 1.5 and 3.5
    prof = build_profile(pl.DataFrame({"code": [1] * 50 + [2] * 30 + [5] * 20}))
    entry = prof["columns"]["code"]
    assert (entry["values"], entry["edges"]) == ([1.0, 2.0, 5.0], [1.5, 3.5])
    assert entry["proportions"] == [0.5, 0.3, 0.2]
    # current: 3 counts toward 2 (nearer), 3.5 toward 5 (ties go up), 9 toward 5, -4 toward 1
    cur = pl.DataFrame(
        {"code": [1.0] * 10 + [-4.0] * 10 + [2.0] * 20 + [3.0] * 20 + [3.5] * 20 + [9.0] * 20}
    )
    [d] = compare_to_profile(prof, cur, min_rows=1)
    assert by_bin(d) == {
        "1": (0.5, 0.2),
        "2": (0.3, 0.4),
        "5": (0.2, 0.4),
        "__missing__": (0.0, 0.0),
    }
    assert d.psi == pytest.approx(term(0.5, 0.2) + term(0.3, 0.4) + term(0.2, 0.4), rel=1e-12)


def test_zero_inflated_feature_gets_a_bin_for_the_atom():
    # 100 rows: ten -1, 42 zeros, then 1..48. Deciles: -0.1, 0 (four times), 8.4, 18.3, 28.2,
    # 38.1. Without a bin of its own, [0, 8.4) would hold the zeros AND 1..8.
    ref = [-1.0] * 10 + [0.0] * 42 + [float(v) for v in range(1, 49)]
    prof = build_profile(pl.DataFrame({"x": ref}))
    entry = prof["columns"]["x"]
    assert entry["binning"] == "quantiles"
    assert entry["edges"][1:3] == [0.0, 5e-324]  # [0, nextafter(0)) is exactly {0}
    assert entry["edges"][3:] == pytest.approx([8.4, 18.3, 28.2, 38.1])
    assert entry["proportions"] == [0.1, 0.0, 0.42, 0.08, 0.1, 0.1, 0.1, 0.1]
    # current: the zeros fall from 42% to 20% and 2.0 takes the mass (22 + 8 = 30%)
    cur = [-1.0] * 10 + [0.0] * 20 + [2.0] * 30 + [float(v) for v in range(9, 49)]
    [d] = compare_to_profile(prof, pl.DataFrame({"x": cur}), min_rows=1)
    assert [b["bin"] for b in d.bins] == [
        "< -0.1",
        "[-0.1, 0)",
        "0",
        "(0, 8.4)",
        "[8.4, 18.3)",
        "[18.3, 28.2)",
        "[28.2, 38.1)",
        "≥ 38.1",
        "__missing__",
    ]
    expected = term(0.42, 0.20) + term(0.08, 0.30)  # every other bin: equal on both sides
    assert expected == pytest.approx(0.4540125, abs=1e-6)
    assert d.psi == pytest.approx(expected, rel=1e-12)
    # the lumped bin [0, 8.4) would have been 0.5 → 0.5: PSI 0
    assert term(0.42 + 0.08, 0.20 + 0.30) == 0.0


def test_ulp_noise_does_not_split_a_value():
    # one weekday's cosine computed by two code paths: one ulp apart, one value
    a = -0.9009688679024191
    b = math.nextafter(a, 1.0)
    prof = build_profile(pl.DataFrame({"c": [a] * 30 + [b] * 30 + [1.0] * 40}))
    entry = prof["columns"]["c"]
    assert entry["values"] == [a, 1.0]
    assert entry["proportions"] == [0.6, 0.4]
    # the other code path's variant only: still the same bin, PSI 0
    [d] = compare_to_profile(prof, pl.DataFrame({"c": [b] * 60 + [1.0] * 40}), min_rows=1)
    assert d.psi == 0.0


def test_values_binning_applies_up_to_bins_distinct_values():
    ten = build_profile(pl.DataFrame({"x": list(range(10)) * 3}))["columns"]["x"]
    eleven = build_profile(pl.DataFrame({"x": list(range(11)) * 3}))["columns"]["x"]
    assert ten["binning"] == "values"
    assert len(ten["proportions"]) == 10
    assert eleven["binning"] == "quantiles"
    two = build_profile(pl.DataFrame({"x": [1, 2, 3] * 3}), bins=2)["columns"]["x"]
    assert two["binning"] == "quantiles"


def test_infinities_as_values():
    ref = pl.DataFrame({"x": [-math.inf, 0.0, math.inf, 0.0]})
    prof = build_profile(ref)
    entry = prof["columns"]["x"]
    assert entry["values"] == ["-inf", 0.0, "inf"]
    assert entry["proportions"] == [0.25, 0.5, 0.25]
    cur = pl.DataFrame({"x": [math.inf, math.inf, math.inf, 0.0]})
    [d] = compare_to_profile(prof, cur, min_rows=1)
    assert by_bin(d) == {
        "-inf": (0.25, 0.0),
        "0": (0.5, 0.25),
        "inf": (0.25, 0.75),
        "__missing__": (0.0, 0.0),
    }
    assert d.psi == pytest.approx(term(0.25, 0) + term(0.5, 0.25) + term(0.25, 0.75), rel=1e-12)
    json.dumps(d.to_dict(), allow_nan=False)  # infinite bounds are written as strings


@settings(max_examples=60, deadline=None)
@given(
    ref=st.lists(st.sampled_from([0.0, 1.0, 2.0, 7.5, -3.0]), min_size=1, max_size=80),
    cur=st.lists(
        st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0, 7.5, -3.0, 4.0])),
        min_size=1,
        max_size=80,
    ),
)
def test_value_bins_match_a_nearest_value_brute_force(ref, cur):
    prof = build_profile(pl.DataFrame({"x": ref}, schema={"x": pl.Float64}))
    entry = prof["columns"]["x"]
    values = sorted(set(ref))
    assert entry["binning"] == "values"
    assert entry["values"] == values
    assert entry["proportions"] == [ref.count(v) / len(ref) for v in values]

    def nearest(v: float) -> float:  # ties toward the upper value
        return min(values, key=lambda u: (abs(u - v), -u))

    [d] = compare_to_profile(prof, pl.DataFrame({"x": cur}, schema={"x": pl.Float64}), min_rows=1)
    valid = [nearest(v) for v in cur if v is not None]
    expected = [valid.count(v) / len(cur) for v in values] + [cur.count(None) / len(cur)]
    assert [b["current"] for b in d.bins] == expected
    ref_props = [*entry["proportions"], 0.0]
    assert d.psi == pytest.approx(
        math.fsum(term(r, c) for r, c in zip(ref_props, expected, strict=True)),
        rel=1e-12,
        abs=1e-15,
    )


def test_format_1_golden_profile_still_reads_and_compares(tmp_path):
    prof = read_profile(GOLDEN_PROFILE)
    assert prof["format_version"] == 1
    entry = prof["columns"]["vec.country__US"]
    assert "binning" not in entry
    rng = np.random.default_rng(3)
    current = pl.DataFrame({"vec.country__US": (rng.random(500) < 0.4).astype(float)})
    [d] = compare_to_profile(prof, current, ["vec.country__US"])
    # format 1: the stored decile edges [0, 1] still define the bins
    assert [b["bin"] for b in d.bins] == ["< 0", "[0, 1)", "≥ 1", "__missing__"]
    assert d.psi is not None
    assert d.status in ("stable", "moderate", "drifted")
    # and a rebuilt profile is written as format 2
    write_profile(build_profile(current), tmp_path / "p.json")
    assert read_profile(tmp_path / "p.json")["format_version"] == 2


def test_readable_bin_labels():
    assert format_number(0.3999999999999986) == "0.4"
    assert format_number(1234.5) == "1234"
    assert format_number(1.5e-05) == "1.5e-5"
    assert format_number(-2.25) == "-2.25"
    assert format_number(123456789.0) == "1.23e8"
    assert bin_labels([2.5]) == ["< 2.5", "≥ 2.5"]
    assert bin_labels([0.0, 5e-324, 1.5, 3.2, 100.0]) == [
        "< 0",
        "0",
        "(0, 1.5)",
        "[1.5, 3.2)",
        "[3.2, 100)",
        "≥ 100",
    ]
    # more digits only where 3 would make two edges look alike
    assert bin_labels([1.0001, 1.0002]) == ["< 1.0001", "[1.0001, 1.0002)", "≥ 1.0002"]
    assert bin_labels([0.5], [0.0, 1.0]) == ["0", "1"]
    assert bin_labels([]) == ["all values"]


def test_validate_reference_flags_a_flag_column(cli, tmp_path):
    """`validate --save-profile` then `--reference latest`: the flag's PSI is the hand value."""
    config = tmp_path / "mlpipe.yaml"
    config.write_text(
        "pipeline: promo\n"
        f"artifact_dir: {tmp_path / 'artifacts'}\n"
        "sources:\n"
        "  visits:\n"
        "    path: visits.parquet\n"
        "    columns:\n"
        "      user_id: {dtype: int64}\n"
        "      is_promo: {dtype: int64}\n"
        "    distribution:\n"
        "      columns: [is_promo]\n"
        "      psi_threshold: 0.2\n"
        "      mean_shift_factor: null\n"
        "      max_null_rate_increase: null\n"
    )

    def batch(path: Path, n: int, ones: int) -> Path:
        pl.DataFrame(
            {"user_id": list(range(n)), "is_promo": [1] * ones + [0] * (n - ones)},
            schema={"user_id": pl.Int64, "is_promo": pl.Int64},
        ).write_parquet(path)
        return path

    reference = batch(tmp_path / "visits.parquet", 2000, 100)  # 5% ones
    saved = cli(
        "validate", "-c", config, "--source", "visits", "--data", reference, "--save-profile"
    )
    assert saved.exit_code == 0, saved.stdout + saved.stderr
    same = cli(
        "validate",
        "-c",
        config,
        "--source",
        "visits",
        "--data",
        batch(tmp_path / "same.parquet", 500, 25),
        "--reference",
        "latest",
        "--json",
    )
    assert same.exit_code == 0, same.stdout + same.stderr
    moved = cli(
        "validate",
        "-c",
        config,
        "--source",
        "visits",
        "--data",
        batch(tmp_path / "moved.parquet", 500, 250),
        "--reference",
        "latest",
        "--json",
    )
    assert moved.exit_code == 1, moved.stdout + moved.stderr
    checks = {c["id"]: c for c in moved.json()["sources"][0]["checks"]}
    psi_check = checks["visits.is_promo.psi"]
    assert psi_check["status"] == "fail"
    assert psi_check["statistic"] == pytest.approx(term(0.95, 0.5) + term(0.05, 0.5), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.sampled_from([-2.0, 0.0, 0.5, 1.0, 1.0 + 1e-12, 3.0, math.inf]), min_size=1, max_size=40
    ),
    block=st.integers(1, 5),
    limit=st.integers(1, 8),
)
def test_value_bins_in_blocks_match_a_python_scan(values, block, limit):
    from mlpipe_cli.drift import profile as profile_mod

    ordered = sorted(values)
    firsts = [ordered[0]]
    for prev, cur in itertools.pairwise(ordered):  # 1e-9 relative: same value
        if not (cur == prev or (math.isfinite(cur) and cur - prev <= 1e-9 * max(1, abs(cur)))):
            firsts.append(cur)
    with pytest.MonkeyPatch.context() as patch:  # tiny blocks: every boundary case
        patch.setattr(profile_mod, "VALUE_BLOCK", block)
        got = profile_mod.value_bins(np.asarray(ordered), limit=limit)
    if len(firsts) > limit:
        assert got is None
    else:
        assert got is not None
        assert got[0] == firsts
        assert len(got[1]) == len(firsts) - 1
