"""A real tiny training study end to end (real trainer, real LocalCluster, real SMAC), then the
incumbent export and its reproducibility bundle: ``bash retrain.sh`` must reproduce the validation
metrics, also along a warm-start chain."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import subprocess
import zipfile

import pandas as pd
import pytest
import torch
import yaml

from mfhpo.study.incumbent import incumbent_command
from mfhpo.study.runner import run_command
from mfhpo.study.status import status_command

STUDY = {
    "name": "tiny",
    "seed": 0,
    "data": {"train": "demo", "demo_structures": 24, "val_fraction": 0.25, "test_fraction": 0.2},
    "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae_free", "force_weight": 0.1},
    "space": {
        "num_layers": {"low": 1, "high": 2},
        "nodes": {"low": 4, "high": 16, "log": True},
        "lr": {"low": 1e-3, "high": 1e-2, "log": True},
        "cutoff": {"low": 3.0, "high": 4.0},
        "max_order": 1,
        "sigma_count": 2,
        "sigma_min": 0.3,
        "sigma_max": 1.5,
        "batch_size": 8,
    },
    "fidelity": {"min_budget": 1, "max_budget": 3, "eta": 3, "epochs": {"min": 2, "max": 6},
                 "subset": {"min": 1.0, "max": 1.0}},
    "budget": {"trials": 10},
    "optimizer_options": {"initial_design": 2},
    "cluster": {"kind": "local", "workers": 2, "dashboard_port": 0},
}


@pytest.mark.slow
def test_tiny_training_study_end_to_end_and_bundle_reproduces(tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    rundir = tmp_path / "runs" / "tiny"
    run_command(study, rundir=rundir, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 10 and (df.status == "SUCCESS").all()
    for col in ("val_energy_mae_per_atom", "val_force_mae_free", "val_baseline_energy_mae_per_atom", "cfg.lr",
                "epoch_equivalents", "featurize_time_s", "train_time_s", "worker", "device"):
        assert col in df.columns
    assert set(df.budget) == {1.0, 3.0}
    for tid in df.trial_id:
        d = rundir / "trials" / f"{tid:05d}"
        for name in ("trial.json", "config.yaml", "metrics.json", "learning_curve.csv", "train.log", "checkpoint.pt"):
            assert (d / name).exists(), (tid, name)
    # promotions continue from their own lower-budget checkpoint (same subset, constant lr)
    promoted = df[(df.budget == 3.0) & df.config_id.isin(df[df.budget == 1.0].config_id)]
    assert len(promoted) >= 1
    assert promoted.warm_started.all() and (promoted.epochs_saved == 2).all()
    state = json.loads((rundir / "state.json").read_text())
    prov = state["provenance"]
    assert prov["data"]["train"]["hash"] and prov["data"]["split"]["n_test"] > 0
    assert {"mfhpo", "torch", "smac", "ConfigSpace", "dask", "ase", "numpy", "python"} <= set(prov["packages"])
    s = status_command(rundir)
    assert s["warm"]["warm_started"] == len(promoted) and s["warm"]["epochs_saved"] == 2 * len(promoted)
    _check_optuna_mirror(rundir, df)

    # export the incumbent (highest budget) and the warm-started chain; replay both from the bundle
    capsys.readouterr()
    res = incumbent_command(rundir, tmp_path / "inc")
    printed = capsys.readouterr()
    assert "force MAE (free atoms)" in printed.out and "(zero-force " in printed.out
    assert "not energy-conserving in MD" in printed.err  # the tiny study's descriptor: hard cutoff (default)
    inc = res.incumbent
    assert inc.budget == 3.0 and inc.cost == df[df.budget == 3.0].cost.min()
    assert "test_split" in res.test and res.test["test_split"]["n_structures"] > 0
    wt = int(promoted.trial_id.iloc[0])
    res2 = incumbent_command(rundir, tmp_path / "warm", trial=wt, evaluate_test=False)
    assert len(res2.manifest["chain"]) == 2
    for out in (tmp_path / "inc", tmp_path / "warm"):
        unz = out / "unzipped"
        with zipfile.ZipFile(out / "bundle.zip") as z:
            names = set(z.namelist())
            assert {"config.yaml", "checkpoint.pt", "manifest.json", "retrain.sh", "study.yaml", "metrics.json"} <= names
            assert not any(n.endswith((".extxyz", ".traj")) for n in names)  # never data copies
            z.extractall(unz)
        # nothing of the machine: no path of the directory the study ran in, no user or host name
        here = {str(tmp_path), str(tmp_path.resolve()), os.path.expanduser("~")}
        for f in unz.rglob("*"):
            if not f.is_file():
                continue
            raw = f.read_bytes()
            assert not any(h.encode() in raw for h in here), f"{f.name} holds a path of this machine"
            if f.suffix in (".json", ".yaml", ".txt", ".sh", ".csv"):
                text = raw.decode()
                for token in (socket.gethostname(), getpass.getuser()):
                    assert not re.search(rf"(?<![\w.-]){re.escape(token)}(?![\w.-])", text), (f.name, token)
        # a different OMP_NUM_THREADS here: the retrain must use the thread count the trial recorded
        env = {**os.environ, "OMP_NUM_THREADS": "1" if torch.get_num_threads() > 1 else "2"}
        r = subprocess.run(["bash", "retrain.sh", str(out / "replay")], cwd=unz, capture_output=True, text=True,
                           timeout=600, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "CPU thread(s), as the study's trial did" in r.stdout
        rep = json.loads((out / "replay" / "retrain_report.json").read_text())
        assert rep["reproduced"], rep["mismatches"]


def _check_optuna_mirror(rundir, df) -> None:
    """The Optuna mirror of a real training study: intermediate values are the per-epoch validation cost."""
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        return
    study = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(
        str(rundir / "optuna" / "journal.log"))))
    trials = {t.user_attrs["mfhpo_trial_id"]: t for t in study.get_trials()}
    assert set(trials) == set(df.trial_id)
    for tid in df.trial_id:
        t = trials[tid]
        curve = pd.read_csv(rundir / "trials" / f"{tid:05d}" / "learning_curve.csv")
        want = curve.val_energy_mae_per_atom + 0.1 * curve.val_force_mae_free  # the study's cost per epoch
        assert sorted(t.intermediate_values) == curve.epoch.tolist()
        assert [t.intermediate_values[e] for e in curve.epoch] == pytest.approx(want.tolist())
        assert t.value == pytest.approx(float(df.loc[df.trial_id == tid, "cost"].iloc[0]))
