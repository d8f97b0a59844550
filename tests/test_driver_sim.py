"""benchmarks/driver_sim.py: the real study driver on a virtual clock against simulated workers."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from smac.runhistory import TrialValue
from conftest import load_benchmark


@pytest.fixture(scope="module")
def sim():
    return load_benchmark("driver_sim")


def _trial_jsons(rundir):
    return [json.loads(p.read_text()) for p in sorted((rundir / "trials").glob("*/trial.json"))]


def test_real_study_on_a_virtual_clock(sim, tmp_path, capsys):
    r = sim.simulate(8, [20, 40], tmp_path / "a", mean_s=600.0, drain=True)
    rundir = tmp_path / "a" / "run"
    table = pd.read_csv(rundir / "trials.csv")
    # every trial recorded once: 40 rows, 40 distinct ids, each a finished trial folder
    assert len(table) == 40 and sorted(table["trial_id"]) == list(range(1, 41))
    recs = _trial_jsons(rundir)
    assert len(recs) == 40 and {rec["status"] for rec in recs} == {"SUCCESS"}
    # the records carry the simulated 10-minute trials, SMAC and the state file saw them all
    assert 300 < table["wall_time_s"].median() < 1200
    state = json.loads((rundir / "state.json").read_text())
    assert state["n_trials_finished"] == 40 and state["dispatch"][0]["simulated"]
    rh = json.loads(next((rundir / "smac").rglob("runhistory.json")).read_text())
    assert sum(1 for e in rh["data"] if int(e["status"]) == 1) == 40  # SMAC's SUCCESS
    assert {row["trials"] for row in r["rows"]} == {20, 40} and r["n_finished"] == 40
    for row in r["rows"]:
        assert 0 < row["util_window"] <= 1 and 0 < row["util_cum"] <= 1
        assert row["ask_mean_ms"] > 0 and row["tellrec_med_ms"] > 0 and row["rss_mb"] > 50
    # milliseconds of driver work against 75 s between results: the slots stay busy up to the tail
    assert r["rows"][0]["util_window"] > 0.99
    assert "     8     20" in capsys.readouterr().out


def test_slower_driver_lowers_utilisation(sim, tmp_path):
    """Trials of 2 virtual seconds on 8 slots (4 results/s): a real extra 500 ms per ask must show
    as idle slots, through the queueing on the virtual clock (measured 0.69-0.81 against 0.28-0.30)."""
    fast = sim.simulate(8, [16], tmp_path / "fast", mean_s=2.0, progress=False)
    slow = sim.simulate(8, [16], tmp_path / "slow", mean_s=2.0, progress=False, extra_ms=500.0)
    f, s = fast["rows"][-1], slow["rows"][-1]
    assert s["ask_med_ms"] >= 500 > f["ask_med_ms"]
    assert 0 < s["util_cum"] < f["util_cum"] - 0.2, (f["util_cum"], s["util_cum"])
    assert s["idle_per_trial_s"] > f["idle_per_trial_s"] + 1.0 and s["driver_busy"] > 0.9
    # no drain: the study stops at the checkpoint's row (a result or two later when results queued
    # behind the tells the row waits for), the trials still in flight RUNNING in the run directory
    n = slow["n_finished"]
    assert 16 <= n < slow["n_submitted"]
    table = pd.read_csv(tmp_path / "slow" / "run" / "trials.csv")
    assert len(table) == n and table["trial_id"].is_unique
    recs = _trial_jsons(tmp_path / "slow" / "run")
    assert len(recs) == slow["n_submitted"]
    assert sum(rec["status"] == "SUCCESS" for rec in recs) == n
    assert sum(rec["status"] == "RUNNING" for rec in recs) == len(recs) - n


def test_run_history_bounds_are_smacs_without_a_pass_per_add(tmp_path):
    """make_optimizer's run history keeps SMAC's objective bounds result by result (SMAC recomputes
    them from every entry on each add): the same bounds after RUNNING adds, results, crashes and
    re-told results, and the same object for every part of SMAC that holds it; ``keys_since(n)``
    lists the entries after the first n, as iterating it from the start does."""
    from ConfigSpace import ConfigurationSpace, Float
    from smac.runhistory import RunHistory
    from smac.runhistory.enumerations import StatusType

    from mfhpo.study.optimizers import make_optimizer

    cs = ConfigurationSpace(seed=0)
    cs.add(Float("x", (0.0, 1.0)))
    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=9, output_dir=tmp_path, overwrite=True)
    rh = opt.runhistory
    assert type(rh).__name__ == "MfhpoRunHistory" and opt.facade.intensifier.runhistory is rh
    ref, rng, configs = RunHistory(), random.Random(0), cs.sample_configuration(20)
    for _ in range(300):
        kw = {"config": configs[rng.randrange(20)], "cost": rng.gauss(0, 1), "budget": rng.choice([1.0, 3.0]),
              "seed": 0, "status": rng.choice([StatusType.RUNNING, StatusType.SUCCESS, StatusType.CRASHED]),
              "force_update": True}
        rh.add(**kw)
        ref.add(**kw)
        assert rh.objective_bounds == ref.objective_bounds
    keys = list(rh)
    assert all(rh.keys_since(n) == keys[n:] for n in (0, 1, len(keys) - 1, len(keys), len(keys) + 3))


def test_smac_state_writes_wait_for_results_enough_to_spread_their_cost(tmp_path):
    """Optimizer.save_due: with smac_save_s 0 after every tell; otherwise once the interval has passed
    and the tells since the last write carry its duration at SAVE_S_PER_TELL each (a 0.5 s rewrite:
    every 50 results, however slowly they arrive)."""
    from ConfigSpace import ConfigurationSpace, Float

    from mfhpo.study.optimizers import make_optimizer

    cs = ConfigurationSpace(seed=0)
    cs.add(Float("x", (0.0, 1.0)))
    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=9, output_dir=tmp_path, overwrite=True,
                         save_interval_s=10.0)
    opt.last_save_s, opt.unsaved = 0.5, 49
    assert not opt.save_due(3600.0)
    opt.unsaved = 50
    assert opt.save_due(10.0) and not opt.save_due(9.9)
    opt.save_interval_s = 0.0
    opt.unsaved = 1
    assert opt.save_due(0.0)
    info = opt.ask()
    opt.save_interval_s, opt.unsaved = 10.0, 0
    opt.save()
    assert opt.unsaved == 0 and opt.last_save_s > 0
    opt.tell(info, TrialValue(cost=1.0))  # 1 tell: not yet due
    assert opt.unsaved == 1
