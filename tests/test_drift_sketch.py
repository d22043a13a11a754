"""The mergeable quantile sketch (drift/sketch.py): its stated rank-error bound, checked
against brute-force counts over the exact data, and its KS statistic against
``scipy.stats.ks_2samp`` on the exact reference sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.drift.sketch import ks_statistic, merge_all, summarize

# few distinct values (atoms, ties across parts) or many; ±inf allowed, NaN is never sketched
_VALUE = st.one_of(
    st.sampled_from([0.0, 1.0, 2.5, -3.0, math.inf, -math.inf]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def _parts(draw: st.DrawFn) -> list[list[float]]:
    n_parts = draw(st.integers(1, 6))
    return [draw(st.lists(_VALUE, min_size=0, max_size=80)) for _ in range(n_parts)]


def _sketch(parts: list[list[float]], k: int, compress: int | None):  # type: ignore[no-untyped-def]
    return merge_all([summarize(np.sort(np.asarray(p, dtype=np.float64)), k) for p in parts],
                     compress)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(parts=_parts(), k=st.integers(1, 12), compress=st.one_of(st.none(), st.integers(2, 20)))
def test_counts_are_never_over_and_at_most_rank_error_under(
    parts: list[list[float]], k: int, compress: int | None
) -> None:
    values = sorted(v for p in parts for v in p)
    sketch = _sketch(parts, k, compress)
    assert sketch.count == len(values)
    if compress is None:
        # each part contributes ceil(n_i / k) - 1 < n_i / k
        assert sketch.rank_error == sum(max(0, math.ceil(len(p) / k) - 1) for p in parts)
        assert sketch.rank_error <= len(values) / k
    probes = sorted({*values, *(v + 0.5 for v in values if math.isfinite(v)), -math.inf, 0.0})
    for x in probes:
        true_below = sum(v < x for v in values)
        true_at_most = sum(v <= x for v in values)
        assert true_below - sketch.rank_error <= sketch.below(x) <= true_below
        assert true_at_most - sketch.rank_error <= sketch.at_most(x) <= true_at_most


@settings(max_examples=150, deadline=None)
@given(parts=_parts(), k=st.integers(1, 12), compress=st.one_of(st.none(), st.integers(2, 20)))
def test_order_statistics_lie_within_rank_error(
    parts: list[list[float]], k: int, compress: int | None
) -> None:
    values = sorted(v for p in parts for v in p)
    if not values:
        return
    sketch = _sketch(parts, k, compress)
    for rank in range(len(values)):
        got = sketch.order_statistic(rank)
        upper = min(rank + sketch.rank_error, len(values) - 1)
        assert values[rank] <= got <= values[upper], (rank, sketch.rank_error)


@settings(max_examples=100, deadline=None)
@given(parts=_parts())
def test_without_error_the_quantiles_are_numpys(parts: list[list[float]]) -> None:
    values = np.sort(np.asarray([v for p in parts for v in p], dtype=np.float64))
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return
    k = max(1, max(len(p) for p in parts))  # every part fits: rank error 0
    only_finite = [[v for v in part if math.isfinite(v)] for part in parts]
    exact = merge_all([summarize(np.sort(np.asarray(p, dtype=np.float64)), k) for p in only_finite])
    assert exact.rank_error == 0
    probs = np.arange(11, dtype=np.float64) / 10
    assert exact.quantiles(probs) == pytest.approx(
        np.quantile(finite, probs, method="linear").tolist(), rel=1e-12, abs=1e-9
    )


# scipy's asymptotic p-value divides by zero for one-value samples; only the statistic is used
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@settings(max_examples=100, deadline=None)
@given(
    parts=_parts().filter(lambda ps: any(ps)),
    current=st.lists(_VALUE, min_size=1, max_size=80),
    k=st.integers(1, 12),
    compress=st.one_of(st.none(), st.integers(2, 20)),
)
def test_ks_statistic_is_within_epsilon_of_scipy(
    parts: list[list[float]], current: list[float], k: int, compress: int | None
) -> None:
    from scipy.stats import ks_2samp

    reference = np.asarray([v for p in parts for v in p], dtype=np.float64)
    cur = np.sort(np.asarray(current, dtype=np.float64))
    sketch = _sketch(parts, k, compress)
    exact = ks_2samp(reference, cur, method="asymp").statistic
    assert abs(ks_statistic(sketch, cur) - exact) <= sketch.epsilon + 1e-12


def test_a_worked_example() -> None:
    """1..10 in two parts, 2 points each: groups {1,2,3}{4,5} and {6,7,8}{9,10}."""
    left = summarize(np.arange(1.0, 6.0), 2)
    right = summarize(np.arange(6.0, 11.0), 2)
    assert left.points.tolist() == [3.0, 5.0]
    assert left.weights.tolist() == [3, 2]
    assert left.rank_error == 2
    both = left.merge(right)
    assert both.points.tolist() == [3.0, 5.0, 8.0, 10.0]
    assert both.rank_error == 4
    assert both.at_most(4.0) == 3  # the truth is 4: one under, within 4
    assert both.order_statistic(0) == 3.0  # between x(0) = 1 and x(4) = 5
    assert both.epsilon == 0.4
