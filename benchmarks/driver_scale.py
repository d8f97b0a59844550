"""The study driver at scale: mfhpo's real study loop against many simulated workers.

What is real: ``StudyRun`` (mfhpo.study.runner) with its SMAC multi-fidelity optimizer (ask/tell in
the optimizer thread), the dispatcher, Dask futures on a real ``LocalCluster``, the run directory
(trial folders, trial.json, config.yaml, state.json, trials.csv, SMAC's state files) and the worker
function ``run_trial`` (toy objective). What is simulated: the workers are threads of this process
(``processes=False``; 16 threads per Dask worker, Dask resource ``trial`` per thread) and a trial
sleeps for a duration drawn from a log-normal distribution (sigma ``--sigma``) around a compressed
mean ``T_c = workers / --rate`` seconds, so the driver sees ``--rate`` results per second.

    python benchmarks/driver_scale.py                                  # 16/64/256 workers, 5,000 trials
    python benchmarks/driver_scale.py --workers 16 --trials 50 100     # a quick look
    python benchmarks/driver_scale.py --workers 64 --trials 100 1000 --baseline   # also the old state writes

Printed per worker count and window of trials (the trials finished since the previous checkpoint):

* ``util``: busy slot-seconds / (slots x window wall time) in compressed time (the last window ends at
  the last submission: the final trials draining at the end of a study are not the driver's doing);
* ``idle/trial``: idle slot-seconds per finished trial, ``g = T_c (1/util - 1)`` (driver latency
  between a result and the next trial on that slot, queueing behind other results and asks included);
* ``util@T``: utilisation with real trials of mean ``T = --real-trial-min`` minutes, bounded below by
  ``T / (T + g)``. The driver's costs (SMAC, file writes, Dask) do not shrink with compression, and a
  compressed run delivers results ``T / T_c`` times faster than the real study, so its queueing (and
  so ``g``) can only be larger: the bound is conservative. (This machine's other load only adds to g.)
* ``ask``: SMAC ``ask()`` (optimizer thread) median / 95th percentile / mean;
* ``tell+write``: per trial, SMAC ``tell()`` (with its state files when due) + recording the result
  (trial.json, trials.csv line, state.json when due), median / mean;
* ``driver/trial``: ask + prepare and submit + tell + record for the same trial index, median / mean;
  all of these are wall-clock times; the last columns give the same sums in the calling threads' CPU
  time (``time.thread_time``), which leaves out waiting for the GIL and for the machine's CPUs;
* ``old write``: what the study loop wrote on every result before trials.csv became append-only and
  SMAC's state writes periodic: a full trials.csv rewrite (timed here at the checkpoint) plus SMAC's
  full runhistory.json save at that many trials (SMAC's own ``RunHistory.save``, timed after the run);
* ``rss``: resident memory of this process (driver + the simulated workers' threads) at the checkpoint.

``--baseline`` adds a run per worker count with the old behaviour (SMAC state saved after every tell,
trials.csv rewritten in full after every trial) and prints both runs' per-trial cost ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mfhpo.study.clusters import ClusterHandle  # noqa: E402
from mfhpo.study.config import load_study  # noqa: E402
from mfhpo.study.objective import run_trial  # noqa: E402
from mfhpo.study.rundir import RunDir  # noqa: E402
from mfhpo.study.runner import StudyRun  # noqa: E402
from mfhpo.study.trial import TrialResult, TrialSpec  # noqa: E402

THREADS_PER_WORKER = 16

# the demo study's 13-parameter space (spaces/demo.yaml), 4 Hyperband rungs, toy objective
STUDY = {
    "name": "driver_scale",
    "seed": 0,
    "data": {"train": "demo", "demo_structures": 12},
    "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae_free", "force_weight": 1.0},
    "space": {
        "max_order": {"low": 1, "high": 2}, "groups_2": {"choices": [[1], [1, 2]]},
        "sigma_count": {"low": 2, "high": 4}, "sigma_min": {"low": 0.2, "high": 0.6, "log": True},
        "sigma_max": {"low": 1.0, "high": 2.5}, "sigma_spacing": "log", "cutoff": {"low": 4.0, "high": 6.0},
        "cutoff_function": {"choices": ["hard", "cosine"]}, "num_layers": {"low": 1, "high": 2},
        "nodes": {"low": 8, "high": 32, "log": True}, "activation": {"choices": ["tanh", "silu"]},
        "lr": {"low": 1.0e-3, "high": 2.0e-2, "log": True}, "batch_size": {"low": 8, "high": 32, "log": True},
        "scheduler": "none", "loss": "mse", "force_coefficient": {"low": 1.0, "high": 30.0, "log": True},
    },
    "fidelity": {"min_budget": 1, "max_budget": 27, "eta": 3, "epochs": {"min": 4, "max": 108},
                 "subset": {"min": 0.5, "max": 1.0, "saturate_at": 9}},
    "budget": {"trials": 100},
    "objective": "toy",
    "cluster": {"kind": "local", "dashboard_port": 0},
}


# --------------------------------------------------------------------------------------------
# simulated workers
# --------------------------------------------------------------------------------------------


@dataclass
class Sim:
    """Shared between the driver and the simulated trials (all threads of this process)."""

    slots: int
    mean_s: float
    sigma: float
    intervals: list = field(default_factory=list)  # (start, end) of every trial, time.time()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def duration(self, trial_id: int) -> float:
        z = np.random.default_rng(trial_id).standard_normal()
        return self.mean_s * math.exp(self.sigma * z - 0.5 * self.sigma ** 2)


SIM: Sim | None = None


def simulated_trial(spec: TrialSpec) -> TrialResult:
    """The real worker function on the toy objective, sleeping for the drawn duration."""
    assert SIM is not None
    spec = dataclasses.replace(spec, toy={**spec.toy, "sleep_fixed_s": SIM.duration(spec.trial_id), "sleep_s": 0.0})
    t0 = time.time()
    out = run_trial(spec)
    t1 = time.time()
    with SIM.lock:
        SIM.intervals.append((t0, t1))
    return out


class SimulatedHandle(ClusterHandle):
    """A ClusterHandle whose workers hold several trial slots each (one per thread)."""

    def n_slots(self) -> int:
        if self._closed:
            return 0
        info = self.client.scheduler_info(n_workers=-1)
        return int(sum(w.get("resources", {}).get("trial", 0) for w in info.get("workers", {}).values()
                       if w.get("status", "running") == "running"))


def start_simulated_cluster(ccfg, slots: int) -> SimulatedHandle:
    from distributed import Client, LocalCluster

    n_workers = max(1, math.ceil(slots / THREADS_PER_WORKER))
    per = [THREADS_PER_WORKER] * (n_workers - 1) + [slots - THREADS_PER_WORKER * (n_workers - 1)]
    cluster = LocalCluster(n_workers=0, processes=False, memory_limit=0, scheduler_kwargs={"dashboard": False})
    from distributed import Worker

    for i, n in enumerate(per):
        cluster.worker_spec[f"sim{i}"] = {"cls": Worker, "options": {"nthreads": n, "resources": {"trial": n},
                                                                      "memory_limit": 0}}
    cluster.sync(cluster._correct_state)
    client = Client(cluster)
    client.wait_for_workers(n_workers, timeout=120)
    return SimulatedHandle(ccfg, cluster, client)


class FullWriteRunDir(RunDir):
    """The old behaviour: trials.csv rewritten in full after every trial."""

    def append_table_row(self, rec, records) -> None:
        self.write_table(records)


class SimulatedStudyRun(StudyRun):
    trial_fn = staticmethod(simulated_trial)

    def __init__(self, *a, slots: int, checkpoints: list[int], real_s: float, tag: str = "", **k):
        super().__init__(*a, **k)
        self.slots = slots
        self.real_s = real_s
        self.tag = tag
        self.rows: list[dict] = []
        self.checkpoints = set(checkpoints)
        self.events: dict[str, list[float]] = {e: [] for e in ("ask", "tell", "submit", "finish", "slots")}
        self.cpu: dict[str, list[float]] = {e: [] for e in self.events}
        self.finish_times: list[float] = []
        self.first_submit: float | None = None
        self.last_submit = 0.0
        self.rss: dict[int, float] = {}
        self.full_table_s: dict[int, float] = {}

    def start_cluster(self, ccfg):
        return start_simulated_cluster(ccfg, self.slots)

    def trace(self, event: str, seconds: float, cpu_seconds: float) -> None:
        self.events[event].append(seconds)
        self.cpu[event].append(cpu_seconds)
        if event == "submit":
            self.last_submit = time.time()
            if self.first_submit is None:
                self.first_submit = self.last_submit - seconds
        if event == "finish":  # main thread, right after the result was recorded
            self.finish_times.append(time.time())
            n = len(self.finish_times)
            if n in self.checkpoints:
                import psutil

                self.rss[n] = psutil.Process().memory_info().rss / 1e6
                t0 = time.perf_counter()
                self.rd.write_table(self.records.values())
                self.full_table_s[n] = time.perf_counter() - t0
                prev = self.rows[-1]["trials"] if self.rows else 0
                self.rows.append(window_row(self, prev, n, self.real_s))
                print(fmt(self.rows[-1]) + self.tag, file=sys.__stdout__, flush=True)


# --------------------------------------------------------------------------------------------
# one run and its windows
# --------------------------------------------------------------------------------------------


def smac_save_seconds(rundir: Path, study, checkpoints: list[int]) -> dict[int, float]:
    """SMAC's RunHistory.save at the first n entries of the final run history (n = checkpoint)."""
    from smac.runhistory import RunHistory

    from mfhpo.study.space import build_space_spec, to_configspace

    path = rundir / "smac" / "joint" / str(study.seed) / "runhistory.json"
    cs = to_configspace(build_space_spec(study, str(study.path)), seed=study.seed)
    data = json.loads(path.read_text())
    out = {}
    tmp = Path(tempfile.mkdtemp(prefix="mfhpo_rh_"))
    try:
        for n in checkpoints:
            entries = [e for e in data["data"] if int(e["status"]) != 0][:n]  # finished (0: RUNNING)
            ids = {str(e["config_id"]) for e in entries}
            sub = {**data, "data": entries, "configs": {k: v for k, v in data["configs"].items() if k in ids},
                   "config_origins": {k: v for k, v in data.get("config_origins", {}).items() if k in ids},
                   "stats": {"submitted": len(entries), "finished": len(entries), "running": 0}}
            (tmp / "in.json").write_text(json.dumps(sub))
            rh = RunHistory()
            rh.load(tmp / "in.json", cs)
            t0 = time.perf_counter()
            rh.save(tmp / "out.json")
            out[n] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def busy_in(intervals: list, a: float, b: float) -> float:
    return sum(max(0.0, min(t1, b) - max(t0, a)) for t0, t1 in intervals)


def q(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def window_row(run: "SimulatedStudyRun", prev: int, c: int, real_s: float) -> dict:
    """Statistics of the trials prev+1 .. c (in the order they finished)."""
    workers, ev = run.slots, run.events
    a = run.first_submit if prev == 0 else run.finish_times[prev - 1]
    b = min(run.finish_times[c - 1], run.last_submit)  # the study's end (last trials draining) excluded
    with SIM.lock:
        intervals = list(SIM.intervals)
    busy = busy_in(intervals, a, b)
    util = busy / (workers * (b - a))
    g = (workers * (b - a) - busy) / (c - prev)
    n = min(len(ev["ask"]), len(ev["submit"]), len(ev["tell"]), len(ev["finish"]), c)
    per = [ev["ask"][i] + ev["submit"][i] + ev["tell"][i] + ev["finish"][i] for i in range(prev, n)]
    nt = min(len(ev["tell"]), len(ev["finish"]), c)
    tw = [ev["tell"][i] + ev["finish"][i] for i in range(prev, nt)]
    asks = ev["ask"][prev:c]
    cp = run.cpu
    per_cpu = [cp["ask"][i] + cp["submit"][i] + cp["tell"][i] + cp["finish"][i] for i in range(prev, n)]
    tw_cpu = [cp["tell"][i] + cp["finish"][i] for i in range(prev, nt)]
    # the optimizer thread's busy share of the window (asks + tells): near 1 = the compressed run was
    # limited by SMAC's throughput, and util@T is then a loose bound
    opt_busy = (sum(ev["ask"][prev:c]) + sum(ev["tell"][prev:nt])) / (run.finish_times[c - 1] - a)
    return {
        "workers": workers, "trials": c, "mean_trial_s": SIM.mean_s, "util": util, "idle_per_trial_s": g,
        "util_real": real_s / (real_s + g), "opt_thread_busy": opt_busy,
        "ask_med_ms": 1e3 * q(asks, 50), "ask_p95_ms": 1e3 * q(asks, 95), "ask_mean_ms": 1e3 * float(np.mean(asks)),
        "tellwrite_med_ms": 1e3 * q(tw, 50), "tellwrite_mean_ms": 1e3 * float(np.mean(tw)),
        "driver_med_ms": 1e3 * q(per, 50), "driver_mean_ms": 1e3 * float(np.mean(per)),
        "driver_cpu_med_ms": 1e3 * q(per_cpu, 50), "driver_cpu_mean_ms": 1e3 * float(np.mean(per_cpu)),
        "tellwrite_cpu_med_ms": 1e3 * q(tw_cpu, 50), "ask_cpu_med_ms": 1e3 * q(cp["ask"][prev:c], 50),
        "table_rewrite_ms": 1e3 * run.full_table_s.get(c, float("nan")), "rss_mb": run.rss.get(c, float("nan")),
        "wall_s": run.finish_times[c - 1] - run.first_submit,
    }


def run_one(workers: int, checkpoints: list[int], rate: float, sigma: float, real_s: float, prefetch: int,
            baseline: bool, keep: Path | None, tag: str = "") -> dict:
    global SIM
    mean_s = workers / rate
    SIM = Sim(slots=workers, mean_s=mean_s, sigma=sigma)
    tmp = Path(tempfile.mkdtemp(prefix="mfhpo_scale_"))
    try:
        study_d = json.loads(json.dumps(STUDY))
        study_d["budget"]["trials"] = max(checkpoints)
        study_d["optimizer_options"] = {"prefetch": prefetch, **({"smac_save_s": 0.0} if baseline else {})}
        study_path = tmp / "driver_scale.yaml"
        study_path.write_text(yaml.safe_dump(study_d, sort_keys=False))
        study = load_study(study_path)
        rd = RunDir(tmp / "run").prepare(study, study.optimizer)
        if baseline:
            rd = FullWriteRunDir(rd.root)
        run = SimulatedStudyRun(study, rd, study.optimizer, None, False, slots=workers, checkpoints=checkpoints,
                                real_s=real_s, tag=tag)
        t0 = time.time()
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            run.run(None)
        wall = time.time() - t0
        smac_save = smac_save_seconds(rd.root, study, checkpoints)
        for r in run.rows:
            r["smac_save_ms"] = 1e3 * smac_save.get(r["trials"], float("nan"))
            r["old_write_ms"] = r["table_rewrite_ms"] + r["smac_save_ms"]
        out = {"workers": workers, "baseline": baseline, "rate": rate, "wall_s": wall, "rows": run.rows,
               "slots_ms_med": 1e3 * q(run.events["slots"], 50), "n_finished": len(run.finish_times),
               "smac_files_mb": sum(p.stat().st_size for p in (rd.root / "smac").rglob("*.json")) / 1e6,
               "table_mb": rd.table_file.stat().st_size / 1e6}
        if keep is not None:
            shutil.copytree(tmp, keep / f"w{workers}{'_baseline' if baseline else ''}", dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


HEADER = (f"{'workers':>7} {'trials':>6} {'T_c s':>6} {'util':>6} {'idle/trial s':>12} {'util@T':>7} {'opt busy':>8} "
          f"{'ask med/p95/mean ms':>20} {'tell+write med/mean ms':>23} {'driver/trial med/mean ms':>25} "
          f"{'csv rewrite ms':>14} {'rss MB':>7} {'wall s':>7} {'CPU: driver/trial med/mean, tell+write med ms':>46}")


def fmt(r: dict) -> str:
    return (f"{r['workers']:>7} {r['trials']:>6} {r['mean_trial_s']:>6.1f} {r['util']:>6.3f} {r['idle_per_trial_s']:>12.2f} "
            f"{r['util_real']:>7.4f} {r['opt_thread_busy']:>8.2f} "
            f"{r['ask_med_ms']:>6.1f}/{r['ask_p95_ms']:>6.0f}/{r['ask_mean_ms']:>6.0f} "
            f"{r['tellwrite_med_ms']:>11.1f}/{r['tellwrite_mean_ms']:>11.1f} "
            f"{r['driver_med_ms']:>12.1f}/{r['driver_mean_ms']:>12.1f} {r['table_rewrite_ms']:>14.1f} {r['rss_mb']:>7.0f} "
            f"{r['wall_s']:>7.0f} {r['driver_cpu_med_ms']:>20.1f}/{r['driver_cpu_mean_ms']:>7.1f}, {r['tellwrite_cpu_med_ms']:>7.1f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000], help="checkpoints; the run stops at the last")
    ap.add_argument("--rate", type=float, default=4.0, help="results per second in compressed time (T_c = workers / rate)")
    ap.add_argument("--sigma", type=float, default=0.3, help="log-normal spread of trial durations")
    ap.add_argument("--real-trial-min", type=float, default=10.0, help="mean real trial duration the utilisation maps to")
    ap.add_argument("--prefetch", type=int, default=1, help="optimizer_options.prefetch")
    ap.add_argument("--baseline", action="store_true", help="also run the old per-trial state writes")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", type=Path, help="copy each run directory here")
    a = ap.parse_args(argv)
    checkpoints = sorted(set(a.trials))
    real_s = 60.0 * a.real_trial_min
    results = []
    print(f"util@T: T = {a.real_trial_min:g} min; results at {a.rate:g}/s in compressed time; "
          f"log-normal durations (sigma {a.sigma:g}); prefetch {a.prefetch}", flush=True)
    print(HEADER, flush=True)
    for w in a.workers:
        for baseline in ([False, True] if a.baseline else [False]):
            tag = "  (old writes)" if baseline else ""
            r = run_one(w, checkpoints, a.rate, a.sigma, real_s, a.prefetch, baseline, a.keep, tag=tag)
            results.append(r)
            print(f"        {w} workers{tag}: {r['n_finished']} trials in {r['wall_s']:.0f} s; "
                  f"n_slots() median {r['slots_ms_med']:.1f} ms; SMAC state {r['smac_files_mb']:.2f} MB, "
                  f"trials.csv {r['table_mb']:.2f} MB", flush=True)
            for row in r["rows"]:
                print(f"        {w} workers{tag}, {row['trials']} trials: old per-trial state write = trials.csv "
                      f"rewrite {row['table_rewrite_ms']:.1f} ms + SMAC runhistory save {row['smac_save_ms']:.1f} ms "
                      f"= {row['old_write_ms']:.1f} ms; now tell+write median {row['tellwrite_med_ms']:.1f} ms",
                      flush=True)
        if a.baseline:
            new, old = results[-2], results[-1]
            for rn, ro in zip(new["rows"], old["rows"]):
                print(f"        {w} workers, trials <= {rn['trials']}: tell+write mean {ro['tellwrite_mean_ms']:.1f} ms "
                      f"(old) / {rn['tellwrite_mean_ms']:.1f} ms (new) = x{ro['tellwrite_mean_ms'] / rn['tellwrite_mean_ms']:.2f}; "
                      f"driver/trial mean x{ro['driver_mean_ms'] / rn['driver_mean_ms']:.2f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    # run as the importable module ``driver_scale`` so that Dask pickles simulated_trial by reference
    # (as ``__main__.simulated_trial`` it would be pickled by value, with the shared Sim and its lock)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import driver_scale

    driver_scale.main()
