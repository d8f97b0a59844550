"""MCSH polynomials, groups and the closed-form Gaussian expectation, as exact symbolic tables.

Everything here is pure Python on small dictionaries and runs once per setting (results are cached).

* A polynomial is a dict ``{(a, b, c): coefficient}`` meaning ``sum coef * x^a y^b z^c``.
* :func:`solid_harmonic` is ``H_abc`` of spec section 4.1 (homogeneous, harmonic, ``r^2`` kept).
* :func:`unit_sphere_harmonic` is ``P_abc`` of spec section 4.2 (``r^2 -> 1``); the ``1/rs`` factor
  of a monomial of degree ``d`` is ``inv_rs**d`` and is applied by the caller
  (:func:`scale_by_inv_rs`).
* :func:`gaussian_expectation` turns ``E[P(X)]``, ``X ~ N(lambda d, s^2 I)``, into a linear
  combination of terms ``d^m * lambda^deg(m) * s^(2j)`` keyed by ``(m, j)``.
"""

from __future__ import annotations

from functools import cache
from itertools import permutations
from math import comb, factorial

Poly = dict  # {(a, b, c): float}

# groups of the "gmp" scheme (spec table 4.4); kind: 1 scalar, 2 vector (3 comps), 3 six-vector
GMP_MAX_ORDER = 5
ORDERNORM_MAX_ORDER = 9


def _dfact(n: int) -> int:
    """Double factorial with (-1)!! = 0!! = 1."""
    r = 1
    while n > 1:
        r *= n
        n -= 2
    return r


def _h(p: int, q: int) -> int:
    return factorial(p) // (2 ** q * factorial(q) * factorial(p - 2 * q))


@cache
def group_indices(order: int) -> tuple[tuple[int, int, int], ...]:
    """Multi-indices (a >= b >= c, a+b+c = order) in reverse lexicographic order: group 1, 2, ..."""
    out = []
    for a in range(order, -1, -1):
        for b in range(min(a, order - a), -1, -1):
            c = order - a - b
            if 0 <= c <= b:
                out.append((a, b, c))
    return tuple(out)


def n_groups(order: int) -> int:
    return len(group_indices(order))


@cache
def components(abc: tuple[int, int, int]) -> tuple[tuple[int, int, int], ...]:
    """The distinct permutations of a group's multi-index (sorted, order irrelevant for features)."""
    return tuple(sorted(set(permutations(abc)), reverse=True))


def _multinomial_r2(t: int) -> Poly:
    """(x^2 + y^2 + z^2)^t expanded."""
    out: Poly = {}
    for i in range(t + 1):
        for j in range(t - i + 1):
            k = t - i - j
            c = factorial(t) // (factorial(i) * factorial(j) * factorial(k))
            key = (2 * i, 2 * j, 2 * k)
            out[key] = out.get(key, 0) + c
    return out


@cache
def _harmonic(abc: tuple[int, int, int], keep_r2: bool) -> tuple:
    a, b, c = abc
    n = a + b + c
    out: Poly = {}
    for i in range(a // 2 + 1):
        for j in range(b // 2 + 1):
            for k in range(c // 2 + 1):
                t = i + j + k
                coef = (-1) ** t * _dfact(2 * n - 2 * t - 1) * _h(a, i) * _h(b, j) * _h(c, k)
                base = (a - 2 * i, b - 2 * j, c - 2 * k)
                if keep_r2:
                    for m, cm in _multinomial_r2(t).items():
                        key = (base[0] + m[0], base[1] + m[1], base[2] + m[2])
                        out[key] = out.get(key, 0) + coef * cm
                else:
                    out[base] = out.get(base, 0) + coef
    return tuple(sorted((k, v) for k, v in out.items() if v != 0))


def solid_harmonic(abc: tuple[int, int, int]) -> Poly:
    """``H_abc(x, y, z)`` (spec 4.1): homogeneous of degree a+b+c and harmonic."""
    return dict(_harmonic(tuple(abc), True))


def unit_sphere_harmonic(abc: tuple[int, int, int]) -> Poly:
    """``P_abc`` with rs = 1 (spec 4.2): ``H_abc`` with ``x^2+y^2+z^2`` replaced by 1."""
    return dict(_harmonic(tuple(abc), False))


def scale_by_inv_rs(poly: Poly, inv_rs: float) -> Poly:
    return {m: c * inv_rs ** sum(m) for m, c in poly.items()}


@cache
def _monomial_expectation(m: tuple[int, int, int]) -> tuple:
    """E[x^a y^b z^c] for X ~ N(mu, s^2 I): terms {((a',b',c'), j): coef} meaning coef mu^m' s^(2j)."""
    per_axis = []
    for p in m:
        # E[x^p] = sum_q C(p, 2q) (2q-1)!! s^(2q) mu^(p-2q)
        per_axis.append([(p - 2 * q, q, comb(p, 2 * q) * _dfact(2 * q - 1)) for q in range(p // 2 + 1)])
    out: dict = {}
    for pa, qa, ca in per_axis[0]:
        for pb, qb, cb in per_axis[1]:
            for pc, qc, cc in per_axis[2]:
                key = ((pa, pb, pc), qa + qb + qc)
                out[key] = out.get(key, 0) + ca * cb * cc
    return tuple(sorted(out.items()))


def gaussian_expectation(poly: Poly) -> dict:
    """``E[P(X)]`` with ``X ~ N(lambda d, s^2 I)`` as ``{(m, j): coef}``: sum coef d^m lambda^|m| s^(2j)."""
    out: dict = {}
    for m, c in poly.items():
        for key, cm in _monomial_expectation(tuple(m)):
            out[key] = out.get(key, 0.0) + c * cm
    return {k: v for k, v in out.items() if v != 0}


def multinomial_weight(abc: tuple[int, int, int]) -> float:
    """``n! / (a! b! c!)``: GMPOrderNorm's weight of a group (spec section 10)."""
    a, b, c = abc
    return factorial(a + b + c) / (factorial(a) * factorial(b) * factorial(c))
