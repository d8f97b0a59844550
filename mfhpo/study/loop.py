"""The optimization loop of one stage: SMAC asks, each configuration becomes a trial folder, a
:class:`TrialSpec` goes to a Dask worker, its :class:`TrialResult` is recorded and told back
(:class:`mfhpo.study.dispatcher.Dispatcher` moves the futures). Stops when the stage's share of the
trial, wall-time or device-hour budget is spent."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Optional

import yaml

from mfhpo.study.fidelity import budget_to_fidelity
from mfhpo.study.objective import now_iso
from mfhpo.study.resume import smac_value
from mfhpo.study.rundir import atomic_write_text
from mfhpo.study.space import config_to_flat, full_flat, materialize
from mfhpo.study.stages import stage_trial_cap
from mfhpo.study.trial import TrialRecord, TrialResult, TrialSpec, TrialStatus
from mfhpo.study.warm_start import NONE, warm_start_source

if TYPE_CHECKING:
    from mfhpo.study.runner import StudyRun

_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~10x faster, same YAML


class StageLoop:
    """One stage's ask -> run -> tell loop over the run's cluster ``handle``."""

    def __init__(self, run: "StudyRun", stage: str, share_end: float, opt, fixed: dict, mirror):
        self.run, self.stage, self.opt, self.fixed, self.mirror = run, stage, opt, fixed, mirror
        self.cap = stage_trial_cap(run.study, run.trials_cap, stage)
        self.wall_end = None if run.wall_cap is None else run.wall_cap * share_end
        self.gpu_end = None if run.gpu_cap is None else run.gpu_cap * share_end
        self.dispatcher = None
        self.handle = None

    def records(self) -> list[TrialRecord]:
        return [r for r in self.run.records.values() if r.stage == self.stage]

    # ---- the dispatcher's callbacks --------------------------------------------------------
    def may_start(self, n_active: int) -> bool:
        run = self.run
        if self.cap is not None and run.n_finished(self.stage) + n_active >= self.cap:
            return False
        if self.wall_end is not None and run.elapsed() >= self.wall_end:
            return False
        d = self.dispatcher
        if self.gpu_end is not None and run.device_hours(d.inflight if d else None) >= self.gpu_end:
            return False
        return True

    def prepare(self, info, config_id: int) -> tuple[TrialSpec, TrialRecord]:
        """A new trial for SMAC's ``info``: its folder, config.yaml, spec and RUNNING record."""
        run, study = self.run, self.run.study
        tid = run.next_id
        run.next_id += 1
        budget = self.opt.budget_of(info)
        fb = budget_to_fidelity(study.fidelity, budget)
        searched = config_to_flat(info.config)
        flat = {**self.fixed, **searched}
        cfg = materialize(study, run.spec, flat)
        cfg.training.epochs = fb.epochs
        if study.fidelity.schedule_epochs == "top" and cfg.training.scheduler == "cosine":
            cfg.training.schedule_epochs = budget_to_fidelity(study.fidelity, study.fidelity.max_budget).epochs
        cfg_json = cfg.model_dump(mode="json")
        tdir = run.rd.trial_dir(tid)
        tdir.mkdir(parents=True, exist_ok=True)
        warm = NONE
        if study.fidelity.warm_start and study.objective == "train":
            warm = warm_start_source(self.records(), config_id, budget)
        # not fsynced (like the RUNNING trial.json below): a trial lost to a power cut is re-run
        atomic_write_text(tdir / "config.yaml", yaml.dump(cfg_json, Dumper=_YAML_DUMPER, sort_keys=False),
                          fsync=False)
        spec = TrialSpec(trial_id=tid, trial_dir=str(tdir), config=cfg_json, budget=fb.model_dump(),
                         smac_budget=budget, max_budget=study.fidelity.max_budget, data=run.paths,
                         metric=study.metric, objective=study.objective, cache_dir=str(run.cache_dir),
                         init_checkpoint=warm.checkpoint, time_limit_s=self._time_limit(),
                         toy=study.toy.model_dump(), vector=_vector(info.config), device=None,
                         base_dir=str(study.base_dir))
        rec = TrialRecord(trial_id=tid, config_id=config_id, stage=self.stage, optimizer=run.kind, budget=budget,
                          smac_budget=info.budget, smac_seed=info.seed, seed=cfg.seed, epochs=fb.epochs,
                          subset_fraction=fb.subset_fraction, subset_schedule=fb.subset_schedule,
                          status=TrialStatus.RUNNING, cost=None,
                          searched=searched, params=full_flat(run.spec, flat), config=cfg_json,
                          init_checkpoint=warm.checkpoint, warm_start_from_trial=warm.from_trial,
                          submitted_at=now_iso())
        run.records[tid] = rec
        run.rd.write_trial(rec, fsync=False)
        if run.view:
            run.view.started(rec)
        self.mirror.started(rec)
        return spec, rec

    def _time_limit(self) -> Optional[float]:
        run = self.run
        limit = run.study.trial_time_limit
        if run.wall_cap is not None:
            left = max(30.0, run.wall_cap - run.elapsed())
            limit = left if limit is None else min(limit, left)
        return limit

    def finish(self, pending, result: Optional[TrialResult], error: Optional[str]):
        """Record a trial's outcome (its result, or the error that lost it); return SMAC's value."""
        run, rec = self.run, pending.record
        if result is not None:
            rec.record_result(result)
        else:
            rec.record_crash(error, now_iso(), time.time() - pending.submitted)
        run.count_finished(rec)
        run.rd.write_trial(rec)
        run.rd.append_table_row(rec, run.records.values())
        if run.view:
            run.view.finished(rec)
        self.mirror.finished(rec)
        run.save_state()
        for callback in run.callbacks:
            callback(rec)
        return smac_value(rec, run.study.metric.crash_cost)

    def tick(self, d) -> None:
        run = self.run
        n = self.handle.n_slots()
        if run.view:
            run.view.set_note("" if n > 0 or d.inflight else "waiting for workers (no trial slot yet)")
            run.view.refresh()
        run.save_state()

    # ---- the loop --------------------------------------------------------------------------
    def run_loop(self, handle) -> dict[str, Any]:
        """Run until the stage's budget is spent; the dispatcher's summary."""
        from mfhpo.study.dispatcher import Dispatcher

        self.handle = handle
        run = self.run
        self.dispatcher = Dispatcher(handle.client, self.opt, run.trial_fn, prepare=self.prepare, finish=self.finish,
                                     may_start=self.may_start, n_slots=handle.n_slots,
                                     prefetch=run.study.optimizer_options.prefetch, tick=self.tick, trace=run.trace)
        return self.dispatcher.run()


def _vector(config) -> list:
    """The configuration's ConfigSpace vector with NaN (inactive) as None."""
    return [None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)
            for v in config.get_array().tolist()]
