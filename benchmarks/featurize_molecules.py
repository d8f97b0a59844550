"""Featurization speed on small molecules for each chunk layout (docs/featurizer.md), measured in the
same run: the blocked layout with shared chunks (the CPU default, bitwise batch-independent), the
greedy layout with one structure per chunk (the earlier default, also bitwise batch-independent) and
the greedy layout with shared chunks (not batch-independent). CPU atoms per second, one thread.

    python benchmarks/featurize_molecules.py [--data PATH] [--n N] [--repeats R]

Default data: the shared rMD17 aspirin frames (21 atoms); descriptor: gmpordernorm orders 0-3,
10 sigmas 0.23-2.57 A, 7.7 A cutoff (the md17_aspirin_cpu2 incumbent's of 2026-11-22, one channel).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path

import torch
from ase.io import read

from mfhpo.config import DescriptorConfig
from mfhpo.gmp import FeaturizeOptions, GMPSetting, featurize_many

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "md17_aspirin" / "rmd17_aspirin_850.extxyz"


LAYOUTS = {"blocked, shared (default)": FeaturizeOptions(layout="blocked", share_chunks=True),
           "greedy, one per chunk": FeaturizeOptions(layout="greedy", share_chunks=False),
           "greedy, shared": FeaturizeOptions(layout="greedy", share_chunks=True)}


def cpu_time(images, setting, derivatives: bool, options: FeaturizeOptions, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        featurize_many(images, setting, derivatives=derivatives, options=options)
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data}: not found (pass --data)")
    torch.set_num_threads(1)
    images = read(args.data, index=f":{args.n}")
    sigmas = [0.2305, 0.3013, 0.3938, 0.5148, 0.673, 0.8797, 1.15, 1.5033, 1.9652, 2.569]
    desc = DescriptorConfig(scheme="gmpordernorm", orders={k: {} for k in range(4)}, sigmas=sigmas, cutoff=7.726)
    setting = GMPSetting.from_descriptor(desc, sorted({s for a in images for s in a.get_chemical_symbols()}))
    featurize_many(images[:5], setting, derivatives=True)  # warm-up: plan tables
    natoms = sum(len(a) for a in images)
    print(f"{len(images)} structures, {natoms} atoms, one CPU thread, process CPU time, best of {args.repeats}")
    for derivatives in (False, True):
        rates = {name: natoms / cpu_time(images, setting, derivatives, opt, args.repeats)
                 for name, opt in LAYOUTS.items()}
        ref = rates["greedy, one per chunk"]
        print(f"derivatives={derivatives!s:5}: " + "; ".join(f"{name} {r:7.0f} atoms/s (x{r / ref:.2f})"
                                                          for name, r in rates.items()))


if __name__ == "__main__":
    main()
