"""One GPU check (run by benchmarks/gpu_check.sh): GMP featurization speed on the GPU against one CPU
core, SingleNN training throughput on cached features (energy-only and with forces), and a 2-trial
study whose trial runs on the GPU worker. Data: OC20 (../shared/data/oc20/oc20_train_569.traj)
when present, otherwise generated EMT slabs (mfhpo.demo). Each part prints its result and target.

    python benchmarks/gpu_check.py                 # on a machine with CUDA: <= 8 minutes
    python benchmarks/gpu_check.py --cpu --quick   # the CPU path with tiny sizes (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OC20 = Path(os.environ.get("MFHPO_SHARED", REPO.parent / "shared")) / "data/oc20/oc20_train_569.traj"
GMP_TARGET = 50.0  # GPU vs one CPU core
TRAIN_TARGET = 20000.0  # OC20 structures/s per epoch, energy-only


def dataset_file(workdir: Path, n_emt: int, oc20: bool = True) -> tuple[Path, str]:
    if oc20 and OC20.exists():
        return OC20, "OC20 oc20_train_569.traj"
    from mfhpo.demo import write_demo

    path = workdir / f"emt_{n_emt}.extxyz"
    if not path.exists():
        write_demo(path, n_structures=n_emt, seed=0)
    return path, f"generated EMT slabs ({n_emt}; OC20 not found at {OC20})"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gmp_speed(images, device: str, n_cpu: int, repeats: int) -> None:
    """Seed GMP setting; atoms/s on ``device`` (all images) against one CPU thread (first n_cpu)."""
    from mfhpo.config import DescriptorConfig
    from mfhpo.gmp import GMPSetting, featurize_many

    elements = sorted({s for a in images for s in a.get_chemical_symbols()})
    setting = GMPSetting.from_descriptor(DescriptorConfig(), elements)
    cpu_images = images[:n_cpu]
    n_atoms = sum(len(a) for a in images)
    n_atoms_cpu = sum(len(a) for a in cpu_images)
    threads = torch.get_num_threads()
    for deriv in (False, True):
        torch.set_num_threads(1)
        featurize_many(cpu_images[:1], setting, derivatives=deriv, device="cpu")
        t = time.perf_counter()
        featurize_many(cpu_images, setting, derivatives=deriv, device="cpu")
        cpu_rate = n_atoms_cpu / (time.perf_counter() - t)
        torch.set_num_threads(threads)
        featurize_many(images[:4], setting, derivatives=deriv, device=device)  # warm-up (kernels, allocator)
        sync(device)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            featurize_many(images, setting, derivatives=deriv, device=device)
            sync(device)
            best = min(best, time.perf_counter() - t)
        rate = n_atoms / best
        label = "with derivatives" if deriv else "no derivatives"
        print(f"gmp {label:16s}: {device} {rate:10.0f} atoms/s ({len(images)} structures, best of {repeats}); "
              f"one CPU core {cpu_rate:8.0f} atoms/s ({len(cpu_images)} structures); "
              f"ratio x{rate / cpu_rate:.1f} (target >= {GMP_TARGET:g}x on a GPU)", flush=True)


def training_throughput(data: Path, device: str, n_max: int | None, epochs: int, batch_sizes: list[int],
                        cache: Path) -> None:
    """benchmarks/train.py's FeatureStore epochs on ``data``: energy-only and with forces."""
    sys.path.insert(0, str(HERE))
    import train as bench_train

    bench_train.DATA["check"] = data
    ds, pot, store, t_feat = bench_train.build("check", device, torch.float32, cache, n_max)
    print(f"train: {store.n} structures, {store.n_atoms} atoms on {device}; features {t_feat:.1f} s "
          f"(computed once on the CPU, then cached)", flush=True)
    for bs in batch_sizes:
        for label, forces in (("energy-only", False), ("with forces", True)):
            dt, mem = bench_train.time_mode(pot, store, forces, False, epochs, bs, device)
            target = f" (target >= {TRAIN_TARGET:g} OC20 structures/s on a GPU)" if not forces else ""
            print(f"train {label:11s} batch {bs:4d}: {store.n / dt:10.0f} structures/s per epoch, "
                  f"{store.n_atoms / dt:11.0f} atoms/s, {dt * 1e3:8.1f} ms/epoch, peak {mem:.0f} MB{target}",
                  flush=True)


def two_trial_study(data: Path, workdir: Path, cpu: bool, quick: bool) -> int:
    """`mfhpo run` with 2 trials on the local cluster (one worker per GPU; --cpu: one CPU worker)."""
    study = {
        "name": "gpu_check",
        "seed": 0,
        "data": {"train": str(data), "val_fraction": 0.2},
        "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": 1.0},
        "space": {"nodes": {"low": 16, "high": 64, "log": True}, "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                  "num_layers": 2, "batch_size": 32, "max_order": 2, "sigma_count": 3},
        "fidelity": {"min_budget": 1, "max_budget": 3, "eta": 3,
                     "epochs": {"min": 1 if quick else 5, "max": 3 if quick else 15}},
        "budget": {"trials": 2},
        "optimizer_options": {"initial_design": 2},
        "cluster": {"kind": "local", "workers": 1, "dashboard_port": 0, **({"gpus": []} if cpu else {})},
    }
    path = workdir / "gpu_check.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    rundir = workdir / "run"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mfhpo.cli", "run", str(path), "--rundir", str(rundir)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        print(f"study: mfhpo run failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}", flush=True)
        return 1
    ok = 0
    for tj in sorted((rundir / "trials").glob("*/trial.json")):
        rec = json.loads(tj.read_text())
        ok += rec["status"] == "SUCCESS"
        print(f"study trial {rec['trial_id']}: {rec['status']}, device {rec.get('device')}, worker {rec.get('worker')}, "
              f"budget {rec['budget']:g}, cost {rec.get('cost')}, {(rec.get('timings') or {}).get('total_s', 0):.1f} s",
              flush=True)
    print(f"study: {ok}/2 trials SUCCESS in {wall:.0f} s (mfhpo run, whole process)", flush=True)
    return 0 if ok == 2 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="CPU path (no CUDA needed)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    ap.add_argument("--parts", default="gmp,train,study")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args(argv)
    device = "cpu" if a.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); use --cpu", flush=True)
        return 2
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="mfhpo_gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    data, what = dataset_file(workdir, 12 if a.quick else 400, oc20=not a.quick)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"gpu_check: device {device} ({name}), torch {torch.__version__}, data {what}", flush=True)
    from mfhpo.data import load_dataset

    ds = load_dataset(data)
    parts = set(a.parts.split(","))
    rc = 0
    if "gmp" in parts:
        images = ds.images[:4] if a.quick else ds.images[:300]
        gmp_speed(images, device, n_cpu=2 if a.quick else 30, repeats=1 if a.quick else 3)
    if "train" in parts:
        training_throughput(data, device, n_max=8 if a.quick else None, epochs=1 if a.quick else 5,
                            batch_sizes=[4] if a.quick else [32, 256], cache=workdir / "feature_cache")
    if "study" in parts:
        rc |= two_trial_study(data, workdir, a.cpu, a.quick)
    print(f"gpu_check: done (exit {rc})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
