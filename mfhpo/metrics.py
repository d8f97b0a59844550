"""Energy / force error metrics (eV, eV/Å) and the trivial baselines they are compared with.

Names (see docs/architecture.md):

* ``energy_mae``, ``energy_rmse``: per structure (total energy), eV;
* ``energy_mae_per_atom``, ``energy_rmse_per_atom``: |ΔE| / natoms per structure, eV/atom;
* ``force_mae``, ``force_rmse``: per Cartesian component over all atoms, eV/Å (raw forces, i.e.
  not zeroed by ``FixAtoms``);
* ``force_mae_free``, ``force_rmse_free``: the same over atoms not held by ``FixAtoms``;
* ``n_structures``, ``n_atoms``, ``n_free_atoms``;
* baselines on the same structures: ``baseline_energy_mae``, ``baseline_energy_mae_per_atom``
  (per-element linear fit E ≈ Σ n_e ε_e on the training split) and ``baseline_force_mae``,
  ``baseline_force_mae_free`` (predicting zero force).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence

import numpy as np

METRIC_NAMES = (
    "energy_mae", "energy_rmse", "energy_mae_per_atom", "energy_rmse_per_atom",
    "force_mae", "force_rmse", "force_mae_free", "force_rmse_free",
    "n_structures", "n_atoms", "n_free_atoms",
    "baseline_energy_mae", "baseline_energy_mae_per_atom", "baseline_force_mae", "baseline_force_mae_free",
)


CURVE_METRICS = ("energy_mae", "energy_mae_per_atom", "force_mae", "force_mae_free")  # per epoch, as val_<name>


@dataclass(frozen=True)
class Metrics:
    """The metrics record of one set of structures: model errors, counts and both baselines (eV, Å,
    eV/Å; NaN where undefined, e.g. force metrics of data without forces). ``to_dict()`` is the
    record written to metrics.json, checkpoints and trial records."""

    energy_mae: float
    energy_rmse: float
    energy_mae_per_atom: float
    energy_rmse_per_atom: float
    n_structures: int
    n_atoms: int
    n_free_atoms: int
    force_mae: float
    force_rmse: float
    force_mae_free: float
    force_rmse_free: float
    baseline_energy_mae: float
    baseline_energy_mae_per_atom: float
    baseline_force_mae: float
    baseline_force_mae_free: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        """From a record (a missing or null value reads as NaN; extra keys are ignored)."""
        def value(f):
            v = d.get(f.name)
            if f.type == "int":
                return int(v or 0)
            return math.nan if v is None else float(v)

        return cls(**{f.name: value(f) for f in fields(cls)})


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else math.nan


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else math.nan


def energy_force_metrics(
    e_pred: np.ndarray,
    e_true: np.ndarray,
    natoms: np.ndarray,
    f_pred: Optional[np.ndarray] = None,
    f_true: Optional[np.ndarray] = None,
    free: Optional[np.ndarray] = None,
) -> dict[str, float]:
    """Metrics of predictions; forces are concatenated over structures ((n_atoms, 3)).

    Force metrics are NaN when no forces are given (e.g. data without force labels).
    """
    e_pred = np.asarray(e_pred, dtype=np.float64).reshape(-1)
    e_true = np.asarray(e_true, dtype=np.float64).reshape(-1)
    natoms = np.asarray(natoms, dtype=np.float64).reshape(-1)
    de = e_pred - e_true
    out = {
        "energy_mae": _mae(de),
        "energy_rmse": _rmse(de),
        "energy_mae_per_atom": _mae(de / natoms) if de.size else math.nan,
        "energy_rmse_per_atom": _rmse(de / natoms) if de.size else math.nan,
        "n_structures": int(de.size),
        "n_atoms": int(natoms.sum()),
    }
    free = np.ones(int(natoms.sum()), dtype=bool) if free is None else np.asarray(free, dtype=bool).reshape(-1)
    out["n_free_atoms"] = int(free.sum())
    if f_pred is not None and f_true is not None:
        df = np.asarray(f_pred, dtype=np.float64).reshape(-1, 3) - np.asarray(f_true, dtype=np.float64).reshape(-1, 3)
        out.update(force_mae=_mae(df), force_rmse=_rmse(df), force_mae_free=_mae(df[free]), force_rmse_free=_rmse(df[free]))
    else:
        out.update(force_mae=math.nan, force_rmse=math.nan, force_mae_free=math.nan, force_rmse_free=math.nan)
    return out


def baseline_metrics(
    e_true: np.ndarray,
    e_linear: np.ndarray,
    natoms: np.ndarray,
    f_true: Optional[np.ndarray] = None,
    free: Optional[np.ndarray] = None,
) -> dict[str, float]:
    """Linear-fit energy baseline (``e_linear`` = Σ n_e ε_e) and zero-force baseline: the model
    metrics of those two trivial predictors."""
    f_zero = None if f_true is None else np.zeros_like(np.asarray(f_true, dtype=np.float64))
    m = energy_force_metrics(e_linear, e_true, natoms, f_zero, f_true, free)
    return {f"baseline_{k}": m[k] for k in ("energy_mae", "energy_mae_per_atom", "force_mae", "force_mae_free")}


def dataset_metrics(dataset, e_pred: np.ndarray, f_pred: Optional[Sequence[np.ndarray]], refs: dict[str, float]) -> dict:
    """All metrics (model + baselines) of predictions on a :class:`mfhpo.data.Dataset`."""
    from mfhpo.data import reference_energy

    natoms = dataset.natoms
    free = np.concatenate(dataset.free) if len(dataset) else np.zeros(0, bool)
    f_true = np.concatenate(dataset.forces) if (dataset.forces is not None and len(dataset)) else None
    fp = np.concatenate(list(f_pred)) if (f_pred is not None and f_true is not None) else None
    out = energy_force_metrics(e_pred, dataset.energies, natoms, fp, f_true, free)
    e_lin = np.array([reference_energy(a, refs) for a in dataset.images])
    out.update(baseline_metrics(dataset.energies, e_lin, natoms, f_true, free))
    return out


def curve_metrics(e_pred, e_true, natoms, f_pred=None, f_true=None, free=None) -> dict[str, float]:
    """The learning curve's per-epoch MAEs (:data:`CURVE_METRICS`, keys ``val_<name>``) from torch
    tensors, reduced on their device in their dtype (no copy to the host per epoch); the definitions
    are those of :func:`energy_force_metrics`."""
    nat = natoms.to(e_pred.dtype)
    de = e_pred - e_true
    m = {"val_energy_mae": float(de.abs().mean()), "val_energy_mae_per_atom": float((de / nat).abs().mean())}
    if f_pred is not None:
        df = (f_pred - f_true).abs()
        m["val_force_mae"] = float(df.mean())
        m["val_force_mae_free"] = float(df[free].mean()) if bool(free.any()) else math.nan
    else:
        m["val_force_mae"] = m["val_force_mae_free"] = math.nan
    return m


def predict(model_bundle, dataset, *, forces: bool = True, device: str | None = None, batch_size: int = 64,
            cache=None, progress: bool = False):
    """Energies (eV, (n,)) and a list of forces ((natoms, 3) eV/Å; None without forces) of a dataset.

    ``model_bundle`` is a :class:`mfhpo.checkpoint.LoadedPotential` or a checkpoint path.
    """
    from mfhpo.checkpoint import LoadedPotential, load_potential

    if not isinstance(model_bundle, LoadedPotential):
        model_bundle = load_potential(model_bundle, device=device or "cpu")
    return model_bundle.predict(dataset.images, forces=forces, batch_size=batch_size, cache=cache,
                                progress=progress, source=dataset.source)
