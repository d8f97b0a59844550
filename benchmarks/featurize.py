"""Featurizer speed on OC20 (one CPU thread): atoms/s without and with derivatives, peak RSS, and the
cache speed-up. Compares with AMPTorch's C++ GMP measured on the same machine kind.

    python benchmarks/featurize.py [--data PATH] [--setting PATH] [--n N] [--device cpu] [--repeats R]

Wall and CPU (process) time are both printed: on a shared machine wall time includes waiting for
the CPU, CPU time does not (it still includes slow-downs from cache/memory contention with other
processes, so compare runs taken under similar load).

The AMPTorch numbers are constants, not measured here: AMPTorch master C++ GMP on OC20, setting
a) seed (20 features, R_c 8 A), one thread, on this machine kind (AMD EPYC, 2 cores), median of 3 runs
of its AtomsToData wrapper path: gmp_spec.md section 12.3 (ranges 4,600-5,700 and 1,900-2,400 atoms/s).
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

AMPTORCH_ATOMS_PER_S = {False: 5100.0, True: 2100.0}  # gmp_spec.md 12.3 (constants, see above)
TARGET_RATIO = 2.0
CACHE_TARGET = 20.0
SHARED = Path(os.environ.get("MFHPO_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LABEL = {False: "no derivatives", True: "with derivatives"}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB


def timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def read_all(feats, der: bool) -> float:
    """Touch every value once (cache entries are read or memory-mapped lazily)."""
    return sum(float(f.fp.sum()) + (float(f.dfp.sum()) if der else 0.0) for f in feats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "data" / "oc20" / "oc20_train_569.traj"))
    ap.add_argument("--setting", default=str(SHARED / "fixtures" / "gmp" / "a_seed" / "setting.json"))
    ap.add_argument("--n", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="computations per mode; the fastest (CPU time) counts")
    ap.add_argument("--cache-dir", default=None, help="parent folder of the temporary cache (default: system tmp)")
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
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    featurize_many(images[:3], setting, derivatives=True, device=args.device)  # warm-up
    featurize_many(images[:3], setting, derivatives=False, device=args.device)

    rows = []
    for der in (False, True):
        best = None
        for _ in range(args.repeats):
            feats, wall, cpu = timed(featurize_many, images, setting, derivatives=der, device=args.device)
            if best is None or cpu < best[1]:
                best = (wall, cpu)
            if der:
                npair = sum(int(f.pair_i.shape[0]) for f in feats)
            del feats
        wall, cpu = best
        ref = AMPTORCH_ATOMS_PER_S[der]
        rows.append([der, wall, cpu])
        print(f"{LABEL[der]:17s}: wall {wall:7.2f} s = {natoms / wall:7.0f} atoms/s (x{natoms / wall / ref:.2f} vs "
              f"AMPTorch {ref:.0f}) | cpu {cpu:7.2f} s = {natoms / cpu:7.0f} atoms/s (x{natoms / cpu / ref:.2f})")
    print(f"peak RSS after featurizing with derivatives: {peak_rss_gb():.2f} GB (limit 8 GB; "
          f"{npair} unique (i, j) pairs)")

    tmp = Path(tempfile.mkdtemp(prefix="mfhpo-cache-bench-", dir=args.cache_dir))
    try:
        for row in rows:
            der, wall, cpu = row
            cache = FeatureCache(tmp)
            _, w_fill, c_fill = timed(featurize_many, images, setting, derivatives=der, cache=cache,
                                      device=args.device)
            cache2 = FeatureCache(tmp)
            hit, w_hit, c_hit = timed(featurize_many, images, setting, derivatives=der, cache=cache2,
                                      device=args.device)
            assert cache2.hits == len(images), cache2.stats()
            # entries are read or memory-mapped lazily: also time touching every value once
            _, w_touch, c_touch = timed(read_all, hit, der)
            del hit
            row += [w_hit + w_touch, c_hit + c_touch]
            print(f"cache ({LABEL[der]}): fill {w_fill:.2f} s wall / {c_fill:.2f} s cpu; second pass "
                  f"{w_hit:.3f} s wall / {c_hit:.3f} s cpu ({cache2.hits} hits), + reading every value "
                  f"{w_touch:.3f} s / {c_touch:.3f} s: x{wall / (w_hit + w_touch):.1f} (wall), "
                  f"x{cpu / (c_hit + c_touch):.1f} (cpu) faster than computing, values read "
                  f"(target >= {CACHE_TARGET:.0f}; lookup alone x{wall / w_hit:.0f} / x{cpu / c_hit:.0f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"summary ({natoms} atoms; AMPTorch = constants from gmp_spec.md 12.3; target ratio >= {TARGET_RATIO:g}):")
    print(f"  {'mode':17s} {'wall at/s':>9s} {'cpu at/s':>9s} {'AMPTorch':>8s} {'x wall':>6s} {'x cpu':>6s} "
          f"{'cache x wall':>12s} {'cache x cpu':>11s}  (cache: hit + reading every value)")
    for der, wall, cpu, w_hit, c_hit in rows:
        ref = AMPTORCH_ATOMS_PER_S[der]
        print(f"  {LABEL[der]:17s} {natoms / wall:9.0f} {natoms / cpu:9.0f} {ref:8.0f} {natoms / wall / ref:6.2f} "
              f"{natoms / cpu / ref:6.2f} {wall / w_hit:12.1f} {cpu / c_hit:11.1f}")
    print(f"  peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
