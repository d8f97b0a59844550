"""Featurizer speed on OC20 (one CPU thread): atoms/s without and with derivatives, peak RSS, and the
cache speed-up. Compares with AMPTorch's C++ GMP measured on the same machine kind (spec 12.3).

    python benchmarks/featurize.py [--data PATH] [--setting PATH] [--n N] [--device cpu]

Wall and CPU (process) time are both printed: on a shared machine wall time includes waiting for
the CPU, CPU time does not.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

# AMPTorch master C++ (a_seed, OC20, 1 thread, this machine kind; gmp_spec.md section 12.3, median)
AMPTORCH_ATOMS_PER_S = {"no derivatives": 5100.0, "with derivatives": 2100.0}
TARGET_RATIO = 2.0
SHARED = Path(os.environ.get("MFHPO_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "data" / "oc20" / "oc20_train_569.traj"))
    ap.add_argument("--setting", default=str(SHARED / "fixtures" / "gmp" / "a_seed" / "setting.json"))
    ap.add_argument("--n", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import ase.io

    from mfhpo.gmp import FeatureCache, GMPSetting, featurize_many

    images = ase.io.read(args.data, ":")
    if args.n:
        images = images[: args.n]
    natoms = sum(len(a) for a in images)
    setting = GMPSetting.from_amptorch_json(args.setting)
    print(f"data: {args.data}: {len(images)} images, {natoms} atoms")
    print(f"setting: {args.setting}: {setting.describe()}")
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    featurize_many(images[:3], setting, derivatives=True, device=args.device)  # warm-up

    rows = []
    for label, der in (("no derivatives", False), ("with derivatives", True)):
        best = None
        for _ in range(args.repeats):
            feats, wall, cpu = timed(lambda: featurize_many(images, setting, derivatives=der, device=args.device))
            if best is None or wall < best[0]:
                best = (wall, cpu)
            del feats
        wall, cpu = best
        ref = AMPTORCH_ATOMS_PER_S[label]
        rows.append((label, natoms / wall, natoms / cpu, ref))
        print(f"{label:17s}: wall {wall:7.2f} s = {natoms / wall:8.0f} atoms/s (x{natoms / wall / ref:.2f} vs AMPTorch "
              f"{ref:.0f}) | cpu {cpu:7.2f} s = {natoms / cpu:8.0f} atoms/s (x{natoms / cpu / ref:.2f})")
    print(f"peak RSS after featurizing with derivatives: {peak_rss_gb():.2f} GB (limit 8 GB)")

    tmp = Path(tempfile.mkdtemp(prefix="mfhpo-cache-bench-"))
    try:
        cache = FeatureCache(tmp)
        _, w_fill, _ = timed(lambda: featurize_many(images, setting, derivatives=True, cache=cache, device=args.device))
        cache2 = FeatureCache(tmp)
        _, w_hit, _ = timed(lambda: featurize_many(images, setting, derivatives=True, cache=cache2, device=args.device))
        compute_wall = natoms / rows[1][1]
        print(f"cache (with derivatives): fill {w_fill:.2f} s, second pass {w_hit:.2f} s "
              f"({cache2.hits} hits, {cache2.misses} misses): x{compute_wall / w_hit:.1f} faster than computing "
              f"(target >= 20)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("summary (atoms/s wall | cpu | AMPTorch | ratio wall, cpu; target ratio >= 2):")
    for label, aw, ac, ref in rows:
        print(f"  {label:17s} {aw:8.0f} | {ac:8.0f} | {ref:6.0f} | x{aw / ref:.2f}, x{ac / ref:.2f}")
    print(f"  peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
