"""A mergeable quantile sketch with a guaranteed, tracked rank error.

A reference profile stores ``SKETCH_SIZE + 1`` quantiles of each numeric column (used for KS).
On one machine they come from the sorted column; on Spark every task sees a part of the
column, so the parts' summaries must merge. This sketch is the simplest one whose error is a
proof, not a tuning knob:

* ``summarize(sorted_values, k)``: cut the sorted values into ``ceil(n / k)``-sized groups and
  keep each group's *largest* value with the group's size as its weight (at most ``k`` points).
* ``merge(a, b)``: the union of the weighted points (re-sorted). No information is lost.
* ``compress(k)``: merge runs of consecutive points into groups of about ``N / k`` weight,
  keeping each run's last (largest) point.

Invariant (checked by tests/test_drift_sketch.py against brute-force counts): with
``below(x)`` the sketch's count of values ``< x`` and ``at_most(x)`` its count of values
``<= x``, and T the true counts,

    T_<(x) - rank_error <= below(x) <= T_<(x)      and the same for <=.

A point stands for values no larger than itself, so the sketch never over-counts; the values
it misses are the rest of one group. ``rank_error`` is tracked exactly: a summary adds
``group size - 1``, a merge adds the two errors, a compression adds the largest weight that
a merged run holds before its kept point. For a merge of parts summarized with ``k`` points
each, ``rank_error < N / k`` (each part contributes fewer than ``n_i / k``).

Consequences, with ε = rank_error / N:

* ``quantile(p)`` (numpy's "linear" rule between the order statistics at ranks floor and
  ceil of ``p·(N-1)``) reads each order statistic of 0-based rank r as a value lying between
  the exact order statistics of ranks r and r + rank_error: a rank error of at most ε.
  With rank_error 0 (every part held at most ``k`` values) the quantiles are numpy's exactly.
* ``cdf(x) = at_most(x) / N`` is within ε below the exact empirical CDF, so a KS statistic
  computed against it is within ε of the one against the exact reference sample
  (``ks_statistic``; tests compare with ``scipy.stats.ks_2samp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class QuantileSketch:
    """Sorted weighted points; ``count`` values in all, ``rank_error`` as documented above."""

    points: np.ndarray  # float64, sorted ascending (NaN never: callers drop missing values)
    weights: np.ndarray  # int64, >= 1, same length
    count: int
    rank_error: int

    @property
    def epsilon(self) -> float:
        """The guaranteed rank error as a fraction of the values (0 for an empty sketch)."""
        return self.rank_error / self.count if self.count else 0.0

    # -- queries ------------------------------------------------------------------------

    def below(self, x: float) -> int:
        """Values counted ``< x`` (at most ``rank_error`` fewer than the truth)."""
        import numpy as np

        cumulative = self._cumulative()
        index = int(np.searchsorted(self.points, x, side="left"))
        return int(cumulative[index - 1]) if index else 0

    def at_most(self, x: float) -> int:
        """Values counted ``<= x`` (at most ``rank_error`` fewer than the truth)."""
        import numpy as np

        cumulative = self._cumulative()
        index = int(np.searchsorted(self.points, x, side="right"))
        return int(cumulative[index - 1]) if index else 0

    def order_statistic(self, rank: int) -> float:
        """A value between the exact order statistics of 0-based ranks ``rank`` and
        ``rank + rank_error``: the first point whose cumulative weight exceeds ``rank``."""
        import numpy as np

        if not 0 <= rank < self.count:
            raise ValueError(f"rank {rank} outside 0..{self.count - 1}")
        cumulative = self._cumulative()
        return float(self.points[int(np.searchsorted(cumulative, rank + 1, side="left"))])

    def quantiles(self, probs: np.ndarray) -> list[float]:
        """numpy "linear" quantiles read from the sketch (exact when ``rank_error`` is 0)."""
        out = []
        for p in probs.tolist():
            position = p * (self.count - 1)
            lo = math.floor(position)
            hi = min(lo + 1, self.count - 1)
            a, b = self.order_statistic(lo), self.order_statistic(hi)
            frac = position - lo
            out.append(a if a == b else a + (b - a) * frac)
        return out

    def _cumulative(self) -> np.ndarray:
        import numpy as np

        return np.cumsum(self.weights)

    # -- building -----------------------------------------------------------------------

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Both sketches' points; errors add (a stable sort: the result does not depend on
        which side equal values came from)."""
        import numpy as np

        points = np.concatenate([self.points, other.points])
        weights = np.concatenate([self.weights, other.weights])
        order = np.lexsort((weights, points))  # by value, ties by weight: order-independent
        return QuantileSketch(
            points[order],
            weights[order],
            self.count + other.count,
            self.rank_error + other.rank_error,
        )

    def compress(self, k: int) -> QuantileSketch:
        """At most about ``k`` points: runs of consecutive points of ~``count / k`` weight
        become their last point; the error grows by the largest weight a run held before
        that point."""
        import numpy as np

        if len(self.points) <= k:
            return self
        step = math.ceil(self.count / k)
        cumulative = self._cumulative()
        # a run ends at the first point whose cumulative weight reaches the next multiple
        ends = np.unique(np.searchsorted(cumulative, np.arange(step, self.count, step)))
        ends = np.unique(np.concatenate([ends, [len(self.points) - 1]]))
        run_weights = np.diff(np.concatenate([[0], cumulative[ends]]))
        added = int(np.max(run_weights - self.weights[ends]))
        return QuantileSketch(
            self.points[ends].copy(), run_weights, self.count, self.rank_error + added
        )


def summarize(sorted_values: np.ndarray, k: int) -> QuantileSketch:
    """The sketch of one part's sorted non-missing values, at most ``k`` points."""
    import numpy as np

    if k < 1:
        raise ValueError("a sketch needs at least one point")
    n = len(sorted_values)
    if n == 0:
        return empty()
    step = math.ceil(n / k)
    ends = np.arange(step - 1, n, step)
    if ends[-1] != n - 1:
        ends = np.concatenate([ends, [n - 1]])
    weights = np.diff(np.concatenate([[-1], ends])).astype(np.int64)
    return QuantileSketch(
        np.asarray(sorted_values[ends], dtype=np.float64), weights, n, int(step - 1)
    )


def empty() -> QuantileSketch:
    import numpy as np

    return QuantileSketch(np.empty(0), np.empty(0, dtype=np.int64), 0, 0)


def merge_all(sketches: list[QuantileSketch], k: int | None = None) -> QuantileSketch:
    """Merge in the given order (e.g. Spark partition order), compressing to ``k`` points
    after each merge when ``k`` is given."""
    merged = empty()
    for sketch in sketches:
        merged = merged.merge(sketch)
        if k is not None:
            merged = merged.compress(k)
    return merged


def ks_statistic(reference: QuantileSketch, current_sorted: np.ndarray) -> float:
    """sup |G - F| of the current sample's empirical CDF G and the sketch's CDF F
    (``at_most / count``); within ``reference.epsilon`` of the exact two-sample statistic."""
    import numpy as np

    m = len(current_sorted)
    if m == 0 or reference.count == 0:
        raise ValueError("KS needs values on both sides")
    points = np.unique(np.concatenate([reference.points, current_sorted]))
    cumulative = np.cumsum(reference.weights)
    ref_at = np.searchsorted(reference.points, points, side="right")
    f = np.where(ref_at > 0, cumulative[np.maximum(ref_at - 1, 0)], 0) / reference.count
    g = np.searchsorted(current_sorted, points, side="right") / m
    # both CDFs are right-continuous step functions jumping only at these points
    return float(np.max(np.abs(g - f)))
