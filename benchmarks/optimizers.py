"""Is multi-fidelity worth it? mfhpo's optimizers beside random search, Optuna (TPE + Hyperband pruner),
DEHB and SMAC's own multi-fidelity facade, at EQUAL COMPUTE and on the wall clock.

Compute = sum over evaluations of the budget they add / max_budget, i.e. in full-budget evaluations
(for the training objectives: epoch-equivalents / full-budget epochs); with warm start (default) a
configuration evaluated again at a higher budget pays only what it adds, for every optimizer (an
Optuna trial always continues). Every optimizer gets the same compute per run; every run goes through
one ``RunLog`` (compute and wall seconds per evaluation), sequentially, in-process: mfhpo's own
ask/tell layer (``mfhpo.study.optimizers.make_optimizer``) or a peer's (benchmarks/peers.py).

Objectives (see docs/optimizers.md for the exact formulas):

* ``hartmann3`` / ``hartmann6``: multi-fidelity Hartmann (benchmarks/mf_hartmann.py) over a mixed
  space (floats, a log-scale integer, a categorical with conditional children, an inert categorical);
  value = simple regret at full budget.
* ``emt`` / ``demo`` / ``aspirin``: real GMP + SingleNN trainings on generated CuAu cells, the
  built-in demo slabs, or rMD17 aspirin frames from ../shared (skipped when absent); space = network
  and training hyperparameters, descriptor fixed so features are computed once and kept in memory;
  budget -> epochs via the study fidelity mapping; value = the study cost.

The incumbent at c is the best full-budget value among trials FINISHED by c (what a study would
export). Reported: median and IQR over seeds at checkpoints, and the compute (and, for trainings, the
wall time) each optimizer's median curve needs to reach random search's and Optuna's final median, as
a ratio to what theirs needs. Targets for mfhpo's default: <= 1/3 of random search's, <= 1/2 of Optuna's.

    python benchmarks/optimizers.py --quick                 # ~1-2 min smoke run
    python benchmarks/optimizers.py                         # moderate (default)
    python benchmarks/optimizers.py --objectives hartmann3 --seeds 5 --compute 40
    python benchmarks/optimizers.py --objectives aspirin --real-seeds 5 --real-compute 8 --jobs 2

``smac-mf`` here is SMAC's synchronous Hyperband, ``smac-mf-async`` the same optimizer with
``optimizer_options.promotion: async`` (ASHA: mfhpo/study/asha.py), mfhpo's default.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mf_hartmann.py, peers.py
# benchmark name -> (mfhpo optimizer, make_optimizer options): smac-mf-async is smac-mf with
# optimizer_options.promotion: async (ASHA, mfhpo/study/asha.py); smac-mf is the default (sync)
OPTIMIZERS = {"smac-mf": ("smac-mf", {"promotion": "sync"}), "smac-mf-async": ("smac-mf", {"promotion": "async"}),
              "smac-mf-eips": ("smac-mf", {"promotion": "sync", "acquisition": "ei_per_second"}),
              "smac-mf-async-eips": ("smac-mf", {"promotion": "async", "acquisition": "ei_per_second"}),
              "smac-mf-async-rp05": ("smac-mf", {"promotion": "async", "random_probability": 0.05}),
              "smac-mf-ahb": ("smac-mf", {"promotion": "async", "brackets": "all"}),
              "smac-mf-ahb2": ("smac-mf", {"promotion": "async", "brackets": 2}),
              "smac-mf-async-ra1": ("smac-mf", {"promotion": "async", "retrain_after": 1}),
              "smac-mf-async-t32": ("smac-mf", {"promotion": "async", "n_trees": 32}),
              "smac-bo": ("smac-bo", {}), "random": ("random", {})}
PEER_KINDS = ("optuna-tpe-hb", "dehb", "smac-mf-facade")  # benchmarks/peers.py
KINDS = (*OPTIMIZERS, *PEER_KINDS)
DEFAULT_KINDS = "smac-mf,smac-mf-async,random,optuna-tpe-hb,dehb,smac-mf-facade"
# the ratios printed: each optimizer's time to reach a reference's final median, over the reference's
# own time to reach it; the targets for mfhpo's default (<= 1/3 of random's, <= 1/2 of Optuna's)
REFERENCES = {"random": 1.0 / 3.0, "optuna-tpe-hb": 1.0 / 2.0}
MFHPO_DEFAULT = ("smac-mf-async", "smac-mf")  # the targets are mfhpo's default's (the first one run)
TARGET_RATIO = REFERENCES["random"]


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


def synthetic_objective(dim: int, preset: str, max_budget: float = 27.0, eta: int = 3,
                        warm_start: bool = False) -> Objective:
    """Multi-fidelity Hartmann; with ``warm_start`` a configuration evaluated again at a higher budget
    costs only the budget it adds (as a training that continues from its own checkpoint would)."""
    from mf_hartmann import PRESETS, MFHartmann

    fn = MFHartmann.preset(dim, preset, min_budget=1.0, max_budget=max_budget)
    reached: dict[str, float] = {}  # configuration -> highest budget evaluated (warm start)

    def evaluate(config, budget):
        y = fn(config, budget)
        full = budget >= fn.max_budget - 1e-9
        done = 0.0
        if warm_start:
            key = json.dumps(_json_safe(dict(config)), sort_keys=True)
            done = min(reached.get(key, 0.0), budget)
            reached[key] = max(reached.get(key, 0.0), budget)
        return y, (budget - done) / fn.max_budget, (y - fn.fmin) if full else None

    bias, noise = PRESETS[preset]
    return Objective(f"hartmann{dim}", 1.0, max_budget, eta, fn.configspace, evaluate, "regret",
                     {"function": f"hartmann{dim}", "preset": preset, "bias": bias, "noise": noise,
                      "fmin": fn.fmin, "warm_start": warm_start})


class _MemoryCache:
    """In-process feature cache (get/put like mfhpo.gmp.cache.FeatureCache), optionally over a disk
    FeatureCache: features of the fixed descriptor are computed once per process."""

    def __init__(self, disk=None):
        self.d: dict = {}
        self.disk = disk if (disk is not None and hasattr(disk, "get") and hasattr(disk, "put")) else None

    @staticmethod
    def _key(setting, atoms, dtype, derivatives, variant):
        from mfhpo.data import structure_hash

        return (setting.key(), structure_hash(atoms), str(dtype), bool(derivatives), variant)

    def get(self, setting, atoms, dtype, derivatives, variant=""):
        k = self._key(setting, atoms, dtype, derivatives, variant)
        f = self.d.get(k)
        if f is None and self.disk is not None:
            f = self.disk.get(setting, atoms, dtype, derivatives, variant)
            if f is not None:
                self.d[k] = f
        return f

    def put(self, setting, atoms, dtype, derivatives, feats, variant=""):
        self.d[self._key(setting, atoms, dtype, derivatives, variant)] = feats
        if self.disk is not None:
            self.disk.put(setting, atoms, dtype, derivatives, feats, variant)


_REAL_STATE: dict = {}

# The two real objectives: the data, the search space and the cost (study metric). ``demo``: the
# built-in demo slabs (mfhpo.demo); ``emt``: rattled, strained CuAu fcc cells (generate_emt_bulk).
_NETWORK_SPACE = {  # what both real objectives search (the descriptor is fixed)
    "num_layers": {"low": 1, "high": 3},
    "nodes": {"low": 4, "high": 128, "log": True},
    "activation": {"choices": ["tanh", "silu", "softplus"]},
    "lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
    "batch_size": {"low": 8, "high": 64, "log": True},
    "scheduler": "none",
    "loss": "mse",
}
REAL_OBJECTIVES: dict[str, dict] = {
    "demo": {
        "space": {**_NETWORK_SPACE,
                  "force_coefficient": {"low": 0.01, "high": 1.0, "log": True, "or_zero": True}},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae_free", "force_weight": 0.1},
        "label": "val E_MAE/atom + 0.1 F_MAE_free",
    },
    "emt": {
        "space": {**_NETWORK_SPACE, "force_coefficient": {"low": 0.1, "high": 30.0, "log": True}},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": 1.0},
        "label": "val E_MAE/atom + F_MAE",
    },
    # rMD17 aspirin (../shared/data): a random subset of the 850 frames, 100 of them for validation;
    # rotation-invariant GMPOrderNorm features (orders 0-3, 6 sigmas, 6 Å cosine cutoff, valence and
    # count channels), computed once; the network and training searched as for the other two
    "aspirin": {
        "space": {**_NETWORK_SPACE, "nodes": {"low": 16, "high": 128, "log": True},
                  "lr": {"low": 5.0e-4, "high": 1.0e-2, "log": True}, "batch_size": {"low": 4, "high": 32, "log": True},
                  "force_coefficient": {"low": 1.0, "high": 300.0, "log": True}},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": 1.0},
        "label": "val E_MAE/atom + F_MAE (eV, eV/Å)",
        "descriptor": {"scheme": "gmpordernorm", "orders": {0: {}, 1: {}, 2: {}, 3: {}},
                       "sigmas": [0.2, 0.5, 0.9, 1.4, 2.0, 2.8], "cutoff": 6.0, "cutoff_function": "cosine",
                       "channels": ["valence", "count"]},
        "val_structures": 100,
    },
}
ASPIRIN_STRUCTURES = 350  # 250 training + 100 validation frames
ASPIRIN_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "md17_aspirin" / "rmd17_aspirin_850.extxyz"


def generate_emt_bulk(n_structures: int, seed: int = 0, rattle: float = 0.1, strain: float = 0.04) -> list:
    """``n_structures`` 8-atom fcc cells (2x1x1 conventional, a = 3.75 Å) with a random Cu/Au
    occupation, a random strain (each cell-matrix entry within ±``strain``, off-diagonals 0.3x) and a
    Gaussian rattle of ``rattle`` Å, labelled with ASE's EMT (energy, forces). No constraints."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    calc = EMT()
    out = []
    for _ in range(int(n_structures)):
        a = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 1, 1))
        a.set_chemical_symbols(list(rng.choice(["Cu", "Au"], size=len(a))))
        eps = rng.uniform(-strain, strain, (3, 3)) * (np.eye(3) + 0.3)
        a.set_cell(a.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        a.positions += rng.normal(0.0, rattle, a.positions.shape)
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=float(e), forces=f)
        out.append(a)
    return out


def real_study_dict(kind: str, n_structures: int, max_epochs: int, max_budget: float, eta: int) -> dict:
    """A real objective as an mfhpo study (so the space goes through mfhpo.study.space and budgets
    through mfhpo.study.fidelity). ``data.train`` is "demo" for both kinds: the study schema needs a
    source; the images themselves come from ``_real_state``."""
    o = REAL_OBJECTIVES[kind]
    val_fraction = {"demo": 0.2, "emt": 0.25}.get(kind) or o["val_structures"] / n_structures
    return {
        "name": f"optbench-{kind}",
        "seed": 0,
        "data": {"train": "demo", "demo_structures": int(n_structures), "demo_seed": 0,
                 "val_fraction": val_fraction, "test_fraction": 0.0, "split_seed": 0},
        "metric": dict(o["metric"]),
        "space": json.loads(json.dumps(o["space"])),
        "fixed": {"descriptor": o.get("descriptor", {"cutoff": 6.0}),
                  "training": {"dtype": "float64", "grad_clip": 10.0}},
        "fidelity": {"min_budget": 1, "max_budget": max_budget, "eta": eta,
                     "epochs": {"min": max(1, round(max_epochs / max_budget)), "max": int(max_epochs),
                                "scale": "linear"}},
        "budget": {"trials": 100000},
        "optimizer": "smac-mf",
    }


def _real_state(study_dict: dict, cache_dir: str | None, kind: str = "demo") -> dict:
    """Per process: study, space, dataset, split, and features precomputed once."""
    key = json.dumps([kind, study_dict], sort_keys=True)
    if _REAL_STATE.get("key") == key:
        return _REAL_STATE
    import torch

    from mfhpo.data import Dataset
    from mfhpo.demo import WIDE, generate_demo
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting
    from mfhpo.study.config import parse_study
    from mfhpo.study.space import build_space_spec, default_flat, materialize
    from mfhpo.train import make_split

    torch.set_num_threads(1)  # small networks: one thread is fastest, and runs may go in parallel
    study = parse_study(study_dict, f"<optbench-{kind}>")
    spec = build_space_spec(study, f"<optbench-{kind}>")
    d = study.data
    if kind == "demo":
        images = generate_demo(d.demo_structures, seed=d.demo_seed, choice=WIDE)
    elif kind == "aspirin":
        from mfhpo.data import read_structures

        frames = read_structures(ASPIRIN_DATA)
        pick = np.random.default_rng(d.demo_seed).permutation(len(frames))[: d.demo_structures]
        images = [frames[i] for i in sorted(pick)]
    else:
        images = generate_emt_bulk(d.demo_structures, seed=d.demo_seed)
    ds = Dataset.from_images(images, source=kind)
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


def real_objective(kind: str = "emt", n_structures: int = 120, max_epochs: int = 81, max_budget: float = 27.0,
                   eta: int = 3, cache_dir: str | None = None, warm_start: bool = False) -> Objective:
    """GMP + SingleNN trainings (mfhpo.train.train) on the ``kind`` data; value = the study cost.

    With ``warm_start`` a configuration evaluated again at a higher budget (a Hyperband promotion)
    continues from its own latest checkpoint of this run, as ``mfhpo run`` does (train() checks that
    continuing is exact: same data, split, subset and a schedule that does not depend on the total
    epochs); only the epochs actually trained count as compute. One objective = one optimizer run."""
    study_dict = real_study_dict(kind, n_structures, max_epochs, max_budget, eta)
    keep = tempfile.TemporaryDirectory(prefix="optbench-ckpt-")  # removed with the objective
    latest: dict[str, tuple[Path, Path]] = {}  # configuration -> (trial dir, checkpoint)

    def configspace(seed):
        from mfhpo.study.space import to_configspace

        st = _real_state(study_dict, cache_dir, kind)
        return to_configspace(st["spec"], seed=seed)

    def evaluate(config, budget):
        from mfhpo.errors import MfhpoError
        from mfhpo.study.fidelity import budget_to_fidelity
        from mfhpo.study.space import config_to_flat, materialize
        from mfhpo.train import train

        st = _real_state(study_dict, cache_dir, kind)
        study = st["study"]
        flat = config_to_flat(config)
        cfg = materialize(study, st["spec"], flat)
        fid = budget_to_fidelity(study.fidelity, budget)
        full_epochs = study.fidelity.epochs.max
        key = json.dumps(_json_safe(flat), sort_keys=True)
        prev = latest.get(key) if warm_start else None
        out = Path(tempfile.mkdtemp(prefix="optbench-trial-", dir=keep.name))
        kept = False
        try:
            res = train(cfg, st["dataset"], fid, out, split=st["split"], cache=st["cache"], progress=False,
                        init_checkpoint=None if prev is None else prev[1])
            cost = study.metric.cost(res.metrics["val"])
            done_before = int(res.warm_start.get("from_epoch", 0)) if res.warm_start.get("used") else 0
            units = (res.epochs_run - done_before) * fid.subset_fraction / full_epochs
            if warm_start and res.checkpoint_path is not None:
                if prev is not None:
                    shutil.rmtree(prev[0], ignore_errors=True)
                latest[key], kept = (out, Path(res.checkpoint_path)), True
        except MfhpoError:  # diverged: crash cost, the planned compute counts
            cost, units = float("nan"), fid.epochs * fid.subset_fraction / full_epochs
        finally:
            if not kept:
                shutil.rmtree(out, ignore_errors=True)
        full = budget >= study.fidelity.max_budget - 1e-9
        if not math.isfinite(cost):
            return float("nan"), units, None
        return cost, units, cost if full else None

    return Objective(kind, 1.0, float(max_budget), eta, configspace, evaluate, REAL_OBJECTIVES[kind]["label"],
                     {"n_structures": n_structures, "max_epochs": max_epochs, "study": study_dict,
                      "warm_start": warm_start})


# ------------------------------------------------------------------------------------------------
# one optimizer run
# ------------------------------------------------------------------------------------------------


class RunLog:
    """One optimizer run's bookkeeping, the same for mfhpo's optimizers and the peers: every
    evaluation of the objective, the compute it spent (full-budget equivalents: epoch-equivalents for
    trainings) and the wall seconds since the run started (optimizer overhead included)."""

    def __init__(self, objective: Objective, total_compute: float):
        self.objective, self.total = objective, float(total_compute)
        self.records: list[dict] = []
        self.spent = 0.0
        self.objective_s = 0.0
        self.t0 = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.spent >= self.total - 1e-9

    def evaluate(self, config, budget: float) -> float:
        """Evaluate ``config`` at ``budget``; the cost (NaN for a crashed trial)."""
        t1 = time.perf_counter()
        cost, units, full = self.objective.evaluate(config, budget)
        t2 = time.perf_counter()
        self.objective_s += t2 - t1
        self.spent += units
        self.records.append({"budget": float(budget), "units": units, "compute": self.spent, "wall": t2 - self.t0,
                             "seconds": t2 - t1,
                             "cost": cost if math.isfinite(cost) else None, "full": full,
                             "config": {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(config).items()}})
        return float(cost)

    def result(self, kind: str, seed: int) -> dict:
        return {"objective": self.objective.name, "kind": kind, "seed": seed, "records": self.records,
                "wall_s": time.perf_counter() - self.t0, "objective_s": self.objective_s}


def run_one(obj: Objective, kind: str, seed: int, total_compute: float, initial_design: int = 5,
            crash_cost: float = 1000.0, min_trials: int | None = None) -> dict:
    """Run ``kind`` (one of mfhpo's optimizers or a peer) on ``obj`` until ``total_compute``
    full-budget equivalents are spent."""
    from smac.runhistory import TrialValue
    from smac.runhistory.enumerations import StatusType

    from mfhpo.study.optimizers import make_optimizer

    # SMAC's local search logs np.mean of an empty timing list: harmless, silence it
    warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="invalid value encountered in scalar divide", category=RuntimeWarning)
    cs = obj.configspace(seed)
    if kind in PEER_KINDS:
        from peers import PEER_MODULES, run_peer

        for mod in PEER_MODULES[kind]:  # imported before the clock starts, as mfhpo's SMAC is
            __import__(mod)
        log = RunLog(obj, total_compute)
        run_peer(kind, log, cs, seed, crash_cost)
        return log.result(kind, seed)
    log = RunLog(obj, total_compute)
    opt_kind, opt_options = OPTIMIZERS[kind]
    tmp = tempfile.mkdtemp(prefix=f"optbench-{kind}-")
    try:
        opt = make_optimizer(opt_kind, cs, min_budget=obj.min_budget, max_budget=obj.max_budget, eta=obj.eta,
                             seed=seed, output_dir=Path(tmp), n_trials=100000, initial_design=initial_design,
                             crash_cost=crash_cost, overwrite=True, min_trials=min_trials, **opt_options)
        while not log.done:
            info = opt.ask()
            cost = log.evaluate(info.config, opt.budget_of(info))
            spent = {"time": log.records[-1]["seconds"],  # as a study tells them (cost-aware acquisition)
                     "additional_info": {"epoch_equivalents": log.records[-1]["units"]}}
            opt.tell(info, TrialValue(cost=cost, **spent) if math.isfinite(cost)
                     else TrialValue(cost=crash_cost, status=StatusType.CRASHED, **spent), save=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return log.result(kind, seed)


def _run_task(args: tuple) -> dict:
    obj_spec, kind, seed, total, init, min_trials = args
    if kind == "optuna-tpe-hb":  # an Optuna trial is one training that reports as it goes: it always continues
        obj_spec = {**obj_spec, "warm_start": True}
    return run_one(build_objective(obj_spec), kind, seed, total, initial_design=init, min_trials=min_trials)


def build_objective(spec: dict) -> Objective:
    if spec["name"].startswith("hartmann"):
        return synthetic_objective(int(spec["name"][-1]), spec["preset"], spec["max_budget"], spec["eta"],
                                   bool(spec.get("warm_start", False)))
    return real_objective(spec["name"], spec["n_structures"], spec["max_epochs"], spec["max_budget"], spec["eta"],
                          spec.get("cache_dir"), bool(spec.get("warm_start", False)))


# ------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------


def best_at(records: list[dict], c: float, axis: str = "compute") -> float:
    """Best full-budget value among trials finished by ``c`` on ``axis`` (inf when none)."""
    return float(best_matrix([{"records": records}], [c], axis)[0, 0])


def quartiles(vals) -> tuple[float, float, float]:
    a = np.sort(np.asarray(vals, dtype=float))
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    med = float(np.median(a))  # +inf (no full-budget result yet) sorts last; inf/2 stays inf
    q1 = float(np.percentile(a, 25, method="nearest"))
    q3 = float(np.percentile(a, 75, method="nearest"))
    return q1, med, q3


def best_matrix(runs: list[dict], grid, axis: str = "compute") -> np.ndarray:
    """Best full-budget value among each run's trials finished by each point of ``grid`` on ``axis``
    ("compute": full-budget equivalents, "wall": seconds since the run started): rows = runs,
    columns = grid (inf where a run has no full-budget result yet)."""
    grid = np.asarray(grid, dtype=float)
    out = np.full((len(runs), len(grid)), math.inf)
    for i, r in enumerate(runs):
        if not r["records"]:
            continue
        at = np.array([x[axis] for x in r["records"]], dtype=float)
        full = np.array([math.inf if x["full"] is None else x["full"] for x in r["records"]], dtype=float)
        order = np.argsort(at, kind="stable")
        at, best = at[order], np.minimum.accumulate(full[order])
        k = np.searchsorted(at, grid + 1e-9, side="right") - 1
        ok = k >= 0
        out[i, ok] = best[k[ok]]
    return out


def _events(runs: list[dict], total: float, axis: str = "compute") -> np.ndarray:
    return np.array(sorted({x[axis] for r in runs for x in r["records"] if x[axis] <= total + 1e-9}))


def _first_reach(mat: np.ndarray, events: np.ndarray, target: float) -> float:
    """First event at which the median over rows of ``mat`` is <= target (inf if never)."""
    if mat.shape[0] == 0 or len(events) == 0:
        return math.inf
    with np.errstate(invalid="ignore"):
        med = np.median(mat, axis=0)  # +inf (no full-budget result yet) sorts last
    hit = np.nonzero(med <= target + 1e-12)[0]
    return float(events[hit[0]]) if len(hit) else math.inf


def compute_to_reach(runs: list[dict], target: float, total: float, axis: str = "compute") -> float:
    """First point on ``axis`` at which the median-over-seeds incumbent is <= target (inf if never)."""
    ev = _events(runs, total, axis)
    return _first_reach(best_matrix(runs, ev, axis), ev, target)


def per_seed_reach(runs: list[dict], target: float, total: float, axis: str = "compute") -> list[float]:
    out = []
    for r in runs:
        cs = [x[axis] for x in r["records"] if x["full"] is not None and x["full"] <= target + 1e-12
              and x[axis] <= total + 1e-9]
        out.append(min(cs) if cs else math.inf)
    return out


def bootstrap_ratio(runs: list[dict], ref_runs: list[dict], total: float, n_boot: int = 1000,
                    seed: int = 0, axis: str = "compute", target_ratio: float = TARGET_RATIO) -> dict:
    """Uncertainty of the time-to-reach ratio over seeds: resample the seeds of ``runs`` and of the
    reference (e.g. random search) independently (with replacement), recompute the reference's final
    median T, the time the reference's median curve needs for T and the time ``runs``' median curve
    needs. Returns the 5/50/95 percentiles of the ratio and the fraction of resamples with
    ratio <= ``target_ratio``."""
    rng = np.random.default_rng(seed)
    ev_m, ev_r = _events(runs, total, axis), _events(ref_runs, total, axis)
    m_mat, r_mat = best_matrix(runs, ev_m, axis), best_matrix(ref_runs, ev_r, axis)
    r_final = best_matrix(ref_runs, [total], axis)[:, 0]
    ratios = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(len(runs), size=len(runs))
        j = rng.integers(len(ref_runs), size=len(ref_runs))
        t = float(np.median(r_final[j]))
        if not math.isfinite(t):  # the resampled reference has no full-budget median: nothing to reach
            ratios[b] = math.nan
            continue
        c_r = _first_reach(r_mat[j], ev_r, t)
        c_m = _first_reach(m_mat[i], ev_m, t)
        ratios[b] = c_m / c_r if (math.isfinite(c_r) and c_r > 0) else math.nan
    fin = np.where(np.isnan(ratios), math.inf, ratios)
    pct = {q: float(np.percentile(fin, q, method="nearest")) for q in (5, 50, 95)}
    return {"p05": pct[5], "p50": pct[50], "p95": pct[95], "p_target": float(np.mean(fin <= target_ratio + 1e-12)),
            "n_boot": n_boot}


def wall_total(results: list[dict], objective: str) -> float:
    """Equal wall time for the wall-clock axis: the smallest over optimizers of the median wall time of
    their runs (every optimizer's curve up to it is real progress for at least half its seeds)."""
    walls = {}
    for r in results:
        if r["objective"] == objective and r["records"] and "wall" in r["records"][-1]:
            walls.setdefault(r["kind"], []).append(r["records"][-1]["wall"])
    return min(float(np.median(v)) for v in walls.values()) if walls else math.nan


def summarize(results: list[dict], objective: str, total: float, checkpoints: list[float],
              n_boot: int = 1000, axis: str = "compute") -> dict:
    """Median [IQR] incumbents at ``checkpoints`` on ``axis`` up to ``total``, and for each reference
    optimizer present (REFERENCES) the time every optimizer needs to reach its final median."""
    by = {k: [r for r in results if r["objective"] == objective and r["kind"] == k] for k in KINDS}
    by = {k: v for k, v in by.items() if v}
    summ: dict[str, Any] = {"objective": objective, "axis": axis, "total_compute": total, "checkpoints": {},
                            "reach": {}, "references": {}}
    for k, runs in by.items():
        summ["checkpoints"][k] = {str(c): quartiles([best_at(r["records"], c, axis) for r in runs])
                                  for c in checkpoints}
        summ.setdefault("n_trials", {})[k] = [len(r["records"]) for r in runs]
        summ.setdefault("n_full", {})[k] = [sum(x["full"] is not None for x in r["records"]) for r in runs]
        summ.setdefault("wall_s", {})[k] = [r["wall_s"] for r in runs]
        summ.setdefault("objective_s", {})[k] = [r["objective_s"] for r in runs]
    for ref, target_ratio in REFERENCES.items():
        if ref not in by:
            continue
        target = quartiles([best_at(r["records"], total, axis) for r in by[ref]])[1]
        if not math.isfinite(target):  # most of its seeds have no full-budget result: nothing to reach
            summ["references"][ref] = {"target_value": target, "ref_to_target": math.inf,
                                       "target_ratio": target_ratio, "reach": {}}
            continue
        c_ref = compute_to_reach(by[ref], target, total, axis)
        reach = {}
        for k, runs in by.items():
            c = compute_to_reach(runs, target, total, axis)
            ps = per_seed_reach(runs, target, total, axis)
            reach[k] = {"compute": c, "ratio_to_random": c / c_ref if 0 < c_ref < math.inf else math.nan,
                        "ratio_to_random_total": c / total,
                        "seeds_reached": int(sum(math.isfinite(x) for x in ps)), "seeds": len(ps),
                        "per_seed_compute": ps}
            if k != ref and n_boot > 0:
                reach[k]["bootstrap"] = bootstrap_ratio(runs, by[ref], total, n_boot=n_boot, axis=axis,
                                                        target_ratio=target_ratio)
        summ["references"][ref] = {"target_value": target, "ref_to_target": c_ref, "target_ratio": target_ratio,
                                   "reach": reach}
        mine = next((k for k in MFHPO_DEFAULT if k in reach), None)
        if mine is not None:
            summ["target_kind"] = mine
            summ.setdefault("target_met", {})[ref] = bool(reach[mine]["ratio_to_random"] <= target_ratio + 1e-12)
    if "random" in summ["references"]:  # the keys of results.json before the references
        r = summ["references"]["random"]
        summ.update(target_value=r["target_value"], random_compute_to_target=r["ref_to_target"], reach=r["reach"])
    return summ


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "none"
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


_AXIS_WORDS = {"compute": ("compute", "full-budget evaluations"), "wall": ("wall s", "wall seconds")}


def format_summary(summ: dict, label: str) -> str:
    axis = summ.get("axis", "compute")
    word, unit = _AXIS_WORDS[axis]
    seeds = {k: len(v) for k, v in summ.get("n_trials", {}).items()}
    fid = summ.get("fidelity")
    fid_s = ""
    if fid:
        fid_s = f"; budgets {fid['min_budget']:g}..{fid['max_budget']:g}, eta {fid['eta']}"
        if "epochs_at_max" in fid:
            fid_s += f", {fid['epochs_at_max']} epochs at full budget"
    total_s = (f"total {summ['total_compute']:g}" if axis == "compute"
               else f"equal wall time {summ['total_compute']:.0f} s: the shortest median run")
    lines = [(f"== {summ['objective']}: best full-budget {label}, median [IQR] over "
              f"{'/'.join(str(n) for n in sorted(set(seeds.values())))} seeds, vs {unit} "
              f"({total_s}{fid_s}) ==")]
    cps = list(next(iter(summ["checkpoints"].values())).keys())
    head = f"{'optimizer':<18} " + " ".join(f"{'@' + _fmt(float(c)):>24}" for c in cps) + "   trials (full)"
    lines.append(head)
    for k, d in summ["checkpoints"].items():
        cells = []
        for c in cps:
            q1, m, q3 = d[c]
            cells.append(f"{_fmt(m)} [{_fmt(q1)}, {_fmt(q3)}]".rjust(24))
        nt = int(np.median(summ["n_trials"][k]))
        nf = int(np.median(summ["n_full"][k]))
        lines.append(f"{k:<18} " + " ".join(cells) + f"   {nt} ({nf})")
    for ref, rd in summ.get("references", {}).items():
        name = "random search" if ref == "random" else ref
        lines.append(f"{name}'s final median: {_fmt(rd['target_value'])}; {ref}'s median curve "
                     f"reaches it at {word} {_fmt(rd['ref_to_target'])}")
        for k, r in rd["reach"].items():
            lines.append(f"  {k:<18} reaches it at {word} {_fmt(r['compute']):>6}  ratio to {ref} "
                         f"{_fmt(r['ratio_to_random']):>6}  (to the total: {_fmt(r['ratio_to_random_total'])}); "
                         f"seeds reaching it: {r['seeds_reached']}/{r['seeds']}")
            b = r.get("bootstrap")
            if b:
                lines.append(f"  {'':<18} seed bootstrap of the ratio: median {_fmt(b['p50'])}, 90% interval "
                             f"[{_fmt(b['p05'])}, {_fmt(b['p95'])}], P(ratio <= {_fraction(rd['target_ratio'])}) = "
                             f"{b['p_target']:.2f}")
        met = summ.get("target_met", {}).get(ref)
        if met is not None:
            mine = summ["target_kind"]
            lines.append(f"TARGET {mine} <= {_fraction(rd['target_ratio'])} of {name}'s {word}: "
                         f"{'HOLDS' if met else 'NOT MET'} (ratio {_fmt(rd['reach'][mine]['ratio_to_random'])})")
    wall = {k: float(np.sum(v)) for k, v in summ["wall_s"].items()}
    lines.append("wall time (s, all seeds): " + ", ".join(f"{k} {v:.0f} (objective {np.sum(summ['objective_s'][k]):.0f})"
                                                     for k, v in wall.items()))
    return "\n".join(lines)


def _fraction(x: float) -> str:
    return f"1/{round(1 / x)}" if x < 1 and abs(1 / x - round(1 / x)) < 1e-9 else f"{x:g}"


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


COLORS = {"smac-mf": "C0", "smac-mf-async": "C3", "smac-mf-eips": "C8", "smac-mf-async-eips": "C9",
          "smac-bo": "C1", "random": "C2", "optuna-tpe-hb": "C4",
          "dehb": "C5", "smac-mf-facade": "C7"}


def plot(results: list[dict], summaries: list[dict], labels: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5.2 * len(summaries), 4), squeeze=False)
    for ax, s in zip(axes[0], summaries):
        total, axis = s["total_compute"], s.get("axis", "compute")
        grid = np.linspace(0, total, 201)
        for k in KINDS:
            runs = [r for r in results if r["objective"] == s["objective"] and r["kind"] == k]
            if not runs:
                continue
            mat = best_matrix(runs, grid, axis)
            qs = np.array([quartiles(mat[:, j]) for j in range(len(grid))])
            ok = np.isfinite(qs[:, 1])
            color = COLORS.get(k)
            ax.step(grid[ok], qs[ok, 1], where="post", color=color, label=k)
            okb = np.isfinite(qs[:, 0]) & np.isfinite(qs[:, 2])
            ax.fill_between(grid[okb], qs[okb, 0], qs[okb, 2], step="post", color=color, alpha=0.2)
        if "target_value" in s:
            ax.axhline(s["target_value"], color="k", lw=0.8, ls="--", label="random final median")
        lines_ = [ln.get_ydata() for ln in ax.get_lines() if np.size(ln.get_ydata())]
        if lines_ and all(np.nanmin(y) > 0 for y in lines_):
            ax.set_yscale("log")
        ax.set_xlabel("compute (full-budget evaluations)" if axis == "compute" else "wall seconds")
        ax.set_ylabel(labels[s["objective"]])
        ax.set_title(f"{s['objective']} ({axis})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


MODES = {
    # synthetic: seeds x compute (full-budget equivalents); real (emt/demo): seeds x compute, structures,
    # epochs at full budget, SMAC max budget
    "quick": {"seeds": 2, "compute": 10.0, "real_seeds": 1, "real_compute": 3.0, "real_structures": 60,
              "real_epochs": 9, "real_max_budget": 9.0},
    "moderate": {"seeds": 20, "compute": 40.0, "real_seeds": 10, "real_compute": 20.0, "real_structures": 120,
                 "real_epochs": 81, "real_max_budget": 27.0},
    "full": {"seeds": 30, "compute": 40.0, "real_seeds": 20, "real_compute": 20.0, "real_structures": 120,
             "real_epochs": 81, "real_max_budget": 27.0},
}


# settings that only the multi-fidelity optimizers see: runs of random search and smac-bo (full budget
# only) are the same whatever they are, and are reused across fidelity ranges by --from
_MF_ONLY_KEYS = ("max_budget", "eta", "min_trials", "warm_start")


def _load_runs(paths: list[str], specs: dict) -> list[dict]:
    """Runs of earlier results.json files whose objective settings equal this invocation's (for
    random search and smac-bo: equal except the smac-mf-only settings); others are listed and run again."""
    runs: list[dict] = []
    seen, skipped = set(), set()
    for p in paths:
        data = json.loads(Path(p).read_text())
        old_specs = data.get("objectives", {})
        for r in data["runs"]:
            o = r["objective"]
            if o not in specs or (o, r["kind"], r["seed"]) in seen:
                continue
            old, new = dict(old_specs.get(o) or {}), dict(_json_safe(specs[o][0]))
            if r["kind"] in ("random", "smac-bo"):  # full budget only
                for k in _MF_ONLY_KEYS:
                    old.pop(k, None)
                    new.pop(k, None)
            if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
                skipped.add((p, o, r["kind"]))  # other settings: run again, not mixed in
                continue
            seen.add((o, r["kind"], r["seed"]))
            runs.append(r)
    for p, o, kind in sorted(skipped):
        print(f"  not reused: {kind} on {o} in {p} (run with other settings than now)")
    return runs


def _reexec_with_fixed_hash_seed(argv: list[str] | None) -> None:
    """SMAC's choices depend on set/dict orders of strings (Python's per-process hash seed): the
    same optimizer seed gave different runs. Fix PYTHONHASHSEED so runs are reproducible."""
    if argv is None and os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    _reexec_with_fixed_hash_seed(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smoke run (a couple of minutes)")
    g.add_argument("--full", action="store_true", help="30 synthetic seeds, 20 real seeds")
    ap.add_argument("--objectives", default="hartmann3,hartmann6,emt",
                    help="comma list of hartmann3, hartmann6, emt, demo, aspirin (the rMD17 frames in ../shared)")
    ap.add_argument("--optimizers", default=DEFAULT_KINDS,
                    help=f"comma list of {', '.join(KINDS)} (smac-mf-async: smac-mf with promotion: async; "
                    "smac-mf-ahb, smac-mf-ahb2: the same with brackets: all, 2 (asynchronous Hyperband); "
                    "optuna-tpe-hb, dehb, smac-mf-facade: the peers of benchmarks/peers.py, skipped when not "
                    "installed)")
    ap.add_argument("--seeds", type=int, help="seeds for the synthetic objectives")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--compute", type=float, help="full-budget equivalents per synthetic run")
    ap.add_argument("--real-seeds", "--demo-seeds", dest="real_seeds", type=int)
    ap.add_argument("--real-compute", "--demo-compute", dest="real_compute", type=float,
                    help="full-budget equivalents per real (emt/demo) run")
    ap.add_argument("--real-structures", "--demo-structures", dest="real_structures", type=int)
    ap.add_argument("--real-epochs", "--demo-epochs", dest="real_epochs", type=int,
                    help="epochs at full budget for the real objectives")
    ap.add_argument("--real-max-budget", "--demo-max-budget", dest="real_max_budget", type=float,
                    help="SMAC max budget of the real objectives (min 1; epochs scale linearly: budget b -> "
                    "epochs * b / max)")
    ap.add_argument("--preset", default="moderate", help="synthetic fidelity preset: boca, good, moderate, bad, terrible")
    ap.add_argument("--max-budget", type=float, default=27.0, help="SMAC max budget of the synthetic objectives (min 1)")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--initial-design", type=int, default=5)
    ap.add_argument("--min-trials", default="auto",
                    help="smac-mf: fewest results on a budget for SMAC's model to use it ('auto' = mfhpo's default, "
                    "d + 3; SMAC's own default is 1)")
    ap.add_argument("--checkpoints", default="5,10,20,40")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the seeds for the ratio")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=True,
                    help="multi-fidelity optimizers: a configuration evaluated again at a higher budget continues "
                    "from its own lower-budget state (real objectives: its checkpoint, as `mfhpo run` does; "
                    "synthetic: it costs only the budget it adds), as Optuna's trials always do (default: on; "
                    "--no-warm-start retrains from scratch)")
    ap.add_argument("--wall", action="store_true",
                    help="also summarise the synthetic objectives on the wall-clock axis (the optimizers' own time)")
    ap.add_argument("--cache-dir", default=None, help="disk FeatureCache under the in-memory one (real objectives)")
    ap.add_argument("--from", dest="from_files", default=None,
                    help="comma list of earlier results.json files: their runs (same objective settings) are "
                    "reused and not run again, e.g. to split a benchmark into several invocations")
    ap.add_argument("--out", default=None, help="folder for results.json and optimizers.png")
    a = ap.parse_args(argv)
    mode = MODES["quick" if a.quick else "full" if a.full else "moderate"]
    seeds = a.seeds or mode["seeds"]
    compute = a.compute or mode["compute"]
    rseeds = a.real_seeds or mode["real_seeds"]
    rcompute = a.real_compute or mode["real_compute"]
    rstruct = a.real_structures or mode["real_structures"]
    repochs = a.real_epochs or mode["real_epochs"]
    rmax = a.real_max_budget or mode["real_max_budget"]
    min_trials = None if a.min_trials == "auto" else int(a.min_trials)
    kinds = [k.strip() for k in a.optimizers.split(",") if k.strip()]
    for k in kinds:
        if k not in KINDS:
            ap.error(f"--optimizers: unknown optimizer {k!r} (one of {', '.join(KINDS)})")
    from peers import missing

    for k in [k for k in kinds if k in PEER_KINDS]:
        why = missing(k)
        if why:
            print(why)
            kinds.remove(k)
    objs = [o.strip() for o in a.objectives.split(",") if o.strip()]
    cps_all = [float(x) for x in a.checkpoints.split(",")]
    opt_settings = {"initial_design": a.initial_design, "min_trials": a.min_trials}

    specs: dict[str, tuple[dict, float]] = {}
    n_of: dict[str, int] = {}
    for o in objs:
        if o.startswith("hartmann"):
            spec = {"name": o, "preset": a.preset, "max_budget": a.max_budget, "eta": a.eta,
                    "warm_start": a.warm_start, **opt_settings}
            n_seeds, total = seeds, compute
        elif o == "aspirin" and not ASPIRIN_DATA.exists():
            print(f"aspirin skipped: {ASPIRIN_DATA} not found (../shared/data)")
            continue
        elif o in REAL_OBJECTIVES:
            n_struct = a.real_structures or (ASPIRIN_STRUCTURES if o == "aspirin" else rstruct)
            spec = {"name": o, "n_structures": n_struct, "max_epochs": repochs, "max_budget": rmax,
                    "eta": a.eta, "cache_dir": a.cache_dir, "warm_start": a.warm_start, **opt_settings}
            n_seeds, total = rseeds, rcompute
        else:
            ap.error(f"unknown objective {o!r}")
        specs[o] = (spec, total)
        n_of[o] = n_seeds
    results: list[dict] = _load_runs(a.from_files.split(","), specs) if a.from_files else []
    have = {(r["objective"], r["kind"], r["seed"]) for r in results}
    # seed-major order: the optimizers of one seed run back to back, so a change of machine load
    # during the benchmark falls on all of them alike (the wall-clock axis)
    tasks = [(spec, k, s, total, a.initial_design, min_trials)
             for o, (spec, total) in specs.items() for s in range(a.first_seed, a.first_seed + n_of[o])
             for k in kinds if (o, k, s) not in have]
    real_sizes = ", ".join(f"{o} {sp['n_structures']}" for o, (sp, _) in specs.items() if o in REAL_OBJECTIVES)
    print(f"optimizer benchmark: {len(tasks)} runs to do, {len(results)} reused ({', '.join(objs)}; "
          f"{', '.join(kinds)}); synthetic {seeds} seeds x {compute:g}, budgets 1..{a.max_budget:g}, preset "
          f"{a.preset}; real {rseeds} seeds x {rcompute:g} ({real_sizes or '-'} structures, {repochs} epochs at "
          f"budget {rmax:g}); warm start {'on' if a.warm_start else 'off'}; eta {a.eta}; smac-mf min_trials "
          f"{a.min_trials}", flush=True)
    t0 = time.perf_counter()

    def done(r):
        results.append(r)
        print(f"  done {r['objective']} {r['kind']} seed {r['seed']}: {len(r['records'])} trials, "
              f"{r['wall_s']:.0f} s", flush=True)

    if a.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=a.jobs) as ex:
            futs = {ex.submit(_run_task, t): t for t in tasks}
            for f in as_completed(futs):
                done(f.result())
    else:
        for t in tasks:
            done(_run_task(t))
    print(f"total wall time {time.perf_counter() - t0:.0f} s\n")

    summaries, labels = [], {}
    for o, (spec, total) in specs.items():
        cps = [c for c in cps_all if c <= total + 1e-9] or [total]
        if cps[-1] < total:
            cps.append(total)
        lab = build_objective(spec).value_label
        labels[o] = lab
        fid = {"min_budget": 1.0, "max_budget": spec["max_budget"], "eta": spec["eta"]}
        if o in REAL_OBJECTIVES:
            fid["epochs_at_max"] = spec["max_epochs"]
        axes = [("compute", total, cps, results)]
        if o in REAL_OBJECTIVES or a.wall:  # the synthetic objectives cost no time: their wall is SMAC's own
            # runs of older results files have no wall clock (and ran under another machine load)
            timed = [r for r in results if all("wall" in x for x in r["records"])]
            untimed = sorted({r["kind"] for r in results if r["objective"] == o} - {r["kind"] for r in timed
                                                                                  if r["objective"] == o})
            if untimed:
                print(f"{o}: wall-clock axis without {', '.join(untimed)} (runs reused from a file without wall times)")
            w = wall_total(timed, o)
            if math.isfinite(w):
                axes.append(("wall", w, [w / 8, w / 4, w / 2, w], timed))
        for axis, tot, points, runs in axes:
            s = summarize(runs, o, tot, points, n_boot=a.n_boot, axis=axis)
            s["fidelity"] = fid
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
