"""The optimised metrics of a trial next to their baselines, for the terminal views (live view,
``mfhpo status``, ``mfhpo incumbent``): labelled with their atom set, and a warning while the
incumbent does not beat the baselines (per-element linear energy fit; zero force).

Labels, units and which baseline belongs to which metric come from
:mod:`mfhpo.report.metrics_info` (the same names as in reports)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from mfhpo.report.metrics_info import fmt, metric_info


@dataclass(frozen=True)
class VersusBaseline:
    name: str  # metric name as in metrics.json
    label: str  # with the atom set: "force MAE (free atoms)"
    unit: str
    value: Optional[float]
    baseline: Optional[float]
    baseline_label: str  # "baseline" (linear energy fit) or "zero-force"
    weight: float = 1.0  # weight in the cost

    @property
    def beats(self) -> Optional[bool]:
        """True when the model is below its baseline; None when either is missing."""
        if self.value is None or self.baseline is None or not (math.isfinite(self.value) and math.isfinite(self.baseline)):
            return None
        return self.value < self.baseline

    @property
    def margin(self) -> Optional[float]:
        """How many times lower than its baseline the model is (None unless it beats it)."""
        return self.baseline / self.value if self.beats and self.value > 0 else None

    def text(self) -> str:
        s = f"{self.label} {fmt(self.value, self.unit)}"
        if self.baseline is not None:
            margin = f", ×{self.margin:.2f} better" if self.margin is not None else ""
            s += f" ({self.baseline_label} {fmt(self.baseline)}{margin})"
        return s


def _num(v) -> Optional[float]:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def versus(name: str, metrics: dict, weight: float = 1.0) -> VersusBaseline:
    info = metric_info(name)
    base = info.baseline
    return VersusBaseline(name=name, label=info.label, unit=info.unit, value=_num(metrics.get(name)),
                          baseline=_num(metrics.get(base)) if base else None,
                          baseline_label="zero-force" if name.startswith("force") else "baseline", weight=weight)


def optimised(metrics: dict, metric) -> list[VersusBaseline]:
    """The metrics in the cost (``metric`` is the study's MetricSection), each with its baseline."""
    rows = [versus(metric.energy, metrics)]
    if metric.forces and metric.force_weight > 0:
        rows.append(versus(metric.forces, metrics, metric.force_weight))
    return rows


def baseline_cost(rows: list[VersusBaseline]) -> Optional[float]:
    """The cost formula on the baselines (None when a component has no baseline)."""
    if any(r.baseline is None for r in rows):
        return None
    return sum(r.weight * r.baseline for r in rows)


def summary(metrics: dict, metric) -> str:
    """``energy MAE / atom 0.0183 eV/atom (baseline 0.0454, ×2.48 better) · force MAE (free atoms) 1.271 eV/Å (zero-force 1.253)``"""
    return " · ".join(r.text() for r in optimised(metrics, metric))


def warning(metrics: dict, metric, subject: str = "the incumbent") -> Optional[str]:
    """One line when the model does not beat a baseline of an optimised metric, else None."""
    bad = [r for r in optimised(metrics, metric) if r.beats is False]
    if not bad:
        return None
    parts = [f"{r.label} {fmt(r.value)} >= {r.baseline_label} {fmt(r.baseline)}" for r in bad]
    return f"{subject} does not beat its baseline: " + "; ".join(parts)
