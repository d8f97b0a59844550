"""Time and peak memory of featurizing with 1, 2 and 3 density channels (one pass for all channels),
each count in a fresh process, one thread, with derivatives, float64, results held in memory.

    OMP_NUM_THREADS=1 python benchmarks/featurize_channels.py [--n N] [--setting a_seed] [--per-channel]

Channels: the first 1, 2, 3 of valence, count, period (docs/featurizer.md). ``--per-channel`` also
times, in separate processes, one full featurizer pass per channel (``featurize_many`` on each
channel's single-channel setting, blocks concatenated: what one pass replaces), for the time ratio.
Peak memory is the process's peak RSS (``ru_maxrss``), interpreter and torch included.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("MFHPO_SHARED", HERE.parents[1] / "shared"))
CHANNELS = ("valence", "count", "period")
MEMORY_TARGET_GB = 4.0


def child(args) -> None:
    import resource
    import time
    from dataclasses import replace

    import ase.io
    import torch

    from mfhpo.gmp import GMPSetting, featurize_many

    torch.set_num_threads(1)
    images = ase.io.read(args.data, f":{args.n}" if args.n else ":")
    base = GMPSetting.from_amptorch_json(args.setting_json)
    setting = replace(base, channels=CHANNELS[:args.child])
    featurize_many(images[:2], setting, derivatives=True)  # plan tables
    out = {"channels": args.child, "images": len(images), "atoms": sum(len(a) for a in images),
           "nfeat": setting.nfeat}
    t0, c0 = time.perf_counter(), time.process_time()
    if args.mode == "per-channel":  # what one pass replaces: a full pass per channel, blocks concatenated
        from mfhpo.gmp.featurizer import _concat_channels

        parts = [featurize_many(images, sub, derivatives=True) for sub in setting.channel_settings()]
        feats = [_concat_channels(p) for p in zip(*parts)]
        del parts
    else:
        feats = featurize_many(images, setting, derivatives=True)
    out["cpu_s"], out["wall_s"] = time.process_time() - c0, time.perf_counter() - t0
    out["result_gb"] = sum(f.fp.nbytes + f.dfp.nbytes + f.pair_i.nbytes + f.pair_j.nbytes for f in feats) / 2 ** 30
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "oc20" / "oc20_train_569.traj"))
    ap.add_argument("--setting", default="a_seed", help="fixture setting name or setting.json path")
    ap.add_argument("--n", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--counts", default="1,2,3")
    ap.add_argument("--per-channel", action="store_true", help="also time one pass per channel (same process)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="one-pass", help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = args.setting
    args.setting_json = s if s.endswith(".json") else str(SHARED / "fixtures" / "gmp" / s / "setting.json")
    if args.child:
        child(args)
        return
    print(f"data {args.data} (first {args.n or 'all'} images), setting {args.setting_json}, derivatives, float64, "
          f"one thread, load average {os.getloadavg()[0]:.1f}")
    rows = []

    def run(k: int, mode: str) -> dict:
        argv = [sys.executable, __file__, "--child", str(k), "--mode", mode, "--data", args.data,
                "--setting", args.setting, "--n", str(args.n)]
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"{k} channels ({mode}) failed:\n{p.stderr[-3000:]}")
        return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])

    for k in (int(c) for c in args.counts.split(",")):
        r = run(k, "one-pass")
        msg = (f"{k} channel(s) ({', '.join(CHANNELS[:k])}; {r['nfeat']} features): one pass {r['cpu_s']:.2f} s cpu "
               f"{r['wall_s']:.2f} s wall = {r['atoms'] / r['cpu_s']:.0f} atoms/cpu-s; results {r['result_gb']:.2f} GB, "
               f"peak RSS {r['peak_rss_gb']:.2f} GB")
        if args.per_channel and k > 1:
            q = run(k, "per-channel")
            r["per"] = q
            msg += (f" | one pass per channel: {q['cpu_s']:.2f} s cpu, peak RSS {q['peak_rss_gb']:.2f} GB "
                    f"(one pass x{q['cpu_s'] / r['cpu_s']:.2f} faster)")
        rows.append(r)
        print(msg, flush=True)
    print(f"\nsummary ({rows[0]['images']} images, {rows[0]['atoms']} atoms; peak memory target for 3 channels "
          f"<= {MEMORY_TARGET_GB:g} GB):")
    print(f"  {'channels':>8s} {'cpu s':>7s} {'wall s':>7s} {'atoms/cpu-s':>11s} {'results GB':>10s} {'peak RSS GB':>11s}"
          + ("   per-channel passes: cpu s, peak GB, x" if args.per_channel else ""))
    for r in rows:
        line = (f"  {r['channels']:8d} {r['cpu_s']:7.2f} {r['wall_s']:7.2f} {r['atoms'] / r['cpu_s']:11.0f} "
                f"{r['result_gb']:10.2f} {r['peak_rss_gb']:11.2f}")
        if "per" in r:
            q = r["per"]
            line += f"   {q['cpu_s']:7.2f} {q['peak_rss_gb']:6.2f} {q['cpu_s'] / r['cpu_s']:5.2f}"
        print(line)


if __name__ == "__main__":
    main()
