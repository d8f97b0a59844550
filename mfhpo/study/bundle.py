"""``mfhpo bundle TRAIN_DIR --data FILE --study STUDY.yaml``: a reproducibility bundle for one training.

A study's incumbent is exported with ``mfhpo incumbent`` (mfhpo/study/incumbent.py). A final model is
often a *longer* training of that incumbent's configuration (``mfhpo train CONFIG --data FILE --out
TRAIN_DIR`` with more epochs); this module packs such a training the same way: ``config.yaml`` (read
back from the checkpoint, so it is exactly what trained), ``checkpoint.pt``, ``metrics.json``
(train / validation / held-out test, each with its baselines), ``manifest.json`` (data by file name
and hash, split, seeds, CPU threads, package versions, a one-step chain), the study file that found
the configuration, ``learning_curve.csv`` and ``retrain.sh``. The retrain is the one of incumbent
bundles (``python -m mfhpo.study.incumbent retrain``): it trains the configuration again and checks
the validation metrics to rtol 1e-6.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.incumbent import RETRAIN_SH
from mfhpo.study.portable import portable_checkpoint
from mfhpo.study.rundir import atomic_write_json, atomic_write_text

BUNDLE_FILES = ("config.yaml", "checkpoint.pt", "metrics.json", "manifest.json", "retrain.sh", "README.txt")


def _read_training(train_dir: Path) -> dict:
    from mfhpo.checkpoint import load_checkpoint

    ck_path = train_dir / "checkpoint.pt"
    if not ck_path.exists():
        raise MfhpoError(f"{train_dir}: no checkpoint.pt (not an `mfhpo train --out` directory)")
    ck = load_checkpoint(ck_path)
    for key in ("config", "data_hash", "budget", "metrics"):
        if key not in ck:
            raise MfhpoError(f"{ck_path}: checkpoint has no '{key}' record (written by an older mfhpo?)")
    return ck


def bundle_training(train_dir: Path, data: Path, study: Optional[Path], out: Path) -> dict:
    """Pack the training in ``train_dir`` (trained on ``data``) into ``out/bundle.zip``; return the manifest."""
    from mfhpo.data import load_dataset
    from mfhpo.study.runner import package_versions

    train_dir, data, out = Path(train_dir), Path(data), Path(out)
    ck = _read_training(train_dir)
    cfg = ck["config"]
    split = cfg.get("split") or {}
    if not data.exists():
        raise MfhpoError(f"--data {data}: no such file")
    if study is not None and not Path(study).exists():
        raise MfhpoError(f"--study {study}: no such file")
    ds = load_dataset(data, group_key=split.get("group_key"))
    if ds.hash() != ck["data_hash"]:
        raise MfhpoError(f"--data {data}: content hash {ds.hash()} differs from the one {train_dir} was trained on "
                         f"({ck['data_hash']})")
    out.mkdir(parents=True, exist_ok=True)
    metrics = ck["metrics"]
    budget = ck["budget"]
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    portable_checkpoint(train_dir / "checkpoint.pt", out / "checkpoint.pt")  # without the machine's base_dir
    atomic_write_json(out / "metrics.json", metrics)
    manifest = {
        "kind": "training", "study": yaml.safe_load(Path(study).read_text()).get("name") if study else None,
        "study_file": "study.yaml" if study else None,
        "epochs": int(budget["epochs"]), "subset_fraction": float(budget["subset_fraction"]),
        "epochs_run": ck.get("epochs_run"), "best_epoch": ck.get("best_epoch"),
        "seeds": {"trial": cfg.get("seed"), "split": split.get("seed")},
        "chain": [{"trial_id": "final", "budget": None, "epochs": int(budget["epochs"]),
                   "subset_fraction": float(budget["subset_fraction"]),
                   **({"subset_schedule": budget["subset_schedule"]} if budget.get("subset_schedule") else {}),
                   "init_from_previous": False,
                   "epochs_run": ck.get("epochs_run"), "val": metrics.get("val")}],
        "device": "cpu", "torch_threads": ck.get("torch_threads"),
        "data": {"train": {"file": data.name, "hash": ds.hash(), "n_structures": len(ds), "elements": ds.elements},
                 "split": {"val_fraction": split.get("val_fraction"), "test_fraction": split.get("test_fraction"),
                           "seed": split.get("seed"), "group_key": split.get("group_key"), "max_force": None}},
        "packages": package_versions(),
        "selection": "configuration chosen by the study's validation cost; test metrics are reported only",
    }
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_text(out / "retrain.sh", RETRAIN_SH)
    atomic_write_text(out / "README.txt", (
        f"Final model: {budget['epochs']} epochs of the configuration in config.yaml"
        + (f", found by study {manifest['study']} (study.yaml)" if study else "") + ".\n"
        f"Data: {data.name} (sha256-based content hash {ds.hash()} in manifest.json; not copied).\n"
        f"Reproduce: bash retrain.sh OUT_DIR --data PATH/TO/{data.name}   (trains again and compares the "
        "validation metrics, rtol 1e-6 on the CPU)\n"
        f"Score on other data: mfhpo evaluate checkpoint.pt FILE --json\n"))
    bundle = out / "bundle.zip"
    tmp = out / ".bundle.zip.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in BUNDLE_FILES:
            z.write(out / name, name)
        if study:
            z.write(study, "study.yaml")
        if (train_dir / "learning_curve.csv").exists():
            z.write(train_dir / "learning_curve.csv", "learning_curve.csv")
    tmp.replace(bundle)
    return manifest
