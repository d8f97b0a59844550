"""``mfhpo run STUDY.yaml``: run or resume a study.

Flow: validate the study -> run directory (refuse a changed study file) -> data + provenance ->
Dask cluster -> one SMAC run per stage (joint, or descriptor then model) driven by the dispatcher ->
trial folders + trials.csv. Re-running resumes: finished trials are kept (and told to SMAC if its
state missed them), interrupted ones are re-queued.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.check import check_corners, preflight_data, rounding_note
from mfhpo.study.config import StudyConfig, load_study
from mfhpo.study.failures import one_line_failures
from mfhpo.study.fidelity import budget_to_fidelity, describe as describe_fidelity
from mfhpo.study.lock import RunLock
from mfhpo.study.objective import load_study_dataset, now_iso, run_trial
from mfhpo.study.rundir import FINISHED, RunDir, atomic_write_text, select_incumbent
from mfhpo.study.security import check_security_files, scheduler_note
from mfhpo.study.space import (build_space_spec, config_to_flat, default_flat, full_flat, materialize,
                               to_configspace, _max_layers)

_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~10x faster, same YAML
STATUS_NAMES = {"SUCCESS": "SUCCESS", "CRASHED": "CRASHED", "MEMORYOUT": "MEMORYOUT", "TIMEOUT": "TIMEOUT"}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("mfhpo", "torch", "smac", "ConfigSpace", "dask", "distributed", "ase", "numpy", "scipy", "pydantic"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:
            out[mod] = "not installed"
    return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def data_paths(study: StudyConfig, rd: RunDir) -> dict:
    """Resolve data.train / data.test; the demo is generated once into <rundir>/data/."""
    d = study.data
    if d.train == "demo":
        from mfhpo.demo import write_demo

        train = rd.root / "data" / f"demo_{d.demo_structures}_{d.demo_seed}.extxyz"
        if not train.exists():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_demo(train, n_structures=d.demo_structures, seed=d.demo_seed)
        demo = {"n_structures": d.demo_structures, "seed": d.demo_seed}
    else:
        train = study.resolve(d.train)
        demo = None
        if not train.exists():
            raise MfhpoError(f"{study.path}: data.train: {train}: file not found")
    test = None
    if d.test is not None:
        test = study.resolve(d.test)
        if not test.exists():
            raise MfhpoError(f"{study.path}: data.test: {test}: file not found")
    return {"train": str(train.resolve()), "test": None if test is None else str(test.resolve()),
            "group_key": d.group_key, "max_force": d.max_force, "demo": demo}


def data_provenance(study: StudyConfig, paths: dict) -> dict:
    from mfhpo.data import split_indices

    ds = load_study_dataset(paths["train"], paths["group_key"], paths["max_force"])
    if study.metric.forces and study.metric.force_weight > 0 and not ds.has_forces:
        raise MfhpoError(f"{study.path}: metric.forces: {paths['train']} has no forces (set metric.forces: null)")
    split = split_indices(len(ds), study.data.val_fraction, study.data.test_fraction, seed=study.data.split_seed,
                          groups=ds.groups)
    if len(split.val) == 0:
        raise MfhpoError(f"{study.path}: data.val_fraction: validation split is empty ({len(ds)} structures)")
    prov = {"train": {"path": paths["train"], "hash": ds.hash(), "n_structures": len(ds), "elements": ds.elements,
                      "generated_demo": paths["demo"]},
            "split": {"val_fraction": study.data.val_fraction, "test_fraction": study.data.test_fraction,
                      "seed": study.data.split_seed, "group_key": study.data.group_key,
                      "max_force": study.data.max_force,
                      "n_train": int(len(split.train)), "n_val": int(len(split.val)), "n_test": int(len(split.test))}}
    if paths["test"]:
        from mfhpo.data import load_dataset

        ts = load_dataset(paths["test"], max_force=paths["max_force"])
        prov["test"] = {"path": paths["test"], "hash": ts.hash(), "n_structures": len(ts)}
    return prov


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_prompt(where: str):
    """SMAC asks with input() when its saved scenario differs: turn that into a one-line error."""
    orig = builtins.input

    def refuse(*a, **k):
        raise MfhpoError(f"{where}: saved SMAC state does not match this study/optimizer; use a new --rundir")

    builtins.input = refuse
    try:
        yield
    finally:
        builtins.input = orig


class StudyRun:
    #: what each Dask worker runs for one trial (benchmarks/driver_scale.py substitutes a simulated trial)
    trial_fn = staticmethod(run_trial)
    #: ``trace(event, seconds, cpu_seconds)`` for the dispatcher's timings (mfhpo.study.dispatcher), or None
    trace = None

    def __init__(self, study: StudyConfig, rd: RunDir, kind: str, trials: Optional[int], progress: bool):
        self.study = study
        self.rd = rd
        self.kind = kind
        self.spec = build_space_spec(study, str(study.path))
        self.trials_cap = trials if trials is not None else study.budget.trials
        self.wall_cap = study.budget.wall_time
        self.gpu_cap = study.budget.gpu_hours
        self.records: dict[int, dict] = {r["trial_id"]: r for r in rd.trial_records()}
        # finished trials per stage and their summed wall time, kept as the results come in: the
        # optimizer thread reads them (may_start) while the main thread adds records
        self._done: dict[Any, int] = {}
        self._done_s = 0.0
        for r in self.records.values():
            self._count_finished(r)
        self.next_id = max([0] + list(self.records) + [int(p.name) for p in rd.trials_dir.glob("[0-9]*")
                                                          if p.name.isdigit()]) + 1
        self.state = rd.read_state()
        self.t0 = time.time()
        self.elapsed_before = float(self.state.get("elapsed_s", 0.0))
        self.show_progress = progress
        self.view = None
        self._last_state_write = 0.0

    # ---- budget ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.t0)

    def _count_finished(self, rec: dict) -> None:
        """Count ``rec`` if it is finished (once per trial: when its result is recorded)."""
        if rec.get("status") in FINISHED:
            self._done[rec.get("stage")] = self._done.get(rec.get("stage"), 0) + 1
            self._done_s += float((rec.get("timings") or {}).get("total_s") or 0.0)

    def device_hours(self, inflight: dict | None = None) -> float:
        s = self._done_s
        if inflight:
            now = time.time()
            s += sum(now - p.submitted for p in list(inflight.values()))  # list(): one atomic copy
        return s / 3600.0

    def n_finished(self, stage: str | None = None) -> int:
        return sum(self._done.values()) if stage is None else self._done.get(stage, 0)

    def stage_plan(self) -> list[tuple[str, float, float]]:
        """(stage, share start, share end) of the whole budget."""
        if self.study.mode == "joint":
            return [("joint", 0.0, 1.0)]
        f = self.study.two_stage.descriptor_fraction
        return [("descriptor", 0.0, f), ("model", f, 1.0)]

    def stage_trial_cap(self, stage: str, lo: float, hi: float) -> Optional[int]:
        if self.trials_cap is None:
            return None
        if self.study.mode == "joint":
            return self.trials_cap
        n1 = max(1, int(round(self.trials_cap * self.study.two_stage.descriptor_fraction)))
        return n1 if stage == "descriptor" else max(0, self.trials_cap - n1)

    def budget_text(self) -> str:
        parts = [f"trials {self.n_finished()}" + (f"/{self.trials_cap}" if self.trials_cap else "")]
        el = self.elapsed()
        parts.append(f"wall {el / 60:.1f}" + (f"/{self.wall_cap / 60:.1f}" if self.wall_cap else "") + " min")
        if self.gpu_cap:
            parts.append(f"device-h {self.device_hours():.3f}/{self.gpu_cap:g}")
        return ", ".join(parts)

    def budget_parts(self) -> list[tuple[str, float, Optional[float], str]]:
        """(name, used, cap or None, text) of each budget: the live view's progress bars."""
        n, el = self.n_finished(), self.elapsed()
        parts = [("trials", n, self.trials_cap, f"{n}" + (f"/{self.trials_cap}" if self.trials_cap else "")),
                 ("wall", el, self.wall_cap, f"{el / 60:.1f}" + (f"/{self.wall_cap / 60:.1f}" if self.wall_cap else "")
                  + " min")]
        if self.gpu_cap:
            dh = self.device_hours()
            parts.append(("device-h", dh, self.gpu_cap, f"{dh:.3f}/{self.gpu_cap:g}"))
        return parts

    def exhausted(self) -> Optional[str]:
        if self.trials_cap is not None and self.n_finished() >= self.trials_cap:
            return f"trial budget reached ({self.n_finished()} trials)"
        if self.wall_cap is not None and self.elapsed() >= self.wall_cap:
            return "wall-time budget reached"
        if self.gpu_cap is not None and self.device_hours() >= self.gpu_cap:
            return "device-hour budget reached"
        return None

    # ---- state -------------------------------------------------------------------------------
    def save_state(self, force: bool = False) -> None:
        if not force and time.time() - self._last_state_write < 5:
            return
        self._last_state_write = time.time()
        self.state["elapsed_s"] = self.elapsed()
        self.state["n_trials_finished"] = self.n_finished()
        self.rd.write_state(self.state)

    # ---- per stage ---------------------------------------------------------------------------
    def fixed_for_stage(self, stage: str) -> dict:
        if stage == "joint":
            return {}
        if stage == "descriptor":
            d = default_flat(self.spec)
            model_names = {p.name for p in self.spec.tunable({"model"})}
            out = {k: v for k, v in d.items() if k in model_names or k.startswith("nodes_") or k.endswith("_on")}
            for k, v in self.study.two_stage.cheap_model.items():
                if k == "nodes":
                    for j in range(1, _max_layers(self.spec) + 1):
                        out[f"nodes_{j}"] = v
                else:
                    out[k] = v
            # conditional model parameters that the cheap model makes inactive are dropped
            nl = out.get("num_layers")
            if nl is not None:
                for j in range(int(nl) + 1, _max_layers(self.spec) + 1):
                    out.pop(f"nodes_{j}", None)
            sched = out.get("scheduler", None)
            if sched is not None:
                if sched != "step":
                    out.pop("step_size", None); out.pop("gamma", None)
                if sched != "plateau":
                    out.pop("plateau_patience", None)
            for p in self.spec.params.values():
                if p.or_zero and out.get(f"{p.name}_on") == "off":
                    out.pop(p.name, None)
            return out
        best = (self.state.get("stages") or {}).get("descriptor", {}).get("best_flat")
        if best is None:
            raise MfhpoError(f"{self.rd.root}: model stage needs the descriptor stage's best configuration")
        return dict(best)

    def run_stage(self, stage: str, lo: float, hi: float, handle) -> None:
        from ConfigSpace import Configuration
        from smac.runhistory import TrialInfo
        from smac.runhistory.runhistory import TrialKey

        from mfhpo.study.dispatcher import Dispatcher
        from mfhpo.study.optimizers import make_optimizer, resume_cleanup, smac_state_dir, trial_value
        from mfhpo.study.optuna_mirror import open_mirror

        study, rd = self.study, self.rd
        fixed = self.fixed_for_stage(stage)
        tags = None if stage == "joint" else {stage}
        cs = to_configspace(self.spec, seed=study.seed, tags=tags, fixed_flat=fixed)
        fid = study.fidelity
        crash_cost = study.metric.crash_cost
        state_dir = smac_state_dir(rd.smac_dir, stage, study.seed)
        stage_recs = lambda: [r for r in self.records.values() if r.get("stage") == stage]  # noqa: E731

        def value_of(rec: dict):
            return trial_value(rec, crash_cost)

        def keep(entry: dict):
            for r in stage_recs():
                if (r.get("status") in FINISHED and r.get("config_id") == entry["config_id"]
                        and r.get("smac_seed") == entry["seed"] and r.get("smac_budget") == entry["budget"]):
                    v = value_of(r)
                    return {"status": int(v.status), "cost": v.cost, "time": v.time, "starttime": v.starttime,
                            "endtime": v.endtime, "additional_info": v.additional_info}
            return None

        resumed = resume_cleanup(state_dir, keep, output_directory=state_dir)
        with _no_prompt(str(rd.root)):
            opt = make_optimizer(self.kind, cs, min_budget=fid.min_budget, max_budget=fid.max_budget, eta=fid.eta,
                                 seed=study.seed, output_dir=rd.smac_dir, name=stage,
                                 n_trials=study.optimizer_options.max_trials_scenario,
                                 initial_design=study.optimizer_options.initial_design, crash_cost=crash_cost,
                                 overwrite=False, save_interval_s=study.optimizer_options.smac_save_s,
                                 promotion=study.optimizer_options.promotion)
        # finished trials SMAC's saved state missed (killed between trial.json and tell): tell them now
        rh = opt.runhistory
        told = 0
        for r in sorted(stage_recs(), key=lambda r: r["trial_id"]):
            if r.get("status") not in FINISHED:
                continue
            try:
                config = Configuration(cs, values=r["searched"])
            except Exception:
                continue
            if rh.has_config(config):
                key = TrialKey(config_id=rh.get_config_id(config), instance=None, seed=r.get("smac_seed"),
                               budget=r.get("smac_budget"))
                if key in rh:
                    continue
            opt.tell(TrialInfo(config=config, seed=r.get("smac_seed"), budget=r.get("smac_budget")), value_of(r))
            told += 1
        if told:
            self.align_config_ids(stage_recs(), cs, opt)
        if resumed["dropped"] or resumed["completed"] or told:
            self.note(f"stage {stage}: resumed SMAC state ({resumed['dropped']} interrupted trial(s) re-queued, "
                      f"{resumed['completed'] + told} finished trial(s) restored)")

        mirror = open_mirror(rd.root, study.name, stage, cs, study.metric, note=self.note)
        mirror.sync(stage_recs())
        cap = self.stage_trial_cap(stage, lo, hi)
        wall_end = None if self.wall_cap is None else self.wall_cap * hi
        gpu_end = None if self.gpu_cap is None else self.gpu_cap * hi
        disp_ref: dict[str, Any] = {}

        def may_start(n_active: int) -> bool:
            if cap is not None and self.n_finished(stage) + n_active >= cap:
                return False
            if wall_end is not None and self.elapsed() >= wall_end:
                return False
            d = disp_ref.get("d")
            if gpu_end is not None and self.device_hours(d.inflight if d else None) >= gpu_end:
                return False
            return True

        def prepare(info, cid):
            tid = self.next_id
            self.next_id += 1
            b = opt.budget_of(info)
            fb = budget_to_fidelity(fid, b)
            searched = config_to_flat(info.config)
            flat = {**fixed, **searched}
            cfg = materialize(study, self.spec, flat)
            cfg.training.epochs = fb.epochs
            params = full_flat(self.spec, flat)
            tdir = rd.trial_dir(tid)
            tdir.mkdir(parents=True, exist_ok=True)
            # warm start: this configuration's own checkpoint from the highest lower budget
            init, from_trial = None, None
            if fid.warm_start and study.objective == "train":
                prev = [r for r in stage_recs() if r.get("config_id") == cid and r.get("status") == "SUCCESS"
                        and float(r["budget"]) < b and r.get("checkpoint") and Path(r["checkpoint"]).exists()]
                if prev:
                    best = max(prev, key=lambda r: (float(r["budget"]), r["trial_id"]))
                    init, from_trial = best["checkpoint"], best["trial_id"]
            # not fsynced (like the RUNNING trial.json below): a trial lost to a power cut is re-run
            atomic_write_text(tdir / "config.yaml", yaml.dump(cfg.model_dump(mode="json"), Dumper=_YAML_DUMPER,
                                                              sort_keys=False), fsync=False)
            vec = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)
                   for v in info.config.get_array().tolist()]
            time_limit = study.trial_time_limit
            if self.wall_cap is not None:
                left = max(30.0, self.wall_cap - self.elapsed())
                time_limit = left if time_limit is None else min(time_limit, left)
            spec = {"trial_id": tid, "trial_dir": str(tdir), "config": cfg.model_dump(mode="json"),
                    "budget": fb.model_dump(), "smac_budget": b, "max_budget": fid.max_budget,
                    "data": self.paths, "cache_dir": str(self.cache_dir), "init_checkpoint": init,
                    "time_limit_s": time_limit, "metric": study.metric.model_dump(), "objective": study.objective,
                    "toy": study.toy.model_dump(), "vector": vec, "device": None, "base_dir": str(study.base_dir)}
            rec = {"trial_id": tid, "config_id": cid, "stage": stage, "optimizer": self.kind, "budget": b,
                   "smac_budget": info.budget, "smac_seed": info.seed, "seed": cfg.seed,
                   "epochs": fb.epochs, "subset_fraction": fb.subset_fraction, "status": "RUNNING",
                   "cost": None, "searched": searched, "params": params, "config": cfg.model_dump(mode="json"),
                   "init_checkpoint": init, "warm_start_from_trial": from_trial, "submitted_at": now_iso()}
            self.records[tid] = rec
            rd.write_trial(rec, fsync=False)
            if self.view:
                self.view.started(rec)
            mirror.started(rec)
            return spec, rec

        def finish(p, result, error):
            rec = p.record
            if result is not None:
                rec["status"] = STATUS_NAMES.get(result.get("status"), "CRASHED")
                rec["cost"] = result.get("cost") if rec["status"] == "SUCCESS" else None
                for k in ("metrics", "timings", "device", "worker", "started_at", "finished_at", "error",
                          "stopped_reason", "best_epoch", "started_unix", "finished_unix"):
                    if k in result:
                        rec[k] = result[k]
                rec["checkpoint"] = result.get("checkpoint")
                rec["epochs_run"] = result.get("epochs_run")
                ws = dict(result.get("warm_start") or {"used": False})
            else:
                rec.update(status="CRASHED", cost=None, error=error, finished_at=now_iso(),
                           timings={"total_s": time.time() - p.submitted})
                ws = {"used": False}
            ws["from_trial"] = rec.get("warm_start_from_trial")
            rec["warm_start"] = ws
            from_epoch = int(ws.get("from_epoch", 0)) if ws.get("used") else 0
            run = int(rec.get("epochs_run") or 0)
            trained = max(0, run - from_epoch)
            rec["epochs_trained"] = trained
            rec["epochs_saved"] = from_epoch
            rec["epoch_equivalents"] = trained * float(rec["subset_fraction"])
            train_s = float((rec.get("timings") or {}).get("train_s") or 0.0)
            rec["time_saved_s"] = from_epoch * train_s / trained if trained and from_epoch else 0.0
            self._count_finished(rec)
            rd.write_trial(rec)
            rd.append_table_row(rec, self.records.values())
            if self.view:
                self.view.finished(rec)
            mirror.finished(rec)
            self.save_state()
            return value_of(rec)

        def tick(d):
            n = handle.n_slots()
            if self.view:
                self.view.set_note("" if n > 0 or d.inflight else "waiting for workers (no trial slot yet)")
                self.view.refresh()
            self.save_state()

        disp = Dispatcher(handle.client, opt, self.trial_fn, prepare=prepare, finish=finish, may_start=may_start,
                          n_slots=handle.n_slots, prefetch=study.optimizer_options.prefetch, tick=tick,
                          trace=self.trace)
        disp_ref["d"] = disp
        summary = disp.run()
        if summary.get("exhausted"):
            self.note(f"stage {stage}: the search space has no new configuration left; stage ends early")
        self.state.setdefault("dispatch", []).append({"stage": stage, **summary, "at": now_iso()})
        if stage == "descriptor":
            inc = select_incumbent(stage_recs())
            if inc is None:
                raise MfhpoError(f"{rd.root}: descriptor stage finished without a successful trial")
            desc_names = {p.name for p in self.spec.tunable({"descriptor"})}
            best = {k: v for k, v in inc["searched"].items() if k in desc_names or k.startswith("groups_")
                    or k.endswith("_on")}
            self.state.setdefault("stages", {})["descriptor"] = {"done": True, "best_trial": inc["trial_id"],
                                                                 "best_flat": best}
        self.save_state(force=True)

    def align_config_ids(self, recs: list[dict], cs, opt) -> None:
        """After re-telling finished trials that SMAC's saved state missed, SMAC has numbered their
        configurations afresh: record SMAC's ids so that warm starts (matched by config_id) and
        resume never confuse two configurations."""
        from ConfigSpace import Configuration

        rh = opt.runhistory
        for r in recs:
            try:
                config = Configuration(cs, values=r["searched"])
            except Exception:
                continue
            if rh.has_config(config):
                cid = rh.get_config_id(config)
                if r.get("config_id") != cid:
                    r["config_id"] = cid
                    self.rd.write_trial(r)

    def start_cluster(self, ccfg):
        """Start the study's Dask cluster (benchmarks/driver_scale.py substitutes simulated workers)."""
        from mfhpo.study.clusters import start_cluster

        return start_cluster(ccfg, self.rd.root, base_dir=self.study.base_dir)

    def note(self, msg: str) -> None:
        print(f"[mfhpo] {msg}", flush=True)

    # ---- main --------------------------------------------------------------------------------
    def run(self, workers: Optional[int]) -> dict:
        from mfhpo.study.clusters import install_signal_handlers, load_cluster_config
        from mfhpo.study.dashboard import dask_dashboard_lines, quiet_dask_port_warning
        from mfhpo.study.progress import ProgressView

        study, rd = self.study, self.rd
        self.paths = data_paths(study, rd)
        # data checked (and, on resume, compared with the hashes the study started with) before any worker
        data_prov = preflight_data(study, self.spec, self.paths, self.state, rd.root)
        self.cache_dir = study.resolve(study.feature_cache) if study.feature_cache else rd.root / "feature_cache"
        # interrupted trials of an earlier run
        n_int = 0
        for r in self.records.values():
            if r.get("status") == "RUNNING":
                r["status"] = "INTERRUPTED"
                r["finished_at"] = now_iso()
                rd.write_trial(r)
                n_int += 1
        if n_int:
            self.note(f"{n_int} trial(s) interrupted in an earlier run are re-queued")
        if "provenance" not in self.state:
            self.state.update({
                "study": study.name, "study_file": str(study.path), "study_hash": study.file_hash(),
                "optimizer": self.kind, "mode": study.mode, "seed": study.seed, "created_at": now_iso(),
                "metric": study.metric.describe(), "fidelity": describe_fidelity(study.fidelity),
                "provenance": {"data": data_prov, "packages": package_versions(),
                               "python_executable": sys.executable, "host": platform.node()},
            })
        self.state.setdefault("invocations", []).append({"started_at": now_iso(), "trials_cap": self.trials_cap})
        self.save_state(force=True)
        done = self.exhausted()
        if done:
            self.note(f"study {study.name} already complete: {done}; use --trials to extend")
            rd.write_table(self.records.values())
            return {"complete": True}
        ccfg = load_cluster_config(study.cluster, source=str(study.path))
        if workers is not None:
            ccfg = ccfg.with_workers(workers)
        check_security_files(ccfg, study.base_dir, source=str(study.path))
        note = rounding_note(study.fidelity)
        if note:
            self.note(note)
        install_signal_handlers()
        quiet_dask_port_warning()
        handle = self.start_cluster(ccfg)
        try:
            self.note(scheduler_note(handle))
            self.note(f"study {study.name}: optimizer {self.kind}, mode {study.mode}, cost = {study.metric.describe()}")
            self.note(f"run directory {rd.root}; {handle.summary() if hasattr(handle, 'summary') else ''}")
            for line in dask_dashboard_lines(handle, ccfg.dashboard_port):
                self.note(line)
            self.view = ProgressView(study.name, study.metric, self.budget_text, enabled=self.show_progress,
                                     budget_parts=self.budget_parts)
            self.view.records = [r for r in self.records.values() if r.get("status") in FINISHED]
            self.view.start()
            try:
                for stage, lo, hi in self.stage_plan():
                    if (self.state.get("stages") or {}).get(stage, {}).get("done"):
                        continue
                    self.run_stage(stage, lo, hi, handle)
            finally:
                self.view.stop()
        finally:
            self.save_state(force=True)
            handle.close()
        rd.write_table(self.records.values())
        inc = select_incumbent(self.records.values())
        self.state["invocations"][-1]["finished_at"] = now_iso()
        self.save_state(force=True)
        self.note(f"done: {self.n_finished()} trials; incumbent: "
                  + (f"trial {inc['trial_id']} (budget {inc['budget']:g}, cost {inc['cost']:.5g})" if inc else "none"))
        self.note(f"next: mfhpo status {rd.root}  |  mfhpo incumbent {rd.root}")
        return {"complete": True, "incumbent": inc}


def prepare_rundir(study: StudyConfig, rundir: Optional[Path], kind: str) -> RunDir:
    root = Path(rundir) if rundir is not None else Path("runs") / study.name
    rd = RunDir(root)
    if rd.exists():
        state = rd.read_state()
        old = state.get("study_hash")
        if old and old != study.file_hash():
            raise MfhpoError(f"{study.path}: changed since {root} was started (hash {study.file_hash()} != {old}); "
                             f"restore it or use a new --rundir")
        if state.get("optimizer") and state["optimizer"] != kind:
            raise MfhpoError(f"{root}: was run with optimizer {state['optimizer']}, not {kind}; use a new --rundir")
    else:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(rd.study_file, study.text)
        atomic_write_text(rd.hash_file, study.file_hash() + "\n")
    return rd


def run_command(study: Path, *, trials: Optional[int] = None, workers: Optional[int] = None,
                optimizer: Optional[str] = None, rundir: Optional[Path] = None, progress: bool = True,
                locked: bool = False) -> dict:
    """Run or resume ``study``. ``locked``: the caller holds the run-directory lock (``mfhpo run`` takes
    it before importing this module); otherwise it is taken here."""
    cfg = load_study(study)
    kind = optimizer or cfg.optimizer
    if kind not in ("smac-mf", "smac-bo", "random"):
        raise MfhpoError(f"--optimizer: must be smac-mf, smac-bo or random, got {kind!r}")
    if trials is not None and trials < 1:
        raise MfhpoError(f"--trials: must be >= 1, got {trials}")
    # every categorical choice and range end materialised now, before a run directory or cluster exists
    check_corners(cfg, build_space_spec(cfg, str(cfg.path)))
    root = Path(rundir) if rundir is not None else Path("runs") / cfg.name
    with one_line_failures(study, root, rundir=rundir, optimizer=optimizer):
        with contextlib.nullcontext() if locked else RunLock(root / "run.lock"):
            rd = prepare_rundir(cfg, rundir, kind)
            return StudyRun(cfg, rd, kind, trials, progress).run(workers)
