"""The study driver at scale, as a discrete-event simulation: mfhpo's real per-trial driver work on a
virtual clock, against simulated workers with real-length (e.g. 10-minute) trials.

What is real (run in this process, timed with ``time.perf_counter``):

* the study and its run directory: ``StudyRun`` (mfhpo.study.runner) with ``begin()`` (demo data,
  provenance, state.json) and ``run_stages()``; per stage the calls ``StudyRun.run_stage`` makes:
  ``open_stage_optimizer`` (SMAC's multi-fidelity facade from ``make_optimizer``, smac-mf with the
  default asynchronous promotion, ASHA; budgets 1-27, eta 3, the 13-parameter space of
  benchmarks/driver_scale.py), ``open_mirror`` (the Optuna journal, when optuna is installed) and
  ``StageLoop`` (mfhpo.study.loop);
* per trial, the steps the dispatcher (mfhpo.study.dispatcher) runs, each timed:
  ``ask`` = ``Optimizer.ask()`` + ``config_id`` (the optimizer thread);
  ``submit`` = ``StageLoop.prepare`` (trial folder, config.yaml, the RUNNING trial.json, the
  progress view, the Optuna mirror);
  ``finish`` = ``StageLoop.finish`` (trial.json, one appended trials.csv line, the Optuna mirror,
  the progress line, state.json when due);
  ``tell`` = ``Optimizer.tell`` (SMAC's state files when due);
* the worker function ``run_trial`` (toy objective) makes each result; it is the worker's work, so
  it is neither timed nor on the clock.

What is simulated:

* **The clock.** Virtual seconds. The driver is one sequential server: each step advances the clock
  by its measured wall time. Trial durations are drawn in virtual seconds (log-normal around
  ``--mean-s``, sigma ``--sigma``, seeded per trial id). A result that arrives while the driver is
  busy waits (queueing); a slot is idle from its trial's end until the driver has recorded that
  result and submitted the next trial to it.
* **The two driver threads as one server.** A real study asks and tells in an optimizer thread
  beside the main thread (one GIL); here the steps run one at a time in the dispatcher's order of
  priority: submit an asked-ahead trial into a free slot, then record an arrived result, then tell
  SMAC, then ask ahead (``--prefetch`` trials, ``optimizer_options.prefetch``). Trial-count budget
  checks are the real ``StageLoop.may_start``.
* **Due times on the virtual clock.** state.json (every 5 s, ``StudyRun.save_state``) and SMAC's
  state files (``Optimizer.save_due``: ``optimizer_options.smac_save_s`` = 10 s and results enough
  to spread the write's cost at 10 ms each) are written when due in virtual time: the rule of
  ``StudyRun.save_state`` re-stated with the virtual clock, and ``Optimizer.tell(save=False)`` then
  ``Optimizer.save()`` when ``Optimizer.save_due`` says so for the virtual seconds since the last write.
  Trial records carry virtual start/end times (``started_unix``, ``finished_unix``, durations).
* **No Dask.** No scheduler, futures or ``n_slots()`` round trips (benchmarks/driver_scale.py has
  them); the resident memory is the driver's alone, without Dask's scheduler.

The study's trial budget is the last checkpoint plus the number of workers, so that no slot drains
before the last row (the tail of a study, the last trials finishing with no new ones to start, is
not the driver's doing); the simulation stops at the last checkpoint, leaving the trials still in
flight RUNNING, as a stopped study. ``--drain`` instead runs a complete study of exactly the last
checkpoint's trials (its last window then holds the tail). A row is printed once its trials are
told to SMAC, so a stopped study may hold a few results more than its last row.

``--extra-driver-ms`` adds a real sleep to every ask (a slower driver: tests/test_driver_sim.py).
mfhpo's notes and the progress view's per-trial lines go to ``driver.log`` beside the run directory
(``--no-progress``: without the view's lines); ``--no-mirror``: without the Optuna mirror.

    python benchmarks/driver_sim.py --workers 16 64 256 --trials 100 1000
    python benchmarks/driver_sim.py --workers 256 --trials 100 1000 2000 3000 4000 5000 --json sim.json
    python benchmarks/driver_sim.py --workers 8 --trials 40 --mean-s 600 --drain      # a quick look
    python benchmarks/driver_sim.py --workers 256 --trials 100 1000 --no-mirror       # without the Optuna mirror

Printed per worker count and window (the trials finished since the previous row):

* ``util win``: busy slot-seconds / (slots x window length), virtual time, the window from the
  previous row's last recorded result (0 for the first: the start, all slots empty, counts);
  ``util cum``: the same from time 0 to this row; ``util >1st``: from the first row to this row
  (the start-up left out);
* ``idle/trial``: idle slot-seconds per finished trial in the window;
* ``drv busy``: share of the window the driver was busy (1: it is the bottleneck);
* ``ask``: SMAC ``ask()`` + ``config_id`` median / 95th percentile / mean, ms (wall clock);
* ``tell+rec``: per trial, ``finish`` + ``tell``, median / mean, ms;
* ``driver/trial``: ask + submit + finish + tell of the same trial, median / mean, ms;
* ``cpu med``: the medians of ask, tell+rec and driver/trial in the thread's CPU time
  (``time.thread_time``: without the waits for a loaded machine's CPUs and disk);
* ``scan med``: the part of each ask spent in ASHA's reading of the run history (``_read_history``
  and ``promotable`` of mfhpo.study.asha, timed by wrapping them on the intensifier), median, ms;
* ``smac save``: SMAC state writes in the window and their mean, ms;
* ``rss``: resident memory of this process; ``virt h``: the virtual time; ``real s``: wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mfhpo.study.config import load_study
from mfhpo.study.dispatcher import Pending
from mfhpo.study.objective import run_trial
from mfhpo.study.rundir import RunDir
from mfhpo.study.runner import StudyRun

# the study of benchmarks/driver_scale.py (the demo's 13-parameter space, 4 rungs 1, 3, 9, 27, toy objective)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from driver_scale import STUDY as _SCALE_STUDY  # noqa: E402

STUDY = {**_SCALE_STUDY, "name": "driver_sim"}

STATE_EVERY_S = 5.0  # StudyRun.save_state's interval


def timed(fn, *args):
    """(fn(*args), wall seconds, thread CPU seconds)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.thread_time() - c0


def iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds")


class Simulator:
    """The discrete-event loop over one stage's real ``StageLoop`` and optimizer (module docstring)."""

    def __init__(self, run: SimStudyRun, loop, opt):
        self.run, self.loop, self.opt = run, loop, opt
        self.slots = run.slots
        self.ready: deque = deque()  # (info, config_id, ask wall s, ask cpu s, ASHA scan s): asked ahead
        self.inflight: dict[int, Pending] = {}  # the dispatcher's record of each trial in flight
        self.heap: list[tuple[float, int]] = []  # (end, trial id)
        self.tells: deque = deque()  # (info, value, trial id)
        self.exhausted = False
        self.last_smac_save = -math.inf  # as Optimizer: the first tell writes SMAC's state
        self.scan_s = 0.0  # ASHA's run-history scans so far (watch_asha)
        self.watch_asha()

    @property
    def now(self) -> float:
        return self.run.now

    def advance(self, dt: float) -> None:
        self.run.now += dt
        self.run.driver_busy_s += dt

    def duration(self, trial_id: int) -> float:
        z = np.random.default_rng([self.run.seed, trial_id]).standard_normal()
        return self.run.mean_s * math.exp(self.run.sigma * z - 0.5 * self.run.sigma ** 2)

    # ---- the driver's steps (each real, timed, on the clock) ----------------------------------
    def watch_asha(self) -> None:
        """Time ASHA's scans of the run history inside each ask (``AsyncSuccessiveHalving``'s
        ``_read_history`` and ``promotable``, wrapped on the instance; smac-mf async only)."""
        intens = getattr(self.opt.facade, "intensifier", None)
        for name in ("_read_history", "promotable"):
            fn = getattr(intens, name, None)
            if fn is None:
                continue

            def wrapped(*a, _fn=fn):
                t0 = time.perf_counter()
                try:
                    return _fn(*a)
                finally:
                    self.scan_s += time.perf_counter() - t0

            setattr(intens, name, wrapped)

    def ask(self) -> None:
        scan0 = self.scan_s

        def step():
            info = self.opt.ask()
            cid = self.opt.config_id(info.config)
            if self.run.extra_s:
                time.sleep(self.run.extra_s)  # a slower driver (tests): real time, measured like the rest
            return info, cid

        try:
            (info, cid), dt, cpu = timed(step)
        except StopIteration:
            self.exhausted = True
            return
        except Exception as exc:  # as the dispatcher: an exhausted space ends the stage
            if type(exc).__name__ != "ConfigurationSpaceExhaustedException" and "StopIteration" not in repr(exc):
                raise
            self.exhausted = True
            return
        self.advance(dt)
        self.ready.append((info, cid, dt, cpu, self.scan_s - scan0))

    def submit(self) -> None:
        info, cid, ask_s, ask_cpu, scan_s = self.ready.popleft()
        (spec, rec), dt, cpu = timed(self.loop.prepare, info, cid)
        self.advance(dt)
        tid = rec.trial_id
        start = self.now
        end = start + self.duration(tid)
        self.inflight[tid] = Pending(info=info, config_id=cid, record=rec, spec=spec, submitted=start)
        heapq.heappush(self.heap, (end, tid))
        self.run.per_trial[tid] = {"ask": ask_s, "submit": dt, "ask_cpu": ask_cpu, "submit_cpu": cpu, "scan": scan_s}
        self.run.intervals.append((start, end))

    def collect(self) -> None:
        end, tid = heapq.heappop(self.heap)
        p = self.inflight.pop(tid)
        result = self.worker_result(p, end)  # the worker's, not the driver's: untimed
        value, dt, cpu = timed(self.loop.finish, p, result, None)
        self.advance(dt)
        self.run.per_trial[tid].update(finish=dt, finish_cpu=cpu)
        self.tells.append((p.info, value, tid))
        self.run.finished_one(tid)

    def tell(self) -> None:
        info, value, tid = self.tells.popleft()

        def step():  # Optimizer.tell with its save interval on the virtual clock
            self.opt.tell(info, value, save=False)
            if self.opt.save_due(self.now - self.last_smac_save):
                t0 = time.perf_counter()
                self.opt.save()
                self.run.smac_saves.append((len(self.run.finish_order), time.perf_counter() - t0))
                return True
            return False

        saved, dt, cpu = timed(step)
        if saved:
            self.last_smac_save = self.now
        self.advance(dt)
        self.run.per_trial[tid].update(tell=dt, tell_cpu=cpu)

    def worker_result(self, p: Pending, end: float):
        """The real worker function on the toy objective (no sleep), its times set to the virtual ones."""
        spec = dataclasses.replace(p.spec, toy={**p.spec.toy, "sleep_fixed_s": 0.0, "sleep_s": 0.0})
        res = run_trial(spec)
        base, dur = self.run.base_unix, end - p.submitted
        res.started_unix, res.finished_unix = base + p.submitted, base + end
        res.started_at, res.finished_at = iso(res.started_unix), iso(res.finished_unix)
        res.timings = {**res.timings, "train_s": dur, "total_s": dur}
        res.wall_s = dur
        return res

    # ---- the loop ------------------------------------------------------------------------------
    def step(self) -> bool:
        """One driver step in the dispatcher's order; False when the stage is over."""
        loop = self.loop
        if len(self.inflight) < self.slots and self.ready and loop.may_start(len(self.inflight)):
            self.submit()
        elif self.heap and self.heap[0][0] <= self.now:
            self.collect()
        elif self.tells:
            self.tell()
        elif (not self.exhausted and len(self.ready) < self.run.prefetch
              and loop.may_start(len(self.inflight) + len(self.ready))):
            self.ask()
        elif self.heap:
            self.run.now = max(self.now, self.heap[0][0])  # the driver waits for the next result
        else:
            return False  # nothing in flight, nothing to start
        return True

    def run_stage(self) -> dict:
        t0 = time.perf_counter()
        run = self.run
        while self.step():
            if run.rows_due and not self.tells:  # the rows once their trials are told
                run.emit_rows()
                if run.stop:
                    break
        if getattr(self.opt, "unsaved", 0):  # the optimizer thread's last save
            self.opt.save()
        return {"wall_s": self.now, "done": len(self.run.finish_order), "real_s": time.perf_counter() - t0,
                "unsubmitted": len(self.ready), "in_flight": len(self.inflight), "exhausted": self.exhausted,
                "simulated": True}


class SimStudyRun(StudyRun):
    """``StudyRun`` on the virtual clock, its stages driven by :class:`Simulator` instead of Dask."""

    def __init__(self, *a, slots: int, mean_s: float, sigma: float, seed: int, prefetch: int,
                 checkpoints: list[int], extra_ms: float = 0.0, mirror: bool = True, out=None, **k):
        super().__init__(*a, **k)
        self.mirror = mirror  # False: the Optuna mirror off, as in a study without optuna installed
        self.slots, self.mean_s, self.sigma, self.seed = slots, mean_s, sigma, seed
        self.prefetch = max(1, int(prefetch))
        self.extra_s = extra_ms / 1e3
        self.checkpoints = sorted(set(checkpoints))
        self.out = out if out is not None else sys.stdout
        self.now = 0.0  # virtual seconds since the start
        self.base_unix = time.time()
        self.driver_busy_s = 0.0
        self.stop = False
        self.rows_due: list[int] = []  # checkpoints reached, their rows not printed yet
        self._last_state_v = -math.inf
        self.per_trial: dict[int, dict] = {}
        self.intervals: list[tuple[float, float]] = []  # (start, end) of every submitted trial, virtual
        self.finish_order: list[int] = []
        self.finish_times: list[float] = []  # virtual time each result was recorded
        self.busy_at: list[float] = []  # driver busy seconds at each recorded result
        self.smac_saves: list[tuple[int, float]] = []  # (finished trials, seconds)
        self.rows: list[dict] = []
        self.real_t0 = time.perf_counter()

    # the budget and state rules of StudyRun, on the virtual clock
    def elapsed(self) -> float:
        return self.elapsed_before + self.now

    def save_state(self, force: bool = False) -> None:
        if not force and self.now - self._last_state_v < STATE_EVERY_S:
            return
        self._last_state_v = self.now
        self.state["elapsed_s"] = self.elapsed()
        self.state["n_trials_finished"] = self.n_finished()
        self.rd.write_state(self.state)

    def note(self, msg: str) -> None:
        print(f"[mfhpo] {msg}", flush=True)  # to the run's driver.log (main() redirects stdout)

    def open_mirror(self, stage: str, cs):
        from mfhpo.study.optuna_mirror import _Off

        return super().open_mirror(stage, cs) if self.mirror else _Off()

    def run_loop(self, loop, handle) -> dict:
        """The simulator in place of ``StageLoop.run_loop``."""
        return Simulator(self, loop, loop.opt).run_stage()

    def finished_one(self, tid: int) -> None:
        self.finish_order.append(tid)
        self.finish_times.append(self.now)
        self.busy_at.append(self.driver_busy_s)
        if len(self.finish_order) in self.checkpoints:
            self.rows_due.append(len(self.finish_order))

    def emit_rows(self) -> None:
        for n in self.rows_due:
            self.rows.append(window_row(self, self.rows[-1]["trials"] if self.rows else 0, n))
            print(fmt(self.rows[-1]), file=self.out, flush=True)
            if n == self.checkpoints[-1] and self.trials_cap > n:
                self.stop = True  # no drain: the study stops here, its trials in flight RUNNING
        self.rows_due = []


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------


def busy_in(intervals: list, a: float, b: float) -> float:
    return sum(max(0.0, min(t1, b) - max(t0, a)) for t0, t1 in intervals)


def q(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def util(run: SimStudyRun, a: float, b: float) -> float:
    return busy_in(run.intervals, a, b) / (run.slots * (b - a)) if b > a else float("nan")


def window_row(run: SimStudyRun, prev: int, c: int) -> dict:
    """Statistics of the trials prev+1 .. c (in the order their results were recorded)."""
    a = run.finish_times[prev - 1] if prev else 0.0
    b = run.finish_times[c - 1]
    first = run.rows[0]["trials"] if run.rows else None
    tids = run.finish_order[prev:c]  # their tells are done (the row waits for them)
    pt = [run.per_trial[t] for t in tids]
    asks = [p["ask"] for p in pt]
    tr = [p["finish"] + p["tell"] for p in pt]
    drv = [p["ask"] + p["submit"] + p["finish"] + p["tell"] for p in pt]
    drv_cpu = [p["ask_cpu"] + p["submit_cpu"] + p["finish_cpu"] + p["tell_cpu"] for p in pt]
    saves = [s for n, s in run.smac_saves if prev < n <= c]
    busy = busy_in(run.intervals, a, b)
    ms = 1e3
    return {
        "workers": run.slots, "trials": c, "mean_trial_s": run.mean_s,
        "util_window": busy / (run.slots * (b - a)), "util_cum": util(run, 0.0, b),
        "util_after_first": util(run, run.finish_times[first - 1], b) if first else float("nan"),
        "idle_per_trial_s": (run.slots * (b - a) - busy) / (c - prev),
        "driver_busy": (run.busy_at[c - 1] - (run.busy_at[prev - 1] if prev else 0.0)) / (b - a),
        "ask_med_ms": ms * q(asks, 50), "ask_p95_ms": ms * q(asks, 95), "ask_mean_ms": ms * statistics.fmean(asks),
        "tellrec_med_ms": ms * q(tr, 50), "tellrec_mean_ms": ms * statistics.fmean(tr),
        "ask_cpu_med_ms": ms * q([p["ask_cpu"] for p in pt], 50), "scan_med_ms": ms * q([p["scan"] for p in pt], 50),
        "tellrec_cpu_med_ms": ms * q([p["finish_cpu"] + p["tell_cpu"] for p in pt], 50),
        "tell_med_ms": ms * q([p["tell"] for p in pt], 50),
        "driver_med_ms": ms * q(drv, 50), "driver_mean_ms": ms * statistics.fmean(drv),
        "driver_cpu_med_ms": ms * q(drv_cpu, 50), "driver_cpu_mean_ms": ms * statistics.fmean(drv_cpu),
        "finish_med_ms": ms * q([p["finish"] for p in pt], 50), "submit_med_ms": ms * q([p["submit"] for p in pt], 50),
        "smac_saves": len(saves), "smac_save_mean_ms": ms * statistics.fmean(saves) if saves else float("nan"),
        "rss_mb": psutil.Process().memory_info().rss / 1e6, "virtual_h": b / 3600.0,
        "real_s": time.perf_counter() - run.real_t0,
    }


HEADER = (f"{'workers':>7} {'trials':>6} {'util win':>8} {'util cum':>8} {'util >1st':>9} {'idle/trial s':>12} "
          f"{'drv busy':>8} {'ask med/p95/mean ms':>21} {'tell+rec med/mean ms':>20} {'driver/trial med/mean ms':>24} "
          f"{'cpu med ask/t+r/drv':>19} {'scan med':>8} {'smac save n x ms':>16} {'rss MB':>7} {'virt h':>6} "
          f"{'real s':>7}")


def _num(v: float, width: int, nd: int) -> str:
    return f"{'-':>{width}}" if math.isnan(v) else f"{v:>{width}.{nd}f}"


def fmt(r: dict) -> str:
    return (f"{r['workers']:>7} {r['trials']:>6} {r['util_window']:>8.4f} {r['util_cum']:>8.4f} "
            f"{_num(r['util_after_first'], 9, 4)} {r['idle_per_trial_s']:>12.2f} {r['driver_busy']:>8.3f} "
            f"{r['ask_med_ms']:>6.1f}/{r['ask_p95_ms']:>6.0f}/{r['ask_mean_ms']:>7.1f} "
            f"{r['tellrec_med_ms']:>9.1f}/{r['tellrec_mean_ms']:>9.1f} "
            f"{r['driver_med_ms']:>11.1f}/{r['driver_mean_ms']:>11.1f} "
            f"{r['ask_cpu_med_ms']:>5.1f}/{r['tellrec_cpu_med_ms']:>6.1f}/{r['driver_cpu_med_ms']:>6.1f} "
            f"{r['scan_med_ms']:>8.1f} "
            f"{r['smac_saves']:>5d} x {_num(r['smac_save_mean_ms'], 8, 1)} {r['rss_mb']:>7.0f} {r['virtual_h']:>6.2f} "
            f"{r['real_s']:>7.0f}")


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------


def simulate(workers: int, checkpoints: list[int], root: Path, *, mean_s: float = 600.0, sigma: float = 0.3,
             seed: int = 0, prefetch: int | None = None, extra_ms: float = 0.0, drain: bool = False,
             progress: bool = True, mirror: bool = True, out=None) -> dict:
    """One simulated study of ``workers`` slots in the run directory ``root/run``; its rows and summary."""
    checkpoints = sorted(set(checkpoints))
    if (root / "run").exists():
        raise SystemExit(f"{root / 'run'}: exists; the simulation needs a new run directory")
    root.mkdir(parents=True, exist_ok=True)
    study_d = json.loads(json.dumps(STUDY))
    study_d["seed"] = int(seed)
    study_d["budget"]["trials"] = checkpoints[-1] if drain else checkpoints[-1] + workers
    if prefetch is not None:
        study_d["optimizer_options"] = {"prefetch": int(prefetch)}
    study_path = root / "driver_sim.yaml"
    study_path.write_text(yaml.safe_dump(study_d, sort_keys=False))
    study = load_study(study_path)
    rd = RunDir(root / "run").prepare(study, study.optimizer)
    out = out if out is not None else sys.stdout
    rss0 = psutil.Process().memory_info().rss / 1e6  # before the study (SMAC imported, no optimizer yet)
    # (SMAC's numpy warnings from its local search are filtered by make_optimizer)
    with open(root / "driver.log", "a") as log, contextlib.redirect_stdout(log):
        run = SimStudyRun(study, rd, study.optimizer, None, progress, slots=workers, mean_s=mean_s, sigma=sigma,
                          seed=seed, prefetch=study.optimizer_options.prefetch, checkpoints=checkpoints,
                          extra_ms=extra_ms, mirror=mirror, out=out)
        run.begin()
        run.run_stages(None)
        _, end_s, _ = timed(lambda: (run.save_state(force=True), rd.write_table(run.records.values())))
    return {"workers": workers, "mean_s": mean_s, "sigma": sigma, "seed": seed, "extra_driver_ms": extra_ms,
            "drain": drain, "rows": run.rows, "n_finished": len(run.finish_order), "n_submitted": len(run.intervals),
            "util_total": util(run, 0.0, run.now), "virtual_s": run.now, "end_write_s": end_s,
            "smac_saves": len(run.smac_saves), "rundir": str(rd.root), "rss_start_mb": rss0,
            "smac_files_mb": sum(p.stat().st_size for p in rd.smac_dir.rglob("*.json")) / 1e6,
            "table_mb": rd.table_file.stat().st_size / 1e6 if rd.table_file.exists() else 0.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000], help="checkpoints (rows)")
    ap.add_argument("--mean-s", type=float, default=600.0, help="mean trial duration, virtual seconds")
    ap.add_argument("--sigma", type=float, default=0.3, help="log-normal spread of trial durations")
    ap.add_argument("--seed", type=int, default=0, help="trial durations and the study's (SMAC's) seed")
    ap.add_argument("--prefetch", type=int, help="optimizer_options.prefetch (default: the study's, 1)")
    ap.add_argument("--extra-driver-ms", type=float, default=0.0, help="a real sleep added to every ask")
    ap.add_argument("--drain", action="store_true", help="a complete study of the last checkpoint's trials")
    ap.add_argument("--no-progress", action="store_true", help="without the progress view's per-trial line")
    ap.add_argument("--no-mirror", action="store_true", help="without the Optuna mirror (as without optuna)")
    ap.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    print(f"trials: log-normal, mean {a.mean_s:g} s (virtual), sigma {a.sigma:g}, seed {a.seed}; "
          f"extra driver {a.extra_driver_ms:g} ms per ask", flush=True)
    print(HEADER, flush=True)
    results = []
    for w in a.workers:
        base = a.out if a.out is not None else Path(tempfile.mkdtemp(prefix="mfhpo_sim_"))
        root = base / f"w{w}"
        try:
            r = simulate(w, a.trials, root, mean_s=a.mean_s, sigma=a.sigma, seed=a.seed, prefetch=a.prefetch,
                         extra_ms=a.extra_driver_ms, drain=a.drain, progress=not a.no_progress,
                         mirror=not a.no_mirror)
        finally:
            if a.out is None:
                shutil.rmtree(base, ignore_errors=True)
        results.append(r)
        print(f"        {w} workers: {r['n_finished']} trials recorded ({r['n_submitted']} submitted), "
              f"{r['virtual_s'] / 3600:.2f} virtual h, utilisation over the whole run {r['util_total']:.4f}; "
              f"SMAC state {r['smac_files_mb']:.2f} MB ({r['smac_saves']} writes), trials.csv "
              f"{r['table_mb']:.2f} MB; end of run (state.json + trials.csv in full) {1e3 * r['end_write_s']:.0f} ms; "
              f"rss {r['rss_start_mb']:.0f} MB before the study",
              flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
