"""SMAC's one scalar budget -> :class:`mfhpo.config.Budget` (epochs, nested training-subset fraction).

Both axes interpolate between ``(min_budget -> min)`` and ``(max_budget -> max)``, linearly or on a
log scale in the budget. The subset may saturate earlier (``subset.saturate_at``): from that budget
on it stays at ``subset.max`` so that the top rungs train on the same data and can warm start. Or it
grows with the epochs (``subset.curriculum``): every rung's epochs continue the rung below on a
larger subset, so every promotion can warm start.
"""

from __future__ import annotations

import math

from mfhpo.config import Fidelity


def _position(b: float, lo: float, hi: float, scale: str) -> float:
    if hi <= lo:
        return 1.0
    b = min(max(b, lo), hi)
    if scale == "log":
        return math.log(b / lo) / math.log(hi / lo)
    return (b - lo) / (hi - lo)


def _interp(t: float, a: float, b: float, scale: str) -> float:
    if scale == "log" and a > 0 and b > 0:
        return a * (b / a) ** t
    return a + t * (b - a)


def _epochs_and_subset(fid, budget: float) -> tuple[int, float]:
    t = _position(float(budget), fid.min_budget, fid.max_budget, fid.epochs.scale)
    epochs = int(round(_interp(t, fid.epochs.min, fid.epochs.max, fid.epochs.scale)))
    top = fid.subset.saturate_at if fid.subset.saturate_at is not None else fid.max_budget
    ts = _position(float(budget), fid.min_budget, top, fid.subset.scale)
    subset = _interp(min(ts, 1.0), fid.subset.min, fid.subset.max, fid.subset.scale)
    return max(1, epochs), min(1.0, max(1e-6, round(subset, 6)))


def budget_to_fidelity(fid, budget: float | None) -> Fidelity:
    """Map a SMAC budget (None: full budget) to epochs and subset fraction with the study's mapping.

    With ``subset.curriculum`` the subset grows with the epochs instead: the epochs of rung k (after
    those of rung k-1) train on rung k's subset, so the schedule of a budget is a prefix of every
    higher budget's and a promotion continues its checkpoint exactly (docs/studies.md)."""
    if budget is None:
        budget = fid.max_budget
    epochs, subset = _epochs_and_subset(fid, budget)
    if not fid.subset.curriculum:
        return Fidelity(epochs=epochs, subset_fraction=subset)
    schedule: list[tuple[int, float]] = []
    start = 0
    for b in [r for r in rungs(fid) if r < float(budget) * (1 - 1e-9)] + [float(budget)]:
        e, f = _epochs_and_subset(fid, b)
        if start >= epochs or e <= start:
            continue
        if not schedule or f > schedule[-1][1]:
            schedule.append((start, f))
        start = e
    return Fidelity(epochs=epochs, subset_fraction=schedule[-1][1], subset_schedule=schedule)


def rungs(fid) -> list[float]:
    """The budgets Hyperband uses (``max_budget / eta^k`` down to about ``min_budget``), computed as SMAC's
    successive halving computes them, floating point included: where log(max/min)/log(eta) lands just
    below a whole number (e.g. 1..243, eta 3) SMAC's lowest rung is ``eta * min_budget``, and so is this."""
    import numpy as np

    s_max = int(np.floor(np.log(fid.max_budget / fid.min_budget) / np.log(fid.eta)))
    return [float(fid.max_budget * np.power(fid.eta, -float(s_max - i))) for i in range(s_max + 1)]


def describe(fid) -> list[dict]:
    return [{"budget": b, **budget_to_fidelity(fid, b).model_dump()} for b in rungs(fid)]
