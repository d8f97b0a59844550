"""A real study at equal wall time: ``mfhpo run`` with each optimizer, side by side, several seeds.

    python benchmarks/study_pairs.py spaces/md17_aspirin.yaml --seeds 0 1 2 --wall 10m --workers 1
    python benchmarks/study_pairs.py spaces/md17_aspirin.yaml --seeds 0 1 2 --summary-only
    python benchmarks/study_pairs.py spaces/md17_aspirin.yaml --seeds 0 1 2 --wall 15m --tag 15m
    python benchmarks/study_pairs.py spaces/md17_aspirin.yaml --optimizers smac-mf:brackets=all --wall 15m --tag 15m

For every seed, one copy of the study file (``seed``, ``budget.wall_time``, the data paths made
absolute; in ``--out``) is run once per optimizer (``--optimizers``, default ``smac-mf random
optuna-tpe-hb``: mfhpo's default, random search at the top budget, and the Optuna pipeline users
come from, TPE + Hyperband pruner, as chains of trials on the same workers:
mfhpo/study/optuna_pipeline.py; ``OPTIMIZER:KEY=VALUE,...`` sets ``optimizer_options`` in that run's
copy, e.g. ``smac-mf:brackets=all`` runs in ``..._smac-mf-brackets-all_s<seed>``), all optimizers of a
seed at the same time (the same machine load), each with ``--workers`` local workers, in
``runs/<name>_cmp_<optimizer>_s<seed>``.
A trial still running at the wall time gets the time left as its limit (``mfhpo run``'s rule), so every
run ends within about a minute of the others.

Printed per run from its trials.csv: trials, the incumbent by mfhpo's one rule
(:func:`mfhpo.study.trial.select_incumbent`: highest budget reached, then lowest cost), its budget,
epochs (of the budget, and trained in all: fewer when the wall time stopped it), validation cost and
MAEs, and when the first top-budget result arrived (seconds after the first trial started, and as a
share of the wall time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mfhpo.study.config import parse_duration  # noqa: E402
from mfhpo.study.rundir import RunDir  # noqa: E402
from mfhpo.study.trial import Candidate, select_incumbent  # noqa: E402


def variant(spec: str) -> tuple[str, str, dict]:
    """``smac-mf:brackets=all,initial_design=8`` -> (run name, optimizer, optimizer_options)."""
    opt, _, rest = spec.partition(":")
    options = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}
    name = "-".join([opt, *(f"{k}-{v}" for k, v in options.items())])
    return name, opt, options


def study_copy(study: Path, seed: int, wall: str, out: Path, options: dict | None = None,
               variant_name: str = "") -> tuple[Path, str]:
    """The study file with ``seed`` and ``budget.wall_time``, data paths absolute, ``options`` set in
    ``optimizer_options``; (path, name)."""
    d = yaml.safe_load(study.read_text())
    for key in ("train", "test"):
        if d.get("data", {}).get(key) and d["data"][key] != "demo":  # "demo": the built-in generated set
            d["data"][key] = str((study.parent / d["data"][key]).resolve())
    d["seed"] = int(seed)
    d["name"] = name = f"{d['name']}_cmp_s{seed}"
    d.setdefault("budget", {})["wall_time"] = wall
    if options:
        d["optimizer_options"] = {**(d.get("optimizer_options") or {}), **options}
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"{name}_{variant_name}.yaml" if options else f"{name}.yaml")
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path, d["name"].removesuffix(f"_cmp_s{seed}")


def rundir(base: str, optimizer: str, seed: int, tag: str = "") -> Path:
    return REPO / "runs" / f"{base}_cmp{tag}_{optimizer}_s{seed}"


def epochs_run(path: Path, trial_id: int) -> int | None:
    """Epochs the trial's model trained in all (fewer than its budget's when stopped by the wall time)."""
    rec = json.loads((RunDir(path).trial_dir(trial_id) / "trial.json").read_text())
    return rec.get("epochs_run")


def summary(path: Path, wall_s: float, top_budget: float) -> dict:
    t = pd.read_csv(path / "trials.csv")
    inc = select_incumbent([Candidate(int(r.trial_id), r.status, float(r.budget),
                                      None if pd.isna(r.cost) else float(r.cost)) for r in t.itertuples()])
    start = pd.to_datetime(t["started_at"]).min()
    top = t[(t["status"] == "SUCCESS") & (t["budget"] >= top_budget)]
    first_top = (pd.to_datetime(top["finished_at"]).min() - start).total_seconds() if len(top) else float("nan")
    row = t[t["trial_id"] == inc.trial_id].iloc[0] if inc else None
    return {"run": path.name, "trials": len(t), "success": int((t["status"] == "SUCCESS").sum()),
            "max budget": float(t["budget"].max()), "incumbent": inc.trial_id if inc else None,
            "inc budget": inc.budget if inc else None, "inc epochs": int(row["epochs"]) if inc else None,
            "inc epochs run": epochs_run(path, inc.trial_id) if inc else None,
            "inc cost": inc.cost if inc else None,
            "val E meV/atom": 1e3 * row["val_energy_mae_per_atom"] if inc else None,
            "val F meV/A": 1e3 * row["val_force_mae"] if inc else None,
            "first top s": first_top, "first top share": first_top / wall_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--optimizers", nargs="+", default=["smac-mf", "random", "optuna-tpe-hb"],
                    help="optimizers of mfhpo run; OPTIMIZER:KEY=VALUE,... also sets optimizer_options")
    ap.add_argument("--wall", default="10m", help="budget.wall_time of every run")
    ap.add_argument("--workers", type=int, default=1, help="local workers of every run")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "cmp", help="study copies and logs")
    ap.add_argument("--tag", default="", help="run directories runs/<name>_cmp<TAG>_<optimizer>_s<seed> (e.g. the wall "
                    "time, to keep comparisons of different lengths apart)")
    ap.add_argument("--summary-only", action="store_true", help="print the table of runs already made")
    a = ap.parse_args(argv)
    study = yaml.safe_load(a.study.read_text())
    base, top_budget = study["name"], float(study["fidelity"]["max_budget"])
    for seed in a.seeds:
        if a.summary_only:
            break
        runs = [(name, opt, study_copy(a.study, seed, a.wall, a.out, options, name)[0])
                for name, opt, options in map(variant, a.optimizers)]  # every copy written before any run starts
        procs = []
        for name, opt, path in runs:
            log = open(a.out / f"{name}{a.tag}_s{seed}.log", "w")
            procs.append(subprocess.Popen(["mfhpo", "run", str(path), "--workers", str(a.workers), "--optimizer", opt,
                                           "--rundir", str(rundir(base, name, seed, a.tag))], stdout=log, stderr=log))
        for p in procs:
            p.wait()
        print(f"seed {seed}: done ({', '.join(f'{o} rc {p.returncode}' for o, p in zip(a.optimizers, procs))})",
              flush=True)
    dirs = [rundir(base, variant(spec)[0], s, a.tag) for s in a.seeds for spec in a.optimizers]
    rows = [summary(d, parse_duration(a.wall), top_budget) for d in dirs if (d / "trials.csv").exists()]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
