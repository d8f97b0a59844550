"""``mfhpo run STUDY.yaml``: run or resume a study.

Flow: validate the study -> run directory (refuse a changed study file) -> data + provenance ->
Dask cluster -> one SMAC run per stage (joint, or descriptor then model) driven by the dispatcher ->
trial folders + trials.csv. Re-running resumes: finished trials are kept (and told to SMAC if its
state missed them), interrupted ones are re-queued.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

from mfhpo.errors import MfhpoError
from mfhpo.study.check import check_corners, check_optimizer_kind, preflight_data, rounding_note
from mfhpo.study.config import StudyConfig, load_study
from mfhpo.study.failures import one_line_failures
from mfhpo.study.fidelity import describe as describe_fidelity
from mfhpo.study.objective import load_study_dataset, now_iso, run_trial
from mfhpo.study.rundir import RunDir
from mfhpo.study.security import check_security_files, scheduler_note
from mfhpo.study.space import SpaceSpec, build_space_spec, to_configspace
from mfhpo.study.stages import descriptor_choice, fixed_for_stage, stage_plan, stage_tags
from mfhpo.study.trial import TrialRecord, select_incumbent


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


def keep_promotion(study: StudyConfig, state: dict) -> None:
    """A resumed study keeps the promotion rule it was started with when its file does not name one
    (``optimizer_options.promotion``): a run started before ``async`` became the default (its
    state.json records no promotion) stays with ``sync``, SMAC's Hyperband, whose saved state it has."""
    oo = study.optimizer_options
    if state.get("provenance") is not None and "promotion" not in oo.model_fields_set:
        oo.promotion = state.get("promotion", "sync")
        if oo.promotion == "sync" and oo.brackets != 1:
            raise MfhpoError(f"{study.path}: optimizer_options.brackets: needs promotion async, but this run "
                             "directory was started with sync (SMAC's Hyperband); add promotion: async to switch")


class StudyRun:
    """One invocation of ``mfhpo run``: the study's budgets and state, its stages over one cluster."""

    #: what each Dask worker runs for one trial (benchmarks/driver_scale.py substitutes a simulated trial)
    trial_fn = staticmethod(run_trial)
    #: ``trace(event, seconds, cpu_seconds)`` for the dispatcher's timings (mfhpo.study.dispatcher), or None
    trace = None

    def __init__(self, study: StudyConfig, rd: RunDir, kind: str, trials: Optional[int], progress: bool,
                 spec: Optional[SpaceSpec] = None, corners: Optional[list] = None):
        """``spec`` and ``corners``: the study's validated space and corner configurations, when the
        caller has them (``run_command``); built here otherwise."""
        self.study = study
        self.rd = rd
        self.kind = kind
        self.spec = spec if spec is not None else build_space_spec(study, str(study.path))
        self.corners = corners
        self.trials_cap = trials if trials is not None else study.budget.trials
        self.wall_cap = study.budget.wall_time
        self.gpu_cap = study.budget.gpu_hours
        self.records: dict[int, TrialRecord] = {r.trial_id: r for r in rd.trial_records()}
        # finished trials per stage and their summed wall time, kept as the results come in: the
        # optimizer thread reads them (may_start) while the main thread adds records
        self._done: dict[Any, int] = {}
        self._done_s = 0.0
        for r in self.records.values():
            self.count_finished(r)
        self.next_id = max([0] + list(self.records) + [int(p.name) for p in rd.trials_dir.glob("[0-9]*")
                                                          if p.name.isdigit()]) + 1
        self.state = rd.read_state()
        keep_promotion(study, self.state)
        self.t0 = time.time()
        self.elapsed_before = float(self.state.get("elapsed_s", 0.0))
        self.show_progress = progress
        self.view = None
        self._last_state_write = 0.0
        #: called with each finished :class:`TrialRecord`, after it is written (``Study.optimize(callbacks=...)``)
        self.callbacks: list = []

    # ---- budget ------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.t0)

    def count_finished(self, rec: TrialRecord) -> None:
        """Count ``rec`` if it is finished (once per trial: when its result is recorded)."""
        if rec.finished:
            self._done[rec.stage] = self._done.get(rec.stage, 0) + 1
            self._done_s += rec.total_s

    def device_hours(self, inflight: dict | None = None) -> float:
        s = self._done_s
        if inflight:
            now = time.time()
            s += sum(now - p.submitted for p in list(inflight.values()))  # list(): one atomic copy
        return s / 3600.0

    def n_finished(self, stage: str | None = None) -> int:
        return sum(self._done.values()) if stage is None else self._done.get(stage, 0)

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
    def run_stage(self, stage: str, share_end: float, handle) -> None:
        """One stage: its space, its optimizer (resumed), the loop, and what the next stage needs."""
        from mfhpo.study.loop import StageLoop
        from mfhpo.study.resume import open_stage_optimizer

        study, rd = self.study, self.rd
        fixed = fixed_for_stage(study, self.spec, stage, self.state, rd.root)
        cs = to_configspace(self.spec, seed=study.seed, tags=stage_tags(stage), fixed_flat=fixed)
        stage_recs = [r for r in self.records.values() if r.stage == stage]
        opt = open_stage_optimizer(self.kind, study, rd, stage, cs, stage_recs, self.note)
        mirror = self.open_mirror(stage, cs)
        mirror.sync(stage_recs)
        loop = StageLoop(self, stage, share_end, opt, fixed, mirror)
        summary = self.run_loop(loop, handle)
        if summary.get("exhausted"):
            self.note(f"stage {stage}: the search space has no new configuration left; stage ends early")
        self.state.setdefault("dispatch", []).append({"stage": stage, **summary, "at": now_iso()})
        if stage == "descriptor":
            inc = select_incumbent(loop.records())
            if inc is None:
                raise MfhpoError(f"{rd.root}: descriptor stage finished without a successful trial")
            self.state.setdefault("stages", {})["descriptor"] = {
                "done": True, "best_trial": inc.trial_id, "best_flat": descriptor_choice(self.spec, inc.searched)}
        self.save_state(force=True)

    def open_mirror(self, stage: str, cs):
        """The stage's Optuna journal mirror (benchmarks/driver_sim.py can switch it off)."""
        from mfhpo.study.optuna_mirror import open_mirror

        return open_mirror(self.rd.root, self.study.name, stage, cs, self.study.metric, note=self.note)

    def run_loop(self, loop, handle) -> dict:
        """Run a stage's trials on the cluster (benchmarks/driver_sim.py runs them on a virtual clock)."""
        return loop.run_loop(handle)

    def start_cluster(self, ccfg):
        """Start the study's Dask cluster (benchmarks/driver_scale.py substitutes simulated workers)."""
        from mfhpo.study.clusters import start_cluster

        return start_cluster(ccfg, self.rd.root, base_dir=self.study.base_dir)

    def note(self, msg: str) -> None:
        print(f"[mfhpo] {msg}", flush=True)

    # ---- main --------------------------------------------------------------------------------
    def begin(self) -> None:
        """Before any worker: data checked (on resume: against the hashes the study started with),
        interrupted trials re-queued, provenance and this invocation recorded."""
        from mfhpo.study.resume import mark_interrupted

        study = self.study
        self.paths = data_paths(study, self.rd)
        data_prov = preflight_data(study, self.spec, self.paths, self.state, self.rd.root, corners=self.corners)
        self.cache_dir = study.resolve(study.feature_cache) if study.feature_cache else self.rd.root / "feature_cache"
        n_int = mark_interrupted(list(self.records.values()), self.rd, now_iso())
        if n_int:
            self.note(f"{n_int} trial(s) interrupted in an earlier run are re-queued")
        if "provenance" not in self.state:
            self.state.update({
                "study": study.name, "study_file": str(study.path), "study_hash": study.file_hash(),
                "optimizer": self.kind, "promotion": study.optimizer_options.promotion, "mode": study.mode,
                "seed": study.seed, "created_at": now_iso(),
                "metric": study.metric.describe(), "fidelity": describe_fidelity(study.fidelity),
                "provenance": {"data": data_prov, "packages": package_versions(),
                               "python_executable": sys.executable, "host": platform.node()},
            })
        self.state.setdefault("invocations", []).append({"started_at": now_iso(), "trials_cap": self.trials_cap})
        self.save_state(force=True)

    def cluster_config(self, workers: Optional[int]):
        from mfhpo.study.clusters import load_cluster_config

        study = self.study
        ccfg = load_cluster_config(study.cluster, source=str(study.path))
        if workers is not None:
            ccfg = ccfg.with_workers(workers)
        check_security_files(ccfg, study.base_dir, source=str(study.path))
        return ccfg

    def announce(self, handle, ccfg) -> None:
        from mfhpo.study.dashboard import dask_dashboard_lines

        study = self.study
        self.note(scheduler_note(handle))
        self.note(f"study {study.name}: optimizer {self.kind}, mode {study.mode}, cost = {study.metric.describe()}")
        self.note(f"run directory {self.rd.root}; {handle.summary() if hasattr(handle, 'summary') else ''}")
        for line in dask_dashboard_lines(handle, ccfg.dashboard_port):
            self.note(line)

    def run_stages(self, handle) -> None:
        """Every stage not yet done, under the live view."""
        from mfhpo.study.progress import ProgressView

        self.view = ProgressView(self.study.name, self.study.metric, self.budget_text, enabled=self.show_progress,
                                 budget_parts=self.budget_parts)
        self.view.load([r for r in self.records.values() if r.finished])
        self.view.start()
        try:
            for stage, _lo, hi in stage_plan(self.study):
                if (self.state.get("stages") or {}).get(stage, {}).get("done"):
                    continue
                self.run_stage(stage, hi, handle)
        finally:
            self.view.stop()

    def run(self, workers: Optional[int]) -> dict:
        from mfhpo.study.clusters import install_signal_handlers
        from mfhpo.study.dashboard import quiet_dask_port_warning

        study, rd = self.study, self.rd
        self.begin()
        done = self.exhausted()
        if done:
            self.note(f"study {study.name} already complete: {done}; use --trials to extend")
            rd.write_table(self.records.values())
            return {"complete": True}
        ccfg = self.cluster_config(workers)
        note = rounding_note(study.fidelity)
        if note:
            self.note(note)
        install_signal_handlers()
        quiet_dask_port_warning()
        handle = self.start_cluster(ccfg)
        try:
            self.announce(handle, ccfg)
            self.run_stages(handle)
        finally:
            self.save_state(force=True)
            handle.close()
        rd.write_table(self.records.values())
        inc = select_incumbent(self.records.values())
        self.state["invocations"][-1]["finished_at"] = now_iso()
        self.save_state(force=True)
        self.note(f"done: {self.n_finished()} trials; incumbent: "
                  + (f"trial {inc.trial_id} (budget {inc.budget:g}, cost {inc.cost:.5g})" if inc else "none"))
        self.note(f"next: mfhpo status {rd.root}  |  mfhpo incumbent {rd.root}")
        return {"complete": True, "incumbent": inc}


def run_command(study: Path, *, trials: Optional[int] = None, workers: Optional[int] = None,
                optimizer: Optional[str] = None, rundir: Optional[Path] = None, progress: bool = True,
                locked: bool = False, callbacks: tuple = ()) -> dict:
    """Run or resume ``study``. ``locked``: the caller holds the run-directory lock (``mfhpo run`` takes
    it before importing this module); otherwise it is taken here."""
    cfg = load_study(study)
    kind = optimizer or cfg.optimizer
    check_optimizer_kind(kind)
    if trials is not None and trials < 1:
        raise MfhpoError(f"--trials: must be >= 1, got {trials}")
    # the study validated once: its space, then every categorical choice and range end materialised,
    # before a run directory or cluster exists
    spec = build_space_spec(cfg, str(cfg.path))
    corners = check_corners(cfg, spec)
    rd = RunDir(Path(rundir) if rundir is not None else Path("runs") / cfg.name)
    with one_line_failures(study, rd.root, rundir=rundir, optimizer=optimizer):
        with contextlib.nullcontext() if locked else rd.lock():
            rd.prepare(cfg, kind)
            run = StudyRun(cfg, rd, kind, trials, progress, spec=spec, corners=corners)
            run.callbacks = list(callbacks)
            return run.run(workers)
