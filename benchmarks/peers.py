"""The tools users compare mfhpo against, driven on the same objectives as mfhpo's optimizers.

benchmarks/optimizers.py runs every optimizer through one ``RunLog`` (the same objective code, the
same compute accounting in epoch-equivalents and wall seconds). This module holds the peers:

* ``smac-mf-facade``: SMAC3's own ``MultiFidelityFacade`` with its defaults (Hyperband, eta 3, its
  initial design of 10 random configurations per hyperparameter, its random forest on all cores),
  ask/tell;
* ``optuna-tpe-hb``: Optuna's ``TPESampler`` with a ``HyperbandPruner`` (min resource = the lowest
  budget, max resource = the top one, reduction factor eta), the seed group's design. A trial trains
  one configuration upwards and reports its value at every rung step; it continues from its own
  state (the objective's continuation), and a pruned trial costs only what it trained. Optuna's
  successive-halving rule decides only at the rung steps ``min * eta**k``, using the value reported
  there, so reporting at those steps gives the decisions of reporting after every epoch;
* ``dehb``: DEHB 0.1.2 (differential evolution + Hyperband), ask/tell.

Peers are optional (``pip install -e '.[bench]'``; DEHB: ``pip install --no-deps dehb==0.1.2
loguru``, docs/optimizers.md); ``missing(kind)`` says why one cannot run.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# the pipeline's two rules, shared with mfhpo's own optuna-tpe-hb optimizer (mfhpo run)
from mfhpo.study.optuna_pipeline import rung_budgets, suggest_from_configspace  # noqa: E402,F401

# the packages each peer imports (DEHB 0.1.2 also needs loguru, which --no-deps does not bring)
PEER_MODULES = {"smac-mf-facade": ("smac",), "optuna-tpe-hb": ("optuna",), "dehb": ("dehb", "loguru")}


def missing(kind: str) -> str | None:
    """Why peer ``kind`` cannot run here (None when it can)."""
    for mod in PEER_MODULES[kind]:
        if importlib.util.find_spec(mod) is None:
            how = "pip install --no-deps dehb==0.1.2 loguru" if kind == "dehb" else "pip install -e '.[bench]'"
            return f"{kind} skipped: the {mod} package is not installed ({how})"
    return None


# ------------------------------------------------------------------------------------------------
# SMAC3's own multi-fidelity facade
# ------------------------------------------------------------------------------------------------


def run_smac_facade(log, cs, seed: int, crash_cost: float, workdir: Path) -> None:
    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory import TrialValue
    from smac.runhistory.enumerations import StatusType

    obj = log.objective
    scen = Scenario(cs, deterministic=True, n_trials=100000, min_budget=obj.min_budget,
                    max_budget=obj.max_budget, seed=seed, output_directory=workdir / "smac")
    smac = MultiFidelityFacade(scen, target_function=lambda config, seed=0, budget=1.0: 0.0, overwrite=True,
                               logging_level=40, intensifier=MultiFidelityFacade.get_intensifier(scen, eta=obj.eta))
    while not log.done:
        info = smac.ask()
        cost = log.evaluate(info.config, float(info.budget))
        smac.tell(info, TrialValue(cost=cost) if math.isfinite(cost)
                  else TrialValue(cost=crash_cost, status=StatusType.CRASHED), save=False)


# ------------------------------------------------------------------------------------------------
# Optuna: TPE + Hyperband pruner
# ------------------------------------------------------------------------------------------------


def run_optuna(log, cs, seed: int, crash_cost: float, workdir: Path) -> None:
    import optuna
    from ConfigSpace import Configuration
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    obj = log.objective
    rungs = rung_budgets(obj.min_budget, obj.max_budget, obj.eta)
    pruner = optuna.pruners.HyperbandPruner(min_resource=int(round(rungs[0])), max_resource=int(round(rungs[-1])),
                                            reduction_factor=obj.eta)
    # a fixed study name: the pruner assigns trials to brackets by hashing it with the trial number
    study = optuna.create_study(study_name=f"optbench-{seed}", direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    while not log.done:
        trial = study.ask()
        config = Configuration(cs, values=suggest_from_configspace(trial, cs))
        state, value = TrialState.COMPLETE, math.nan
        for b in rungs:  # the trial continues upwards from its own state
            value = log.evaluate(config, b)
            if not math.isfinite(value):
                state = TrialState.FAIL
                break
            trial.report(value, step=int(round(b)))
            if b < rungs[-1] and (log.done or trial.should_prune()):  # log.done: the run ends here
                state = TrialState.PRUNED
                break
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


# ------------------------------------------------------------------------------------------------
# DEHB
# ------------------------------------------------------------------------------------------------


def run_dehb(log, cs, seed: int, crash_cost: float, workdir: Path) -> None:
    from dehb import DEHB

    obj = log.objective
    opt = DEHB(cs=cs, f=None, min_fidelity=obj.min_budget, max_fidelity=obj.max_budget, eta=obj.eta, n_workers=1,
               seed=seed, output_path=str(workdir / "dehb"), log_level="ERROR", save_freq="end")
    while not log.done:
        job = opt.ask()
        cost = log.evaluate(job["config"], float(job["fidelity"]))  # a Configuration (DEHB converts its vector)
        units = log.records[-1]["units"]
        opt.tell(job, {"fitness": cost if math.isfinite(cost) else crash_cost, "cost": units})


PEERS = {"smac-mf-facade": run_smac_facade, "optuna-tpe-hb": run_optuna, "dehb": run_dehb}


def run_peer(kind: str, log, cs, seed: int, crash_cost: float) -> None:
    with tempfile.TemporaryDirectory(prefix=f"optbench-{kind}-") as tmp:
        PEERS[kind](log, cs, seed, crash_cost, Path(tmp))
