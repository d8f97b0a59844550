"""The ``optuna-tpe-hb`` optimizer of ``mfhpo run`` (Optuna TPE + Hyperband pruner as chains of mfhpo
trials): the same decisions as the in-process Optuna loop, resume from the trial records, a real study
on a LocalCluster whose continued stretches warm-start."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ConfigSpace import Categorical, Configuration, ConfigurationSpace, Float, Integer
from smac.runhistory import TrialInfo, TrialValue
from smac.runhistory.enumerations import StatusType

optuna = pytest.importorskip("optuna")

from mfhpo.errors import MfhpoError  # noqa: E402
from mfhpo.study.optimizers import make_optimizer  # noqa: E402
from mfhpo.study.optuna_pipeline import rung_budgets, suggest_from_configspace  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _space() -> ConfigurationSpace:
    cs = ConfigurationSpace(seed=0)
    cs.add([Float("x", (0.0, 1.0)), Integer("n", (1, 64), log=True), Categorical("a", ["p", "q"])])
    return cs


def _cost(values: dict, budget: float) -> float:
    return (values["x"] - 0.3) ** 2 + values["n"] / 640 + 0.2 * (values["a"] == "q") + 0.5 / budget


def _opt(tmp_path: Path, name: str = "s"):
    return make_optimizer("optuna-tpe-hb", _space(), min_budget=1, max_budget=27, eta=3, seed=3,
                          output_dir=tmp_path, name=name, crash_cost=100.0)


def _reference(n_evals: int, study_name: str, crash: set) -> list:
    """The in-process pipeline (benchmarks/peers.py's loop): (values, budget) of each evaluation."""
    cs = _space()
    rungs = rung_budgets(1, 27, 3)
    study = optuna.create_study(study_name=study_name, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=3),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27,
                                                                      reduction_factor=3))
    out: list = []
    while len(out) < n_evals:
        trial = study.ask()
        values = suggest_from_configspace(trial, cs)
        state, value = optuna.trial.TrialState.COMPLETE, math.nan
        for b in rungs:
            out.append((values, b))
            value = math.inf if len(out) in crash else _cost(values, b)
            if not math.isfinite(value):
                state = optuna.trial.TrialState.FAIL
                break
            trial.report(value, step=int(b))
            if b < rungs[-1] and (len(out) >= n_evals or trial.should_prune()):
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return out[:n_evals]


def _key(values: dict) -> tuple:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in values.items()))


def _value(cost: float) -> TrialValue:
    if math.isfinite(cost):
        return TrialValue(cost=cost, time=1.0)
    return TrialValue(cost=100.0, time=1.0, status=StatusType.CRASHED)


def test_one_worker_makes_the_decisions_of_the_in_process_pipeline(tmp_path):
    """Asked and told one at a time, the optimizer evaluates exactly the (configuration, budget)
    sequence of Optuna's own loop with the same seed: the same samples, the same prunings, every
    rung step continued by the next stretch, a crashed stretch ending its chain."""
    crash = {5, 23}
    ref = _reference(60, "s-3", crash)
    opt = _opt(tmp_path)
    got = []
    for n in range(1, 61):
        info = opt.ask()
        values = dict(info.config)
        got.append((values, opt.budget_of(info)))
        opt.tell(info, _value(math.inf if n in crash else _cost(values, info.budget)))
    # ConfigSpace stores a float to ~12 digits: compare the values rounded
    assert [(_key(v), b) for v, b in got] == [(_key(v), b) for v, b in ref]
    budgets = [b for _, b in got]
    assert {1.0, 3.0, 9.0, 27.0} <= set(budgets)  # chains were pruned and chains went on to the top
    assert budgets.count(1.0) < len(budgets)
    # a crashed stretch is never continued: its configuration is not asked again
    for n in crash:
        assert _key(got[n - 1][0]) not in [_key(v) for v, _ in got[n:]]
    states = [t.state.name for t in opt.study.trials]
    assert "PRUNED" in states and "COMPLETE" in states and states.count("FAIL") == len(crash)


def test_continuations_first_and_rebuilt_from_records(tmp_path):
    """With several stretches out at once a chain that goes on is handed out before a new
    configuration, and every told result is in the run history; a fresh optimizer told the same
    finished results (resume: the trial records told again in trial order, upper stretches
    included) waits to continue the same chains at the same budgets, in the same order."""
    opt = _opt(tmp_path)
    infos = [opt.ask() for _ in range(6)]  # six workers busy
    assert all(i.budget == 1.0 for i in infos)
    told = []

    def tell(info):
        v = _value(_cost(dict(info.config), info.budget))
        opt.tell(info, v)
        told.append((info, v))

    for info in infos[:4]:
        tell(info)
    assert opt.n_finished() == 4
    assert [opt.runhistory.get_cost(i.config) for i, _ in told] == [v.cost for _, v in told]
    waiting = [(_key(dict(c)), opt.rungs[k]) for _, c, k in opt._next]
    assert waiting, "no chain went on"
    nxt = opt.ask()
    assert nxt.budget == 3.0 and (_key(dict(nxt.config)), 3.0) == waiting[0]
    assert opt.config_id(nxt.config) == opt.config_id(next(i.config for i, _ in told if i.config == nxt.config))
    tell(nxt)  # an upper stretch finished too
    waiting = [(_key(dict(c)), opt.rungs[k]) for _, c, k in opt._next]
    assert waiting and 3.0 in [b for _, b in waiting]

    again = _opt(tmp_path, name="s")
    again.register([Configuration(_space(), values=dict(i.config)) for i in infos])
    for info, v in sorted(told, key=lambda t: t[0].budget):  # trial order: the budget-1 records first
        config = Configuration(_space(), values=dict(info.config))
        again.tell(TrialInfo(config=config, seed=info.seed, budget=info.budget), v)
    assert [(_key(dict(c)), again.rungs[k]) for _, c, k in again._next] == waiting
    assert again.n_finished() == 5
    assert [again.config_id(i.config) for i in infos] == [1, 2, 3, 4, 5, 6]  # numbered in record order
    first = again.ask()
    assert (_key(dict(first.config)), first.budget) == waiting[0]
    # the rebuilt trials drew nothing from the sampler: new configurations must still be new
    while again._next:
        again.ask()
    fresh = again.ask()
    assert fresh.budget == 1.0 and _key(dict(fresh.config)) not in [_key(dict(i.config)) for i in infos]


def test_equal_configurations_in_two_chains_stay_apart(tmp_path):
    """On a small discrete space TPE proposes equal configurations; each told result goes to the
    Optuna trial of the stretch it came from, so every Optuna trial ends and none is left running."""
    cs = ConfigurationSpace(seed=0)
    cs.add([Categorical("a", ["p", "q"]), Categorical("b", ["u", "v"])])
    opt = make_optimizer("optuna-tpe-hb", cs, min_budget=1, max_budget=9, eta=3, seed=0, output_dir=tmp_path,
                         name="d", crash_cost=100.0)
    out = []
    for _ in range(40):
        while len(out) < 3:  # three workers
            out.append(opt.ask())
        info = out.pop(0)
        c = dict(info.config)
        opt.tell(info, _value(0.1 * (c["a"] == "q") + 0.05 * (c["b"] == "v") + 1.0 / info.budget))
    while out or opt._next:  # finish every chain
        info = out.pop(0) if out else opt.ask()
        opt.tell(info, _value(1.0))
    keys = [_key(dict(t.params)) for t in opt.study.trials]
    assert len(keys) > len(set(keys))  # equal configurations did occur
    assert all(t.state.name != "RUNNING" for t in opt.study.trials) and not opt._live
    assert opt._reopened == 0  # nothing was taken for a told-again record


def test_unknown_or_missing_optimizer_is_one_line(tmp_path, monkeypatch):
    from mfhpo.study.check import check_optimizer_kind

    with pytest.raises(MfhpoError, match=r"^--optimizer: must be one of smac-mf, smac-bo, random, optuna-tpe-hb, "
                                         r"got 'tpe'$"):
        check_optimizer_kind("tpe")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    with pytest.raises(MfhpoError, match=r"^optimizer optuna-tpe-hb needs optuna: pip install -e '\.\[bench\]'$"):
        check_optimizer_kind("optuna-tpe-hb")


def test_study_on_a_local_cluster_continues_its_chains(tmp_path):
    """``mfhpo run --optimizer optuna-tpe-hb`` on the demo study (smaller), one worker: Optuna's own
    loop order (a chain that goes on is the next trial: nothing is asked ahead), and a stretch
    continues its checkpoint where the fidelity allows it (the demo's subset is full from budget 3 on:
    every budget-9 stretch). Resumed with 2 workers it goes on without repeating a (configuration,
    budget) (the demo space has continuous parameters: TPE does not propose one twice)."""
    from mfhpo.study.runner import run_command

    study = yaml.safe_load((REPO / "spaces" / "demo.yaml").read_text())
    study["data"]["demo_structures"] = 30
    study["fidelity"]["epochs"] = {"min": 1, "max": 9, "scale": "linear"}
    study["cluster"] = {"kind": "local", "workers": 2, "dashboard_port": 0}
    p = tmp_path / "demo_optuna.yaml"
    p.write_text(yaml.safe_dump(study))
    rundir = tmp_path / "run"
    run_command(p, trials=12, rundir=rundir, workers=1, progress=False, optimizer="optuna-tpe-hb")
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 12 and (df["status"] == "SUCCESS").all() and (df["optimizer"] == "optuna-tpe-hb").all()
    assert not df.duplicated(["config_id", "budget"]).any()
    up = df[df["budget"] > 1.0]
    assert len(up) >= 2
    rows = list(df.sort_values("trial_id").itertuples())
    for prev, r in zip(rows, rows[1:]):  # one worker: each stretch right after its chain's previous one
        if r.budget > 1.0:
            assert (prev.config_id, prev.budget * 3) == (r.config_id, r.budget), df[["trial_id", "config_id", "budget"]]
    top = df[df["budget"] == 9.0]
    assert len(top) >= 1 and top["warm_started"].all(), df[["trial_id", "budget", "warm_started", "warm_start_from"]]
    assert (top["epochs_saved"] == 3).all()  # 3 of 9 epochs: budget 3's
    run_command(p, trials=16, rundir=rundir, workers=2, progress=False, optimizer="optuna-tpe-hb")
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 16 and not df.duplicated(["config_id", "budget"]).any()
