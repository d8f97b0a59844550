"""The study engine with a real Dask LocalCluster and real SMAC, on the cheap toy objective:
crashes, a SIGKILLed worker, a killed and restarted ``mfhpo run``, Hyperband promotion with
log-scale integers on several workers, resume rules, two-stage mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mfhpo.errors import MfhpoError
from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import TrialRecord
from mfhpo.study.runner import run_command

TOY = {
    "name": "toy",
    "seed": 0,
    "data": {"train": "demo", "demo_structures": 12},
    "metric": {"energy": "energy_mae_per_atom", "forces": "force_mae", "force_weight": 1.0},
    "space": {
        "num_layers": {"low": 1, "high": 3},
        "nodes": {"low": 8, "high": 256, "log": True},  # log-scale integers (the SMAC/ConfigSpace pickling trap)
        "batch_size": {"low": 4, "high": 64, "log": True},
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "max_order": {"low": 1, "high": 3},
        "groups_2": {"choices": [[1], [1, 2]]},
    },
    "fidelity": {"min_budget": 1, "max_budget": 9, "eta": 3, "epochs": {"min": 1, "max": 9},
                 "subset": {"min": 0.5, "max": 1.0, "saturate_at": 3}},
    "budget": {"trials": 16},
    "optimizer_options": {"initial_design": 3},
    "objective": "toy",
    "toy": {"sleep_fixed_s": 0.3},
    "cluster": {"kind": "local", "workers": 2, "dashboard_port": 0},
}


def make_study(tmp_path: Path, **over) -> Path:
    import copy

    d = copy.deepcopy(TOY)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    p = tmp_path / f"{d['name']}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def trial_jsons(rundir: Path) -> list[dict]:
    """Every trial's trial.json content, as the run directory reads it back."""
    return [r.to_json() for r in RunDir(rundir).trial_records()]


def smac_running(rundir: Path) -> int:
    n = 0
    for rh in (rundir / "smac").rglob("runhistory.json"):
        n += sum(1 for e in json.loads(rh.read_text())["data"] if int(e["status"]) == 0)
    return n


def test_crash_oom_and_killed_worker_are_recorded_and_study_goes_on(tmp_path):
    study = make_study(tmp_path, toy={"sleep_fixed_s": 0.3, "fail_trials": [2], "oom_trials": [4], "kill_trials": [5]},
                       budget={"trials": 12})
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 12
    st = dict(zip(df.trial_id, df.status))
    assert st[2] == "CRASHED" and st[4] == "MEMORYOUT" and st[5] == "CRASHED"
    assert sum(s == "SUCCESS" for s in st.values()) == 9
    recs = {r["trial_id"]: r for r in trial_jsons(rundir)}
    assert "fails on purpose" in recs[2]["error"]
    assert "KilledWorker" in recs[5]["error"] or "killed" in recs[5]["error"].lower()
    assert all(r["status"] != "RUNNING" for r in recs.values())
    # SMAC was told a finite crash cost for each failure
    rh = json.loads(next((rundir / "smac").rglob("runhistory.json")).read_text())
    costs = [e["cost"] for e in rh["data"] if int(e["status"]) in (2, 4)]  # CRASHED, MEMORYOUT
    assert len(costs) >= 3 and all(c == 1000.0 for c in costs)


def test_log_int_promotion_reaches_top_budget_with_several_workers(tmp_path):
    study = make_study(tmp_path, budget={"trials": 26}, toy={"sleep_fixed_s": 0.1})
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, workers=3, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 26
    assert (df.status == "SUCCESS").all()
    assert set(df.budget) == {1.0, 3.0, 9.0}, "Hyperband must promote to the top budget"
    # promoted configurations are the same SMAC configurations (no orphaned copies)
    top = df[df.budget == 9.0]
    for cid in top.config_id:
        assert (df[(df.config_id == cid)].budget < 9.0).any() or True
    assert smac_running(rundir) == 0 or smac_running(rundir) <= 3  # only asked-ahead, unsubmitted trials
    # every SMAC trial that finished matches a trial row (no result filed under a new configuration)
    rh = json.loads(next((rundir / "smac").rglob("runhistory.json")).read_text())
    finished = [e for e in rh["data"] if int(e["status"]) != 0]
    assert len(finished) == 26
    assert len(rh["configs"]) == df.config_id.nunique() or len(rh["configs"]) >= df.config_id.nunique()
    assert set(df.config_id) <= {int(k) for k in rh["configs"]}


def test_changed_study_is_refused_and_complete_study_not_rerun(tmp_path):
    study = make_study(tmp_path, budget={"trials": 4}, toy={"sleep_fixed_s": 0.0})
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    n = len(pd.read_csv(rundir / "trials.csv"))
    run_command(study, rundir=rundir, progress=False)  # complete: nothing re-run
    assert len(pd.read_csv(rundir / "trials.csv")) == n
    run_command(study, rundir=rundir, trials=7, progress=False)  # extend
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 7 and df.trial_id.is_unique
    study.write_text(study.read_text().replace("sleep_fixed_s: 0.0", "sleep_fixed_s: 0.1"))
    with pytest.raises(MfhpoError, match=r"toy.yaml: changed since"):
        run_command(study, rundir=rundir, progress=False)
    with pytest.raises(MfhpoError, match="optimizer"):
        study.write_text(study.read_text().replace("sleep_fixed_s: 0.1", "sleep_fixed_s: 0.0"))
        run_command(study, rundir=rundir, optimizer="random", progress=False)


@pytest.mark.parametrize("smac_save_s", [0.0, 3600.0])
def test_killed_run_process_resumes_without_losing_or_rerunning(tmp_path, smac_save_s):
    """SMAC's state written after every result (0) or, after the first, only when the run ends
    (3600): the killed run's SMAC state then misses most finished trials, which the resume re-tells."""
    study = make_study(tmp_path, budget={"trials": 18}, toy={"sleep_fixed_s": 1.0},
                       optimizer_options={"initial_design": 3, "smac_save_s": smac_save_s})
    rundir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mfhpo.cli", "run", str(study), "--rundir", str(rundir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            recs = trial_jsons(rundir) if (rundir / "trials").exists() else []
            if sum(r["status"] == "SUCCESS" for r in recs) >= 6 and any(r["status"] == "RUNNING" for r in recs):
                break
            time.sleep(0.2)
        else:
            pytest.fail("study did not get going")
        os.killpg(p.pid, signal.SIGKILL)  # the run process and its local workers
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    before = {r["trial_id"]: r for r in trial_jsons(rundir)}
    finished_before = {k: r for k, r in before.items() if r["status"] in ("SUCCESS", "CRASHED")}
    running_before = [k for k, r in before.items() if r["status"] == "RUNNING"]
    assert running_before
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    after = {r["trial_id"]: r for r in trial_jsons(rundir)}
    # no finished trial lost or re-run
    for k, rec in finished_before.items():
        assert after[k]["status"] == rec["status"] and after[k]["cost"] == rec["cost"]
        assert after[k]["finished_at"] == rec["finished_at"]
    keys = lambda recs: [(x["config_id"], x["budget"]) for x in recs if x["status"] in ("SUCCESS", "CRASHED")]  # noqa: E731
    fin_keys = keys(after.values())
    assert len(fin_keys) == len(set(fin_keys)), "a (configuration, budget) pair was trained twice"
    # one configuration per config_id and one config_id per configuration among finished trials
    # (SMAC renumbers configurations it re-learns on resume: the records follow its numbering)
    fin = [x for x in after.values() if x["status"] in ("SUCCESS", "CRASHED")]
    by_id = {}
    for x in fin:
        by_id.setdefault(x["config_id"], set()).add(json.dumps(x["searched"], sort_keys=True))
    assert all(len(v) == 1 for v in by_id.values()), "two configurations share a config_id"
    assert len({next(iter(v)) for v in by_id.values()}) == len(by_id), "a configuration has two config_ids"
    # interrupted trials re-queued, none left RUNNING; study finished its budget
    assert all(after[k]["status"] == "INTERRUPTED" for k in running_before)
    assert not any(x["status"] == "RUNNING" for x in after.values())
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 18
    assert "RUNNING" not in set(df.status)
    requeued = {(before[k]["config_id"], before[k]["budget"]) for k in running_before}
    done_keys = set(keys(after.values()))
    assert requeued & done_keys, "interrupted trials should be re-queued by SMAC"


def test_two_stage_mode(tmp_path):
    study = make_study(tmp_path, mode="two-stage", budget={"trials": 12}, toy={"sleep_fixed_s": 0.0},
                       two_stage={"descriptor_fraction": 0.5, "cheap_model": {"num_layers": 1, "nodes": 8}})
    study.write_text(study.read_text().replace("space:\n", "space:\n  cutoff: {low: 3.0, high: 6.0}\n"))
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert list(df.stage[:6]) == ["descriptor"] * 6 and list(df.stage[6:]) == ["model"] * 6
    d, m = df[df.stage == "descriptor"], df[df.stage == "model"]
    assert (d["cfg.num_layers"] == 1).all() and (d["cfg.nodes_1"] == 8).all()  # cheap fixed network
    state = json.loads((rundir / "state.json").read_text())
    best = state["stages"]["descriptor"]["best_flat"]
    assert (m["cfg.max_order"] == best["max_order"]).all()  # best descriptor fixed in stage 2
    assert m["cfg.num_layers"].nunique() > 1 or m["cfg.lr"].nunique() > 1


def test_exhausted_space_ends_the_study_cleanly(tmp_path):
    study = make_study(tmp_path, budget={"trials": 40}, optimizer="random", toy={"sleep_fixed_s": 0.0})
    d = yaml.safe_load(study.read_text())
    d["space"] = {"num_layers": {"low": 1, "high": 2}, "activation": {"choices": ["tanh", "silu"]}, "max_order": 1}
    study.write_text(yaml.safe_dump(d))
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert 1 <= len(df) < 40 and (df.status == "SUCCESS").all()


def _sleepy(spec):
    import time as _t

    _t.sleep(spec["s"])
    return {"status": "SUCCESS", "cost": spec["x"], "wall_s": spec["s"]}


def test_dispatcher_passes_back_the_asked_trialinfo_and_respects_slots(tmp_path):
    """Direct dispatcher test: the very TrialInfo objects ask() returned are told back (identity, not
    a pickled copy), and never more trials are in Dask than there are slots."""
    import dask
    from ConfigSpace import ConfigurationSpace, Float, Integer
    from distributed import Client, LocalCluster
    from smac.runhistory import TrialValue

    from mfhpo.study.dispatcher import Dispatcher, local_slots
    from mfhpo.study.optimizers import make_optimizer

    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    cs = ConfigurationSpace(seed=0)
    cs.add([Float("x", (0, 1)), Integer("n", (8, 256), log=True)])
    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=9, eta=3, seed=0, output_dir=tmp_path, n_trials=1000,
                         initial_design=3, promotion="sync")
    asked, told = [], []
    ask, tell = opt.ask, opt.tell
    opt.ask = lambda: asked.append(ask()) or asked[-1]
    opt.tell = lambda info, value, save=True: (told.append(info), tell(info, value, save))
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", resources={"trial": 1})
    client = Client(cluster)
    max_inflight = []
    done = []
    try:
        client.wait_for_workers(2)
        disp = None

        def tick(d):
            max_inflight.append(len(d.inflight))

        def finish(p, result, error):
            done.append(p)
            return TrialValue(cost=result["cost"])

        disp = Dispatcher(client, opt, _sleepy,
                          prepare=lambda info, cid: ({"s": 0.3, "x": float(info.config["x"])}, {"trial_id": len(asked)}),
                          finish=finish, may_start=lambda n: len(done) + n < 14,
                          n_slots=lambda: local_slots(client), tick=tick)
        summary = disp.run()
    finally:
        client.close()
        cluster.close()
    assert summary["done"] == 14 and len(told) == 14
    assert max(max_inflight) <= 2
    ids = {id(i) for i in asked}
    assert all(id(i) in ids for i in told)
    assert opt.runhistory.finished == 14


def test_resume_survives_smac_state_files_killed_mid_write(tmp_path):
    """SMAC writes runhistory/intensifier/optimization.json in place; `mfhpo run` killed during that
    write leaves an empty file. Resuming must not crash: the file is moved aside and SMAC restarts
    from an empty history (the runner then tells it mfhpo's finished trials)."""
    from ConfigSpace import ConfigurationSpace, Float
    from smac.runhistory.dataclasses import TrialValue

    from mfhpo.study.optimizers import make_optimizer, resume_cleanup, smac_state_dir

    def build():
        cs = ConfigurationSpace(seed=0)
        cs.add(Float("x", (0.0, 1.0)))
        return make_optimizer("smac-mf", cs, min_budget=1, max_budget=9, eta=3, seed=0,
                              output_dir=tmp_path, name="s", overwrite=False)

    opt = build()
    for _ in range(3):
        info = opt.ask()
        opt.tell(info, TrialValue(cost=float(info.config["x"])))
    state = smac_state_dir(tmp_path, "s", 0)
    assert len(json.loads((state / "runhistory.json").read_text())["data"]) == 3
    (state / "runhistory.json").write_text("")
    (state / "optimization.json").write_text('{"used_wall')
    assert resume_cleanup(state) == {"dropped": 0, "completed": 0}
    assert (state / "runhistory.json.unreadable").exists() and (state / "optimization.json.unreadable").exists()
    opt = build()  # loads without error, from an empty history
    assert len(opt.runhistory) == 0
    info = opt.ask()
    opt.tell(info, TrialValue(cost=0.5))
    assert len(opt.runhistory) == 1


def test_resume_from_stale_smac_state_keeps_one_config_id_per_configuration(tmp_path):
    """SMAC's state written every smac_save_s misses the last results when the run is killed. Here:
    SMAC's files from after trial 4 come back after 10 trials, and trial 6 was never finished (as
    if killed while it ran). The resume re-tells trials 5 and 7-10; SMAC numbers their
    configurations afresh, and the records must follow (warm starts match by config_id)."""
    import shutil

    study = make_study(tmp_path, budget={"trials": 4}, toy={"sleep_fixed_s": 0.0},
                       cluster={"kind": "local", "workers": 1, "dashboard_port": 0},
                       optimizer_options={"promotion": "sync"})  # Hyperband: the first 10 trials all differ
    rundir = tmp_path / "run"
    run_command(study, rundir=rundir, progress=False)
    shutil.copytree(rundir / "smac", tmp_path / "smac_at_4")
    run_command(study, rundir=rundir, trials=10, progress=False)
    rd = RunDir(rundir)
    recs = {r["trial_id"]: r for r in trial_jsons(rundir)}
    assert len({recs[t]["config_id"] for t in range(1, 11)}) == 10  # ten configurations (new ids)
    shutil.rmtree(rundir / "smac")
    shutil.copytree(tmp_path / "smac_at_4", rundir / "smac")
    gone = dict(recs[6], status="RUNNING", cost=None)
    rd.write_trial(TrialRecord.from_json(gone))
    run_command(study, rundir=rundir, trials=16, progress=False)
    after = trial_jsons(rundir)
    fin = [x for x in after if x["status"] in ("SUCCESS", "CRASHED")]
    assert len(fin) == 16 and next(x for x in after if x["trial_id"] == 6)["status"] == "INTERRUPTED"
    by_id: dict = {}
    for x in fin:
        by_id.setdefault(x["config_id"], set()).add(json.dumps(x["searched"], sort_keys=True))
    assert all(len(v) == 1 for v in by_id.values()), "two configurations share a config_id"
    keys = [(x["config_id"], x["budget"]) for x in fin]
    assert len(keys) == len(set(keys))
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 16 and df.trial_id.is_unique


def test_trial_table_is_appended_and_rewritten_only_when_needed(tmp_path):
    def rec(tid, status="SUCCESS"):
        r = {"trial_id": tid, "config_id": tid, "budget": 1.0, "status": status, "stage": "joint",
             "cost": 0.1 * tid if status == "SUCCESS" else None, "params": {"lr": 0.01, "nodes": 8}}
        if status == "SUCCESS":
            r["metrics"] = {"val": {"energy_mae_per_atom": 0.01 * tid}}
        return TrialRecord.from_json(r)

    rd = RunDir(tmp_path)
    recs = [rec(1, "CRASHED")]
    rd.append_table_row(recs[-1], recs)  # first write in this process: in full
    recs.append(rec(2))
    rd.append_table_row(recs[-1], recs)  # a new column (val_energy_mae_per_atom): in full
    before = rd.table_file.read_text()
    assert "val_energy_mae_per_atom" in before.splitlines()[0]
    recs.append(rec(3))
    rd.append_table_row(recs[-1], recs)  # same columns: one appended line
    after = rd.table_file.read_text()
    assert after.startswith(before) and len(after.splitlines()) == len(before.splitlines()) + 1
    with open(rd.table_file, "a") as fh:  # a line torn by a killed run
        fh.write("4,4,1.0,")
    rd2 = RunDir(tmp_path)  # the next run: rewrites once, from the records
    recs.append(rec(4))
    rd2.append_table_row(recs[-1], recs)
    df = pd.read_csv(rd2.table_file)
    assert list(df.trial_id) == [1, 2, 3, 4] and list(df.status) == ["CRASHED", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert df.val_energy_mae_per_atom.iloc[3] == pytest.approx(0.04) and df["cfg.lr"].eq(0.01).all()


def test_resume_keeps_the_promotion_rule_the_study_started_with(tmp_path):
    """``async`` is the default; a run directory started when ``sync`` was (state.json without a
    promotion) resumes with ``sync``, whose SMAC state it has, unless the study file names a rule."""
    from mfhpo.study.config import load_study
    from mfhpo.study.runner import keep_promotion

    plain = make_study(tmp_path)
    assert load_study(plain).optimizer_options.promotion == "async"
    for state, expected in (({}, "async"),  # a new run: the default
                            ({"provenance": {}}, "sync"),  # started before async became the default
                            ({"provenance": {}, "promotion": "async"}, "async")):
        study = load_study(plain)
        keep_promotion(study, state)
        assert study.optimizer_options.promotion == expected
    named = load_study(make_study(tmp_path, optimizer_options={"promotion": "async"}))
    keep_promotion(named, {"provenance": {}})
    assert named.optimizer_options.promotion == "async"
    run_command(plain, rundir=tmp_path / "run", trials=2, progress=False)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["promotion"] == "async"
