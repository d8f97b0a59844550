"""Typed trials: what a worker is asked to run (:class:`TrialSpec`), what it returns
(:class:`TrialResult`), what the run directory stores (:class:`TrialRecord`: spec + result +
bookkeeping, ``trials/<id>/trial.json``) and the one incumbent rule (:func:`select_incumbent`).

``trial.json`` keeps its layout: one flat JSON object. Result and bookkeeping keys are written once
known (a key absent from the file reads as None), keys this module does not know are kept as they
were. :meth:`TrialRecord.table_row` is the trial's row of ``trials.csv``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Iterable, NamedTuple, Optional, TypeVar

from mfhpo.config import Fidelity
from mfhpo.study.config import MetricSection


class TrialStatus(str, Enum):
    RUNNING = "RUNNING"
    INTERRUPTED = "INTERRUPTED"  # RUNNING when an earlier run stopped: re-queued
    SUCCESS = "SUCCESS"
    CRASHED = "CRASHED"
    MEMORYOUT = "MEMORYOUT"
    TIMEOUT = "TIMEOUT"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        return self in FINISHED

    @classmethod
    def of_result(cls, name: Any) -> "TrialStatus":
        """A worker's status; anything unknown counts as CRASHED."""
        try:
            s = cls(str(name))
        except ValueError:
            return cls.CRASHED
        return s if s.finished else cls.CRASHED


FINISHED = (TrialStatus.SUCCESS, TrialStatus.CRASHED, TrialStatus.MEMORYOUT, TrialStatus.TIMEOUT)


def jsonable(v: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, paths and numpy scalars -> plain values."""
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "__fspath__"):
        return str(v)
    if hasattr(v, "item") and callable(v.item):
        try:
            return v.item()
        except Exception:  # noqa: BLE001 - not a numpy scalar after all
            return str(v)
    return v


def _known(cls, data: dict) -> tuple[dict, dict]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


# --------------------------------------------------------------------------------------------
# what a worker runs
# --------------------------------------------------------------------------------------------


@dataclass
class TrialSpec:
    """Everything a Dask worker needs for one trial (picklable; no reference to the driver)."""

    trial_id: int
    trial_dir: str
    config: dict  # TrialConfig, JSON form
    budget: dict  # Fidelity: {"epochs", "subset_fraction"}
    smac_budget: float
    max_budget: float
    data: dict  # {"train", "test", "group_key", "max_force", "demo"}
    metric: MetricSection
    objective: str = "train"  # "train" or "toy"
    cache_dir: Optional[str] = None
    init_checkpoint: Optional[str] = None
    time_limit_s: Optional[float] = None
    toy: dict = field(default_factory=dict)
    vector: list = field(default_factory=list)  # the configuration's ConfigSpace vector (toy objective)
    device: Optional[str] = None
    base_dir: Optional[str] = None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["metric"] = self.metric.model_dump()
        return jsonable(out)

    @classmethod
    def from_json(cls, data: dict) -> "TrialSpec":
        known, _ = _known(cls, data)
        known["metric"] = MetricSection.model_validate(known.get("metric") or {})
        return cls(**known)


@dataclass
class TrialResult:
    """What a worker returns for one trial. ``cost`` is set (by the study's metric section) only
    for SUCCESS."""

    status: TrialStatus
    cost: Optional[float] = None
    metrics: Optional[dict] = None  # {"train": {...}, "val": {...}}
    timings: dict = field(default_factory=dict)  # featurize_s, train_s, total_s
    device: Optional[str] = None
    worker: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    error: Optional[str] = None
    stopped_reason: Optional[str] = None
    best_epoch: Optional[int] = None
    started_unix: Optional[float] = None
    finished_unix: Optional[float] = None
    checkpoint: Optional[str] = None
    epochs_run: Optional[int] = None
    warm_start: Optional[dict] = None  # {"used", "from_epoch", "reason", ...}
    wall_s: float = 0.0

    def to_json(self) -> dict:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, data: dict) -> "TrialResult":
        known, _ = _known(cls, data)
        known["status"] = TrialStatus.of_result(known.get("status"))
        return cls(**known)


# --------------------------------------------------------------------------------------------
# what the run directory stores
# --------------------------------------------------------------------------------------------

# fields of a record that are written only once known (the result and its bookkeeping)
_WHEN_KNOWN = ("metrics", "timings", "device", "worker", "started_at", "finished_at", "error", "stopped_reason",
               "best_epoch", "started_unix", "finished_unix", "checkpoint", "epochs_run", "warm_start",
               "epochs_trained", "epochs_saved", "epoch_equivalents", "time_saved_s")
# fields written only when set (a trial without a growing subset has no subset_schedule)
_WHEN_SET = ("subset_schedule",)


@dataclass
class TrialRecord:
    """One trial as ``trials/<id>/trial.json`` holds it."""

    trial_id: int
    config_id: Optional[int] = None
    stage: Optional[str] = None  # "joint", "descriptor" or "model"
    optimizer: Optional[str] = None
    budget: Optional[float] = None  # mfhpo's budget (SMAC's, or the full budget without budgets)
    smac_budget: Optional[float] = None  # as SMAC asked it (None without budgets)
    smac_seed: Optional[int] = None
    seed: Optional[int] = None
    epochs: Optional[int] = None
    subset_fraction: Optional[float] = None
    subset_schedule: Optional[list] = None  # a growing subset: [[first epoch, fraction], ...]
    status: TrialStatus = TrialStatus.RUNNING
    cost: Optional[float] = None
    searched: dict = field(default_factory=dict)  # the values SMAC chose (active ones)
    params: dict = field(default_factory=dict)  # every parameter of the space, fixed ones included
    config: dict = field(default_factory=dict)  # the TrialConfig, JSON form
    init_checkpoint: Optional[str] = None
    warm_start_from_trial: Optional[int] = None  # the trial whose checkpoint was offered
    submitted_at: Optional[str] = None
    # result (see TrialResult)
    metrics: Optional[dict] = None
    timings: Optional[dict] = None
    device: Optional[str] = None
    worker: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    error: Optional[str] = None
    stopped_reason: Optional[str] = None
    best_epoch: Optional[int] = None
    started_unix: Optional[float] = None
    finished_unix: Optional[float] = None
    checkpoint: Optional[str] = None
    epochs_run: Optional[int] = None
    warm_start: Optional[dict] = None
    # bookkeeping
    epochs_trained: Optional[int] = None
    epochs_saved: Optional[int] = None
    epoch_equivalents: Optional[float] = None  # epochs trained here x subset fraction
    time_saved_s: Optional[float] = None
    extra: dict = field(default_factory=dict)  # keys of trial.json this class does not know, kept as they are

    # ---- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if v is None and (f.name in _WHEN_KNOWN or f.name in _WHEN_SET):
                continue
            out[f.name] = v
        out.update(self.extra)
        return jsonable(out)

    @classmethod
    def from_json(cls, data: dict) -> "TrialRecord":
        known, extra = _known(cls, data)
        known.pop("extra", None)
        known["status"] = TrialStatus(known.get("status", "RUNNING"))
        return cls(**known, extra=extra)

    # ---- views -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def val(self) -> dict:
        """Validation metrics ({} when none)."""
        return (self.metrics or {}).get("val") or {}

    @property
    def total_s(self) -> float:
        return float((self.timings or {}).get("total_s") or 0.0)

    @property
    def warm_started(self) -> bool:
        """Continued from a lower-budget checkpoint (offered and used)."""
        return bool((self.warm_start or {}).get("used", False))

    # ---- outcome ---------------------------------------------------------------------------
    def record_result(self, result: TrialResult) -> None:
        """Take the worker's result, then the bookkeeping (warm start, compute, savings)."""
        self.status = TrialStatus.of_result(result.status)
        self.cost = result.cost if self.status == TrialStatus.SUCCESS else None
        for name in ("metrics", "device", "worker", "started_at", "finished_at", "error", "stopped_reason",
                     "best_epoch", "started_unix", "finished_unix"):
            v = getattr(result, name)
            if v is not None:
                setattr(self, name, v)
        self.timings = dict(result.timings)
        self.checkpoint = result.checkpoint
        self.epochs_run = result.epochs_run
        self._bookkeeping(dict(result.warm_start or {"used": False}))

    def fidelity(self) -> Fidelity:
        """The budget this trial trains: epochs and its (possibly growing) subset."""
        epochs = max(1, int(self.epochs or 0), int(self.epochs_run or 0))
        return Fidelity(epochs=epochs, subset_fraction=float(self.subset_fraction or 1.0),
                        subset_schedule=self.subset_schedule)

    def record_crash(self, error: str, finished_at: str, total_s: float) -> None:
        """The worker died (or its future was lost): no result came back."""
        self.status, self.cost, self.error, self.finished_at = TrialStatus.CRASHED, None, error, finished_at
        self.timings = {"total_s": total_s}
        self._bookkeeping({"used": False})

    def _bookkeeping(self, ws: dict) -> None:
        ws["from_trial"] = self.warm_start_from_trial
        self.warm_start = ws
        from_epoch = int(ws.get("from_epoch", 0)) if ws.get("used") else 0
        trained = max(0, int(self.epochs_run or 0) - from_epoch)
        self.epochs_trained = trained
        self.epochs_saved = from_epoch
        self.epoch_equivalents = self.fidelity().epoch_equivalents(from_epoch, from_epoch + trained) if trained else 0.0
        train_s = float((self.timings or {}).get("train_s") or 0.0)
        self.time_saved_s = from_epoch * train_s / trained if trained and from_epoch else 0.0

    # ---- trials.csv ------------------------------------------------------------------------
    def table_row(self) -> dict:
        """This trial's row of ``trials.csv``: the base columns, ``val_<metric>`` and ``cfg.<name>``."""
        t = self.timings or {}
        ws = self.warm_start or {}
        row = {
            "trial_id": self.trial_id, "config_id": self.config_id, "budget": self.budget, "epochs": self.epochs,
            "subset_fraction": self.subset_fraction, "seed": self.seed, "status": self.status.value,
            "cost": self.cost, "optimizer": self.optimizer, "stage": self.stage,
            "warm_started": bool(ws.get("used", False)),
            "warm_start_from": ws.get("from_trial") if ws.get("used") else None,
            "epoch_equivalents": self.epoch_equivalents,
            "epochs_saved": 0 if self.epochs_saved is None else self.epochs_saved,
            "time_saved_s": 0.0 if self.time_saved_s is None else self.time_saved_s,
            "wall_time_s": t.get("total_s"), "featurize_time_s": t.get("featurize_s"),
            "train_time_s": t.get("train_s"), "load_time_s": t.get("load_s"), "split_time_s": t.get("split_s"),
            "setup_time_s": t.get("setup_s"), "evaluate_time_s": t.get("evaluate_s"), "save_time_s": t.get("save_s"),
            "worker": self.worker, "device": self.device,
            "started_at": self.started_at, "finished_at": self.finished_at,
        }
        for k, v in self.val.items():
            if isinstance(v, (int, float)) or v is None:
                row[f"val_{k}"] = v
        for k, v in self.params.items():
            row[f"cfg.{k}"] = v if not isinstance(v, (list, dict)) else json.dumps(v)
        return row


# --------------------------------------------------------------------------------------------
# the incumbent
# --------------------------------------------------------------------------------------------


class Candidate(NamedTuple):
    """The fields the incumbent rule reads (a TrialRecord has them too)."""

    trial_id: int
    status: str
    budget: float
    cost: Optional[float]


R = TypeVar("R")


def select_incumbent(records: Iterable[R]) -> Optional[R]:
    """THE incumbent rule: among SUCCESS trials with a finite cost, those at the highest budget any of
    them reached; the lowest cost; ties go to the lower trial id. ``records``: TrialRecords or any
    objects with ``trial_id``, ``status``, ``budget`` and ``cost`` (e.g. :class:`Candidate`)."""
    ok = [r for r in records if str(r.status) == TrialStatus.SUCCESS.value and r.cost is not None
          and math.isfinite(float(r.cost))]
    if not ok:
        return None
    top = max(float(r.budget) for r in ok)
    at_top = [r for r in ok if math.isclose(float(r.budget), top, rel_tol=1e-9)]
    return min(at_top, key=lambda r: (float(r.cost), int(r.trial_id)))
