"""Optimizers with one ask/tell API: ``smac-mf`` (SMAC MultiFidelityFacade + Hyperband),
``smac-bo`` (SMAC HyperparameterOptimizationFacade at full budget) and ``random`` (random search at
full budget).

Usable from a plain Python objective::

    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=27, eta=3, seed=0,
                         output_dir=Path("out"), n_trials=10_000)
    info = opt.ask()                       # smac.runhistory.TrialInfo
    cost = f(info.config, opt.budget_of(info))
    opt.tell(info, TrialValue(cost=cost))  # pass back exactly the TrialInfo ask() gave
    opt.incumbent()

Design notes (docs/studies.md, ../shared hpo_notes): the Scenario is fixed once (``n_trials`` large)
and the caller stops by its own criteria, so resuming never makes SMAC call ``input()``;
``resume_cleanup`` removes RUNNING trials from the saved run history before the facade loads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

KINDS = ("smac-mf", "smac-bo", "random")


class Optimizer:
    """Thin wrapper around a SMAC facade driven by ask/tell."""

    def __init__(self, kind: str, facade, scenario, max_budget: float):
        self.kind = kind
        self.facade = facade
        self.scenario = scenario
        self.max_budget = float(max_budget)

    # ---- the API -----------------------------------------------------------------------------
    def ask(self):
        return self.facade.ask()

    def tell(self, info, value, save: bool = True) -> None:
        self.facade.tell(info, value, save=save)

    def budget_of(self, info) -> float:
        """The trial's budget; full budget for optimizers without budgets."""
        return float(info.budget) if info.budget is not None else self.max_budget

    def incumbent(self):
        """Best configuration (for smac-mf: at the highest budget observed), or None."""
        inc = self.facade.intensifier.get_incumbent()
        return inc

    @property
    def runhistory(self):
        return self.facade.runhistory

    @property
    def output_dir(self) -> Path:
        return Path(self.scenario.output_directory)

    def config_id(self, config) -> int:
        return self.facade.runhistory.get_config_id(config)

    def n_finished(self) -> int:
        return self.facade.runhistory.finished


def smac_state_dir(output_dir: Path, name: str, seed: int) -> Path:
    return Path(output_dir) / name / str(seed)


def resume_cleanup(state_dir: Path, keep: Callable[[dict], dict | None] | None = None,
                   output_directory: Path | None = None) -> dict:
    """Before resuming: drop RUNNING trials from ``runhistory.json`` so that SMAC re-queues them.

    ``keep(entry) -> value dict | None`` may instead supply the finished result of a RUNNING trial
    (a trial mfhpo recorded but whose ``tell`` did not reach disk); then the entry is completed with
    it rather than dropped. Returns counts.
    """
    from smac.runhistory.enumerations import StatusType

    sc_path = Path(state_dir) / "scenario.json"
    if output_directory is not None and sc_path.exists():
        # the run directory may have moved or been named by another relative path: SMAC compares
        # the saved output_directory too, and would prompt
        sc = json.loads(sc_path.read_text())
        if sc.get("output_directory") != str(output_directory):
            sc["output_directory"] = str(output_directory)
            tmp = sc_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(sc, indent=2))
            os.replace(tmp, sc_path)
    rh_path = Path(state_dir) / "runhistory.json"
    if not rh_path.exists():
        return {"dropped": 0, "completed": 0}
    data = json.loads(rh_path.read_text())
    entries = data.get("data", [])
    out, dropped, completed = [], 0, 0
    for e in entries:
        if int(e["status"]) == int(StatusType.RUNNING):
            v = keep(e) if keep is not None else None
            if v is None:
                dropped += 1
                continue
            e = dict(e)
            e.update(v)
            completed += 1
        out.append(e)
    if dropped or completed:
        data["data"] = out
        stats = data.get("stats", {})
        if "submitted" in stats:
            stats["submitted"] = len(out)
            stats["finished"] = sum(1 for e in out if int(e["status"]) != int(StatusType.RUNNING))
            stats["running"] = 0
        tmp = rh_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, rh_path)
    return {"dropped": dropped, "completed": completed}


def make_optimizer(
    kind: str,
    configspace,
    *,
    min_budget: float,
    max_budget: float,
    eta: int = 3,
    seed: int = 0,
    output_dir: Path | str = "smac3_output",
    n_trials: int = 100000,
    name: str | None = None,
    initial_design: int = 5,
    crash_cost: float = 1000.0,
    overwrite: bool = False,
    logging_level: int = 40,
) -> Optimizer:
    """Build an ask/tell optimizer. With ``overwrite=False`` an identical earlier run in
    ``output_dir/name/seed`` is continued."""
    from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, RandomFacade, Scenario

    if kind not in KINDS:
        from mfhpo.errors import MfhpoError

        raise MfhpoError(f"optimizer: must be one of {', '.join(KINDS)}, got {kind!r}")
    name = name or kind
    common: dict[str, Any] = dict(
        configspace=configspace,
        name=name,
        output_directory=Path(output_dir),
        deterministic=True,
        crash_cost=float(crash_cost),
        n_trials=int(n_trials),
        seed=int(seed),
    )
    if kind == "smac-mf":
        scenario = Scenario(min_budget=float(min_budget), max_budget=float(max_budget), **common)
        facade_cls = MultiFidelityFacade
        intensifier = MultiFidelityFacade.get_intensifier(scenario, eta=int(eta))
    else:
        scenario = Scenario(**common)
        facade_cls = HyperparameterOptimizationFacade if kind == "smac-bo" else RandomFacade
        intensifier = facade_cls.get_intensifier(scenario, max_config_calls=1)
    kwargs: dict[str, Any] = dict(intensifier=intensifier, overwrite=overwrite, logging_level=logging_level)
    if kind != "random":
        # one thread for the random forest: 10 trees on a few hundred points; joblib's thread pool
        # (n_jobs=-1) costs seconds per refit on a busy machine and starves nothing useful
        model = facade_cls.get_model(scenario)
        model._rf_opts["n_jobs"] = 1
        kwargs["model"] = model
        kwargs["initial_design"] = facade_cls.get_initial_design(scenario, n_configs=int(initial_design))
    facade = facade_cls(scenario, target_function=None, **kwargs)
    return Optimizer(kind, facade, scenario, max_budget=max_budget)
