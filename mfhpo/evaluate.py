"""``mfhpo evaluate CHECKPOINT DATA``: score a trained potential on any ASE-readable file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mfhpo.checkpoint import load_potential
from mfhpo.data import load_dataset
from mfhpo.metrics import Metrics
from mfhpo.scoring import score

SHOWN = ("energy_mae", "energy_mae_per_atom", "energy_rmse", "force_mae", "force_mae_free", "force_rmse",
         "n_structures", "n_atoms", "n_free_atoms")


def evaluate(checkpoint: str | Path, data: str | Path, device: str = "auto", batch_size: int = 64) -> Metrics:
    """All metrics of ``checkpoint`` on ``data`` (:class:`~mfhpo.metrics.Metrics`). The energy baseline
    is the linear fit stored in the checkpoint (its training split's per-element reference energies);
    the force baseline is zero."""
    ds = load_dataset(data)  # validated first: a bad data file is named before any model is loaded
    pot = load_potential(checkpoint, device=device)
    return score(pot, ds, batch_size=batch_size, source=str(data))  # unknown elements -> one-line error


def evaluate_command(checkpoint: Path, data: Path, as_json: bool = False, device: str = "auto") -> Metrics:
    m = evaluate(checkpoint, data, device=device)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.to_dict().items()}
    if as_json:
        print(json.dumps(clean, indent=2))
        return m
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{Path(checkpoint).name} on {Path(data).name}")
    t.add_column("metric")
    t.add_column("model", justify="right")
    t.add_column("baseline", justify="right")
    fmt = lambda v: "-" if v is None else (str(v) if isinstance(v, int) else f"{v:.5g}")  # noqa: E731
    units = {"energy_mae": "eV", "energy_rmse": "eV", "energy_mae_per_atom": "eV/atom", "force_mae": "eV/Å",
             "force_mae_free": "eV/Å", "force_rmse": "eV/Å"}
    for k in SHOWN:
        base = clean.get(f"baseline_{k}")
        name = f"{k} [{units[k]}]" if k in units else k
        t.add_row(name, fmt(clean.get(k)), fmt(base) if f"baseline_{k}" in clean else "")
    Console().print(t)
    print("baselines: energy = per-element linear fit of the checkpoint's training split; forces = zero")
    return m
