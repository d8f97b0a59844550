"""Resuming a study: trials RUNNING when an earlier run stopped are marked INTERRUPTED (and re-queued
by SMAC), SMAC's saved state is repaired (``resume_cleanup``: interrupted trials dropped, finished
ones completed from mfhpo's records) and finished trials the saved state missed (killed between
``trial.json`` and SMAC's next save) are told again."""

from __future__ import annotations

import builtins
import contextlib
from typing import Callable, Optional

from mfhpo.errors import MfhpoError
from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import TrialRecord, TrialStatus

Note = Callable[[str], None]


def mark_interrupted(records: list[TrialRecord], rd: RunDir, finished_at: str) -> int:
    """RUNNING records of an earlier run become INTERRUPTED; returns how many."""
    n = 0
    for r in records:
        if r.status == TrialStatus.RUNNING:
            r.status = TrialStatus.INTERRUPTED
            r.finished_at = finished_at
            rd.write_trial(r)
            n += 1
    return n


@contextlib.contextmanager
def no_prompt(where: str):
    """SMAC asks with input() when its saved scenario differs: turn that into a one-line error."""
    orig = builtins.input

    def refuse(*a, **k):
        raise MfhpoError(f"{where}: saved SMAC state does not match this study/optimizer; use a new --rundir")

    builtins.input = refuse
    try:
        yield
    finally:
        builtins.input = orig


def smac_value(rec: TrialRecord, crash_cost: float):
    """What SMAC is told for a finished record (a TrialValue)."""
    from mfhpo.study.optimizers import trial_value

    return trial_value(rec.to_json(), crash_cost)


def keep_finished(records: list[TrialRecord], crash_cost: float) -> Callable[[dict], Optional[dict]]:
    """For ``resume_cleanup``: the value of a saved SMAC trial that mfhpo's records hold as finished."""
    def keep(entry: dict) -> Optional[dict]:
        for r in records:
            if (r.finished and r.config_id == entry["config_id"] and r.smac_seed == entry["seed"]
                    and r.smac_budget == entry["budget"]):
                v = smac_value(r, crash_cost)
                return {"status": int(v.status), "cost": v.cost, "time": v.time, "starttime": v.starttime,
                        "endtime": v.endtime, "additional_info": v.additional_info}
        return None

    return keep


def configurations(records: list[TrialRecord], cs, note: Note) -> list[tuple[TrialRecord, object]]:
    """(record, its ConfigSpace Configuration) of each record; a record whose values the stage's space
    does not take is reported and left out."""
    from ConfigSpace import Configuration

    out = []
    for r in records:
        try:
            out.append((r, Configuration(cs, values=r.searched)))
        except (ValueError, KeyError, TypeError) as exc:
            note(f"trial {r.trial_id}: its configuration is not in the stage's space ({type(exc).__name__}: "
                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); not told to SMAC")
    return out


def retell_missed(opt, cs, records: list[TrialRecord], crash_cost: float, note: Note) -> int:
    """Tell SMAC the finished trials its saved run history lacks; returns how many."""
    from smac.runhistory import TrialInfo
    from smac.runhistory.runhistory import TrialKey

    rh = opt.runhistory
    told = 0
    finished = sorted((r for r in records if r.finished), key=lambda r: r.trial_id)
    for r, config in configurations(finished, cs, note):
        if rh.has_config(config):
            key = TrialKey(config_id=rh.get_config_id(config), instance=None, seed=r.smac_seed, budget=r.smac_budget)
            if key in rh:
                continue
        opt.tell(TrialInfo(config=config, seed=r.smac_seed, budget=r.smac_budget), smac_value(r, crash_cost))
        told += 1
    return told


def align_config_ids(records: list[TrialRecord], cs, opt, rd: RunDir) -> None:
    """After re-telling finished trials that SMAC's saved state missed, SMAC has numbered their
    configurations afresh: record SMAC's ids so that warm starts (matched by config_id) and
    resume never confuse two configurations."""
    rh = opt.runhistory
    for r, config in configurations(records, cs, note=lambda msg: None):  # reported by retell_missed
        if rh.has_config(config):
            cid = rh.get_config_id(config)
            if r.config_id != cid:
                r.config_id = cid
                rd.write_trial(r)


def open_stage_optimizer(kind: str, study, rd: RunDir, stage: str, cs, records: list[TrialRecord], note: Note):
    """The stage's optimizer with its saved SMAC state repaired and completed from ``records``."""
    from mfhpo.study.optimizers import make_optimizer, resume_cleanup, smac_state_dir

    fid, crash_cost, oo = study.fidelity, study.metric.crash_cost, study.optimizer_options
    state_dir = smac_state_dir(rd.smac_dir, stage, study.seed)
    resumed = resume_cleanup(state_dir, keep_finished(records, crash_cost), output_directory=state_dir)
    with no_prompt(str(rd.root)):
        opt = make_optimizer(kind, cs, min_budget=fid.min_budget, max_budget=fid.max_budget, eta=fid.eta,
                             seed=study.seed, output_dir=rd.smac_dir, name=stage, n_trials=oo.max_trials_scenario,
                             initial_design=oo.initial_design, crash_cost=crash_cost, overwrite=False,
                             save_interval_s=oo.smac_save_s, promotion=oo.promotion, brackets=oo.brackets,
                             acquisition=oo.acquisition)
    registers = hasattr(opt, "register")  # its state is the records (optuna-tpe-hb): every configuration numbered
    if registers:
        opt.register([c for _, c in configurations(sorted(records, key=lambda r: r.trial_id), cs, lambda msg: None)])
    told = retell_missed(opt, cs, records, crash_cost, note)
    if told or registers:
        align_config_ids(records, cs, opt, rd)
    if resumed["dropped"] or resumed["completed"] or told:
        note(f"stage {stage}: resumed SMAC state ({resumed['dropped']} interrupted trial(s) re-queued, "
             f"{resumed['completed'] + told} finished trial(s) restored)")
    return opt
