"""A realistic synthetic run directory (trial table + trial folders + learning curves) for report tests.

Shaped like what ``mfhpo run`` writes (see docs/architecture.md): Hyperband rungs with promotions,
a crashed trial, warm-started promotions, a random-search reference, ISO timestamps.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

METRIC_KEYS = ["energy_mae", "energy_rmse", "energy_mae_per_atom", "energy_rmse_per_atom", "force_mae",
               "force_rmse", "force_mae_free", "force_rmse_free", "baseline_energy_mae",
               "baseline_energy_mae_per_atom", "baseline_force_mae", "baseline_force_mae_free", "n_structures",
               "n_atoms"]


def _sample(rng) -> dict:
    sched = str(rng.choice(["none", "step", "cosine"]))
    return {
        "cfg.training.lr": float(10 ** rng.uniform(-4, -1.5)),
        "cfg.model.width": int(2 ** rng.integers(3, 8)),
        "cfg.model.layers": int(rng.integers(1, 4)),
        "cfg.model.activation": str(rng.choice(["tanh", "gelu", "silu"])),
        "cfg.descriptor.cutoff": float(rng.uniform(4.0, 8.0)),
        "cfg.descriptor.max_order": int(rng.integers(1, 4)),
        "cfg.training.scheduler": sched,
        "cfg.training.step_size": float(rng.integers(5, 40)) if sched == "step" else np.nan,
    }


def _quality(cfg: dict) -> float:
    """Energy MAE per atom at full budget (eV/atom): driven mostly by lr and cutoff."""
    lr = np.log10(cfg["cfg.training.lr"])
    return 0.01 * (1 + 3 * (lr + 2.7) ** 2 + 0.8 * (cfg["cfg.descriptor.cutoff"] - 6.5) ** 2
                   + 0.1 * (cfg["cfg.model.activation"] == "tanh") + 0.05 * abs(np.log2(cfg["cfg.model.width"]) - 5))


def build(root: Path, name: str = "demo-synth", seed: int = 0, random_reference: bool = True,
          n_bracket_configs: int = 9, brackets: int = 2, force_weight: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    rundir = Path(root) / name
    (rundir / "trials").mkdir(parents=True)
    spec = {
        "name": name, "description": "synthetic demo-like study",
        "data": {"train": "demo", "val_fraction": 0.2, "test_fraction": 0.1},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": force_weight},
        "space": {}, "fidelity": {"min_budget": 1, "max_budget": 9, "eta": 3, "epochs": {"min": 3, "max": 27}},
        "budget": {"trials": 40}, "optimizer": "smac-mf",
    }
    (rundir / "study.yaml").write_text(yaml.safe_dump(spec))
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    clock = [t0]
    rows = []
    budgets = {1.0: (3, 1 / 3), 3.0: (9, 2 / 3), 9.0: (27, 1.0)}

    def run(cfg, config_id, budget, optimizer, warm_from=None):
        tid = len(rows)
        epochs, frac = budgets[budget]
        q = _quality(cfg) * (1 + 2.0 / budget) * float(np.exp(rng.normal(0, 0.05)))
        crashed = tid == 4
        wall = 20.0 * epochs * frac + 5
        start = clock[0]
        end = start + timedelta(seconds=wall)
        clock[0] = end
        val = {
            "energy_mae_per_atom": q, "energy_rmse_per_atom": 1.3 * q, "energy_mae": 14 * q,
            "energy_rmse": 18 * q, "force_mae": 3 * q + 0.02, "force_rmse": 4 * q + 0.03,
            "force_mae_free": 3.5 * q + 0.02, "force_rmse_free": 4.5 * q + 0.03,
            "baseline_energy_mae": 1.2, "baseline_energy_mae_per_atom": 0.09, "baseline_force_mae": 0.35,
            "baseline_force_mae_free": 0.41, "n_structures": 32, "n_atoms": 448,
        }
        cost = val["energy_mae_per_atom"] + force_weight * val["force_mae"]
        row = {
            "trial_id": tid, "config_id": config_id, "budget": budget, "epochs": epochs, "subset_fraction": frac,
            "seed": 0, "status": "CRASHED" if crashed else "SUCCESS", "cost": 1000.0 if crashed else cost,
            "optimizer": optimizer, "stage": "joint", "warm_started": warm_from is not None,
            "warm_start_from": warm_from if warm_from is not None else "",
            "epoch_equivalents": epochs * frac, "wall_time_s": wall, "featurize_time_s": 3.0,
            "train_time_s": wall - 3.0, "worker": "tcp://127.0.0.1:1", "device": "cpu",
            "started_at": start.isoformat(), "finished_at": end.isoformat(),
        }
        for k in METRIC_KEYS:
            row[f"val_{k}"] = np.nan if crashed else val[k]
        row.update(cfg)
        rows.append(row)
        d = rundir / "trials" / str(tid)
        d.mkdir()
        (d / "trial.json").write_text(json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                                                   for k, v in row.items()}, default=str))
        if crashed:
            return row
        (d / "metrics.json").write_text(json.dumps({"train": {k: 0.8 * v for k, v in val.items()}, "val": val}))
        ep = np.arange(1, epochs + 1)
        curve = pd.DataFrame({
            "epoch": ep, "lr": cfg["cfg.training.lr"], "train_loss": q * (1 + 5 / ep) * 0.8,
            "val_energy_mae": 14 * q * (1 + 5 / ep), "val_energy_mae_per_atom": q * (1 + 5 / ep),
            "val_force_mae": (3 * q + 0.02) * (1 + 2 / ep), "val_force_mae_free": (3.5 * q + 0.02) * (1 + 2 / ep),
            "time_s": ep * wall / epochs,
        })
        curve.to_csv(d / "learning_curve.csv", index=False)
        return row

    cid = 0
    for _ in range(brackets):  # successive halving, eta = 3
        configs = []
        for _ in range(n_bracket_configs):
            configs.append((cid, _sample(rng)))
            cid += 1
        alive = [(c, cfg, None) for c, cfg in configs]
        for b in (1.0, 3.0, 9.0):
            results = [(run(cfg, c, b, "smac-mf", warm), c, cfg) for c, cfg, warm in alive]
            results.sort(key=lambda r: r[0]["cost"])
            keep = max(1, len(results) // 3)
            alive = [(c, cfg, r["trial_id"]) for r, c, cfg in results[:keep]]
    if random_reference:
        for _ in range(8):
            run(_sample(rng), cid, 9.0, "random")
            cid += 1
    table = pd.DataFrame(rows)
    table.to_csv(rundir / "trials.csv", index=False)
    return rundir
