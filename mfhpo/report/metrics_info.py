"""Names, units and definitions of the validation metrics that reports show.

One table so that every number in a report carries the same label, unit and baseline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str  # metric name as in metrics.json (the trial table column is ``val_<name>``)
    label: str  # short label for axes and tables
    unit: str
    definition: str
    baseline: str | None = None  # name of the metric that is its baseline on the same split


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("energy_mae", "energy MAE", "eV",
                   "mean absolute error of the total energy per structure", "baseline_energy_mae"),
        MetricInfo("energy_rmse", "energy RMSE", "eV", "root-mean-square error of the total energy per structure"),
        MetricInfo("energy_mae_per_atom", "energy MAE / atom", "eV/atom",
                   "mean over structures of |E_pred - E_ref| / n_atoms", "baseline_energy_mae_per_atom"),
        MetricInfo("energy_rmse_per_atom", "energy RMSE / atom", "eV/atom",
                   "root-mean-square of (E_pred - E_ref) / n_atoms"),
        MetricInfo("force_mae", "force MAE (all atoms)", "eV/Å",
                   "mean absolute error per Cartesian force component, all atoms", "baseline_force_mae"),
        MetricInfo("force_rmse", "force RMSE (all atoms)", "eV/Å",
                   "root-mean-square error per Cartesian force component, all atoms"),
        MetricInfo("force_mae_free", "force MAE (free atoms)", "eV/Å",
                   "mean absolute error per Cartesian force component, atoms not held by FixAtoms "
                   "(OC20 convention)", "baseline_force_mae_free"),
        MetricInfo("force_rmse_free", "force RMSE (free atoms)", "eV/Å",
                   "root-mean-square error per Cartesian force component, free atoms only"),
        MetricInfo("baseline_energy_mae", "baseline energy MAE", "eV",
                   "energy MAE of the per-element linear reference fit on the training split"),
        MetricInfo("baseline_energy_mae_per_atom", "baseline energy MAE / atom", "eV/atom",
                   "per-atom energy MAE of the per-element linear reference fit"),
        MetricInfo("baseline_force_mae", "baseline force MAE (all atoms)", "eV/Å",
                   "force MAE of a zero-force predictor, all atoms"),
        MetricInfo("baseline_force_mae_free", "baseline force MAE (free atoms)", "eV/Å",
                   "force MAE of a zero-force predictor, free atoms"),
        MetricInfo("n_structures", "structures", "", "number of structures in the validation split"),
        MetricInfo("n_atoms", "atoms", "", "number of atoms in the validation split"),
    ]
}

# the metrics shown in result tables, each next to its baseline
HEADLINE = ["energy_mae", "energy_mae_per_atom", "energy_rmse", "force_mae", "force_mae_free", "force_rmse",
            "force_rmse_free"]


def metric_info(name: str) -> MetricInfo:
    """Info for ``name`` (with or without a ``val_`` prefix); unknown names get a plain entry."""
    key = name[4:] if name.startswith("val_") else name
    return METRICS.get(key, MetricInfo(key, key.replace("_", " "), "", key))


def axis_label(name: str) -> str:
    info = metric_info(name)
    return f"validation {info.label} [{info.unit}]" if info.unit else f"validation {info.label}"


def fmt(value, unit: str = "") -> str:
    """Compact number with unit; NaN/None as an en dash."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:
        return "–"
    if v == 0:
        s = "0"
    elif abs(v) >= 1e4 or abs(v) < 1e-3:
        s = f"{v:.3g}"
    elif abs(v) >= 100:
        s = f"{v:.1f}"
    else:
        s = f"{v:.4g}"
    return f"{s} {unit}".strip()
