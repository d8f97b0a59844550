"""``mfhpo bundle``: a plain ``mfhpo train`` run packed into a bundle whose ``retrain.sh`` trains it again
and reproduces the validation metrics; data is referenced by file name and hash, never copied."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO, shared_path

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


@pytest.mark.parametrize("chunks", [[], ["--no-share-chunks"], ["--chunk-layout", "greedy"]])
def test_bundle_of_a_training_retrains_to_its_validation_metrics(tmp_path, chunks):
    """A training, bundled and retrained, reproduces its validation metrics, featurized as its checkpoint
    records (the blocked layout with shared chunks by default, one structure per chunk, the greedy layout)."""
    data = write_demo(tmp_path / "data" / "train.extxyz", n_structures=24, seed=3)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "study.yaml").write_text("name: tiny_final\n")
    r = _cli("train", "cfg.yaml", "--data", data, "--out", "long", *chunks, cwd=tmp_path)
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
    import torch

    bundled = torch.load(tmp_path / "unzipped" / "checkpoint.pt", weights_only=True)
    replayed = torch.load(rep["checkpoint"], weights_only=True)
    assert bundled["featurize"]["share_chunks"] is (not chunks)
    assert bundled["featurize"]["layout"] == ("greedy" if "greedy" in chunks else "blocked")
    assert replayed["featurize"] == bundled["featurize"] and replayed["gmp_chunks"] == bundled["gmp_chunks"]


def test_bundle_refuses_data_that_is_not_what_trained(tmp_path):
    data = write_demo(tmp_path / "train.extxyz", n_structures=24, seed=3)
    other = write_demo(tmp_path / "other.extxyz", n_structures=24, seed=4)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    assert _cli("train", "cfg.yaml", "--data", data, "--out", "long", cwd=tmp_path).returncode == 0
    r = _cli("bundle", "long", "--data", other, "--out", "final", cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "other.extxyz" in lines[0] and "hash" in lines[0], r.stderr


@pytest.mark.parametrize("name", ["md17_aspirin", "oc20"])
def test_final_bundles_load_score_and_would_continue(name, tmp_path):
    """The final models in docs/results/final: their bundled checkpoints load, read as per-structure
    featurization (what retrain uses), score the validation split to the recorded metrics and pass
    the warm-start checks."""
    from mfhpo.checkpoint import TrainingState, featurize_options_of, load_checkpoint, load_potential
    from mfhpo.config import Fidelity, TrialConfig
    from mfhpo.data import nested_subset
    from mfhpo.gmp import FeaturizeOptions
    from mfhpo.scoring import score
    from mfhpo.study.objective import load_study_dataset
    from mfhpo.train import make_split, split_hash, warm_start_problem

    final = REPO / "docs" / "results" / "final" / name
    man = json.loads((final / "manifest.json").read_text())
    data = shared_path("data", name, man["data"]["train"]["file"])
    with zipfile.ZipFile(final / "bundle.zip") as z:
        z.extract("checkpoint.pt", tmp_path)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert featurize_options_of(ck).resolved("cpu") == FeaturizeOptions(False, layout="greedy")
    assert ck["gmp_chunks"] == "per-structure"
    state = TrainingState.from_checkpoint(ck)
    assert state.epochs_run == man["epochs_run"] and state.best_epoch == man["best_epoch"]
    ds = load_study_dataset(str(data), man["data"]["split"]["group_key"], man["data"]["split"]["max_force"])
    assert ds.hash() == ck["data_hash"]
    cfg = TrialConfig.model_validate(ck["config"])
    split = make_split(cfg, ds)
    s_hash = split_hash(split, nested_subset(split.train, 1.0, seed=cfg.split.seed))
    problem = warm_start_problem(ck, cfg, Fidelity(epochs=state.epochs_run + 1), ds.hash(), s_hash)
    if cfg.training.scheduler == "cosine":  # the OC20 model: a cosine schedule is never continued
        assert problem.startswith("cosine")
    else:
        assert problem is None
    val = score(load_potential(tmp_path / "checkpoint.pt"), ds, indices=split.val).to_dict()
    for k, v in man["chain"][0]["val"].items():
        assert val[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
