"""Can a GMP + SingleNN model learn OC20 forces? One training run of ``configs/oc20.yaml`` on one split.

The numbers in docs/training.md ("Forces on OC20") come from this script. Splits:

* ``within``: frames of the 32 relaxation trajectories (every ``--stride``-th frame), a random 80/20
  split by *frame*: validation frames come from trajectories seen in training (interpolation
  within known systems, the easiest setting);
* ``across``: the same frames split 80/20 by trajectory (``sid``): unseen systems;
* ``images``: the 569 S2EF images, the seeded 80/20 split of ``configs/oc20.yaml`` (unseen systems);
* ``images+relax``: that split with the relaxation frames added to the training side only.

Prints train and validation energy MAE (vs the per-element linear fit) and free-atom force MAE
(vs zero force). Overrides as ``section.key=value`` (YAML values)::

    python scripts/oc20_force_check.py within training.loss=mae training.force_coefficient=10 \
        training.scale_per_element=true training.epochs=120 training.dtype=float32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
OC20 = REPO.parent / "shared" / "data" / "oc20"


def main(argv=None) -> int:
    from mfhpo.config import Fidelity, load_trial_config, parse_trial_config
    from mfhpo.data import Dataset, Split, load_dataset, split_indices
    from mfhpo.train import train

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("split", choices=["within", "across", "images", "images+relax"])
    p.add_argument("overrides", nargs="*", help="section.key=value (YAML value), e.g. training.epochs=60")
    p.add_argument("--config", default=str(REPO / "configs" / "oc20.yaml"))
    p.add_argument("--stride", type=int, default=10, help="keep every n-th relaxation frame")
    p.add_argument("--out", default="runs/oc20_force_check")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    cfg = load_trial_config(a.config).model_dump()
    for item in a.overrides:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in cfg or not name or not _:
            p.error(f"override '{item}': expected section.key=value with section in {sorted(cfg)}")
        cfg[section][name] = yaml.safe_load(value)
    cfg = parse_trial_config(cfg)

    none = np.zeros(0, dtype=np.int64)
    if a.split in ("within", "across", "images+relax"):
        relax = load_dataset(OC20 / "oc20_relax_frames_5296.traj", group_key="sid", max_force=50.0)
        relax = relax.subset(np.arange(0, len(relax), a.stride))
    if a.split == "within":
        ds = relax
        perm = np.random.default_rng(0).permutation(len(ds))
        n_val = len(ds) // 5
        split = Split(np.sort(perm[n_val:]), np.sort(perm[:n_val]), none)
    elif a.split == "across":
        ds = relax
        split = split_indices(len(ds), 0.2, 0.0, seed=0, groups=ds.groups)
    else:
        images = load_dataset(OC20 / "oc20_train_569.traj")
        base = split_indices(len(images), cfg.split.val_fraction, 0.0, seed=cfg.split.seed)
        ds, split = images, Split(base.train, base.val, none)
        if a.split == "images+relax":
            ds = Dataset(images=images.images + relax.images,
                         energies=np.concatenate([images.energies, relax.energies]),
                         forces=images.forces + relax.forces, free=images.free + relax.free,
                         source="oc20_train_569 + relaxation frames")
            split = Split(np.concatenate([base.train, len(images) + np.arange(len(relax))]), base.val, none)
    print(f"{a.split}: {len(split.train)} training / {len(split.val)} validation structures", flush=True)

    t0 = time.perf_counter()
    train(cfg, ds, Fidelity(epochs=cfg.training.epochs), Path(a.out), split=split, progress=True)
    metrics = json.loads((Path(a.out) / "metrics.json").read_text())
    for part in ("train", "val"):
        m = metrics[part]
        print(f"{part:5s} energy MAE {m['energy_mae']:.4f} eV (linear fit {m['baseline_energy_mae']:.4f})   "
              f"free-atom force MAE {m['force_mae_free']:.5f} eV/Å (zero force {m['baseline_force_mae_free']:.5f})")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
