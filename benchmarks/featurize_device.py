"""GMP featurizer speed on a torch device (a GPU) against one CPU core, measured in the same run.

    python benchmarks/featurize_device.py [--device cuda] [--n 300] [--cpu-n 60] [--setting a_seed]
        [--data FILE] [--repeats 2]

The CPU baseline is mfhpo's own featurizer on one thread (``torch.set_num_threads(1)``), process CPU
time, on the first ``--cpu-n`` images; the device runs ``featurize_many(..., device=DEVICE)`` on the
first ``--n`` images (wall time, synchronised; plan tables and CUDA initialisation in a warm-up
call first), with and without derivatives, float64. Speeds are atoms per second, so the two image
counts need not match. It also checks that the device features agree with the CPU ones (max relative
difference per column maximum) on the CPU images. The last line is ``RESULT {json}`` (per mode:
cpu and device atoms/s, the ratio, the agreement) for scripts such as ``benchmarks/gpu_check.sh``.
``--device cpu`` runs the same path on the CPU (ratio ~1: a check that the script works).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MFHPO_SHARED", HERE.parents[1] / "shared"))
TARGET = 50.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:1, cpu or auto (cuda when available)")
    ap.add_argument("--data", default=str(SHARED / "data" / "oc20" / "oc20_train_569.traj"))
    ap.add_argument("--setting", default="a_seed", help="fixture setting name or setting.json path")
    ap.add_argument("--n", type=int, default=300, help="images on the device (0: all)")
    ap.add_argument("--cpu-n", type=int, default=60, help="images for the one-core CPU baseline")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the fastest counts")
    ap.add_argument("--modes", default="plain,derivatives")
    args = ap.parse_args()

    import ase.io
    import numpy as np
    import torch

    from mfhpo.gmp import GMPSetting, featurize_many
    from mfhpo.device import resolve_device

    dev = resolve_device(args.device)
    sj = Path(args.setting) if args.setting.endswith(".json") else SHARED / "fixtures" / "gmp" / args.setting / "setting.json"
    setting = GMPSetting.from_amptorch_json(sj)
    images = ase.io.read(args.data, ":")
    dev_images = images[: args.n] if args.n else images
    cpu_images = images[: args.cpu_n] if args.cpu_n else images
    n_dev, n_cpu = sum(len(a) for a in dev_images), sum(len(a) for a in cpu_images)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"setting {sj}: {setting.describe()}")
    print(f"device {dev} ({name}): {len(dev_images)} images, {n_dev} atoms; CPU baseline one thread: "
          f"{len(cpu_images)} images, {n_cpu} atoms; torch {torch.__version__}")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    result = {"device": str(dev), "device_name": name, "setting": sj.parent.name, "device_images": len(dev_images),
              "device_atoms": n_dev, "cpu_images": len(cpu_images), "cpu_atoms": n_cpu, "target": TARGET}
    threads = torch.get_num_threads()
    for mode in args.modes.split(","):
        der = mode == "derivatives"
        torch.set_num_threads(1)
        featurize_many(cpu_images[:2], setting, derivatives=der)  # plan tables
        cpu_s, ref = float("inf"), None
        for _ in range(args.repeats):
            c0 = time.process_time()
            ref = featurize_many(cpu_images, setting, derivatives=der)
            cpu_s = min(cpu_s, time.process_time() - c0)
        torch.set_num_threads(threads)
        featurize_many(dev_images[:4], setting, derivatives=der, device=dev)  # warm-up: CUDA context, plan, kernels
        sync()
        dev_s = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            feats = featurize_many(dev_images, setting, derivatives=der, device=dev)
            sync()
            dev_s = min(dev_s, time.perf_counter() - t0)
            del feats
        got = featurize_many(cpu_images, setting, derivatives=der, device=dev)
        err = 0.0
        for a, b in zip(ref, got):
            fa, fb = a.fp.numpy(), b.fp.cpu().numpy()
            err = max(err, float((np.abs(fa - fb) / np.maximum(np.abs(fa).max(0), 1e-300)).max()))
            if der:
                da, db = a.dfp.numpy(), b.dfp.cpu().numpy()
                if da.shape != db.shape:
                    err = float("inf")
                else:
                    err = max(err, float(np.abs(da - db).max() / max(np.abs(da).max(), 1e-300)))
        cpu_rate, dev_rate = n_cpu / cpu_s, n_dev / dev_s
        result[mode] = {"cpu_atoms_per_s": round(cpu_rate, 1), "device_atoms_per_s": round(dev_rate, 1),
                        "ratio": round(dev_rate / cpu_rate, 2), "max_rel_diff": err}
        print(f"{mode:12s}: one CPU core {cpu_rate:9.0f} atoms/s ({cpu_s:.2f} s cpu) | {dev} {dev_rate:10.0f} atoms/s "
              f"({dev_s:.3f} s wall): x{dev_rate / cpu_rate:.1f} (target >= {TARGET:g}); device vs CPU max rel. "
              f"difference {err:.1e}", flush=True)
    if dev.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
