"""``run_trial(spec: TrialSpec) -> TrialResult``: what a Dask worker executes for one trial.

It never raises for a trial's own failure: exceptions become ``status: CRASHED`` (CUDA out of
memory: ``MEMORYOUT``) with the error in ``error.txt``; only a dead worker (SIGKILL, OOM kill)
reaches the dispatcher as an exception (``KilledWorker``), and it is recorded there.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mfhpo.study.trial import TrialResult, TrialSpec, TrialStatus

_DATASETS: dict[tuple, Any] = {}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_study_dataset(path: str, group_key: str | None = None, max_force: float | None = None):
    """Load (and cache per worker process) a dataset exactly as the study does."""
    from mfhpo.data import load_dataset

    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0, group_key, max_force)
    ds = _DATASETS.get(key)
    if ds is None:
        ds = load_dataset(p, group_key=group_key, max_force=max_force)
        _DATASETS.clear()  # keep one dataset per process
        _DATASETS[key] = ds
    return ds


def is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "CUDA out of memory" in str(exc) or "CUBLAS_STATUS_ALLOC_FAILED" in str(exc)


def _toy(spec: TrialSpec) -> dict:
    """Cheap synthetic objective: a bowl in the normalised configuration vector, better at higher budget."""
    import numpy as np

    toy = spec.toy
    tid = int(spec.trial_id)
    frac = float(spec.smac_budget) / float(spec.max_budget)
    sleep = float(toy.get("sleep_fixed_s", 0.0)) + float(toy.get("sleep_s", 0.0)) * frac
    if tid in toy.get("kill_trials", []):
        time.sleep(min(sleep, 0.5))
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.perf_counter()
    if sleep > 0:
        time.sleep(sleep)
    if tid in toy.get("fail_trials", []):
        raise RuntimeError(f"toy objective: trial {tid} fails on purpose")
    if tid in toy.get("oom_trials", []):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (toy objective)")
    x = np.asarray([v for v in spec.vector if v is not None and math.isfinite(v)], dtype=float)
    core = float(np.mean((x - 0.3) ** 2)) if x.size else 0.0
    e = core + 0.2 * (1.0 - frac) + 0.01
    f = 0.5 * core + 0.1 * (1.0 - frac) + 0.02
    val = {"energy_mae_per_atom": e, "energy_mae": e * 10, "energy_rmse_per_atom": 1.2 * e, "energy_rmse": 12 * e,
           "force_mae": f, "force_mae_free": f, "force_rmse": 1.3 * f, "force_rmse_free": 1.3 * f,
           "baseline_energy_mae_per_atom": 0.5, "baseline_force_mae": 0.3, "baseline_force_mae_free": 0.3}
    dt = time.perf_counter() - t0
    return {"metrics": {"val": val}, "epochs_run": int(spec.budget["epochs"]), "warm_start": {"used": False},
            "timings": {"featurize_s": 0.0, "train_s": dt, "total_s": dt}, "device": "cpu", "checkpoint": None}


def _train(spec: TrialSpec) -> dict:
    from mfhpo.config import Fidelity, TrialConfig
    from mfhpo.train import train

    cfg = TrialConfig.model_validate(spec.config)
    d = spec.data
    t0 = time.perf_counter()
    ds = load_study_dataset(d["train"], d.get("group_key"), d.get("max_force"))
    load_s = time.perf_counter() - t0
    cache = None
    if spec.cache_dir:
        try:
            from mfhpo.gmp.cache import FeatureCache

            cache = FeatureCache(Path(spec.cache_dir))
        except Exception:  # cache unavailable: featurize without it
            cache = None
    init = spec.init_checkpoint
    res = train(cfg, ds, Fidelity(**spec.budget), Path(spec.trial_dir),
                init_checkpoint=None if init is None else Path(init), cache=cache, device=spec.device,
                progress=False, time_limit_s=spec.time_limit_s, eval_test=False,
                base_dir=Path(spec.base_dir) if spec.base_dir else None)
    return {"metrics": res.metrics, "epochs_run": int(res.epochs_run), "warm_start": dict(res.warm_start),
            "timings": {**res.timings, "load_s": load_s}, "device": str(res.device),
            "checkpoint": None if res.checkpoint_path is None else str(res.checkpoint_path),
            "stopped_reason": res.stopped_reason, "best_epoch": res.best_epoch}


def run_trial(spec: TrialSpec) -> TrialResult:
    """Run one trial; its cost is the study's metric section's (``MetricSection.cost``)."""
    started = now_iso()
    t0 = time.perf_counter()
    host = socket.gethostname()
    worker = host
    try:
        from distributed import get_worker

        worker = f"{host}:{get_worker().name}"
    except Exception:
        pass
    trial_dir = Path(spec.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"worker": worker, "started_at": started, "started_unix": time.time()}
    try:
        res = _toy(spec) if spec.objective == "toy" else _train(spec)
        out.update(res)
        cost = spec.metric.cost(res["metrics"].get("val") or {})
        if not math.isfinite(cost):
            out.update(status=TrialStatus.CRASHED, cost=None, error="non-finite validation cost")
        else:
            out.update(status=TrialStatus.SUCCESS, cost=cost)
    except BaseException as exc:  # noqa: BLE001 - every failure of the trial is recorded
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        tb = traceback.format_exc()
        try:
            (trial_dir / "error.txt").write_text(tb)
        except OSError:
            pass
        out.update(status=TrialStatus.MEMORYOUT if is_oom(exc) else TrialStatus.CRASHED, cost=None,
                   error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        out.setdefault("timings", {})
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
    out["finished_at"] = now_iso()
    out["finished_unix"] = time.time()
    out.setdefault("timings", {})
    out["timings"].setdefault("total_s", time.perf_counter() - t0)
    out["wall_s"] = time.perf_counter() - t0
    return TrialResult(**out)
