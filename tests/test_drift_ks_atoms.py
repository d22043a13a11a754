"""KS from the quantile sketch on features whose "equal" values differ by an ulp.

Cyclical encodings (cos of seven weekdays) produce values like 0.6234898018587336 and
0.6234898018587334: atoms one ulp apart. The sketch once gave such a feature KS ≈ 0.14 and
p ≈ 1e-88 against itself; scipy.stats.ks_2samp is the oracle.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlpipe_cli.drift.compare import compare_to_profile
from mlpipe_cli.drift.profile import build_profile


def weekday_cos(rng: np.random.Generator, n: int, p: list[float] | None = None) -> np.ndarray:
    days = rng.choice(7, n, p=p) + 1
    return np.cos(2 * np.pi * (days - 1) / 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_on_ulp_apart_atoms_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = weekday_cos(rng, 10_033)
    assert len(np.unique(reference)) > 4  # cos(2π/7) and cos(12π/7) differ in the last bit
    profile = build_profile(pl.DataFrame({"x": reference}))
    bound = 1.5 / 1000 + 2 / len(reference)

    same = compare_to_profile(profile, pl.DataFrame({"x": reference}))[0]
    assert same.ks_statistic <= bound
    assert same.ks_pvalue > 0.5

    for p in (None, [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2]):
        current = weekday_cos(rng, 5_000, p)
        got = compare_to_profile(profile, pl.DataFrame({"x": current}))[0]
        want = stats.ks_2samp(reference, current).statistic
        assert abs(got.ks_statistic - want) <= bound
