"""Smoke tests of benchmarks/optimizers.py and benchmarks/mf_hartmann.py (tiny budgets)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # mf_hartmann.py: the benchmark functions


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("optimizers")


def _opt_config(dim: int) -> dict:
    from mf_hartmann import HARTMANN, LOG_INT_BITS

    xo = HARTMANN[dim]["xopt"]
    cfg = {f"x{j}": xo[j] for j in range(dim - 2)}
    cfg.update(n=round(2 ** (xo[dim - 2] * LOG_INT_BITS)), branch="fine", x_fine=xo[-1], pad="b")
    return cfg


@pytest.mark.parametrize("dim", [3, 6])
def test_mf_hartmann_formula(dim):
    from mf_hartmann import HARTMANN, MFHartmann, hartmann

    assert hartmann(HARTMANN[dim]["xopt"], dim) == pytest.approx(HARTMANN[dim]["fmin"], abs=1e-5)
    f = MFHartmann.preset(dim, "moderate", max_budget=27)
    cfg = _opt_config(dim)
    # full budget: plain Hartmann, bias and noise vanish
    assert f(cfg, 27) == pytest.approx(hartmann(f.point(cfg), dim))
    assert 0 <= f.regret(cfg) < 1e-4
    # lower budgets: flattened (alphas lowered) plus non-negative noise, deterministic per (x, b)
    vals = [f(cfg, b) for b in (1, 3, 9, 27)]
    assert vals == sorted(vals, reverse=True)
    assert f(cfg, 3) == f(dict(cfg), 3)
    assert f(cfg, 1) >= hartmann(f.point(cfg), dim, bias=f.bias)
    # the inert categorical does not matter; the coarse branch cannot hit the optimum
    assert f({**cfg, "pad": "a"}, 27) == f(cfg, 27)
    coarse = {k: v for k, v in cfg.items() if k != "x_fine"} | {"branch": "coarse", "k": 3}
    assert f.regret(coarse) > 1e-3


def test_mixed_space():
    from ConfigSpace import UniformIntegerHyperparameter

    from mf_hartmann import MFHartmann

    cs = MFHartmann(dim=3).configspace(seed=1)
    n = cs["n"]
    assert isinstance(n, UniformIntegerHyperparameter) and n.log
    assert len(cs.conditions) == 2
    f = MFHartmann(dim=3)
    for c in cs.sample_configuration(20):
        assert np.isfinite(f(c, 1)) and f.regret(c) >= 0


def test_analysis_helpers(bench):
    recs = [
        {"compute": 1 / 27, "full": None},
        {"compute": 1.0, "full": None},
        {"compute": 2.0, "full": 0.5},
        {"compute": 3.0, "full": 0.2},
    ]
    assert bench.best_at(recs, 1.5) == math.inf
    assert bench.best_at(recs, 2.0) == 0.5
    assert bench.best_at(recs, 10) == 0.2
    runs = [{"records": recs}, {"records": [{"compute": 1.0, "full": 0.3}, {"compute": 4.0, "full": 0.1}]}]
    # median of two seeds: (0.5 + 0.3) / 2 at compute 2; 0.25 at 3; 0.15 at 4
    assert bench.compute_to_reach(runs, 0.25, 4.0) == 3.0
    assert bench.compute_to_reach(runs, 0.01, 4.0) == math.inf
    assert bench.per_seed_reach(runs, 0.25, 4.0) == [3.0, 4.0]


def test_async_variant_runs_beside_sync(bench, tmp_path, capsys):
    rc = bench.main(["--objectives", "hartmann3", "--seeds", "1", "--compute", "3", "--checkpoints", "3",
                     "--optimizers", "smac-mf,smac-mf-async,random", "--initial-design", "3", "--n-boot", "10",
                     "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"smac-mf-async +reaches it at compute", out)
    assert "TARGET smac-mf-async <= 1/3 of random search's compute" in out  # the targets are the default's
    runs = {r["kind"]: r for r in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert set(runs) == {"smac-mf", "smac-mf-async", "random"}
    budgets = [x["budget"] for x in runs["smac-mf-async"]["records"]]
    # ASHA: the first promotion right after 3 budget-1 results (Hyperband's first rung holds 27)
    assert budgets[:4] == [1.0, 1.0, 1.0, 3.0]
    assert [x["budget"] for x in runs["smac-mf"]["records"]][:4] == [1.0] * 4


def test_synthetic_smoke(bench, tmp_path, capsys):
    rc = bench.main(["--objectives", "hartmann3", "--seeds", "1", "--compute", "4", "--checkpoints", "2,4",
                     "--optimizers", "smac-mf,smac-bo,random", "--initial-design", "3", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "TARGET smac-mf" in out and "random search's final median" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "optimizers.png").stat().st_size > 0
    runs = {r["kind"]: r for r in data["runs"]}
    assert set(runs) == {"smac-mf", "smac-bo", "random"}
    for r in runs.values():
        spent = sum(x["units"] for x in r["records"])
        assert spent >= 4 - 1e-9
        assert spent - r["records"][-1]["units"] < 4 - 1e-9  # stops as soon as the compute is spent
    # smac-mf used several budgets; only its max-budget trials count for the incumbent
    mf = runs["smac-mf"]["records"]
    assert len({x["budget"] for x in mf}) > 1
    assert all((x["full"] is not None) == (x["budget"] == 27.0) for x in mf)
    assert all(x["budget"] == 27.0 and x["full"] is not None for x in runs["random"]["records"])


def test_demo_smoke(bench, tmp_path, capsys):
    """Real trainings (tiny): the study space, budget -> epochs, compute in epoch-equivalents."""
    rc = bench.main(["--objectives", "demo", "--optimizers", "smac-mf,random", "--demo-seeds", "1",
                     "--demo-compute", "2", "--demo-structures", "24", "--demo-epochs", "3",
                     "--demo-max-budget", "3", "--checkpoints", "1", "--no-warm-start", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    for r in data["runs"]:
        for x in r["records"]:
            assert x["units"] == pytest.approx(x["budget"] / 3.0)  # epochs = budget here (no warm start)
    assert "demo" in capsys.readouterr().out


def test_mf_surrogate_budget_and_no_repeats(tmp_path):
    """smac-mf fits its model on the highest budget with >= min_trials results (else the budget with
    the most), and its first bracket holds distinct configurations."""
    from mf_hartmann import MFHartmann
    from mfhpo.study.optimizers import make_optimizer

    f = MFHartmann(dim=3, max_budget=9)

    def opt_with(min_trials, sub):
        return make_optimizer("smac-mf", f.configspace(seed=0), min_budget=1, max_budget=9, eta=3, seed=0,
                              output_dir=tmp_path / sub, initial_design=3, overwrite=True, min_trials=min_trials,
                              promotion="sync")

    opt = opt_with(None, "a")
    infos = [opt.ask() for _ in range(9)]  # the first bracket's budget-1 rung, before any result
    assert {i.budget for i in infos} == {1.0}
    assert len({tuple(sorted(dict(i.config).items())) for i in infos}) == 9
    cs = f.configspace(seed=5)
    configs = cs.sample_configuration(12)

    def fill(o, n_per_budget):
        k = 0
        for b, n in n_per_budget.items():
            for _ in range(n):
                o.runhistory.add(configs[k], f(configs[k], b), budget=b)
                k += 1

    sel = opt.facade._config_selector
    assert sel._min_trials == len(list(cs.values())) + 3  # d + 3
    fill(opt, {1.0: 5, 3.0: 2, 9.0: 1})
    X, _, _ = sel._collect_data()
    assert sel._considered_budgets == [1.0] and X.shape[0] == 5  # none has d + 3: the most results
    o3 = opt_with(3, "b")
    fill(o3, {1.0: 5, 3.0: 3, 9.0: 1})
    o3.facade._config_selector._collect_data()
    assert o3.facade._config_selector._considered_budgets == [3.0]
    o1 = opt_with(1, "c")  # SMAC's own rule: the top budget as soon as it has one result
    fill(o1, {1.0: 5, 3.0: 3, 9.0: 1})
    o1.facade._config_selector._collect_data()
    assert o1.facade._config_selector._considered_budgets == [9.0]


def test_bootstrap_and_reuse(bench, tmp_path, capsys):
    runs = [{"records": [{"compute": 1.0, "full": 0.5}, {"compute": 2.0, "full": 0.1}]} for _ in range(3)]
    rand = [{"records": [{"compute": c, "full": v} for c, v in ((1.0, 0.9), (2.0, 0.5), (6.0, 0.2))]}
            for _ in range(3)]
    b = bench.bootstrap_ratio(runs, rand, 6.0, n_boot=50)
    assert b["p05"] == b["p95"] == pytest.approx(2.0 / 6.0) and b["p_target"] == 1.0
    a = ["--objectives", "hartmann3", "--seeds", "2", "--compute", "3", "--checkpoints", "3", "--n-boot", "20"]
    assert bench.main([*a, "--optimizers", "random", "--out", str(tmp_path / "r")]) == 0
    # random search's runs do not depend on smac-mf's fidelity range: reused under another max budget
    assert bench.main([*a, "--max-budget", "9", "--optimizers", "smac-mf,random", "--from",
                       str(tmp_path / "r" / "results.json"), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "2 runs to do, 2 reused" in out and "budgets 1..9" in out and "seed bootstrap" in out
    data = json.loads((tmp_path / "m" / "results.json").read_text())
    assert sorted((r["kind"], r["seed"]) for r in data["runs"]) == [("random", 0), ("random", 1),
                                                                   ("smac-mf", 0), ("smac-mf", 1)]


def test_emt_smoke(bench, tmp_path):
    """The generated CuAu objective: energies and forces, budget -> epochs, compute in epoch-equivalents."""
    images = bench.generate_emt_bulk(4, seed=0)
    assert all(len(a) == 8 and set(a.get_chemical_symbols()) <= {"Cu", "Au"} for a in images)
    assert all(a.get_forces().shape == (8, 3) for a in images)
    a = ["--objectives", "emt", "--optimizers", "smac-mf,random", "--real-seeds", "1", "--real-compute", "2",
         "--real-structures", "16", "--real-epochs", "3", "--real-max-budget", "3", "--checkpoints", "1",
         "--n-boot", "10"]
    assert bench.main([*a, "--no-warm-start", "--out", str(tmp_path / "cold")]) == 0
    data = json.loads((tmp_path / "cold" / "results.json").read_text())
    for r in data["runs"]:
        for x in r["records"]:
            assert x["units"] == pytest.approx(x["budget"] / 3.0)  # every trial trains from scratch
            assert x["cost"] is None or x["cost"] > 0
    # warm start (the default, as in `mfhpo run`): a promoted configuration trains only the missing epochs
    assert bench.main([*a, "--out", str(tmp_path / "warm")]) == 0
    data = json.loads((tmp_path / "warm" / "results.json").read_text())
    mf = next(r for r in data["runs"] if r["kind"] == "smac-mf")
    low = {json.dumps(x["config"], sort_keys=True) for x in mf["records"] if x["budget"] == 1.0}
    promoted = [x for x in mf["records"] if x["budget"] == 3.0 and json.dumps(x["config"], sort_keys=True) in low]
    assert promoted and all(x["units"] == pytest.approx(2.0 / 3.0) for x in promoted)
    assert all(x["units"] == pytest.approx(x["budget"] / 3.0) for x in mf["records"] if x not in promoted)


def test_peers_run_through_the_same_accounting(bench, tmp_path, capsys):
    """Optuna TPE + Hyperband pruner, SMAC's own multi-fidelity facade and DEHB (each when installed)
    run on the same objective and RunLog as mfhpo's optimizers; with warm start (default) a
    configuration evaluated again at a higher budget costs only the budget it adds."""
    import peers

    kinds = ["smac-mf", "random", "optuna-tpe-hb", "smac-mf-facade", "dehb"]
    rc = bench.main(["--objectives", "hartmann3", "--seeds", "1", "--compute", "3", "--checkpoints", "3",
                     "--optimizers", ",".join(kinds), "--initial-design", "3", "--n-boot", "10", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    ran = [k for k in kinds if k not in peers.PEER_MODULES or not peers.missing(k)]
    runs = {r["kind"]: r for r in json.loads((tmp_path / "results.json").read_text())["runs"]}
    assert set(runs) == set(ran)
    for k in set(kinds) - set(ran):
        assert f"{k} skipped: the" in out
    assert "optuna-tpe-hb's final median" in out or "optuna-tpe-hb" not in ran
    for kind, r in runs.items():
        reached: dict = {}
        for x in r["records"]:
            key = json.dumps(x["config"], sort_keys=True)
            assert x["units"] == pytest.approx((x["budget"] - min(reached.get(key, 0.0), x["budget"])) / 27.0)
            reached[key] = max(reached.get(key, 0.0), x["budget"])
            assert x["wall"] >= 0
        walls = [x["wall"] for x in r["records"]]
        assert walls == sorted(walls)
    if "optuna-tpe-hb" in runs:
        # an Optuna trial climbs the rungs 1, 3, 9, 27 of one configuration (pruned ones stop early)
        recs = runs["optuna-tpe-hb"]["records"]
        assert {x["budget"] for x in recs} <= {1.0, 3.0, 9.0, 27.0}
        assert any(x["budget"] > 1 for x in recs) and recs[0]["budget"] == 1.0
        for prev, x in zip(recs, recs[1:]):
            if x["budget"] > 1:  # a continuation: the same configuration one rung up
                assert x["config"] == prev["config"] and x["budget"] == 3 * prev["budget"]


def test_optuna_suggestions_respect_conditions():
    """The Optuna peer suggests a child only when its condition holds, so every suggestion is a
    valid Configuration of the mixed, conditional space."""
    optuna = pytest.importorskip("optuna")
    from ConfigSpace import Configuration
    from mf_hartmann import MFHartmann

    import peers

    cs = MFHartmann(dim=6).configspace(seed=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    branches = set()
    for _ in range(12):
        t = study.ask()
        values = peers.suggest_from_configspace(t, cs)
        Configuration(cs, values=values)  # raises on an inactive child or a missing active one
        assert ("x_fine" in values) == (values["branch"] == "fine") and ("k" in values) == (values["branch"] == "coarse")
        branches.add(values["branch"])
        study.tell(t, 0.0)
    assert branches == {"fine", "coarse"}


def test_missing_peer_is_named(monkeypatch):
    import peers

    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    assert peers.missing("dehb") == ("dehb skipped: the dehb package is not installed "
                                     "(pip install --no-deps dehb==0.1.2 loguru)")
    assert "pip install -e '.[bench]'" in peers.missing("optuna-tpe-hb")
