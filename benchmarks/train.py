"""Training throughput of mfhpo's SingleNN trainer on cached GMP features.

For each dataset: featurize once (with derivatives; FeatureCache under --cache), build the
device-resident FeatureStore, then time full training epochs (Adam steps, batch 32 structures):

* ``vectorised energy-only`` and ``vectorised + forces`` (force_coefficient > 0, create_graph);
* ``baseline``: the same energy-only epoch with one network call per structure (a Python loop over
  the structures of each batch, as a naive per-image implementation does), measured in the same run.

Prints structures/s, atoms/s, the ratio to the baseline, and peak memory (CPU max RSS; CUDA
max_memory_allocated).

    python benchmarks/train.py                      # both datasets, CPU (and CUDA when available)
    python benchmarks/train.py --datasets aspirin --epochs 2 --devices cpu
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = {
    "oc20": SHARED / "data/oc20/oc20_train_569.traj",
    "aspirin": SHARED / "data/md17_aspirin/rmd17_aspirin_850.extxyz",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(ds_name: str, device: str, dtype, cache_dir: Path, n_max: int | None):
    from mfhpo.config import DescriptorConfig, ModelConfig
    from mfhpo.data import fit_reference_energies, load_dataset
    from mfhpo.gmp.cache import FeatureCache
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting
    from mfhpo.model import FeatureStore, Potential
    from mfhpo.train import fit_feature_scaler

    ds = load_dataset(DATA[ds_name])
    if n_max:
        ds = ds.subset(range(min(n_max, len(ds))))
    elements = ds.elements
    setting = GMPSetting.from_descriptor(DescriptorConfig(), elements)
    t = time.perf_counter()
    feats = featurize_many(ds.images, setting, derivatives=True, dtype=dtype, device="cpu",
                           cache=FeatureCache(cache_dir), progress=False)
    t_feat = time.perf_counter() - t
    col = {e: k for k, e in enumerate(elements)}
    elem = [torch.tensor([col[s] for s in a.get_chemical_symbols()]) for a in ds.images]
    store = FeatureStore(feats, elem, device=device, dtype=dtype, derivatives=True, energies=ds.energies,
                         forces=ds.forces, free=ds.free)
    del feats
    torch.manual_seed(0)
    pot = Potential(setting.nfeat, elements, ModelConfig(hidden_layers=[64, 64])).to(device=device, dtype=dtype)
    off, sc = fit_feature_scaler(store.fp, store.elem, len(elements), "normalize")
    refs = fit_reference_energies(ds.images, ds.energies, elements)
    with torch.no_grad():
        pot.feat_offset.copy_(off)
        pot.feat_scale.copy_(sc)
        pot.ref_energy.copy_(torch.tensor([refs[e] for e in elements], dtype=dtype))
        pot.sigma.fill_(0.1)
    store.apply_scaling(pot)
    store.set_targets(pot)
    return ds, pot, store, t_feat


def epoch(pot, store, opt, forces: bool, bs: int, loop: bool, seed: int) -> None:
    perm = torch.randperm(store.n, generator=torch.Generator().manual_seed(seed)).to(store.device)
    pot.train()
    for s in range(0, store.n, bs):
        sids = perm[s:s + bs]
        opt.zero_grad(set_to_none=True)
        if loop:  # baseline: one structure at a time
            loss = 0.0
            for sid in sids.tolist():
                b, _ = store.batch(torch.tensor([sid], device=store.device), derivatives=False)
                e, _ = pot.scaled_energy_forces(b, forces=False)
                loss = loss + (((e - store.e_scaled[sid]) / b.natoms) ** 2).sum()
            loss = loss / len(sids)
        else:
            b, aidx = store.batch(sids, derivatives=forces)
            e, f = pot.scaled_energy_forces(b, forces=forces, create_graph=True)
            loss = (((e - store.e_scaled[sids]) / b.natoms) ** 2).mean()
            if forces:
                loss = loss + 0.1 * ((f - store.f_scaled[aidx]) ** 2).mean()
        loss.backward()
        opt.step()


def time_mode(pot, store, forces, loop, epochs, bs, device) -> tuple[float, float]:
    opt = torch.optim.Adam(pot.net.parameters(), lr=1e-4)
    epoch(pot, store, opt, forces, bs, loop, seed=-1)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for k in range(epochs):
        epoch(pot, store, opt, forces, bs, loop, seed=k)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / epochs
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mb()
    return dt, mem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="oc20,aspirin")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-max", type=int, default=None, help="use only the first N structures")
    ap.add_argument("--cache", default="/tmp/mfhpo_bench_features")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    print(f"torch {torch.__version__}, threads {args.threads}, dtype {args.dtype}, batch {args.batch_size}, "
          f"model singlenn [64, 64] tanh, seed GMP setting (20 features, cutoff 8 Å)")
    print(f"{'dataset':8s} {'device':6s} {'mode':26s} {'s/epoch':>8s} {'struct/s':>9s} {'atoms/s':>9s} "
          f"{'vs base':>8s} {'peak MB':>8s}")
    for name in args.datasets.split(","):
        if not DATA[name].exists():
            print(f"{name}: {DATA[name]} not found, skipped")
            continue
        for device in args.devices.split(","):
            ds, pot, store, t_feat = build(name, device, dtype, Path(args.cache), args.n_max)
            n, na = store.n, store.n_atoms
            print(f"{name:8s} {device:6s} {'featurize (cache/compute)':26s} {t_feat:8.2f}   "
                  f"({n} structures, {na} atoms, {int(store.dfp.shape[0])} derivative pairs)")
            base, _ = time_mode(pot, store, False, True, max(1, args.epochs // 2), args.batch_size, device)
            rows = [("baseline: per-structure loop", base, None)]
            for label, forces in (("vectorised energy-only", False), ("vectorised + forces", True)):
                dt, mem = time_mode(pot, store, forces, False, args.epochs, args.batch_size, device)
                rows.append((label, dt, mem))
            for label, dt, mem in rows:
                print(f"{name:8s} {device:6s} {label:26s} {dt:8.3f} {n / dt:9.0f} {na / dt:9.0f} "
                      f"{base / dt:7.1f}x {'' if mem is None else f'{mem:8.0f}'}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
