"""Worker utilisation of mfhpo's dispatcher: N local Dask workers, toy trials of ~T seconds, SMAC
multi-fidelity asking/telling in the loop. Prints the busy fraction = (sum of trial run times) /
(workers x wall time from the first submission to the last result), next to the ideal.

    python benchmarks/dispatch_utilization.py                 # 4 workers, 5 s trials, 40 trials
    python benchmarks/dispatch_utilization.py --workers 4 --trial-s 5 --trials 40 --prefetch 2

The baseline in the same run is "prefetch 0" behaviour emulated by --compare: asking synchronously
after each result (prefetch=1 but ask latency on the critical path is what the thread removes).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def sleep_trial(spec: dict) -> dict:
    t0 = time.perf_counter()
    time.sleep(spec["sleep_s"])
    dt = time.perf_counter() - t0
    return {"status": "SUCCESS", "cost": (spec["x"] - 0.3) ** 2 + 1.0 / spec["budget"], "wall_s": dt}


def run(workers: int, trial_s: float, n_trials: int, prefetch: int, out: Path) -> dict:
    import dask
    from ConfigSpace import ConfigurationSpace, Float, Integer
    from distributed import Client, LocalCluster
    from smac.runhistory import TrialValue

    from mfhpo.study.dispatcher import Dispatcher, local_slots
    from mfhpo.study.optimizers import make_optimizer

    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    cs = ConfigurationSpace(seed=0)
    cs.add([Float("x", (0, 1)), Integer("n", (8, 256), log=True), Float("lr", (1e-4, 1e-1), log=True),
            Integer("layers", (1, 4))])
    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=9, eta=3, seed=0, output_dir=out, n_trials=100000,
                         initial_design=5)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", resources={"trial": 1})
    client = Client(cluster)
    started = []
    results = []

    def prepare(info, cid):
        tid = len(started) + 1
        started.append(time.time())
        return {"sleep_s": trial_s, "x": float(info.config["x"]), "budget": opt.budget_of(info)}, {"trial_id": tid}

    def finish(p, result, error):
        results.append((time.time(), result))
        return TrialValue(cost=result["cost"] if result else 1000.0)

    def may_start(n_active):
        return len(results) + n_active < n_trials

    try:
        client.wait_for_workers(workers)
        disp = Dispatcher(client, opt, sleep_trial, prepare=prepare, finish=finish, may_start=may_start,
                          n_slots=lambda: local_slots(client), prefetch=prefetch)
        summary = disp.run()
    finally:
        client.close()
        cluster.close()
    wall = max(t for t, _ in results) - min(started)
    busy = sum(r["wall_s"] for _, r in results if r)
    return {"workers": workers, "trial_s": trial_s, "trials": len(results), "prefetch": prefetch, "wall_s": wall,
            "busy_fraction": busy / (workers * wall), "ideal_wall_s": n_trials * trial_s / workers,
            "ask_s": summary["ask_s"], "tell_s": summary["tell_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--trial-s", type=float, default=5.0)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--prefetch", type=int, default=1)
    ap.add_argument("--compare", action="store_true", help="also run prefetch 1 vs 2 vs workers")
    a = ap.parse_args()
    settings = [a.prefetch] if not a.compare else sorted({1, 2, a.workers})
    for pf in settings:
        out = Path(tempfile.mkdtemp(prefix="mfhpo_util_"))
        try:
            r = run(a.workers, a.trial_s, a.trials, pf, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(f"workers {r['workers']}, trial {r['trial_s']:g} s, {r['trials']} trials, prefetch {r['prefetch']}: "
              f"wall {r['wall_s']:.1f} s (ideal {r['ideal_wall_s']:.1f} s), busy fraction {r['busy_fraction']:.3f} "
              f"(ratio to ideal {r['ideal_wall_s'] / r['wall_s']:.3f}); SMAC ask {r['ask_s']:.1f} s, tell {r['tell_s']:.1f} s "
              f"(in the optimizer thread)", flush=True)


if __name__ == "__main__":
    main()
