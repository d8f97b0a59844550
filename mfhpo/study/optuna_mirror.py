"""Mirror a study's trials into an Optuna storage so that optuna-dashboard shows it live.

The storage is a JournalStorage file, ``<rundir>/optuna/journal.log`` (append-only, safe to read
while ``mfhpo run`` writes it). One Optuna study per mfhpo stage: ``<study>`` for ``mode: joint``,
``<study>/<stage>`` for the two stages. Each mfhpo trial becomes one Optuna trial:

* ``params`` / ``distributions``: the searched (active) hyperparameters, with the Optuna
  distribution translated from the ConfigSpace hyperparameter (:func:`distributions_from_configspace`)
* ``value``: the trial's cost (minimised); crashed, out-of-memory and timed-out trials are ``FAIL``
* ``intermediate_values``: the per-epoch validation cost from ``learning_curve.csv`` (step = epoch)
* ``user_attrs``: mfhpo trial id, budget, epochs, subset, warm start, validation metrics and baselines

A trial appears as ``RUNNING`` when it is submitted and is completed when it finishes. The mirror is
an observer only: nothing reads it back into the study, and a failure to write it never stops the
study (one line, then the mirror is off). Without optuna installed it is off (one info line).
``sync(records)`` adds finished trials the storage lacks, so a study run without optuna can be
mirrored afterwards (``mfhpo dashboard`` does it before serving).
"""

from __future__ import annotations

import csv
import math
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import TrialRecord, TrialStatus

JOURNAL = Path("optuna") / "journal.log"
INSTALL_HINT = "pip install 'mfhpo[dashboard]'"
_FAIL_STATES = ("CRASHED", "MEMORYOUT", "TIMEOUT", "INTERRUPTED")
_METRIC_ATTRS = ("energy_mae", "energy_mae_per_atom", "force_mae", "force_mae_free",
                 "baseline_energy_mae", "baseline_energy_mae_per_atom", "baseline_force_mae",
                 "baseline_force_mae_free", "n_structures")


def optuna_available() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def journal_path(root: Path) -> Path:
    return Path(root) / JOURNAL


def open_storage(root: Path, create: bool = True):
    """The run directory's JournalStorage (``<rundir>/optuna/journal.log``)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(root)
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def optuna_study_name(study_name: str, stage: str) -> str:
    return study_name if stage == "joint" else f"{study_name}/{stage}"


def distributions_from_configspace(cs) -> dict[str, Any]:
    """Optuna distribution of every hyperparameter of a ConfigSpace (constants are left out)."""
    from ConfigSpace.hyperparameters import (CategoricalHyperparameter, Constant, OrdinalHyperparameter,
                                             UniformFloatHyperparameter, UniformIntegerHyperparameter)
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for hp in cs.values():
        if isinstance(hp, UniformIntegerHyperparameter):
            out[hp.name] = IntDistribution(int(hp.lower), int(hp.upper), log=bool(hp.log))
        elif isinstance(hp, UniformFloatHyperparameter):
            out[hp.name] = FloatDistribution(float(hp.lower), float(hp.upper), log=bool(hp.log))
        elif isinstance(hp, CategoricalHyperparameter):
            out[hp.name] = CategoricalDistribution([_plain(c) for c in hp.choices])
        elif isinstance(hp, OrdinalHyperparameter):
            out[hp.name] = CategoricalDistribution([_plain(c) for c in hp.sequence])
        elif isinstance(hp, Constant):
            continue
        else:  # normal / beta floats and ints: their bounds
            lo, hi = float(hp.lower), float(hp.upper)
            if "Integer" in type(hp).__name__:
                out[hp.name] = IntDistribution(int(lo), int(hi), log=bool(getattr(hp, "log", False)))
            else:
                out[hp.name] = FloatDistribution(lo, hi, log=bool(getattr(hp, "log", False)))
    return out


def _plain(v: Any) -> Any:
    """A value Optuna accepts as a categorical choice (None, bool, int, float, str)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float)):
        return v
    try:  # numpy scalars
        return v.item()
    except AttributeError:
        return str(v)


def _params(rec: TrialRecord, dists: dict) -> tuple[dict, dict]:
    params, used = {}, {}
    for k, v in rec.searched.items():
        d = dists.get(k)
        if d is None or v is None:
            continue
        v = _plain(v)
        if hasattr(d, "choices") and v not in d.choices:
            continue
        params[k] = v
        used[k] = d
    return params, used


def _when(rec: TrialRecord, key: str) -> Optional[datetime]:
    s = getattr(rec, key)
    if not s:
        return None
    try:
        t = datetime.fromisoformat(str(s))
    except ValueError:
        return None
    return t if t.tzinfo is None else t.astimezone().replace(tzinfo=None)  # Optuna's naive local time


def validation_curve(trial_dir: Path, metric) -> dict[int, float]:
    """Per-epoch validation cost (the study's cost formula on ``learning_curve.csv``); step = epoch.

    Falls back to ``val_loss`` when the curve lacks the metric's columns."""
    path = Path(trial_dir) / "learning_curve.csv"
    if not path.exists():
        return {}
    e_col = f"val_{metric.energy}"
    f_col = f"val_{metric.forces}" if metric.forces and metric.force_weight > 0 else None
    out: dict[int, float] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                ep = int(float(row["epoch"]))
                if e_col in row and (f_col is None or f_col in row):
                    v = float(row[e_col]) + (metric.force_weight * float(row[f_col]) if f_col else 0.0)
                else:
                    v = float(row["val_loss"])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(v):
                out[ep] = v
    return out


def user_attrs(rec: TrialRecord) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "mfhpo_trial_id": int(rec.trial_id),
        "config_id": rec.config_id,
        "budget": rec.budget,
        "epochs": rec.epochs,
        "subset_fraction": rec.subset_fraction,
        "status": rec.status.value,
        "stage": rec.stage,
        "warm_started_from": rec.warm_start_from_trial if rec.warm_started else None,
        "epoch_equivalents": rec.epoch_equivalents,
        "worker": rec.worker,
    }
    val = rec.val
    for k in _METRIC_ATTRS:
        if val.get(k) is not None:
            attrs[f"val_{k}"] = float(val[k])
    if rec.error:
        attrs["error"] = str(rec.error)[:500]
    if (rec.timings or {}).get("total_s") is not None:
        attrs["time_s"] = float(rec.timings["total_s"])
    return {k: v for k, v in attrs.items() if v is not None}


_UNSET = object()


class OptunaMirror:
    """Writes one mfhpo stage's trials into ``<rundir>/optuna/journal.log``."""

    def __init__(self, root: Path, study_name: str, stage: str, configspace, metric,
                 note: Callable[[str], None] = print):
        import optuna

        self.root = Path(root)
        self.metric = metric
        self.note = note
        self.name = optuna_study_name(study_name, stage)
        self.dists = distributions_from_configspace(configspace)
        self.storage = open_storage(self.root)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(storage=self.storage, study_name=self.name, direction="minimize",
                                         load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is experimental in some Optuna versions
            self.study.set_metric_names(["cost"])
        self.ids: dict[int, int] = {}  # mfhpo trial id -> optuna storage trial id
        self.done: set[int] = set()
        for t in self.study.get_trials(deepcopy=False):
            tid = t.user_attrs.get("mfhpo_trial_id")
            if tid is None:
                continue
            self.ids[int(tid)] = t._trial_id
            if t.state.is_finished():
                self.done.add(int(tid))
        self.enabled = True

    def _guard(self, fn, *a) -> None:
        if not self.enabled:
            return
        try:
            fn(*a)
        except Exception as exc:  # the mirror never stops a study
            self.enabled = False
            self.note(f"optuna mirror off: {type(exc).__name__}: {exc}")

    # ---- events -------------------------------------------------------------------------------
    def started(self, rec: TrialRecord) -> None:
        self._guard(self._started, rec)

    def finished(self, rec: TrialRecord) -> None:
        self._guard(self._finished, rec)

    def sync(self, records: Iterable[TrialRecord]) -> int:
        """Finish trials that are finished in ``records`` but not in the storage; returns how many."""
        n = 0
        for rec in sorted(records, key=lambda r: r.trial_id):
            if int(rec.trial_id) in self.done:
                continue
            if rec.status == TrialStatus.SUCCESS or rec.status in _FAIL_STATES:
                self._guard(self._finished, rec)
                n += 1
        return n

    # ---- storage writes -------------------------------------------------------------------------
    def _started(self, rec: TrialRecord) -> None:
        from optuna.trial import FrozenTrial, TrialState

        tid = int(rec.trial_id)
        if tid in self.ids:
            return
        params, dists = _params(rec, self.dists)
        tmpl = FrozenTrial(number=0, state=TrialState.RUNNING, value=None,
                           datetime_start=_when(rec, "submitted_at") or datetime.now(),
                           datetime_complete=None, params=params, distributions=dists,
                           user_attrs=user_attrs(rec), system_attrs={}, intermediate_values={}, trial_id=0)
        self.ids[tid] = self.storage.create_new_trial(self.study._study_id, template_trial=tmpl)

    def _finished(self, rec: TrialRecord) -> None:
        from optuna.trial import FrozenTrial, TrialState

        tid = int(rec.trial_id)
        ok = rec.status == TrialStatus.SUCCESS and rec.cost is not None and math.isfinite(float(rec.cost))
        state = TrialState.COMPLETE if ok else TrialState.FAIL
        curve = validation_curve(RunDir(self.root).trial_dir(tid), self.metric)
        if tid in self.ids:
            sid = self.ids[tid]
            have = self.storage.get_trial(sid)
            if have.state.is_finished():  # finished by another writer (mfhpo dashboard's sync)
                self.done.add(tid)
                return
            for step, v in curve.items():
                self.storage.set_trial_intermediate_value(sid, step, v)
            for k, v in user_attrs(rec).items():  # one journal write each: only those not set at the start
                if have.user_attrs.get(k, _UNSET) != v:
                    self.storage.set_trial_user_attr(sid, k, v)
            self.storage.set_trial_state_values(sid, state, [float(rec.cost)] if ok else None)
        else:
            params, dists = _params(rec, self.dists)
            frozen = FrozenTrial(number=0, state=state, value=float(rec.cost) if ok else None,
                                 datetime_start=_when(rec, "started_at") or _when(rec, "submitted_at"),
                                 datetime_complete=_when(rec, "finished_at") or datetime.now(),
                                 params=params, distributions=dists, user_attrs=user_attrs(rec), system_attrs={},
                                 intermediate_values=curve, trial_id=0)
            self.ids[tid] = self.storage.create_new_trial(self.study._study_id, template_trial=frozen)
        self.done.add(tid)


class _Off:
    """Stand-in when optuna is not installed."""

    enabled = False

    def started(self, rec: TrialRecord) -> None:
        pass

    def finished(self, rec: TrialRecord) -> None:
        pass

    def sync(self, records) -> int:
        return 0


_told_missing = False
_told_live: set[str] = set()


def open_mirror(root: Path, study_name: str, stage: str, configspace, metric,
                note: Callable[[str], None] = print):
    """An :class:`OptunaMirror`, or a no-op (one info line) when optuna is not installed."""
    global _told_missing
    if not optuna_available():
        if not _told_missing:
            note(f"optuna not installed: live optuna-dashboard view off ({INSTALL_HINT})")
            _told_missing = True
        return _Off()
    try:
        mirror = OptunaMirror(root, study_name, stage, configspace, metric, note=note)
    except Exception as exc:  # an unreadable journal never stops a study
        note(f"optuna mirror off: {type(exc).__name__}: {exc}")
        return _Off()
    if str(root) not in _told_live:
        note(f"live view: mfhpo dashboard {root}  (optuna-dashboard on {journal_path(root)})")
        _told_live.add(str(root))
    return mirror
