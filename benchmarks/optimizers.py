"""Is multi-fidelity worth it? smac-mf vs smac-bo vs random search at EQUAL COMPUTE.

Compute = sum over trials of budget / max_budget, i.e. in full-budget evaluations (for the training
objective: epoch-equivalents / full-budget epochs). Every optimizer gets the same compute per run;
each run uses mfhpo's own ask/tell layer (``mfhpo.study.optimizers.make_optimizer``) sequentially,
in-process (this measures sample efficiency, not dispatch).

Objectives (see docs/optimizers.md for the exact formulas):

* ``hartmann3`` / ``hartmann6``: multi-fidelity Hartmann (mfhpo.benchmarks_synthetic) over a mixed
  space (floats, a log-scale integer, a categorical with conditional children, an inert categorical);
  value = simple regret at full budget.
* ``demo``: real GMP + SingleNN trainings on the built-in demo data (mfhpo.demo), space = network
  and training hyperparameters (lr log, widths log-int per layer conditional on num_layers, layers,
  activation, batch size log-int, force coefficient on/off + log), descriptor fixed so features are
  computed once and kept in memory; budget -> epochs via the study fidelity mapping; value = the
  study cost (val energy MAE per atom + 0.1 * val force MAE on free atoms).

The incumbent at compute c is the best full-budget value among trials FINISHED by c; for smac-mf only
configurations evaluated at the highest budget count (what a study would export). Reported: median
and IQR over seeds at compute checkpoints, and the compute each optimizer's median curve needs to
reach random search's final median quality, as a ratio to what random search's median curve needs.
Target: smac-mf reaches it with <= 1/3 of random search's compute.

    python benchmarks/optimizers.py --quick                 # ~1-2 min smoke run
    python benchmarks/optimizers.py                         # moderate (default)
    python benchmarks/optimizers.py --full --out runs/optbench
    python benchmarks/optimizers.py --objectives hartmann3 --seeds 5 --compute 40
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

KINDS = ("smac-mf", "smac-bo", "random")
TARGET_RATIO = 1.0 / 3.0


# ------------------------------------------------------------------------------------------------
# objectives: evaluate(config, budget) -> (cost told to SMAC, compute units, full-budget value|None)
# ------------------------------------------------------------------------------------------------


@dataclass
class Objective:
    name: str
    min_budget: float
    max_budget: float
    eta: int
    configspace: Callable[[int], Any]
    evaluate: Callable[[Any, float], tuple[float, float, float | None]]
    value_label: str
    info: dict = field(default_factory=dict)


def synthetic_objective(dim: int, preset: str, max_budget: float = 27.0, eta: int = 3) -> Objective:
    from mfhpo.benchmarks_synthetic import PRESETS, MFHartmann

    fn = MFHartmann.preset(dim, preset, min_budget=1.0, max_budget=max_budget)

    def evaluate(config, budget):
        y = fn(config, budget)
        full = budget >= fn.max_budget - 1e-9
        return y, budget / fn.max_budget, (y - fn.fmin) if full else None

    bias, noise = PRESETS[preset]
    return Objective(f"hartmann{dim}", 1.0, max_budget, eta, fn.configspace, evaluate, "regret",
                     {"function": f"hartmann{dim}", "preset": preset, "bias": bias, "noise": noise,
                      "fmin": fn.fmin})


class _MemoryCache:
    """In-process feature cache (get/put like mfhpo.gmp.cache.FeatureCache), optionally over a disk
    FeatureCache: features of the fixed descriptor are computed once per process."""

    def __init__(self, disk=None):
        self.d: dict = {}
        self.disk = disk if (disk is not None and hasattr(disk, "get") and hasattr(disk, "put")) else None

    @staticmethod
    def _key(setting, atoms, dtype, derivatives):
        from mfhpo.data import structure_hash

        return (setting.key(), structure_hash(atoms), str(dtype), bool(derivatives))

    def get(self, setting, atoms, dtype, derivatives):
        k = self._key(setting, atoms, dtype, derivatives)
        f = self.d.get(k)
        if f is None and self.disk is not None:
            f = self.disk.get(setting, atoms, dtype, derivatives)
            if f is not None:
                self.d[k] = f
        return f

    def put(self, setting, atoms, dtype, derivatives, feats):
        self.d[self._key(setting, atoms, dtype, derivatives)] = feats
        if self.disk is not None:
            self.disk.put(setting, atoms, dtype, derivatives, feats)


_REAL_STATE: dict = {}


def demo_study_dict(n_structures: int, max_epochs: int, max_budget: float, eta: int) -> dict:
    """The real objective as an mfhpo study (so the space goes through mfhpo.study.space)."""
    return {
        "name": "optbench-demo",
        "seed": 0,
        "data": {"train": "demo", "demo_structures": int(n_structures), "demo_seed": 0,
                 "val_fraction": 0.2, "test_fraction": 0.0, "split_seed": 0},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae_free", "force_weight": 0.1},
        "space": {
            "num_layers": {"low": 1, "high": 3},
            "nodes": {"low": 4, "high": 128, "log": True},
            "activation": {"choices": ["tanh", "silu", "softplus"]},
            "lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
            "batch_size": {"low": 8, "high": 64, "log": True},
            "force_coefficient": {"low": 0.01, "high": 1.0, "log": True, "or_zero": True},
            "scheduler": "none",
            "loss": "mse",
        },
        "fixed": {"descriptor": {"cutoff": 6.0}, "training": {"dtype": "float64", "grad_clip": 10.0}},
        "fidelity": {"min_budget": 1, "max_budget": max_budget, "eta": eta,
                     "epochs": {"min": max(1, int(round(max_epochs / max_budget))), "max": int(max_epochs),
                                "scale": "linear"}},
        "budget": {"trials": 100000},
        "optimizer": "smac-mf",
    }


def _real_state(study_dict: dict, cache_dir: str | None) -> dict:
    """Per process: study, space, dataset, split, and features precomputed once."""
    key = json.dumps(study_dict, sort_keys=True)
    if _REAL_STATE.get("key") == key:
        return _REAL_STATE
    import torch

    from mfhpo.data import Dataset
    from mfhpo.demo import generate_demo
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting
    from mfhpo.study.config import parse_study
    from mfhpo.study.space import build_space_spec, default_flat, materialize
    from mfhpo.train import make_split

    torch.set_num_threads(1)  # small networks: one thread is fastest, and runs may go in parallel
    study = parse_study(study_dict, "<optbench-demo>")
    spec = build_space_spec(study, "<optbench-demo>")
    d = study.data
    ds = Dataset.from_images(generate_demo(d.demo_structures, seed=d.demo_seed), source="demo")
    disk = None
    if cache_dir:
        try:
            from mfhpo.gmp.cache import FeatureCache

            disk = FeatureCache(Path(cache_dir))
        except Exception:  # noqa: BLE001 - the disk layer is optional
            disk = None
    cache = _MemoryCache(disk)
    cfg0 = materialize(study, spec, default_flat(spec))
    split = make_split(cfg0, ds)
    setting = GMPSetting.from_descriptor(cfg0.descriptor, ds.elements)
    t = time.perf_counter()
    featurize_many(ds.images, setting, derivatives=True, dtype=torch.float64, cache=cache)
    _REAL_STATE.clear()
    _REAL_STATE.update(key=key, study=study, spec=spec, dataset=ds, split=split, cache=cache,
                       featurize_s=time.perf_counter() - t, nfeat=setting.nfeat)
    return _REAL_STATE


def demo_objective(n_structures: int = 150, max_epochs: int = 54, max_budget: float = 27.0, eta: int = 3,
                   cache_dir: str | None = None) -> Objective:
    study_dict = demo_study_dict(n_structures, max_epochs, max_budget, eta)

    def configspace(seed):
        from mfhpo.study.space import to_configspace

        st = _real_state(study_dict, cache_dir)
        return to_configspace(st["spec"], seed=seed)

    def evaluate(config, budget):
        from mfhpo.errors import MfhpoError
        from mfhpo.study.fidelity import budget_to_fidelity
        from mfhpo.study.space import config_to_flat, materialize
        from mfhpo.train import train

        st = _real_state(study_dict, cache_dir)
        study = st["study"]
        cfg = materialize(study, st["spec"], config_to_flat(config))
        fid = budget_to_fidelity(study.fidelity, budget)
        full_epochs = study.fidelity.epochs.max
        out = Path(tempfile.mkdtemp(prefix="optbench-trial-"))
        try:
            res = train(cfg, st["dataset"], fid, out, split=st["split"], cache=st["cache"], progress=False)
            cost = study.metric.cost(res.metrics["val"])
            units = res.epochs_run * fid.subset_fraction / full_epochs
        except MfhpoError:  # diverged: crash cost, the planned compute counts
            cost, units = float("nan"), fid.epochs * fid.subset_fraction / full_epochs
        finally:
            shutil.rmtree(out, ignore_errors=True)
        full = budget >= study.fidelity.max_budget - 1e-9
        if not math.isfinite(cost):
            return float("nan"), units, None
        return cost, units, cost if full else None

    return Objective("demo", 1.0, float(max_budget), eta, configspace, evaluate,
                     "val E_MAE/atom + 0.1 F_MAE_free",
                     {"n_structures": n_structures, "max_epochs": max_epochs, "study": study_dict})


# ------------------------------------------------------------------------------------------------
# one optimizer run
# ------------------------------------------------------------------------------------------------


def run_one(obj: Objective, kind: str, seed: int, total_compute: float, initial_design: int = 5,
            crash_cost: float = 1000.0) -> dict:
    """Run ``kind`` on ``obj`` until ``total_compute`` full-budget equivalents are spent."""
    from smac.runhistory import TrialValue
    from smac.runhistory.enumerations import StatusType

    from mfhpo.study.optimizers import make_optimizer

    # SMAC's local search logs np.mean of an empty timing list: harmless, silence it
    warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="invalid value encountered in scalar divide", category=RuntimeWarning)
    cs = obj.configspace(seed)
    tmp = tempfile.mkdtemp(prefix=f"optbench-{kind}-")
    t0 = time.perf_counter()
    records: list[dict] = []
    t_obj = 0.0
    try:
        opt = make_optimizer(kind, cs, min_budget=obj.min_budget, max_budget=obj.max_budget, eta=obj.eta,
                             seed=seed, output_dir=Path(tmp), n_trials=100000, initial_design=initial_design,
                             crash_cost=crash_cost, overwrite=True)
        spent = 0.0
        while spent < total_compute - 1e-9:
            info = opt.ask()
            b = opt.budget_of(info)
            t1 = time.perf_counter()
            cost, units, full = obj.evaluate(info.config, b)
            t_obj += time.perf_counter() - t1
            if math.isfinite(cost):
                opt.tell(info, TrialValue(cost=float(cost)), save=False)
            else:
                opt.tell(info, TrialValue(cost=crash_cost, status=StatusType.CRASHED), save=False)
            spent += units
            records.append({"budget": b, "units": units, "compute": spent,
                            "cost": cost if math.isfinite(cost) else None, "full": full,
                            "config": {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(info.config).items()}})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"objective": obj.name, "kind": kind, "seed": seed, "records": records,
            "wall_s": time.perf_counter() - t0, "objective_s": t_obj}


def _run_task(args: tuple) -> dict:
    obj_spec, kind, seed, total, init = args
    return run_one(build_objective(obj_spec), kind, seed, total, initial_design=init)


def build_objective(spec: dict) -> Objective:
    if spec["name"].startswith("hartmann"):
        return synthetic_objective(int(spec["name"][-1]), spec["preset"], spec["max_budget"], spec["eta"])
    return demo_objective(spec["n_structures"], spec["max_epochs"], spec["max_budget"], spec["eta"],
                          spec.get("cache_dir"))


# ------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------


def best_at(records: list[dict], c: float) -> float:
    """Best full-budget value among trials finished by compute ``c`` (inf when none)."""
    vals = [r["full"] for r in records if r["full"] is not None and r["compute"] <= c + 1e-9]
    return min(vals) if vals else math.inf


def quartiles(vals) -> tuple[float, float, float]:
    a = np.sort(np.asarray(vals, dtype=float))
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    med = float(np.median(a))  # +inf (no full-budget result yet) sorts last; inf/2 stays inf
    q1 = float(np.percentile(a, 25, method="nearest"))
    q3 = float(np.percentile(a, 75, method="nearest"))
    return q1, med, q3


def median_curve(runs: list[dict], grid: np.ndarray) -> np.ndarray:
    return np.array([quartiles([best_at(r["records"], c) for r in runs])[1] for c in grid])


def compute_to_reach(runs: list[dict], target: float, total: float) -> float:
    """First compute at which the median-over-seeds incumbent is <= target (inf if never)."""
    events = sorted({r2["compute"] for r in runs for r2 in r["records"] if r2["compute"] <= total + 1e-9})
    for c in events:
        if quartiles([best_at(r["records"], c) for r in runs])[1] <= target + 1e-12:
            return float(c)
    return math.inf


def per_seed_reach(runs: list[dict], target: float, total: float) -> list[float]:
    out = []
    for r in runs:
        cs = [x["compute"] for x in r["records"] if x["full"] is not None and x["full"] <= target + 1e-12
              and x["compute"] <= total + 1e-9]
        out.append(min(cs) if cs else math.inf)
    return out


def summarize(results: list[dict], objective: str, total: float, checkpoints: list[float]) -> dict:
    by = {k: [r for r in results if r["objective"] == objective and r["kind"] == k] for k in KINDS}
    by = {k: v for k, v in by.items() if v}
    summ: dict[str, Any] = {"objective": objective, "total_compute": total, "checkpoints": {}, "reach": {}}
    for k, runs in by.items():
        summ["checkpoints"][k] = {str(c): quartiles([best_at(r["records"], c) for r in runs]) for c in checkpoints}
        summ.setdefault("n_trials", {})[k] = [len(r["records"]) for r in runs]
        summ.setdefault("n_full", {})[k] = [sum(x["full"] is not None for x in r["records"]) for r in runs]
        summ.setdefault("wall_s", {})[k] = [r["wall_s"] for r in runs]
        summ.setdefault("objective_s", {})[k] = [r["objective_s"] for r in runs]
    if "random" in by:
        target = quartiles([best_at(r["records"], total) for r in by["random"]])[1]
        c_rs = compute_to_reach(by["random"], target, total)
        summ["target_value"] = target
        summ["random_compute_to_target"] = c_rs
        for k, runs in by.items():
            c = compute_to_reach(runs, target, total)
            ps = per_seed_reach(runs, target, total)
            summ["reach"][k] = {"compute": c, "ratio_to_random": c / c_rs if c_rs > 0 else math.nan,
                                "ratio_to_random_total": c / total,
                                "seeds_reached": int(sum(math.isfinite(x) for x in ps)), "seeds": len(ps),
                                "per_seed_compute": ps}
        mf = summ["reach"].get("smac-mf")
        if mf is not None:
            summ["target_met"] = bool(mf["ratio_to_random"] <= TARGET_RATIO + 1e-12)
    return summ


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "none"
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def format_summary(summ: dict, label: str) -> str:
    lines = [f"== {summ['objective']}: best full-budget {label}, median [IQR] over seeds, vs compute "
             f"(full-budget evaluations; total {summ['total_compute']:g}) =="]
    cps = list(next(iter(summ["checkpoints"].values())).keys())
    head = f"{'optimizer':<9} " + " ".join(f"{'@' + c:>24}" for c in cps) + "   trials (full)"
    lines.append(head)
    for k, d in summ["checkpoints"].items():
        cells = []
        for c in cps:
            q1, m, q3 = d[c]
            cells.append(f"{_fmt(m)} [{_fmt(q1)}, {_fmt(q3)}]".rjust(24))
        nt = int(np.median(summ["n_trials"][k]))
        nf = int(np.median(summ["n_full"][k]))
        lines.append(f"{k:<9} " + " ".join(cells) + f"   {nt} ({nf})")
    if "target_value" in summ:
        lines.append(f"random search's final median: {_fmt(summ['target_value'])}; random's median curve "
                     f"reaches it at compute {_fmt(summ['random_compute_to_target'])}")
        for k, r in summ["reach"].items():
            lines.append(f"  {k:<9} reaches it at compute {_fmt(r['compute']):>6}  ratio to random "
                         f"{_fmt(r['ratio_to_random']):>6}  (to random's total: {_fmt(r['ratio_to_random_total'])}); "
                         f"seeds reaching it: {r['seeds_reached']}/{r['seeds']}")
        if "target_met" in summ:
            r = summ["reach"]["smac-mf"]["ratio_to_random"]
            lines.append(f"TARGET smac-mf <= 1/3 of random search's compute: "
                         f"{'HOLDS' if summ['target_met'] else 'NOT MET'} (ratio {_fmt(r)})")
    wall = {k: float(np.sum(v)) for k, v in summ["wall_s"].items()}
    lines.append("wall time (s, all seeds): " + ", ".join(f"{k} {v:.0f} (objective {np.sum(summ['objective_s'][k]):.0f})"
                                                     for k, v in wall.items()))
    return "\n".join(lines)


def _json_safe(obj):
    """inf/nan -> None (strict JSON), tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.str_):
        return str(obj)
    return obj


def plot(results: list[dict], summaries: list[dict], labels: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5.2 * len(summaries), 4), squeeze=False)
    colors = {"smac-mf": "C0", "smac-bo": "C1", "random": "C2"}
    for ax, s in zip(axes[0], summaries):
        total = s["total_compute"]
        grid = np.linspace(0, total, 201)
        for k in KINDS:
            runs = [r for r in results if r["objective"] == s["objective"] and r["kind"] == k]
            if not runs:
                continue
            mat = np.array([[best_at(r["records"], c) for c in grid] for r in runs])
            qs = np.array([quartiles(mat[:, j]) for j in range(len(grid))])
            ok = np.isfinite(qs[:, 1])
            ax.step(grid[ok], qs[ok, 1], where="post", color=colors[k], label=k)
            okb = np.isfinite(qs[:, 0]) & np.isfinite(qs[:, 2])
            ax.fill_between(grid[okb], qs[okb, 0], qs[okb, 2], step="post", color=colors[k], alpha=0.2)
        if "target_value" in s:
            ax.axhline(s["target_value"], color="k", lw=0.8, ls="--", label="random final median")
        ax.set_yscale("log")
        ax.set_xlabel("compute (full-budget evaluations)")
        ax.set_ylabel(labels[s["objective"]])
        ax.set_title(s["objective"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


MODES = {
    # synthetic: seeds x compute; demo: seeds x compute, structures, epochs at full budget, SMAC max budget
    "quick": dict(seeds=2, compute=10.0, demo_seeds=1, demo_compute=3.0, demo_structures=60, demo_epochs=9,
                  demo_max_budget=9.0),
    "moderate": dict(seeds=5, compute=40.0, demo_seeds=3, demo_compute=15.0, demo_structures=120, demo_epochs=27,
                     demo_max_budget=9.0),
    "full": dict(seeds=5, compute=40.0, demo_seeds=5, demo_compute=30.0, demo_structures=150, demo_epochs=54,
                 demo_max_budget=27.0),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke run (a couple of minutes)")
    g.add_argument("--full", action="store_true", help="5 seeds x 40 full-budget equivalents everywhere")
    ap.add_argument("--objectives", default="hartmann3,hartmann6,demo",
                    help="comma list of hartmann3, hartmann6, demo")
    ap.add_argument("--optimizers", default=",".join(KINDS))
    ap.add_argument("--seeds", type=int, help="seeds for the synthetic objectives")
    ap.add_argument("--compute", type=float, help="full-budget equivalents per synthetic run")
    ap.add_argument("--demo-seeds", type=int)
    ap.add_argument("--demo-compute", type=float, help="full-budget equivalents per demo run")
    ap.add_argument("--demo-structures", type=int)
    ap.add_argument("--demo-epochs", type=int, help="epochs at full budget for the demo objective")
    ap.add_argument("--demo-max-budget", type=float, help="SMAC max budget of the demo objective (min 1; epochs "
                    "scale linearly: budget b -> demo_epochs * b / max)")
    ap.add_argument("--preset", default="moderate", help="synthetic fidelity preset: boca, good, moderate, bad, terrible")
    ap.add_argument("--max-budget", type=float, default=27.0, help="SMAC max budget of the synthetic objectives (min 1)")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--initial-design", type=int, default=5)
    ap.add_argument("--checkpoints", default="5,10,20,40")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--cache-dir", default=None, help="disk FeatureCache under the in-memory one (demo)")
    ap.add_argument("--out", default=None, help="folder for results.json and optimizers.png")
    a = ap.parse_args(argv)
    mode = MODES["quick" if a.quick else "full" if a.full else "moderate"]
    seeds = a.seeds or mode["seeds"]
    compute = a.compute or mode["compute"]
    dseeds = a.demo_seeds or mode["demo_seeds"]
    dcompute = a.demo_compute or mode["demo_compute"]
    dstruct = a.demo_structures or mode["demo_structures"]
    depochs = a.demo_epochs or mode["demo_epochs"]
    dmax = a.demo_max_budget or mode["demo_max_budget"]
    kinds = [k.strip() for k in a.optimizers.split(",") if k.strip()]
    objs = [o.strip() for o in a.objectives.split(",") if o.strip()]
    cps_all = [float(x) for x in a.checkpoints.split(",")]

    tasks, specs = [], {}
    for o in objs:
        if o.startswith("hartmann"):
            spec = {"name": o, "preset": a.preset, "max_budget": a.max_budget, "eta": a.eta}
            n_seeds, total = seeds, compute
        elif o == "demo":
            spec = {"name": "demo", "n_structures": dstruct, "max_epochs": depochs, "max_budget": dmax,
                    "eta": a.eta, "cache_dir": a.cache_dir}
            n_seeds, total = dseeds, dcompute
        else:
            ap.error(f"unknown objective {o!r}")
        specs[o] = (spec, total)
        for k in kinds:
            for s in range(n_seeds):
                tasks.append((spec, k, s, total, a.initial_design))
    print(f"optimizer benchmark: {len(tasks)} runs ({', '.join(objs)}; {', '.join(kinds)}); "
          f"synthetic {seeds} seeds x {compute:g}, demo {dseeds} seeds x {dcompute:g} "
          f"({dstruct} structures, {depochs} epochs at budget {dmax:g}); synthetic budgets 1..{a.max_budget:g}; "
          f"eta {a.eta}",
          flush=True)
    t0 = time.perf_counter()
    results: list[dict] = []
    if a.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            futs = {ex.submit(_run_task, t): t for t in tasks}
            for f in as_completed(futs):
                r = f.result()
                results.append(r)
                print(f"  done {r['objective']} {r['kind']} seed {r['seed']}: {len(r['records'])} trials, "
                      f"{r['wall_s']:.0f} s", flush=True)
    else:
        for t in tasks:
            r = _run_task(t)
            results.append(r)
            print(f"  done {r['objective']} {r['kind']} seed {r['seed']}: {len(r['records'])} trials, "
                  f"{r['wall_s']:.0f} s", flush=True)
    print(f"total wall time {time.perf_counter() - t0:.0f} s\n")

    summaries, labels = [], {}
    for o, (spec, total) in specs.items():
        cps = [c for c in cps_all if c <= total + 1e-9] or [total]
        if cps[-1] < total:
            cps.append(total)
        s = summarize(results, o, total, cps)
        lab = build_objective(spec).value_label if o != "demo" else "val E_MAE/atom + 0.1 F_MAE_free"
        labels[o] = lab
        summaries.append(s)
        print(format_summary(s, lab))
        print()
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(_json_safe(
            {"argv": sys.argv[1:] if argv is None else argv, "objectives": {o: s for o, (s, _) in specs.items()},
             "summaries": summaries, "runs": results}), indent=1))
        plot(results, summaries, labels, out / "optimizers.png")
        print(f"wrote {out / 'results.json'} and {out / 'optimizers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
