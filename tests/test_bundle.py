"""``mfhpo bundle``: a plain ``mfhpo train`` run packed into a bundle whose ``retrain.sh`` trains it again
and reproduces the validation metrics; data is referenced by file name and hash, never copied."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import yaml

from mfhpo.demo import write_demo

CONFIG = {
    "descriptor": {"scheme": "gmp", "orders": {0: {"groups": [1]}, 1: {"groups": [1]}}, "sigmas": [0.4, 1.2],
                   "cutoff": 4.0, "cutoff_function": "cosine"},
    "model": {"kind": "singlenn", "hidden_layers": [8]},
    "training": {"epochs": 4, "lr": 0.005, "batch_size": 8, "force_coefficient": 1.0, "scheduler": "none"},
    "split": {"val_fraction": 0.25, "test_fraction": 0.2, "seed": 0},
    "seed": 0,
}


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mfhpo.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_bundle_of_a_training_retrains_to_its_validation_metrics(tmp_path):
    data = write_demo(tmp_path / "data" / "train.extxyz", n_structures=24, seed=3)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "study.yaml").write_text("name: tiny_final\n")
    r = _cli("train", "cfg.yaml", "--data", data, "--out", "long", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("bundle", "long", "--data", data, "--study", "study.yaml", "--out", "final", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "final" / "bundle.zip") as z:
        names = set(z.namelist())
        assert {"config.yaml", "checkpoint.pt", "metrics.json", "manifest.json", "retrain.sh", "study.yaml",
                "learning_curve.csv"} <= names
        assert not any(n.endswith((".extxyz", ".traj")) for n in names)
        z.extractall(tmp_path / "unzipped")
    man = json.loads((tmp_path / "unzipped" / "manifest.json").read_text())
    assert man["data"]["train"]["file"] == "train.extxyz" and man["study"] == "tiny_final"
    for f in (tmp_path / "unzipped").iterdir():  # no path of the machine that made it
        assert str(tmp_path) not in f.read_bytes().decode("latin-1"), f.name
    metrics = json.loads((tmp_path / "unzipped" / "metrics.json").read_text())
    assert {"train", "val", "test"} <= set(metrics)  # the held-out split is scored, with baselines
    assert "baseline_force_mae_free" in metrics["test"]
    r = subprocess.run(["bash", "retrain.sh", str(tmp_path / "replay"), "--data", str(data)],
                       cwd=tmp_path / "unzipped", capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads((tmp_path / "replay" / "retrain_report.json").read_text())
    assert rep["reproduced"], rep["mismatches"]


def test_bundle_refuses_data_that_is_not_what_trained(tmp_path):
    data = write_demo(tmp_path / "train.extxyz", n_structures=24, seed=3)
    other = write_demo(tmp_path / "other.extxyz", n_structures=24, seed=4)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    assert _cli("train", "cfg.yaml", "--data", data, "--out", "long", cwd=tmp_path).returncode == 0
    r = _cli("bundle", "long", "--data", other, "--out", "final", cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "other.extxyz" in lines[0] and "hash" in lines[0], r.stderr
