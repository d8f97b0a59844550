"""mfhpo's GMP featurizer against AMPTorch's own C++ GMP, measured alternately in one run, one thread each.

    OMP_NUM_THREADS=1 python benchmarks/featurize.py [--n N] [--settings a_seed,b_o4_allgroups]
        [--rounds R] [--cli] [--cache] [--amptorch DIR]

For every setting (``/work/shared/fixtures/gmp/<name>/setting.json``) and with / without derivatives,
each round runs mfhpo's library (in this process, ``featurize_many``) and then AMPTorch's harness
(``../shared/amptorch_gmp``: its GMP class and ``prepare_fingerprints``, the path AMPTorch's
AtomsToData takes; a fresh process under AMPTorch's venv, via ``featurize_amptorch_run.py`` so that
the time inside its C++ function is counted in CPU seconds) on the same first N images. Reported:
atoms per CPU-second (process CPU time: on a shared machine wall time includes waiting for a core,
CPU time does not) of mfhpo, of AMPTorch's whole path and of its C++ function alone, and the
ratios; best (least CPU) of the rounds for each tool, and every round's ratio.

``--cli`` also times whole processes with derivatives: ``mfhpo featurize --derivatives`` (start,
read, featurize, write the sparse file) against AMPTorch's harness process (start, read, featurize,
results in memory), on the same N images, alternately; CPU seconds from ``wait4`` per process,
wall seconds, peak RSS, and the file size.

``--cache``: the feature cache's second pass (hits + reading every value) against computing.

AMPTorch's build (``bash build.sh`` of ``../shared/amptorch_gmp``, outside this repository) is looked
up in ``--amptorch DIR`` / ``$AMPTORCH_GMP`` (a folder holding ``venv/`` and ``build/``), then in
``../shared/amptorch_gmp`` itself; without it the AMPTorch columns are skipped with a message.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MFHPO_SHARED", HERE.parents[1] / "shared"))
TARGETS = {True: {"whole": 5.0, "c": 3.0}, False: {"whole": 6.0}}
CLI_TARGET = 1.5
LABEL = {False: "no derivatives", True: "derivatives"}


def find_amptorch(explicit: str | None):
    """(venv python, harness script) of a built AMPTorch GMP, or None."""
    cands = [Path(explicit)] if explicit else []
    if os.environ.get("AMPTORCH_GMP"):
        cands.append(Path(os.environ["AMPTORCH_GMP"]))
    cands.append(SHARED / "amptorch_gmp")
    for c in cands:
        py, harness = c / "venv" / "bin" / "python", c / "build" / "amptorch_gmp.py"
        if py.exists() and harness.exists() and list((c / "build").rglob("_libgmp*")):
            return py, harness
    return None


# Runs ARGV and prints its own rusage as JSON on the last line of stderr. A launcher, because Linux
# keeps a process's peak RSS across fork + exec: a child forked straight from this (large) process
# would report at least this process's RSS.
_LAUNCHER = """import json, os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, ru = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss]), file=sys.stderr)
"""


def run_child(argv):
    """Run one process to completion: (stdout, wall s, CPU s, peak RSS GB) of that process alone."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, argv)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    err = p.stderr.rstrip().splitlines()
    code, cpu, maxrss = json.loads(err[-1]) if err and err[-1].startswith("[") else (p.returncode, 0.0, 0)
    if code != 0 or p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:3]))} ... failed ({code}):\n" + "\n".join(err[-30:]))
    return p.stdout, wall, cpu, maxrss / 2 ** 20


def amptorch_result(amp, setting_json: Path, data: Path, derivatives: bool) -> dict:
    py, harness = amp
    argv = [str(py), str(HERE / "featurize_amptorch_run.py"), str(harness), "--setting", str(setting_json),
            "--data", str(data)] + (["--derivatives"] if derivatives else [])
    out, wall, cpu, rss = run_child(argv)
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["process_wall_s"], res["process_cpu_s"], res["process_rss_gb"] = wall, cpu, rss
    return res


def mfhpo_time(images, setting, derivatives: bool, device: str):
    from mfhpo.gmp import featurize_many

    t0, c0 = time.perf_counter(), time.process_time()
    feats = featurize_many(images, setting, derivatives=derivatives, device=device)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    del feats
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "oc20" / "oc20_train_569.traj"))
    ap.add_argument("--settings", default="a_seed,b_o4_allgroups",
                    help="comma-separated fixture setting names or setting.json paths")
    ap.add_argument("--n", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (mfhpo, AMPTorch) per mode")
    ap.add_argument("--skip-plain", action="store_true", help="only the derivative mode")
    ap.add_argument("--cli", action="store_true", help="also time whole processes (mfhpo featurize vs AMPTorch)")
    ap.add_argument("--cache", action="store_true", help="also time the feature cache's second pass")
    ap.add_argument("--amptorch", default=None, help="folder with AMPTorch's venv/ and build/ (build.sh)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import ase.io

    from mfhpo.gmp import GMPSetting, featurize_many

    images = ase.io.read(args.data, ":")
    if args.n:
        images = images[: args.n]
    natoms = sum(len(a) for a in images)
    amp = find_amptorch(args.amptorch)
    tmp = Path(tempfile.mkdtemp(prefix="mfhpo-featurize-bench-"))
    try:
        data = tmp / "images.traj"  # both tools read the same N images
        ase.io.write(str(data), images)
        print(f"data: {args.data}: first {len(images)} images, {natoms} atoms; device {args.device}, "
              f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
              f"load average {os.getloadavg()[0]:.1f}")
        if amp is None:
            print("AMPTorch: no build found (bash ../shared/amptorch_gmp/build.sh with AMPTORCH_VENV/AMPTORCH_BUILD "
                  "outside the repository, then --amptorch DIR or AMPTORCH_GMP=DIR): AMPTorch columns skipped")
        else:
            print(f"AMPTorch: {amp[0]} {amp[1]}")
        summary = []
        for name in args.settings.split(","):
            sj = Path(name) if name.endswith(".json") else SHARED / "fixtures" / "gmp" / name / "setting.json"
            setting = GMPSetting.from_amptorch_json(sj)
            print(f"\nsetting {sj.parent.name}: {setting.describe()}")
            featurize_many(images[:2], setting, derivatives=True, device=args.device)  # plan tables, warm-up
            modes = [True] if args.skip_plain else [False, True]
            for der in modes:
                best_m, best_a = None, None
                for r in range(args.rounds):
                    wall, cpu = mfhpo_time(images, setting, der, args.device)
                    best_m = min(best_m or (cpu, wall), (cpu, wall))
                    msg = f"  {LABEL[der]:14s} round {r + 1}: mfhpo {natoms / cpu:8.0f} atoms/cpu-s ({cpu:.2f} s cpu, {wall:.2f} s wall)"
                    if amp is not None:
                        res = amptorch_result(amp, sj, data, der)
                        if best_a is None or res["featurize_cpu_s"] < best_a["featurize_cpu_s"]:
                            best_a = res
                        msg += (f" | AMPTorch {res['atoms_per_cpu_s']:7.0f} whole, {res['c_only_atoms_per_s']:7.0f} C++ "
                                f"atoms/cpu-s: x{natoms / cpu / res['atoms_per_cpu_s']:.2f} / "
                                f"x{natoms / cpu / res['c_only_atoms_per_s']:.2f}")
                    print(msg + f" (load {os.getloadavg()[0]:.1f})", flush=True)
                summary.append((sj.parent.name, der, natoms / best_m[0], best_a))
        if args.cli:
            print("\nwhole processes, derivatives (mfhpo featurize writes the sparse .npz; AMPTorch keeps results in memory):")
            for name in args.settings.split(","):
                sj = Path(name) if name.endswith(".json") else SHARED / "fixtures" / "gmp" / name / "setting.json"
                out = tmp / "out.npz"
                best = {}
                for r in range(args.rounds):
                    argv = [sys.executable, "-m", "mfhpo.cli", "featurize", str(data), "--setting", str(sj),
                            "--out", str(out), "--derivatives", "--device", args.device]
                    _, wall, cpu, rss = run_child(argv)
                    size = out.stat().st_size
                    line = (f"  {sj.parent.name:16s} round {r + 1}: mfhpo featurize {wall:6.2f} s wall {cpu:6.2f} s cpu "
                            f"{rss:.2f} GB peak, file {size / 1e6:.0f} MB")
                    best["m"] = min(best.get("m", (cpu, wall)), (cpu, wall))
                    if amp is not None:
                        res = amptorch_result(amp, sj, data, True)
                        best["a"] = min(best.get("a", (res["process_cpu_s"], res["process_wall_s"])),
                                        (res["process_cpu_s"], res["process_wall_s"]))
                        line += (f" | AMPTorch process {res['process_wall_s']:6.2f} s wall {res['process_cpu_s']:6.2f} s cpu: "
                                 f"{res['process_rss_gb']:.2f} GB peak: x{res['process_cpu_s'] / cpu:.2f} cpu, x{res['process_wall_s'] / wall:.2f} wall")
                    print(line, flush=True)
                if "a" in best:
                    summary.append((sj.parent.name, "cli", best["a"][0] / best["m"][0], best["a"][1] / best["m"][1]))
        if args.cache:
            cache_speed(images, args, tmp)
        print(f"\nsummary ({len(images)} images, {natoms} atoms; best of {args.rounds} rounds each, atoms per CPU-second):")
        print(f"  {'setting':16s} {'mode':14s} {'mfhpo':>8s} {'AMPTorch':>9s} {'C++ only':>9s} {'x whole':>8s} {'x C++':>7s}  targets")
        for row in summary:
            if row[1] == "cli":
                print(f"  {row[0]:16s} {'CLI process':14s} {'':8s} {'':9s} {'':9s} {row[2]:8.2f} {'':7s}  "
                      f">= {CLI_TARGET:g} (cpu; wall x{row[3]:.2f})")
                continue
            name, der, ours, a = row
            t = TARGETS[der]
            if a is None:
                print(f"  {name:16s} {LABEL[der]:14s} {ours:8.0f}   (AMPTorch skipped: no build)")
                continue
            xw, xc = ours / a["atoms_per_cpu_s"], ours / a["c_only_atoms_per_s"]
            tgt = f">= {t['whole']:g} whole" + (f", >= {t['c']:g} C++" if "c" in t else "")
            print(f"  {name:16s} {LABEL[der]:14s} {ours:8.0f} {a['atoms_per_cpu_s']:9.0f} {a['c_only_atoms_per_s']:9.0f} "
                  f"{xw:8.2f} {xc:7.2f}  {tgt}")
        print(f"  peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_speed(images, args, tmp: Path) -> None:
    from mfhpo.gmp import FeatureCache, GMPSetting, featurize_many

    name = args.settings.split(",")[0]
    sj = Path(name) if name.endswith(".json") else SHARED / "fixtures" / "gmp" / name / "setting.json"
    setting = GMPSetting.from_amptorch_json(sj)
    for der in (False, True):
        root = tmp / f"cache-{der}"
        t = time.process_time()
        featurize_many(images, setting, derivatives=der, device=args.device)
        compute = time.process_time() - t
        featurize_many(images, setting, derivatives=der, cache=FeatureCache(root), device=args.device)
        cache = FeatureCache(root)
        t = time.process_time()
        hit = featurize_many(images, setting, derivatives=der, cache=cache, device=args.device)
        total = sum(float(f.fp.sum()) + (float(f.dfp.sum()) if der else 0.0) for f in hit)  # touch every value
        second = time.process_time() - t
        assert cache.hits == len(images) and math.isfinite(total)
        print(f"cache ({sj.parent.name}, {LABEL[der]}): second pass incl. reading every value {second:.3f} s cpu vs "
              f"computing {compute:.3f} s: x{compute / second:.1f} (target >= 20)")


if __name__ == "__main__":
    main()
