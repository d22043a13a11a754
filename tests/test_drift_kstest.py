"""mlpipe_cli.drift.kstest against scipy (the oracle, imported only here).

psi-report computes the KS p-value without scipy (#19); these tests hold it to scipy's
``kstwo.sf`` / ``kstwobign.sf`` / ``special.smirnov`` to 1e-10 relative over every method's
region (Ruben–Gambino closed forms, Durbin matrix, Pomeranz, Pelz–Good, the Smirnov sum),
and check that psi-report's whole result is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import special, stats

from mlpipe_cli.drift import build_profile, compare_to_profile
from mlpipe_cli.drift.kstest import kolmogorov_sf, kstwo_sf, smirnov_sf

REL = 1e-10


def _close(ours: float, theirs: float) -> bool:
    # relative, with an absolute floor at the smallest normal double (both underflow there)
    return abs(ours - theirs) <= REL * abs(theirs) + 2.3e-308


sizes = st.one_of(
    st.integers(1, 140),  # the small-n methods (Durbin, Pomeranz)
    st.integers(141, 10_000),  # psi-report uses kstwo up to en = 10,000
    st.sampled_from([1, 2, 139, 140, 141, 1000, 9_999, 10_000]),
)


@st.composite
def n_and_d(draw: st.DrawFn) -> tuple[int, float]:
    """A size and a statistic spread over every method's region: n·d around 1 and n−1,
    n·d² around the 0.754693 / 2.2 / 4 / 18 / 370 switch-over points, d around 1/2."""
    n = draw(sizes)
    region = draw(st.sampled_from(["uniform", "nd", "nd2", "half"]))
    if region == "uniform":
        d = draw(st.floats(0.0, 1.0))
    elif region == "nd":
        d = draw(st.floats(0.0, 1.2 * n)) / n
    elif region == "nd2":
        d = math.sqrt(draw(st.floats(0.0, 400.0)) / n)
    else:
        d = draw(st.floats(0.45, 0.55))
    return n, min(d, 1.0)


@settings(max_examples=300, deadline=None)
@given(n_and_d())
@example((10_000, 0.02))  # Pelz–Good
@example((10_000, 0.011))  # Durbin matrix at large n
@example((100, 0.1))  # Pomeranz
@example((100, 0.05))  # Durbin matrix
@example((9_999, 0.1737841319849328))  # Smirnov sum, p ~ 1e-264
@example((140, 0.3))  # Miller (2 × Smirnov) at small n
@example((5, 0.1))  # n·d <= 1: Ruben–Gambino
@example((5, 0.85))  # n·d >= n − 1
@example((7, 0.5 / 7))  # the support's lower end
def test_kstwo_sf_matches_scipy(case: tuple[int, float]) -> None:
    n, d = case
    ours = kstwo_sf(d, n)
    theirs = float(stats.kstwo.sf(d, n))
    assert _close(ours, theirs), (n, d, ours, theirs)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.floats(0.0, 6.0), st.floats(0.0, 30.0), st.sampled_from([0.04, 0.82, 1.0])))
def test_kolmogorov_sf_matches_scipy(x: float) -> None:
    assert _close(kolmogorov_sf(x), float(stats.kstwobign.sf(x))), x


@settings(max_examples=200, deadline=None)
@given(n_and_d())
def test_smirnov_sf_matches_scipy(case: tuple[int, float]) -> None:
    n, d = case
    ours = smirnov_sf(n, d)
    theirs = float(special.smirnov(n, d))
    assert _close(ours, theirs), (n, d, ours, theirs)


def test_hand_worked_values() -> None:
    # n = 1: D_1 = max(U, 1 − U) for uniform U, so P(D_1 > d) = 2(1 − d) for d >= 1/2
    assert kstwo_sf(0.75, 1) == pytest.approx(0.5, rel=1e-15)
    # n = 2, d = 0.5 (n·d = 1, Ruben–Gambino): P(D_2 <= 1/2) = 2!/2² · (2·1 − 1)² = 1/2
    assert kstwo_sf(0.5, 2) == pytest.approx(0.5, rel=1e-15)
    # one-sided, n = 1: P(D_1+ > d) = 1 − d
    assert smirnov_sf(1, 0.3) == pytest.approx(0.7, rel=1e-15)
    # limiting law: P(K > 1.3581) ≈ 0.05, the textbook 5 % critical value
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)
    assert kolmogorov_sf(0.0) == 1.0
    assert kstwo_sf(1.0, 50) == 0.0
    assert math.isnan(kstwo_sf(math.nan, 50))


def test_psi_report_pvalues_unchanged_against_scipy() -> None:
    """The KS p-values compare_to_profile reports are scipy's for its statistic, on both
    sides of the 10,000 switch from kstwo to the limiting law."""
    rng = np.random.default_rng(19)
    reference = pl.DataFrame({"x": rng.normal(0, 1, 20_000), "y": rng.exponential(1, 20_000)})
    profile = build_profile(reference)
    for rows, shift in [(300, 0.0), (300, 0.4), (8_000, 0.05), (50_000, 0.02)]:
        current = pl.DataFrame(
            {"x": rng.normal(shift, 1, rows), "y": rng.exponential(1 + shift, rows)}
        )
        for drift in compare_to_profile(profile, current):
            n, m = 20_000, rows
            en = n * m / (n + m)
            d = drift.ks_statistic
            assert d is not None
            assert drift.ks_pvalue is not None
            if en <= 10_000:
                expected = float(stats.kstwo.sf(d, max(1, round(en))))
            else:
                expected = float(stats.kstwobign.sf(d * math.sqrt(en)))
            assert _close(drift.ks_pvalue, expected), (rows, shift, drift.column)
