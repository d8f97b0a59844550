"""Synthetic multi-fidelity test functions for optimizer benchmarks (benchmarks/optimizers.py, tests).

Multi-fidelity Hartmann-3 / Hartmann-6 in the formulation of Kandasamy et al. (2017, "Multi-fidelity
Bayesian optimisation with continuous approximations", BOCA) as generalised in mf-prior-bench
(mfpbench, used for DEHB/PriorBand-style studies): with the fidelity position

    s(b) = log(b / b_min) / log(b_max / b_min)  in [0, 1]      (b = SMAC budget)

the function at budget ``b`` is

    f(x, b) = -sum_i (alpha_i - bias * (1 - s)) * exp(-sum_j A_ij (x_j - P_ij)^2)  +  noise * (1 - s) * |eps|

with the standard Hartmann constants (alpha, A, P; see ``HARTMANN``) and ``eps ~ N(0, 1)`` drawn
from a seed that is a stable hash of (x, b), so that the same point at the same budget always gives
the same value. At full budget (s = 1) both terms vanish and f is the plain Hartmann function (global
minimum -3.86278 for Hartmann-3, -3.32237 for Hartmann-6). ``bias`` lowers every alpha at low
budgets (it flattens the landscape; large values change the ranking); ``noise`` adds a non-negative
error. Presets: ``boca`` (bias 0.1, noise 0: Kandasamy et al.), and mfpbench's ``good`` (0.5, 0.1),
``moderate`` (1.0, 0.2), ``bad`` (2.0, 0.4), ``terrible`` (4.0, 0.8).

The search space is *mixed* on purpose (it is what a study space looks like, and log-scale integers
are what break SMAC's own Dask runner): coordinates are produced by

* plain floats in [0, 1];
* one log-scale integer ``n`` in [1, 2**20]: x = log2(n) / 20;
* a categorical ``branch`` in {fine, coarse} with two conditional children: ``fine`` -> a float
  ``x_fine`` in [0, 1]; ``coarse`` -> an integer ``k`` in 0..4, x = k / 4 (the optimum is not on
  that grid, so the better branch must be found);
* an inert categorical ``pad`` in {a, b, c} that does not change f (a distractor, like a
  hyperparameter without effect).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np

PRESETS: dict[str, tuple[float, float]] = {
    "boca": (0.1, 0.0),
    "good": (0.5, 0.1),
    "moderate": (1.0, 0.2),
    "bad": (2.0, 0.4),
    "terrible": (4.0, 0.8),
}

_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN = {
    3: {
        "A": np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]]),
        "P": 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]),
        "xopt": (0.114614, 0.555649, 0.852547),
        "fmin": -3.86278214782076,
    },
    6: {
        "A": np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                       [17, 8, 0.05, 10, 0.1, 14]]),
        "P": 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                              [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]),
        "xopt": (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),
        "fmin": -3.32236801141551,
    },
}
LOG_INT_BITS = 20


def hartmann(x, dim: int, bias: float = 0.0) -> float:
    """Hartmann-``dim`` at ``x`` with every alpha lowered by ``bias``."""
    c = HARTMANN[dim]
    x = np.asarray(x, dtype=float).reshape(1, -1)
    inner = np.sum(c["A"] * (x[:, None, :] - c["P"]) ** 2, axis=-1)
    return float(-np.sum((_ALPHA - bias) * np.exp(-inner), axis=-1)[0])


def fidelity_position(budget: float, min_budget: float, max_budget: float) -> float:
    if max_budget <= min_budget:
        return 1.0
    b = min(max(float(budget), min_budget), max_budget)
    return math.log(b / min_budget) / math.log(max_budget / min_budget)


def _stable_normal(x, budget: float) -> float:
    h = hashlib.sha256(struct.pack(f"{len(x) + 1}d", *[round(float(v), 12) for v in x], float(budget)))
    return float(np.random.default_rng(int.from_bytes(h.digest()[:8], "little")).normal())


@dataclass
class MFHartmann:
    """Multi-fidelity Hartmann-``dim`` over a mixed ConfigSpace (see module doc)."""

    dim: int = 3
    min_budget: float = 1.0
    max_budget: float = 27.0
    bias: float = 1.0
    noise: float = 0.2

    @classmethod
    def preset(cls, dim: int, name: str, min_budget: float = 1.0, max_budget: float = 27.0) -> MFHartmann:
        bias, noise = PRESETS[name]
        return cls(dim=dim, min_budget=min_budget, max_budget=max_budget, bias=bias, noise=noise)

    @property
    def fmin(self) -> float:
        return HARTMANN[self.dim]["fmin"]

    @property
    def name(self) -> str:
        return f"hartmann{self.dim}"

    # ---- space -------------------------------------------------------------------------------
    def configspace(self, seed: int = 0):
        """Floats for the first dim-2 coordinates, a log-int for dim-2, branch (+ children) for dim-1."""
        from ConfigSpace import (
            Categorical,
            ConfigurationSpace,
            EqualsCondition,
            Float,
            Integer,
        )

        cs = ConfigurationSpace(seed=seed)
        hps = [Float(f"x{j}", (0.0, 1.0)) for j in range(self.dim - 2)]
        n = Integer("n", (1, 2 ** LOG_INT_BITS), log=True)
        branch = Categorical("branch", ["fine", "coarse"])
        fine = Float("x_fine", (0.0, 1.0))
        coarse = Integer("k", (0, 4))
        pad = Categorical("pad", ["a", "b", "c"])
        cs.add(hps + [n, branch, fine, coarse, pad])
        cs.add([EqualsCondition(fine, branch, "fine"), EqualsCondition(coarse, branch, "coarse")])
        return cs

    def point(self, config) -> np.ndarray:
        """Hartmann coordinates of a configuration (a ConfigSpace Configuration or a dict)."""
        c = dict(config)
        xs = [float(c[f"x{j}"]) for j in range(self.dim - 2)]
        xs.append(math.log2(int(c["n"])) / LOG_INT_BITS)
        xs.append(float(c["x_fine"]) if c["branch"] == "fine" else int(c["k"]) / 4.0)
        return np.array(xs)

    # ---- evaluation --------------------------------------------------------------------------
    def __call__(self, config, budget: float | None = None) -> float:
        b = self.max_budget if budget is None else float(budget)
        s = fidelity_position(b, self.min_budget, self.max_budget)
        x = self.point(config)
        f = hartmann(x, self.dim, bias=self.bias * (1.0 - s))
        if self.noise > 0 and s < 1.0:
            f += self.noise * (1.0 - s) * abs(_stable_normal(x, b))
        return f

    def regret(self, config) -> float:
        """Full-budget value minus the global minimum (>= 0)."""
        return hartmann(self.point(config), self.dim) - self.fmin
