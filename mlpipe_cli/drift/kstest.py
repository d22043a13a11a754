"""Kolmogorov–Smirnov p-values without scipy at run time.

``psi-report`` needs one number per numeric column: the two-sample KS p-value of its sketched
statistic. scipy computes it as ``kstwo.sf(D, round(en))`` (en = n·m/(n+m), what
``ks_2samp(method="asymp")`` does) and, for large en, as the limiting Kolmogorov law
``kstwobign.sf(D·√en)``; importing ``scipy.stats`` for that cost ~1.2 s of CPU in every
``psi-report`` process (#19). This module computes the same two survival functions with the
same methods and the same switch-over points (Simard & L'Ecuyer 2011, the scheme scipy
follows), so the values agree with scipy's to ~1e-12 relative; tests/test_drift_kstest.py
checks them against scipy itself (the oracle stays in the tests).

Methods, by region of (n, d), for P(D_n > d):

* d ≤ 1/(2n): 1; d ≥ 1: 0 (outside kstwo's support);
* n·d ≤ 1 and n·d ≥ n − 1: the closed forms of Ruben & Gambino (1982);
* d ≥ 1/2, or n·d² large: twice the one-sided Smirnov tail (exact for d ≥ 1/2, and what scipy
  uses there otherwise — Miller's approximation, the intersection term dropped);
* small n·d²: 1 − CDF by the Durbin matrix (Marsaglia, Tsang & Wang 2003) or Pomeranz's
  recursion (n ≤ 140), or by Pelz & Good's asymptotic series (n > 140).

The one-sided Smirnov tail is the Birnbaum–Tingey sum, whose terms are all positive: each
term is evaluated through its logarithm, with the binomial coefficient kept exactly as a
Python integer, so no cancellation and no overflow.

References: Durbin (1968); Pomeranz (1974); Pelz & Good (1976); Marsaglia, Tsang & Wang,
J. Stat. Softw. 8(18) (2003); Simard & L'Ecuyer, J. Stat. Softw. 39(11) (2011); van
Mulbregt, arXiv:1802.06966 and arXiv:1803.00426 (2018).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_EPS = 2.0**-52
_SCALE_EXP = 128  # intermediate results are rescaled by 2**128 to stay in range
_BIG = 2.0**_SCALE_EXP
_SMALL = 2.0**-_SCALE_EXP
_MIN_LOG = -708.3964185322641  # log of the smallest normal double (cephes MINLOG)
_MIN_EXPABLE = -708 - 38  # exp of anything below is 0 even as a subnormal
_KOLMOGOROV_CUTOVER = 0.82  # below: the theta-function series; above: the alternating one
_STIRLING = (  # B_2j / (2j (2j - 1)) for j = 8 .. 1 (Horner order)
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
)

_STIRLING_MIN = 16  # below, C(n, k) is an exact integer product (series error < 1e-20 above)


# --------------------------------------------------------------------------- limiting law


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for Kolmogorov's limiting distribution (``scipy.stats.kstwobign.sf``)."""
    if math.isnan(x):
        return math.nan
    # below this, exp(-pi^2 / (8 x^2)) underflows: the CDF is 0
    if x <= math.pi / math.sqrt(-_MIN_EXPABLE * 8):
        return 1.0
    if x <= _KOLMOGOROV_CUTOVER:
        # CDF = sqrt(2 pi)/x · Σ_k exp(-(2k-1)^2 pi^2 / (8 x^2)); 4 terms reach double precision
        w = math.sqrt(2 * math.pi) / x
        log_u8 = -math.pi * math.pi / (x * x)
        u = math.exp(log_u8 / 8)
        if u == 0:
            cdf = math.exp(log_u8 / 8 + math.log(w))
        else:
            u8 = math.exp(log_u8)
            total = 1 + u8**3
            total = 1 + u8 * u8 * total
            total = 1 + u8 * total
            cdf = w * u * total
        return min(max(1 - cdf, 0.0), 1.0)
    # SF = 2 Σ_k (-1)^(k-1) exp(-2 k^2 x^2) = 2v (1 - v^3 (1 - v^5 (1 - v^7 ...))), v = e^(-2x²)
    v = math.exp(-2 * x * x)
    v3 = v**3
    total = 1 - v3 * v3 * v
    total = 1 - v3 * v * v * total
    total = 1 - v3 * total
    return min(max(2 * v * total, 0.0), 1.0)


# --------------------------------------------------------------------------- finite n


def kstwo_sf(d: float, n: int) -> float:
    """P(D_n > d) for the two-sided one-sample KS statistic (``scipy.stats.kstwo.sf``)."""
    if math.isnan(d):
        return math.nan
    if n < 1:
        raise ValueError(f"kstwo_sf: n must be a positive integer, got {n}")
    if d <= 0.5 / n:
        return 1.0
    if d >= 1.0:
        return 0.0
    t = n * d
    if t <= 1.0:  # Ruben–Gambino: P(D_n <= d) = n!/n^n (2t - 1)^n for 1/(2n) <= d <= 1/n
        if n <= 140:
            cdf = 1.0
            for i in range(1, n + 1):
                cdf *= i * (1.0 / n) * (2 * t - 1)
        else:
            cdf = math.exp(_log_factorial_over_power(n) + n * math.log(2 * t - 1))
        return _clip(1.0 - cdf)
    if t >= n - 1:  # Ruben–Gambino: P(D_n > d) = 2 (1 - d)^n for d >= 1 - 1/n
        return _clip(2 * (1.0 - d) ** n)
    if d >= 0.5:  # the one-sided events D+ > d and D- > d are disjoint
        return _clip(2 * smirnov_sf(n, d))
    return _kstwo_sf_interior(n, d)


def _kstwo_sf_interior(n: int, d: float) -> float:
    """P(D_n > d) for 1/n < d < 1/2 and n·d < n − 1: Simard & L'Ecuyer's choice by n·d²."""
    n_d_squared = n * d * d
    if n <= 140:
        if n_d_squared <= 0.754693:
            return _clip(1.0 - _durbin_cdf(n, d))
        if n_d_squared <= 4:
            return _clip(1.0 - _pomeranz_cdf(n, d))
        return _clip(2 * smirnov_sf(n, d))
    if n_d_squared >= 370.0:
        return 0.0
    if n_d_squared >= 2.2:
        return _clip(2 * smirnov_sf(n, d))
    if n <= 100_000 and n * d**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, d))
    return _clip(1.0 - _pelz_good_cdf(n, d))


def _clip(p: float) -> float:
    return min(max(p, 0.0), 1.0)


def _log_factorial_over_power(n: int) -> float:
    """log(n! / n^n) by Stirling's series with n·log(n) taken out up front (no cancellation)."""
    rn = 1.0 / n
    poly = 0.0
    for c in _STIRLING:
        poly = poly * (rn / n) + c
    return math.log(n) / 2 - n + math.log(2 * math.pi) / 2 + rn * poly


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n <= d) by Durbin's matrix: the (k, k) entry of H^n · n!/n^n, with n·d = k − h.

    H is (2k−1)×(2k−1); powers by repeated squaring with rescaling by 2^128 (MTW 2003).
    """
    import numpy as np

    if d >= 1.0:
        return 1.0
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = math.ceil(nd)
    h = k - nd
    m = 2 * k - 1
    # v[j] = (1 - h^(j+1)) / (j+1)!, w[j] = 1/j!
    v = [0.0] * m
    w = [0.0] * m
    inv_fact = 1.0
    for j in range(1, m + 1):
        w[j - 1] = inv_fact
        inv_fact /= j
        v[j - 1] = (1.0 - h**j) * inv_fact
    v[-1] = (1.0 + max(2 * h - 1.0, 0.0) ** m - 2 * h**m) * inv_fact
    matrix = np.zeros((m, m))
    for col in range(1, m):
        matrix[col - 1 :, col] = w[: m - col + 1]
    matrix[:, 0] = v
    matrix[-1, :] = v[::-1]

    power = np.eye(m)
    exponent = 0  # power's scale: its true value is power * 2**exponent
    matrix_exponent = 0
    remaining = n
    while remaining > 0:
        if remaining % 2:
            power = power @ matrix
            exponent += matrix_exponent
        matrix = matrix @ matrix
        matrix_exponent *= 2
        if abs(matrix[k - 1, k - 1]) > _BIG:
            matrix /= _BIG
            matrix_exponent += _SCALE_EXP
        remaining //= 2
    p = float(power[k - 1, k - 1])
    for i in range(1, n + 1):  # times n!/n^n
        p = i * p / n
        if abs(p) < _SMALL:
            p *= _BIG
            exponent -= _SCALE_EXP
    return _clip(math.ldexp(p, exponent))


def _pomeranz_bounds(i: int, n: int, ll: int, ceil_f: int, round_f: int) -> tuple[int, int]:
    """The first and last possibly non-zero entries of row i of Pomeranz's recursion."""
    if i == 0:
        j1, j2 = -ll - ceil_f - 1, ll + ceil_f - 1
    else:
        half, odd = divmod(i + 1, 2)
        if odd == 0:
            if half == n + 1:
                j1, j2 = n - ll - ceil_f - 1, n + ll + ceil_f - 1
            else:
                j1, j2 = half - 2 - ll - round_f, half + ll - 2 + ceil_f
        else:
            j1, j2 = half - 2 - ll, half + ll + round_f - 1
    return max(j1 + 2, 0), min(j2, n)


def _pomeranz_cdf(n: int, d: float) -> float:
    """P(D_n <= d) by Pomeranz's recursion (1974): 2n+1 convolutions of short rows with
    truncated Poisson weights, rescaled by 2^128 against underflow, times n! at the end."""
    import numpy as np

    t = n * d
    ll = math.floor(t)
    f = t - ll
    g = min(f, 1.0 - f)
    ceil_f = 1 if f > 0 else 0
    round_f = 1 if f > 0.5 else 0
    size = 2 * (ll + 1)
    g_pow = np.empty(size)  # (g/n)^j / j!
    two_g_pow = np.empty(size)  # (2g/n)^j / j!
    rest_pow = np.empty(size)  # ((1 - 2g)/n)^j / j!
    g_pow[0] = two_g_pow[0] = rest_pow[0] = 1.0
    a, b, c = g / n, 2 * g / n, (1 - 2 * g) / n
    for j in range(1, size):
        g_pow[j] = g_pow[j - 1] * a / j
        two_g_pow[j] = two_g_pow[j - 1] * b / j
        rest_pow[j] = rest_pow[j - 1] * c / j

    previous = np.zeros(size)
    current = np.zeros(size)
    current[0] = 1.0
    prev_start = cur_start = 0
    exponent = 0
    j1, j2 = _pomeranz_bounds(0, n, ll, ceil_f, round_f)
    for i in range(1, 2 * n + 2):
        k1 = j1
        previous, current = current, previous
        prev_start, cur_start = cur_start, prev_start
        current.fill(0.0)
        j1, j2 = _pomeranz_bounds(i, n, ll, ceil_f, round_f)
        ends = i == 1 or i == 2 * n + 1
        weights = g_pow if ends else two_g_pow if i % 2 else rest_pow
        width = j2 - k1 + 1
        if width > 0:
            conv = np.convolve(previous[k1 - prev_start : k1 - prev_start + width], weights[:width])
            count = j2 - j1 + 1
            current[:count] = conv[j1 - k1 : j1 - k1 + count]
            top = float(np.max(current))
            if 0 < top < _SMALL:
                current *= _BIG
                exponent -= _SCALE_EXP
            cur_start = prev_start + j1 - k1
    answer = float(current[n - cur_start])
    for j in range(1, n + 1):  # times n!
        if abs(answer) > _BIG:
            answer *= _SMALL
            exponent += _SCALE_EXP
        answer *= j
    return _clip(math.ldexp(answer, exponent))


def _pelz_good_cdf(n: int, d: float) -> float:
    """Pelz & Good's (1976) approximation of P(D_n <= d): the Li-Chien/Korolyuk expansion
    K0 + K1/√n + K2/n + K3/n^1.5 in z = d√n, rewritten with Jacobi theta functions."""
    if d <= 0.0:
        return 0.0
    if d >= 1.0:
        return 1.0
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    z = math.sqrt(n) * d
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    q_log = -pi2 / 8 / z2
    if q_log < -708:
        return 0.0
    q = math.exp(q_log)
    k1a, k1b = -z2, pi2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * pi2 / 4
    k2c = pi4 * (1 - 2 * z2) / 16
    k3d = pi6 * (5 - 30 * z2) / 64
    k3c = pi4 * (-60 * z2 + 212 * z4) / 16
    k3b = pi2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    sums = [0.0, 0.0, 0.0, 0.0]
    max_k = math.ceil(16 * z / math.pi)
    for k in range(max_k, 0, -1):  # Horner in q^8k over odd m = 2k - 1
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        q_power = q ** (8 * k)
        coeffs = (
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        )
        sums = [s * q_power + c for s, c in zip(sums, coeffs, strict=True)]
    root_2pi = math.sqrt(2 * math.pi)
    divisors = (z, 6 * z4, 72 * z**7, 6480 * z**10)
    sums = [s * q * root_2pi / dv for s, dv in zip(sums, divisors, strict=True)]
    # the terms over all integers k of K2 and K3
    q = math.exp(-pi2 / 2 / z2)
    sqrt3z = math.sqrt(3) * z
    extra2 = extra3 = 0.0
    for k in range(max_k, 0, -1):
        qk = q ** (k * k)
        extra2 += k * k * qk
        extra3 += (sqrt3z + math.pi * k) * (sqrt3z - math.pi * k) * k * k * qk
    sums[2] += extra2 * pi2 * root_2pi / (-36 * z3)
    sums[3] += extra3 * pi2 * root_2pi / (216 * z6)
    return sum(s / float(n) ** (i / 2.0) for i, s in enumerate(sums))


# --------------------------------------------------------------------------- one-sided


def smirnov_sf(n: int, d: float) -> float:
    """P(D_n+ > d), the one-sided KS tail (``scipy.special.smirnov``), by the Birnbaum–Tingey
    sum  d · Σ_{v=0}^{⌊n(1−d)⌋} C(n,v) (d + v/n)^(v−1) (1 − d − v/n)^(n−v).

    Every term is positive, so the sum has no cancellation; each term is exp of its
    logarithm (terms span far more than a double's range), all at once with numpy.
    """
    import numpy as np

    if not (n > 0 and 0.0 <= d <= 1.0):
        return math.nan
    if n == 1:
        return 1.0 - d
    if d == 0.0:
        return 1.0
    if d == 1.0:
        return 0.0
    # n·d exactly: its floor decides the number of terms, and v + n·d must not round
    nd_exact = n * Fraction(d)
    nd_floor = math.floor(nd_exact)
    alpha = float(nd_exact - nd_floor)
    if nd_floor == 0 or (nd_floor == 1 and alpha == 0):  # d <= 1/n: closed form
        return 1.0 - d * (1.0 + d) ** (n - 1)
    if -2 * n * d * d < _MIN_LOG:
        return 0.0
    if nd_floor >= n - 1:  # d >= 1 - 1/n
        return (1.0 - d) ** n
    last = n - nd_floor - 1  # the largest v with 1 - d - v/n > 0
    v = np.arange(last + 1, dtype=np.float64)
    up = ((nd_floor + alpha) + v) / n  # d + v/n
    down = ((n - nd_floor) - v - alpha) / n  # 1 - d - v/n, > 0
    log_terms = _log_binomials(n, last) + (v - 1) * np.log(up) + (n - v) * np.log(down)
    return _clip(d * float(np.sum(np.exp(log_terms))))


def _log_binomials(n: int, last: int) -> np.ndarray:
    """log C(n, v) for v = 0 .. last (< n), each to a few ulps of its value.

    Stirling's series with n·log(n) − v·log(v) − (n−v)·log(n−v) rewritten as
    v·log(n/v) + (n−v)·log1p(v/(n−v)) — two positive terms, no cancellation — where v and
    n−v are both at least ``_STIRLING_MIN``; a short exact product of ratios elsewhere.
    """
    import numpy as np

    out = np.empty(last + 1)
    v = np.arange(last + 1, dtype=np.float64)
    rest = n - v
    mid = (v >= _STIRLING_MIN) & (rest >= _STIRLING_MIN)
    vm, rm = v[mid], rest[mid]
    out[mid] = (
        vm * np.log(n / vm)
        + rm * np.log1p(vm / rm)
        + 0.5 * np.log(n / (vm * rm))
        - 0.5 * math.log(2 * math.pi)
        + _stirling_tail(np.float64(n))
        - _stirling_tail(vm)
        - _stirling_tail(rm)
    )
    for k in np.flatnonzero(~mid):
        k = int(k)
        small = min(k, n - k)  # C(n, k) = C(n, n - k): a product of `small` ratios
        out[k] = math.log(math.comb(n, small)) if small else 0.0
    return out


def _stirling_tail(k: np.ndarray) -> np.ndarray:
    """log(k!) − [(k + ½)·log(k) − k + ½·log(2π)]: Stirling's series in 1/k (k ≥ 10)."""
    rk = 1.0 / k
    rk2 = rk * rk
    poly = 0.0 * rk
    for c in _STIRLING:
        poly = poly * rk2 + c
    return rk * poly
