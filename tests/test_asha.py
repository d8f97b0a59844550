"""Asynchronous promotion (ASHA) for smac-mf: the rule, no waiting, resume, a real study.

Real SMAC (MultiFidelityFacade with mfhpo's AsyncSuccessiveHalving and MfhpoConfigSelector) driven by
ask/tell; the study test runs the real trainer on a real LocalCluster."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer
from smac.runhistory import TrialInfo, TrialValue
from smac.runhistory.enumerations import StatusType

from mfhpo.errors import MfhpoError
from mfhpo.study.asha import AsyncSuccessiveHalving, config_key
from mfhpo.study.optimizers import make_optimizer, resume_cleanup, smac_state_dir

REPO = Path(__file__).resolve().parents[1]


def _space() -> ConfigurationSpace:
    cs = ConfigurationSpace(seed=0)
    cs.add([Float("x", (0.0, 1.0)), Integer("n", (1, 64), log=True), Categorical("a", ["p", "q"])])
    return cs


def _opt(tmp_path: Path, promotion: str = "async", overwrite: bool = True, max_budget: float = 9.0, brackets=1):
    return make_optimizer("smac-mf", _space(), min_budget=1, max_budget=max_budget, eta=3, seed=0,
                          output_dir=tmp_path, initial_design=3, overwrite=overwrite, promotion=promotion,
                          brackets=brackets)


def _smooth(info) -> float:
    c = dict(info.config)
    return ((c["x"] - 0.3) ** 2 + c["n"] / 640 + 0.2 * (c["a"] == "q")) * (1 + 1 / info.budget)


def test_async_is_smacs_intensifier_and_bad_value_is_one_line(tmp_path):
    opt = _opt(tmp_path)
    assert isinstance(opt.facade.intensifier, AsyncSuccessiveHalving)
    assert opt.facade.intensifier.rung_budgets == [1.0, 3.0, 9.0]
    assert type(opt.facade._config_selector).__name__ == "MfhpoConfigSelector"
    assert type(_opt(tmp_path / "s", promotion="sync").facade.intensifier).__name__ == "MfhpoHyperband"
    with pytest.raises(MfhpoError, match=r"^optimizer_options\.promotion: must be one of sync, async, got 'fast'$"):
        _opt(tmp_path / "x", promotion="fast")


def test_promotion_rule_on_a_hand_made_sequence(tmp_path):
    """Configurations get letters in the order they start; costs by (letter, budget) are chosen by
    hand. Expected sequence worked out from the rule (eta 3, budgets 1, 3, 9): a promotion needs
    the configuration in the best floor(n/3) of the n results finished at its rung."""
    opt = _opt(tmp_path)
    rung0 = dict(zip("ABCDEFGH", [5, 3, 4, 1, 6, 7, 2, 8]))
    upper = {("B", 3.0): 2.0, ("D", 3.0): 0.5, ("G", 3.0): 1.0, ("D", 9.0): 0.4}
    letters: dict[tuple, str] = {}
    seq = []
    for _ in range(12):
        info = opt.ask()
        key = config_key(info.config)
        letter = letters.setdefault(key, "ABCDEFGH"[len(letters)])
        seq.append(f"{letter}{info.budget:g}")
        cost = rung0[letter] if info.budget == 1.0 else upper[(letter, info.budget)]
        opt.tell(info, TrialValue(cost=float(cost)))
    assert seq == ["A1", "B1", "C1", "B3", "D1", "D3", "E1", "F1", "G1", "G3", "D9", "H1"]
    assert [(k, letters[config_key(c)]) for k, c in opt.facade.intensifier.assignments if k > 0] == [
        (1, "B"), (1, "D"), (1, "G"), (2, "D")]
    assert config_key(opt.facade.intensifier.get_incumbent()) == next(k for k, v in letters.items() if v == "D")


def test_crashed_results_are_never_promoted(tmp_path):
    opt = _opt(tmp_path)
    infos = [opt.ask() for _ in range(3)]
    opt.tell(infos[0], TrialValue(cost=0.0, status=StatusType.CRASHED))  # cheapest, but crashed
    opt.tell(infos[1], TrialValue(cost=5.0))
    opt.tell(infos[2], TrialValue(cost=4.0))
    nxt = opt.ask()
    assert nxt.budget == 3.0 and config_key(nxt.config) == config_key(infos[2].config)
    for _ in range(8):  # more results below the crashed one's cost never lift it
        info = opt.ask()
        if info.budget == 1.0:
            opt.tell(info, TrialValue(cost=9.0))
        else:
            assert config_key(info.config) != config_key(infos[0].config)
            opt.tell(info, TrialValue(cost=1.0))
    assert all(config_key(c) != config_key(infos[0].config) for k, c in opt.facade.intensifier.assignments if k)


def test_no_waiting_and_promotion_before_the_rung_is_full(tmp_path):
    """Five budget-1 trials out, three finished: ASHA promotes the best of the three at once while two
    still run; SMAC's synchronous Hyperband (first rung of 9) hands out another budget-1 trial."""
    asy, syn = _opt(tmp_path / "a"), _opt(tmp_path / "s", promotion="sync")
    for opt in (asy, syn):
        pending = [opt.ask() for _ in range(5)]
        assert [i.budget for i in pending] == [1.0] * 5  # nothing finished: every ask still returns work
        for info, cost in zip(pending[:3], (3.0, 1.0, 2.0)):
            opt.tell(info, TrialValue(cost=cost))
        opt._pending = pending
    nxt = asy.ask()
    assert nxt.budget == 3.0 and config_key(nxt.config) == config_key(asy._pending[1].config)
    assert asy.ask().budget == 1.0  # the rest of its rung is running: new work, no wait
    assert syn.ask().budget == 1.0


@pytest.mark.parametrize("brackets", [1, 2, "all"])
def test_incremental_view_of_the_history_equals_a_full_read(tmp_path, brackets):
    """ASHA reads only what changed since the last ask (new entries, trials that were RUNNING, finished
    trials told again). With several trials out at once, results told out of order, crashes and
    re-told results, its rankings after every ask equal a read of the whole run history from the
    start, and every ask makes the move a full scan of the history picks: the promotion due (per
    bracket: a configuration is ranked among those that started at the same rung), else a new
    configuration in the bracket with the least budget handed out."""
    import random

    opt = _opt(tmp_path, max_budget=27.0, brackets=brackets)
    intens, rng, out, done = opt.facade.intensifier, random.Random(0), [], []
    budgets = intens.rung_budgets
    n_brackets = len(budgets) if brackets == "all" else brackets

    def view():
        return ({k: list(v) for k, v in intens._ranked.items() if v}, dict(intens._present),
                {k: list(v) for k, v in intens._unpromoted.items() if v})

    def expected():  # the rule by brute force over the whole history: (target budget, key) or ("new", budget)
        rh = opt.runhistory
        made = {(budgets[k], config_key(c)) for k, c in intens.assignments}
        start: dict[tuple, int] = {}
        top: dict[tuple, int] = {}
        for k, c in intens.assignments:
            start.setdefault(config_key(c), k)
            top[config_key(c)] = max(k, top.get(config_key(c), k))
        for i in reversed(range(len(budgets) - 1)):
            for b in range(min(i, n_brackets - 1) + 1):
                done = sorted((v.status != StatusType.SUCCESS, v.cost, key)
                              for t, v in rh.items() if t.budget == budgets[i] and v.status != StatusType.RUNNING
                              and start[key := config_key(rh.get_config(t.config_id))] == b)
                for failed, _, key in done[:len(done) // 3]:
                    if not failed and (budgets[i + 1], key) not in made:
                        return budgets[i + 1], key
        spent = [sum(budgets[top[key]] for key in start if start[key] == b) for b in range(n_brackets)]
        return "new", budgets[min(range(n_brackets), key=lambda b: (spent[b], b))]

    starts = set()
    for step in range(120):
        while len(out) < 6:
            want = expected()
            info = opt.ask()
            key = config_key(info.config)
            if want[0] == "new":
                assert key not in {config_key(c) for _, c in intens.assignments[:-1]}
                assert info.budget == want[1], f"step {step}"
                starts.add(info.budget)
            else:
                assert (info.budget, key) == want, f"step {step}"
                if brackets == 1:
                    assert _in_top_third(opt, info)
            out.append(info)
            intens._read_history()  # what the next ask reads first
            live = view()
            intens._forget_history()
            intens._read_history()
            assert view() == live, f"step {step}"
        info = out.pop(rng.randrange(len(out)))
        status = StatusType.CRASHED if rng.random() < 0.1 else StatusType.SUCCESS
        opt.tell(info, TrialValue(cost=_smooth(info), status=status))
        done.append(info)
        if rng.random() < 0.15:  # a finished trial told again: a new cost, or crashed after all
            again = done[rng.randrange(len(done))]
            status = StatusType.CRASHED if rng.random() < 0.5 else StatusType.SUCCESS
            opt.tell(again, TrialValue(cost=_smooth(again) * rng.uniform(0.5, 2.0), status=status))
    _check_rungs(opt, brackets=n_brackets > 1)
    assert max(b for _, b in ((k.config_id, k.budget) for k in opt.runhistory)) == 27.0
    assert starts == set(budgets[:n_brackets])  # every bracket started configurations


def test_highest_rung_first_and_ties_to_the_earlier_start(tmp_path):
    """Two rungs with a promotion due at once: the higher rung's goes first. Equal costs: the
    configuration that started earlier is promoted first (whatever its values)."""
    opt = _opt(tmp_path)
    first = [opt.ask() for _ in range(9)]
    for i, info in enumerate(first):
        opt.tell(info, TrialValue(cost=float(i + 1)))
    up = [opt.ask() for _ in range(3)]
    assert [(i.budget, config_key(i.config)) for i in up] == [(3.0, config_key(c.config)) for c in first[:3]]
    late = [opt.ask() for _ in range(3)]  # rung 0's promotions are all made: new configurations
    assert [i.budget for i in late] == [1.0] * 3
    for i, info in enumerate(late):
        opt.tell(info, TrialValue(cost=0.1 * (i + 1)))  # rung 0: 12 results, the best 4 include late[0]
    for i, info in enumerate(up):
        opt.tell(info, TrialValue(cost=float(i + 1)))  # rung 1: 3 results, up[0] due at budget 9
    nxt = opt.ask()
    assert (nxt.budget, config_key(nxt.config)) == (9.0, config_key(up[0].config))
    nxt = opt.ask()
    assert (nxt.budget, config_key(nxt.config)) == (3.0, config_key(late[0].config))

    tie = _opt(tmp_path / "tie")
    infos = [tie.ask() for _ in range(6)]
    keys = [config_key(i.config) for i in infos]
    # an earlier start whose values sort after a later one's: a tie-break by values would pick the later
    a, b = next((a, b) for a in range(6) for b in range(a + 1, 6) if keys[b] < keys[a])
    for i, info in enumerate(infos):
        tie.tell(info, TrialValue(cost=1.0 if i in (a, b) else 5.0 + i))
    nxt = tie.ask()
    assert (nxt.budget, config_key(nxt.config)) == (3.0, keys[a])


def _in_top_third(opt, info) -> bool:
    """At the moment of a promotion to ``info.budget``: the configuration's result one rung below
    ranks in the best floor(n / 3) of the n results finished there."""
    rh, budgets = opt.runhistory, opt.facade.intensifier.rung_budgets
    lo = budgets[budgets.index(info.budget) - 1]
    done = {config_key(rh.get_config(k.config_id)): v.cost for k, v in rh.items()
            if k.budget == lo and v.status == StatusType.SUCCESS}
    n = sum(1 for k, v in rh.items() if k.budget == lo and v.status != StatusType.RUNNING)
    key = config_key(info.config)
    return key in done and sorted(done.values()).index(done[key]) < n // 3


def _run(opt, n: int, log: list) -> None:
    for _ in range(n):
        info = opt.ask()
        if info.budget > 1.0:
            assert _in_top_third(opt, info)
        log.append((config_key(info.config), info.budget))
        opt.tell(info, TrialValue(cost=_smooth(info)))


def _check_rungs(opt, brackets: bool = False) -> None:
    """No (configuration, budget) twice; each promotion had a result one rung below (with
    ``brackets``: every budget above a configuration's first one)."""
    rh, intens = opt.runhistory, opt.facade.intensifier
    budgets = intens.rung_budgets
    pairs = [(config_key(rh.get_config(k.config_id)), k.budget) for k in rh]
    assert len(pairs) == len(set(pairs))
    have = set(pairs)
    start = {}
    for k, c in intens.assignments:
        start.setdefault(config_key(c), k)
    for key, b in pairs:
        if b > budgets[start[key] if brackets else 0]:
            assert (key, budgets[budgets.index(b) - 1]) in have


def test_resume_keeps_rungs_consistent(tmp_path):
    """Kill with two trials out (one a promotion) and one finished result the state files missed:
    the rebuilt optimizer hands the two out again first, counts the re-told result as made, and
    continues without making any promotion twice."""
    out = tmp_path / "smac"
    opt = _opt(out)
    log: list = []
    _run(opt, 14, log)
    while True:  # run until the next trial is a promotion
        info = opt.ask()
        if info.budget > 1.0:
            assert _in_top_third(opt, info)
            break
        log.append((config_key(info.config), info.budget))
        opt.tell(info, TrialValue(cost=_smooth(info)))
    promoted = info
    started = opt.ask()
    assert started.budget == 1.0
    opt.save()  # both RUNNING in the state files
    assigned_at_save = [(k, config_key(c)) for k, c in opt.facade.intensifier.assignments]
    missed = opt.ask()  # finished after the last state write: only mfhpo's records know it
    missed_value = TrialValue(cost=_smooth(missed))
    opt.tell(missed, missed_value, save=False)
    del opt

    state_dir = smac_state_dir(out, "smac-mf", 0)
    assert resume_cleanup(state_dir)["dropped"] == 2
    opt2 = _opt(out, overwrite=False)
    opt2.tell(TrialInfo(config=missed.config, seed=missed.seed, budget=missed.budget), missed_value)  # the runner's re-tell
    assert [(k, config_key(c)) for k, c in opt2.facade.intensifier.assignments][:len(assigned_at_save)] == assigned_at_save
    again = [opt2.ask(), opt2.ask()]
    assert [(config_key(i.config), i.budget) for i in again] == [
        (config_key(promoted.config), promoted.budget), (config_key(started.config), 1.0)]
    for i in again:
        opt2.tell(i, TrialValue(cost=_smooth(i)))
    log += [(config_key(i.config), i.budget) for i in again] + [(config_key(missed.config), missed.budget)]
    _run(opt2, 25, log)
    assert len(log) == len(set(log))
    assert sum(b > 1.0 for _, b in log) >= 6 and max(b for _, b in log) == 9.0
    _check_rungs(opt2)
    state = json.loads((state_dir / "intensifier.json").read_text())["state"]
    assert state["promotion"] == "async" and len(state["assigned"]) == len(log)


def test_brackets_survive_a_resume(tmp_path):
    """Asynchronous Hyperband (``brackets: all``) killed with two trials out: the rebuilt optimizer
    knows every configuration's bracket and the budget each bracket was given, hands the two out
    again first, and goes on without a (configuration, budget) twice."""
    out = tmp_path / "smac"
    opt = _opt(out, max_budget=27.0, brackets="all")
    log: list = []
    _run_brackets(opt, 30, log)
    pending = [opt.ask(), opt.ask()]
    opt.save()
    intens = opt.facade.intensifier
    starts = {config_key(c): intens.bracket_of(c) for _, c in intens.assignments}
    spent = dict(intens._spent)
    assert set(starts.values()) == {0, 1, 2, 3}
    del opt
    assert resume_cleanup(smac_state_dir(out, "smac-mf", 0))["dropped"] == 2
    opt2 = _opt(out, overwrite=False, max_budget=27.0, brackets="all")
    intens2 = opt2.facade.intensifier
    assert {config_key(c): intens2.bracket_of(c) for _, c in intens2.assignments} == starts
    assert intens2._spent == spent
    again = [opt2.ask(), opt2.ask()]
    assert [(config_key(i.config), i.budget) for i in again] == [(config_key(i.config), i.budget) for i in pending]
    for i in again:
        opt2.tell(i, TrialValue(cost=_smooth(i)))
    log += [(config_key(i.config), i.budget) for i in again]
    _run_brackets(opt2, 30, log)
    assert len(log) == len(set(log))
    _check_rungs(opt2, brackets=True)

    # started with ASHA alone, resumed with every bracket: the new brackets start level with bracket 0
    one = tmp_path / "one"
    opt = _opt(one, max_budget=27.0)
    _run_brackets(opt, 40, [])
    opt.save()
    level = opt.facade.intensifier._spent[0]
    del opt
    opt3 = _opt(one, overwrite=False, max_budget=27.0, brackets="all")
    assert opt3.facade.intensifier._spent == {0: level, 1: level, 2: level, 3: level}
    before = {config_key(c) for _, c in opt3.facade.intensifier.assignments}
    _run_brackets(opt3, 40, [])
    intens3 = opt3.facade.intensifier
    started = [intens3.bracket_of(c) for k, c in intens3.assignments if config_key(c) not in before
               and k == intens3.bracket_of(c)]
    assert started.count(0) >= 3 and set(started) == {0, 1, 2, 3}, started  # bracket 0 still gets new ones


def _run_brackets(opt, n: int, log: list) -> None:
    for _ in range(n):
        info = opt.ask()
        log.append((config_key(info.config), info.budget))
        opt.tell(info, TrialValue(cost=_smooth(info)))


def test_study_file_option(tmp_path):
    from mfhpo.study.config import load_study

    base = yaml.safe_load((REPO / "spaces" / "demo.yaml").read_text())
    assert load_study(REPO / "spaces" / "demo.yaml").optimizer_options.promotion == "sync"  # the demo names it
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in base.items() if k != "optimizer_options"}))
    assert load_study(plain).optimizer_options.promotion == "async"  # the default
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({**base, "optimizer_options": {"promotion": "eager"}}))
    with pytest.raises(MfhpoError) as err:
        load_study(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg and "optimizer_options.promotion" in msg and "'async'" in msg
    assert load_study(plain).optimizer_options.brackets == 1  # ASHA alone by default
    for value, says in ((4, "at most 3, the rungs of the fidelity ladder (1, 3, 9), got 4"),
                        (0, "must be a whole number >= 1 or 'all', got 0"), ("most", "got 'most'")):
        p.write_text(yaml.safe_dump({**base, "optimizer_options": {"brackets": value}}))
        with pytest.raises(MfhpoError) as err:
            load_study(p)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{p}: optimizer_options.brackets: ") and says in msg, msg
    p.write_text(yaml.safe_dump({**base, "optimizer_options": {"brackets": "all"}}))
    assert load_study(p).optimizer_options.brackets == "all"
    for extra, says in (({"optimizer_options": {"brackets": 2, "promotion": "sync"}}, "got 2 with smac-mf, promotion sync"),
                        ({"optimizer": "random", "optimizer_options": {"brackets": 2}}, "got 2 with random")):
        p.write_text(yaml.safe_dump({**base, **extra}))
        with pytest.raises(MfhpoError, match="optimizer_options.brackets: applies to optimizer smac-mf with "
                           "promotion async only, " + says):
            load_study(p)
    # a run directory started with SMAC's Hyperband (no promotion recorded) and a file naming brackets only
    from mfhpo.study.runner import keep_promotion

    p.write_text(yaml.safe_dump({**base, "optimizer_options": {"brackets": 2}}))
    with pytest.raises(MfhpoError, match="brackets: needs promotion async, but this run directory was started"):
        keep_promotion(load_study(p), {"provenance": {}})


@pytest.mark.slow
def test_demo_study_async_reaches_the_top_budget(tmp_path):
    """The demo study (smaller: 30 structures, 1..9 epochs) with ``promotion: async``: 16 trials on
    a real LocalCluster with 2 workers end with trials at the top budget, none at a budget twice;
    SMAC's state files hold the assignments; a resumed run continues without repeating one."""
    from mfhpo.study.runner import run_command

    study = yaml.safe_load((REPO / "spaces" / "demo.yaml").read_text())
    study["data"]["demo_structures"] = 30
    study["fidelity"]["epochs"] = {"min": 1, "max": 9, "scale": "linear"}
    study["optimizer_options"] = {"promotion": "async", "initial_design": 3}
    study["cluster"] = {"kind": "local", "workers": 2, "dashboard_port": 0}
    p = tmp_path / "demo_async.yaml"
    p.write_text(yaml.safe_dump(study))
    rundir = tmp_path / "run"
    run_command(p, trials=16, rundir=rundir, workers=2, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 16 and (df["status"] == "SUCCESS").all()
    assert (df["budget"] == 9.0).any()
    run_command(p, trials=19, rundir=rundir, workers=2, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 19
    assert not df.duplicated(["config_id", "budget"]).any()
    state = json.loads(next((rundir / "smac").rglob("intensifier.json")).read_text())["state"]
    # every trial run was assigned; the rest are asked ahead (prefetch) and handed out on resume
    assert state["promotion"] == "async" and 19 <= len(state["assigned"]) <= 19 + 3
    assert sum(k > 0 for k, _ in state["assigned"]) >= int((df["budget"] > 1.0).sum())


def _toy_study(name: str, trials: int, options: dict, sleep_s: float) -> dict:
    """A study on the toy objective (no training): demo data, budgets 1..9, asynchronous promotion
    with ``options`` on top, 2 local workers."""
    return {
        "name": name, "seed": 0, "data": {"train": "demo", "demo_structures": 20},
        "space": {"num_layers": {"low": 1, "high": 2}, "nodes": {"low": 4, "high": 64, "log": True},
                  "lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "fidelity": {"min_budget": 1, "max_budget": 9, "eta": 3, "epochs": {"min": 1, "max": 9}},
        "budget": {"trials": trials},
        "optimizer_options": {"promotion": "async", "initial_design": 3, **options},
        "objective": "toy", "toy": {"sleep_fixed_s": sleep_s},
        "cluster": {"kind": "local", "workers": 2, "dashboard_port": 0},
    }


@pytest.mark.slow
def test_study_with_brackets_starts_configurations_at_every_rung(tmp_path):
    """``brackets: all`` on a real LocalCluster (toy objective, 2 workers): configurations start at
    budgets 1, 3 and 9; a configuration is promoted only from its own lowest budget upwards; the
    resumed study repeats no (configuration, budget) and SMAC's state records the brackets."""
    from mfhpo.study.runner import run_command

    study = _toy_study("ahb", 24, {"brackets": "all"}, sleep_s=0.05)
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(study))
    rundir = tmp_path / "run"
    run_command(p, rundir=rundir, workers=2, progress=False)
    run_command(p, trials=30, rundir=rundir, workers=2, progress=False)
    df = pd.read_csv(rundir / "trials.csv")
    assert len(df) == 30 and (df["status"] == "SUCCESS").all()
    assert not df.duplicated(["config_id", "budget"]).any()
    first = df.sort_values("trial_id").groupby("config_id")["budget"].first()
    assert set(first) == {1.0, 3.0, 9.0}
    pairs = set(zip(df["config_id"], df["budget"]))
    for cid, b in pairs:
        if b > first[cid]:
            assert (cid, b / 3) in pairs
    state = json.loads(next((rundir / "smac").rglob("intensifier.json")).read_text())["state"]
    assert state["brackets"] == 3 and {k for k, _ in state["assigned"]} == {0, 1, 2}


@pytest.mark.slow
def test_curriculum_fidelity_makes_every_promotion_continue(tmp_path):
    """A growing training subset (``fidelity.subset.curriculum``) with asynchronous promotion on a real
    LocalCluster: every promoted trial continues its lower-budget checkpoint (none retrains), pays only
    the epoch-equivalents it adds, and its subset schedule is a prefix of the top budget's."""
    from mfhpo.study.check import ladder_lines
    from mfhpo.study.config import load_study
    from mfhpo.study.fidelity import budget_to_fidelity
    from mfhpo.study.runner import run_command

    study = yaml.safe_load((REPO / "spaces" / "demo.yaml").read_text())
    study["data"]["demo_structures"] = 30
    study["fidelity"]["epochs"] = {"min": 1, "max": 9, "scale": "linear"}
    study["fidelity"]["subset"] = {"min": 0.4, "max": 1.0, "curriculum": True}
    study["optimizer_options"] = {"promotion": "async", "initial_design": 3}
    study["cluster"] = {"kind": "local", "workers": 2, "dashboard_port": 0}
    p = tmp_path / "demo_curriculum.yaml"
    p.write_text(yaml.safe_dump(study))
    fid = load_study(p).fidelity
    top = budget_to_fidelity(fid, 9.0)
    assert top.subset_schedule == [(0, 0.4), (1, 0.55), (3, 1.0)]
    assert any("2-3 on 0.55" in line for line in ladder_lines(fid))
    rundir = tmp_path / "run"
    run_command(p, trials=14, rundir=rundir, workers=2, progress=False)
    recs = [json.loads(f.read_text()) for f in sorted((rundir / "trials").glob("*/trial.json"))]
    assert all(r["status"] == "SUCCESS" for r in recs)
    promoted = [r for r in recs if r["warm_start_from_trial"] is not None]
    assert len(promoted) >= 2 and all(r["warm_start"]["used"] for r in promoted), [r["warm_start"] for r in promoted]
    for r in recs:
        fb = budget_to_fidelity(fid, r["budget"])
        assert r["subset_schedule"] == [list(x) for x in fb.subset_schedule]
        assert r["subset_schedule"] == [list(x) for x in top.subset_schedule[:len(r["subset_schedule"])]]
        assert r["epoch_equivalents"] == pytest.approx(fb.epoch_equivalents(r["epochs_saved"], r["epochs_run"]))
        if r["warm_start"]["used"]:
            assert r["epochs_saved"] == budget_to_fidelity(fid, r["budget"] / 3).epochs
    # the incumbent's bundle replays its warm-started chain with the growing subset, to the digit
    from mfhpo.study.incumbent import export_incumbent, retrain

    ex = export_incumbent(rundir, tmp_path / "inc", evaluate_test=False)
    chain = ex.manifest["chain"]
    assert len(chain) >= 2 and all(step["init_from_previous"] for step in chain[1:])
    assert chain[-1]["subset_schedule"] == recs[ex.incumbent.trial_id - 1]["subset_schedule"]
    with zipfile.ZipFile(tmp_path / "inc" / "bundle.zip") as z:
        z.extractall(tmp_path / "unz")
    report = retrain(tmp_path / "unz", tmp_path / "replay")
    assert report["reproduced"], report["mismatches"]


@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_keeps_rungs_consistent(tmp_path):
    """A real LocalCluster study (toy objective, 2 workers, SMAC state written after every result, so
    trials out at the kill are RUNNING in it) killed with SIGKILL mid-run, then resumed: every (configuration, budget) succeeds once, each promotion has its
    lower-rung result, and SMAC's intensifier state lists no assignment twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    study = _toy_study("ashakill", 30, {"smac_save_s": 0}, sleep_s=0.4)
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(study))
    rundir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mfhpo.cli", "run", str(p), "--rundir", str(rundir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        line = proc.stdout.readline()
        if not line or line.startswith("[mfhpo] trial 14 "):
            break

    def running_in_saved_state() -> bool:  # SMAC's state on disk lists a trial still out (status 0, RUNNING)
        try:
            rh = json.loads(next((rundir / "smac").rglob("runhistory.json")).read_text())
        except (StopIteration, OSError, ValueError):  # not written yet, or caught mid-write
            return False
        return any(e["status"] == 0 for e in rh["data"])

    while time.monotonic() - t0 < 180 and not running_in_saved_state():  # the kill must find one out
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local workers, no clean-up
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = pd.read_csv(rundir / "trials.csv") if (rundir / "trials.csv").exists() else pd.DataFrame()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"resumed SMAC state \([1-9]\d* interrupted trial", r.stdout + r.stderr), r.stdout[-3000:]
    df = pd.read_csv(rundir / "trials.csv")
    ok = df[df["status"] == "SUCCESS"]
    assert len(ok) >= 30 - 2 and len(ok) > len(before)
    assert not ok.duplicated(["config_id", "budget"]).any()
    pairs = set(zip(ok["config_id"], ok["budget"]))
    for cid, b in pairs:
        if b > 1.0:
            assert (cid, b / 3) in pairs
    assert (ok["budget"] == 9.0).any()
    state = json.loads(next((rundir / "smac").rglob("intensifier.json")).read_text())["state"]
    assigned = [(k, json.dumps(c, sort_keys=True)) for k, c in state["assigned"]]
    assert len(assigned) == len(set(assigned))
