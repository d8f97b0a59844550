"""benchmarks/study_pairs.py: study copies per seed and the summary of a run directory."""

from __future__ import annotations

import json

import pandas as pd
from conftest import REPO, load_benchmark

from mfhpo.study.config import load_study
from mfhpo.study.rundir import RunDir


def test_study_copy_runs_anywhere_and_summary_uses_the_one_incumbent_rule(tmp_path):
    sp = load_benchmark("study_pairs")
    path, base = sp.study_copy(REPO / "spaces" / "md17_aspirin.yaml", 2, "10m", tmp_path / "copies")
    study = load_study(path)
    assert (base, study.name, study.seed, study.budget.wall_time) == ("md17_aspirin", "md17_aspirin_cmp_s2", 2, 600.0)
    assert study.data.train.endswith("shared/data/md17_aspirin/rmd17_aspirin_850.extxyz")
    demo, _ = sp.study_copy(REPO / "spaces" / "demo.yaml", 0, "2m", tmp_path / "copies")
    assert load_study(demo).data.train == "demo"
    name, opt, options = sp.variant("smac-mf:promotion=async,brackets=all,initial_design=8")  # the demo names sync
    assert (name, opt, options) == ("smac-mf-promotion-async-brackets-all-initial_design-8", "smac-mf",
                                    {"promotion": "async", "brackets": "all", "initial_design": 8})
    assert sp.variant("random") == ("random", "random", {})
    ahb, _ = sp.study_copy(REPO / "spaces" / "demo.yaml", 0, "2m", tmp_path / "copies", options, name)
    oo = load_study(ahb).optimizer_options
    assert ahb != demo and (oo.brackets, oo.initial_design) == ("all", 8)
    assert load_study(demo).optimizer_options.brackets == 1

    run = tmp_path / "run"
    run.mkdir()
    t0 = "2026-12-07T10:00:00+00:00"
    rows = [(1, 1.0, "SUCCESS", 0.10, 1), (2, 3.0, "SUCCESS", 0.30, 2), (3, 9.0, "SUCCESS", 0.25, 6),
            (4, 9.0, "CRASHED", None, 7), (5, 9.0, "SUCCESS", 0.20, 9)]  # (id, budget, status, cost, minute)
    pd.DataFrame([{"trial_id": i, "budget": b, "status": st, "cost": c, "epochs": int(20 * b), "started_at": t0,
                   "finished_at": f"2026-12-07T10:{m:02d}:00+00:00", "val_energy_mae_per_atom": 0.001 * i,
                   "val_force_mae": 0.01 * i} for i, b, st, c, m in rows]).to_csv(run / "trials.csv", index=False)
    inc_dir = RunDir(run).trial_dir(5)
    inc_dir.mkdir(parents=True)
    (inc_dir / "trial.json").write_text(json.dumps({"trial_id": 5, "epochs_run": 150}))  # stopped by the wall time
    r = sp.summary(run, 600.0, 9.0)
    # highest budget reached first, then the lowest cost: trial 5, not the cheaper budget-1 trial 1
    got = (r["incumbent"], r["inc budget"], r["inc epochs"], r["inc epochs run"], r["inc cost"])
    assert got == (5, 9.0, 180, 150, 0.20)
    assert r["first top s"] == 360.0 and r["first top share"] == 0.6 and r["trials"] == 5 and r["success"] == 4
    assert sp.summary(run, 600.0, 27.0)["first top s"] != sp.summary(run, 600.0, 27.0)["first top s"]  # NaN: none
