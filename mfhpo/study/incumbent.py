"""``mfhpo incumbent runs/<study> [--out DIR]``: export the best configuration at the highest budget.

Writes into DIR (default ``<rundir>/incumbent``): ``config.yaml`` (a TrialConfig for
``mfhpo train``), ``checkpoint.pt``, ``metrics.json`` (validation metrics from the study, test
metrics computed here when the study has a test split/file: reported, never used for selection),
and ``bundle.zip`` = the reproducibility bundle: study file, config, seeds, budget and warm-start
chain, data paths and hashes (never the data), split, package versions, metrics, checkpoint, and
``retrain.sh`` which replays the chain and checks the validation metrics.
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.incumbent_view import print_incumbent_metrics, study_metric
from mfhpo.study.portable import (bundle_data_name, generated_demo_args, portable, portable_checkpoint,
                                  portable_study_text)
from mfhpo.study.config import MetricSection
from mfhpo.study.rundir import RunDir, atomic_write_json, atomic_write_text
from mfhpo.study.trial import TrialRecord, select_incumbent

RTOL = 1e-6
ATOL = 1e-9


def warm_chain(records: dict[int, TrialRecord], inc: TrialRecord) -> list[dict]:
    """Trials to replay, first to last: follow warm starts that were actually used."""
    chain = [inc]
    cur = inc
    while cur.warm_started and cur.warm_start_from_trial is not None:
        cur = records[int(cur.warm_start_from_trial)]
        chain.append(cur)
    chain.reverse()
    return [{"trial_id": r.trial_id, "budget": r.budget, "epochs": r.epochs, "subset_fraction": r.subset_fraction,
             **({"subset_schedule": r.subset_schedule} if r.subset_schedule else {}),
             "init_from_previous": k > 0, "epochs_run": r.epochs_run, "stopped_reason": r.stopped_reason,
             "val": (r.metrics or {}).get("val")} for k, r in enumerate(chain)]


def _test_metrics(ck: Path, state: dict, cfg_dict: dict, device: str) -> dict:
    """Test metrics of the exported checkpoint: the separate test file and/or the test split."""
    from mfhpo.checkpoint import load_potential
    from mfhpo.config import TrialConfig
    from mfhpo.data import load_dataset
    from mfhpo.scoring import score
    from mfhpo.train import make_split

    prov = state.get("provenance", {}).get("data", {})
    split = prov.get("split", {})
    out = {}
    pot = None
    if split.get("n_test", 0) > 0:
        from mfhpo.study.objective import load_study_dataset

        ds = load_study_dataset(prov["train"]["path"], split.get("group_key"), split.get("max_force"))
        pot = load_potential(ck, device=device)
        sp = make_split(TrialConfig.model_validate(cfg_dict), ds)
        out["test_split"] = score(pot, ds, indices=sp.test, source=f"{prov['train']['path']} (test split)").to_dict()
    if prov.get("test"):
        ts = load_dataset(prov["test"]["path"], max_force=split.get("max_force"))
        if pot is None:
            pot = load_potential(ck, device=device)
        out["test_file"] = score(pot, ts, source=prov["test"]["path"]).to_dict()
    return out


RETRAIN_SH = """#!/usr/bin/env bash
# Replays the incumbent's training chain (same config, seeds, budgets, warm starts) and checks that
# the validation metrics match the study's to float tolerance on the same device.
#   bash retrain.sh [OUT_DIR] [--data PATH] [--device cpu|cuda]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-retrain_out}"; shift || true
exec python -m mfhpo.study.incumbent retrain "$HERE" --out "$OUT" "$@"
"""


@dataclass
class IncumbentExport:
    """What ``mfhpo incumbent`` exported: the trial, where its files are, the manifest and metrics."""

    incumbent: TrialRecord
    out: Path
    bundle: Path
    manifest: dict
    metrics: dict  # {"val", "train"} from the study, plus the test metrics
    test: dict  # {"test_split": ..., "test_file": ...}: computed here, reported only
    at_highest_budget: bool
    max_budget: float
    metric: MetricSection  # the study's cost


def export_incumbent(rundir: Path, out: Optional[Path] = None, *, evaluate_test: bool = True,
                     trial: Optional[int] = None) -> IncumbentExport:
    """Export the incumbent (or, for inspection, any finished ``trial``) with its bundle; prints nothing."""
    rd = RunDir(Path(rundir))
    if not rd.exists():
        raise MfhpoError(f"{rundir}: not a study run directory (no state.json)")
    state = rd.read_state()
    records = {r.trial_id: r for r in rd.trial_records()}
    inc = select_incumbent(records.values()) if trial is None else records.get(int(trial))
    if inc is None:
        raise MfhpoError(f"{rundir}: no successful trial yet" if trial is None else f"{rundir}: no trial {trial}")
    max_budget = max((f["budget"] for f in state.get("fidelity", [])), default=inc.budget)
    out = Path(out) if out is not None else rd.root / "incumbent"
    out.mkdir(parents=True, exist_ok=True)
    ck = rd.trial_dir(inc.trial_id) / "checkpoint.pt"
    if not ck.exists():
        raise MfhpoError(f"{ck.parent}: incumbent trial has no checkpoint.pt (objective without training?)")
    portable_checkpoint(ck, out / "checkpoint.pt")  # no base_dir of this machine
    atomic_write_text(out / "config.yaml", yaml.safe_dump(inc.config, sort_keys=False))
    chain = warm_chain(records, inc)
    dev = str(inc.device or "cpu")
    test = {}
    if evaluate_test:
        test = _test_metrics(out / "checkpoint.pt", state, inc.config, "cuda" if dev.startswith("cuda") else "cpu")
    metrics = {"val": (inc.metrics or {}).get("val"), "train": (inc.metrics or {}).get("train"), **test}
    atomic_write_json(out / "metrics.json", metrics)
    manifest = _manifest(state, inc, chain, dev, max_budget)
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_text(out / "retrain.sh", RETRAIN_SH)  # one-command retrain + the equivalent mfhpo train commands
    data = manifest["data"]["train"] if manifest["data"] else {}
    data_name = bundle_data_name(data) if data else "DATA"
    atomic_write_text(out / "commands.txt", _train_commands(chain, data_name))
    atomic_write_text(out / "README.txt", _readme(state, inc, chain, data, data_name))
    bundle = _write_bundle(rd, out, chain, (state.get("provenance") or {}).get("data") or {})
    return IncumbentExport(incumbent=inc, out=out, bundle=bundle, manifest=manifest, metrics=metrics, test=test,
                           at_highest_budget=manifest["at_highest_budget"], max_budget=max_budget,
                           metric=study_metric(rd.root))


def _manifest(state: dict, inc: TrialRecord, chain: list[dict], device: str, max_budget: float) -> dict:
    prov = state.get("provenance", {})
    cfg = inc.config
    return {
        "study": state.get("study"), "study_hash": state.get("study_hash"), "optimizer": state.get("optimizer"),
        "mode": state.get("mode"), "metric": state.get("metric"), "incumbent_trial": inc.trial_id,
        "config_id": inc.config_id, "stage": inc.stage, "cost": inc.cost,
        "budget": inc.budget, "at_highest_budget": math.isclose(float(inc.budget), float(max_budget), rel_tol=1e-9),
        "max_budget": max_budget, "epochs": inc.epochs, "subset_fraction": inc.subset_fraction, "seeds": {
            "study": state.get("seed"), "trial": cfg.get("seed"), "split": cfg.get("split", {}).get("seed"),
            "smac": inc.smac_seed},
        "params": inc.params, "chain": chain, "device": device,
        "data": portable(prov.get("data")), "packages": prov.get("packages"),
        "selection": "lowest validation cost at the highest budget reached; test metrics are reported only",
    }


def _train_commands(chain: list[dict], data_name: str) -> str:
    lines = ["# equivalent mfhpo train commands (same chain; data filters of the study: see manifest.json)"]
    prev = None
    for k, step in enumerate(chain):
        o = f"retrain_out/step{k}"
        cmd = (f"mfhpo train config.yaml --data {data_name} --out {o} --epochs {step['epochs']} "
               f"--subset {step['subset_fraction']}")
        if step.get("subset_schedule"):
            cmd += " --subset-schedule " + ",".join(f"{e}:{f:g}" for e, f in step["subset_schedule"])
        if prev:
            cmd += f" --init-checkpoint {prev}/checkpoint.pt"
        lines.append(cmd)
        prev = o
    return "\n".join(lines) + "\n"


def _readme(state: dict, inc: TrialRecord, chain: list[dict], data: dict, data_name: str) -> str:
    readme = (f"Incumbent of study {state.get('study')}: trial {inc.trial_id} at budget {inc.budget:g} "
              f"({inc.epochs} epochs, subset {inc.subset_fraction}), cost {inc.cost:.6g} "
              f"({state.get('metric')}).\nReproduce: bash retrain.sh   (replays {len(chain)} step(s) and compares "
              f"validation metrics)\nData are referenced by file name and hash in manifest.json, never copied: put "
              f"{data_name} next to this file or pass --data PATH.\n")
    if data.get("generated_demo"):
        g = data["generated_demo"]
        readme += (f"The demo data are generated: mfhpo demo-data {data_name} --n {g['n_structures']} "
                   f"--seed {g['seed']} (retrain.sh regenerates them when missing).\n")
    return readme


def _write_bundle(rd: RunDir, out: Path, chain: list[dict], data_prov: dict) -> Path:
    """bundle.zip: the exported files, the portable study file and the chain's trial files."""
    bundle = out / "bundle.zip"
    tmp = out / ".bundle.zip.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in ("config.yaml", "checkpoint.pt", "metrics.json", "manifest.json", "retrain.sh", "commands.txt",
                     "README.txt"):
            z.write(out / name, name)
        if rd.study_file.exists():
            z.writestr("study.yaml", portable_study_text(rd.study_file.read_text(), data_prov))
        for step in chain:
            td = rd.trial_dir(step["trial_id"])
            if (td / "trial.json").exists():  # paths relative to the run directory, no host name
                rec = portable(json.loads((td / "trial.json").read_text()), rd.root)
                z.writestr(f"chain/{step['trial_id']:05d}/trial.json", json.dumps(rec, indent=2) + "\n")
            for name in ("metrics.json", "learning_curve.csv"):
                if (td / name).exists():
                    z.write(td / name, f"chain/{step['trial_id']:05d}/{name}")
    tmp.replace(bundle)
    return bundle


def incumbent_command(rundir: Path, out: Optional[Path] = None, *, evaluate_test: bool = True,
                      trial: Optional[int] = None) -> IncumbentExport:
    """``mfhpo incumbent``: export (:func:`export_incumbent`) and print what was exported."""
    ex = export_incumbent(rundir, out, evaluate_test=evaluate_test, trial=trial)
    inc = ex.incumbent
    print(f"incumbent: trial {inc.trial_id} at budget {inc.budget:g}"
          + ("" if ex.at_highest_budget else f" (WARNING: no trial reached the highest budget {ex.max_budget:g} yet)")
          + f", cost {inc.cost:.6g}")
    print_incumbent_metrics(ex.metrics["val"] or {}, ex.test, ex.metric, inc.config)
    print(f"wrote {ex.out}/config.yaml, checkpoint.pt, metrics.json, bundle.zip (reproduce: unzip, bash retrain.sh)")
    return ex


# --------------------------------------------------------------------------------------------
# retrain (run from an unzipped bundle)
# --------------------------------------------------------------------------------------------


def compare_metrics(ref: dict, new: dict, rtol: float = RTOL, atol: float = ATOL) -> list[str]:
    bad = []
    for k, v in (ref or {}).items():
        if not isinstance(v, (int, float)) or v is None:
            continue
        w = new.get(k)
        if w is None or not math.isclose(float(v), float(w), rel_tol=rtol, abs_tol=atol):
            bad.append(f"{k}: study {v!r} vs retrain {w!r}")
    return bad


def _study_runtime(checkpoint: Path):
    """CPU threads the incumbent's trial trained with (None for checkpoints older than that record),
    the featurize options its features were made with (mfhpo.checkpoint.featurize_options_of) and
    whether the checkpoint records them."""
    from mfhpo.checkpoint import featurize_options_of, load_checkpoint

    try:
        ck = load_checkpoint(checkpoint)
    except Exception:
        ck = {}
    n = ck.get("torch_threads")
    recorded = ck.get("featurize") is not None or ck.get("gmp_chunks") is not None
    return (int(n) if n else None), featurize_options_of(ck), recorded


def retrain(bundle_dir: Path, out: Path, data: Optional[Path] = None, device: Optional[str] = None) -> dict:
    """Replay a bundle's training chain with the CPU threads and featurize options its checkpoint
    records; compare the validation metrics with the study's."""
    import torch

    from mfhpo.config import Fidelity, load_trial_config
    from mfhpo.study.objective import load_study_dataset
    from mfhpo.train import train

    bundle_dir = Path(bundle_dir)
    man = json.loads((bundle_dir / "manifest.json").read_text())
    cfg = load_trial_config(bundle_dir / "config.yaml")
    d = man["data"]
    out = Path(out)
    path = Path(data) if data is not None else bundle_data_file(bundle_dir, out, d["train"])
    ds = load_study_dataset(str(path), d["split"].get("group_key"), d["split"].get("max_force"))
    if ds.hash() != d["train"]["hash"]:
        print(f"warning: {path} hash {ds.hash()} differs from the study's {d['train']['hash']}", file=sys.stderr)
    dev = device or ("cuda" if str(man.get("device", "cpu")).startswith("cuda") else "cpu")
    threads, featurize, recorded = _study_runtime(bundle_dir / "checkpoint.pt")
    if dev == "cpu" and threads:
        torch.set_num_threads(threads)
        print(f"using {threads} CPU thread(s), as the study's trial did", flush=True)
    if dev == "cpu" and not recorded:
        print("bundle predates per-structure featurization: featurizing with shared chunks, as its study did "
              "(reproduces where the study featurized in the same batches)", flush=True)
    prev = None
    res = None
    for k, step in enumerate(man["chain"]):
        cfg.training.epochs = int(step["epochs"])
        sdir = out / f"step{k}_trial{step['trial_id']}"
        print(f"step {k + 1}/{len(man['chain'])}: {step['epochs']} epochs, subset {step['subset_fraction']}"
              + (f", warm start from {prev}" if prev else ""), flush=True)
        fid = Fidelity(epochs=int(step["epochs"]), subset_fraction=float(step["subset_fraction"]),
                       subset_schedule=step.get("subset_schedule"))
        res = train(cfg, ds, fid, sdir,
                    init_checkpoint=prev, device=dev, progress=False, featurize=featurize)
        if k > 0 and not res.warm_start.get("used"):
            print(f"warning: warm start not used ({res.warm_start.get('reason')})", file=sys.stderr)
        prev = res.checkpoint_path
    ref = man["chain"][-1]["val"]
    bad = compare_metrics(ref, res.metrics["val"])
    report = {"reproduced": not bad, "mismatches": bad, "val": res.metrics["val"], "checkpoint": str(prev)}
    (out / "retrain_report.json").write_text(json.dumps(report, indent=2, default=str))
    if bad:
        print("NOT reproduced:\n  " + "\n  ".join(bad))
        if dev == "cpu" and not threads:
            print(f"note: on the CPU the digits depend on the number of threads ({torch.get_num_threads()} here) and "
                  "this bundle does not record the study's; rerun with OMP_NUM_THREADS as the study used")
    else:
        print(f"reproduced: {len([v for v in ref.values() if isinstance(v, (int, float))])} validation metrics match "
              f"(rtol {RTOL}); checkpoint {prev}")
    return report


def bundle_data_file(bundle_dir: Path, out: Path, entry: dict) -> Path:
    """The training data of a bundle without ``--data``: the named file next to the bundle or in the
    working directory; generated demo data are written into ``out`` (never elsewhere)."""
    name = bundle_data_name(entry)
    cands = [Path(bundle_dir) / name, Path.cwd() / name, out / name]
    if entry.get("path"):  # bundles made before file names: the recorded path, when it exists (read only)
        cands.append(Path(entry["path"]))
    for cand in cands:
        if cand.is_file():
            return cand
    if entry.get("generated_demo"):
        from mfhpo.demo import write_demo

        n, seed = generated_demo_args(entry)
        out.mkdir(parents=True, exist_ok=True)
        path = out / name
        write_demo(path, n_structures=n, seed=seed)
        return path
    raise MfhpoError(f"{bundle_dir}: data file {name} (hash {entry.get('hash')}) is not next to the bundle or in the "
                     "working directory; pass --data PATH")


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mfhpo.study.incumbent")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("retrain", help="replay an exported bundle's training chain")
    r.add_argument("bundle")
    r.add_argument("--out", default="retrain_out")
    r.add_argument("--data", default=None)
    r.add_argument("--device", default=None)
    a = p.parse_args(argv)
    try:
        rep = retrain(Path(a.bundle), Path(a.out), data=a.data, device=a.device)
    except MfhpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if rep["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
