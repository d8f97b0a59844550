"""``optuna-tpe-hb``: the Optuna pipeline users compare mfhpo against (Optuna's TPESampler with a
HyperbandPruner), as an optimizer of ``mfhpo run`` on mfhpo's own workers, for side-by-side studies.

An Optuna trial trains one configuration upwards and reports its validation cost at every rung step
``min_budget * eta**k``; the pruner stops it or lets it go on. Here each stretch between two rung
steps is one mfhpo trial (the same configuration at the next budget, continuing the previous
trial's checkpoint: mfhpo's warm start), so the Optuna trial is a chain of mfhpo trials. Optuna's
successive-halving rule decides only at the rung steps, with the value reported there, so reporting
at those steps gives the decisions of reporting after every epoch. Steps are budgets in units of the
lowest budget (1, eta, eta**2, ...).

SMAC plays no part in the choices. A SMAC RunHistory is kept only as the study's bookkeeping
(configuration ids, finished results), so that records, warm starts and the incumbent work as for
every optimizer. The dispatcher asks this optimizer only when a worker is free (``ask_ahead``), so
with one worker the study evaluates exactly the sequence of Optuna's own ask/tell loop; with N
workers it runs N chains at a time, as N Optuna processes sharing one storage would.

Nothing is saved beside mfhpo's trial records. On resume every record's configuration is numbered
in trial order (:meth:`OptunaPipeline.register`) and the runner tells the finished records again
(``mfhpo.study.resume.retell_missed``), which rebuilds the Optuna study (in memory) in trial order.
A chain whose next stretch was waiting is continued. The pruner's decisions for rebuilt chains may
differ from the first run's (Optuna assigns brackets by trial number), but what already ran is what
the records say; new configurations come from a sampler seeded anew (from the study seed and the
number of rebuilt chains), since the rebuilt trials drew nothing.

Needs optuna (``pip install -e '.[bench]'``). Optuna's defaults otherwise (TPE's 10 random
startup trials); ``optimizer_options`` are SMAC's and do not apply (``initial_design``,
``promotion``, ``acquisition``, ``smac_save_s``, ``prefetch``). A stretch continues its chain's
checkpoint only where mfhpo's warm start applies (``fidelity.warm_start``, the default, and a
fidelity whose lower budget's schedule is a prefix of the higher one's, e.g. ``subset.curriculum``);
elsewhere it trains from scratch, and pays for it.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

from mfhpo.errors import MfhpoError

NEEDS_OPTUNA = "optimizer optuna-tpe-hb needs optuna: pip install -e '.[bench]'"


def rung_budgets(min_budget: float, max_budget: float, eta: int) -> list[float]:
    """Optuna's rung steps from ``min_budget`` up to ``max_budget`` (factor eta; the top one exact).
    Counted upwards, as Optuna's pruner counts its integer steps; SMAC counts down from the top, which
    gives the same ladder when max/min is a power of eta."""
    out, b = [], float(min_budget)
    while b < max_budget * (1 - 1e-9):
        out.append(b)
        b *= eta
    return out + [float(max_budget)]


def suggest_from_configspace(trial, cs) -> dict[str, Any]:
    """Values for every active hyperparameter of ``cs``, suggested by an Optuna trial (parents
    before children; a child is suggested only when all its conditions hold)."""
    from ConfigSpace import (CategoricalHyperparameter, Constant, OrdinalHyperparameter, UniformFloatHyperparameter,
                             UniformIntegerHyperparameter)

    values: dict[str, Any] = {}
    for hp in cs.values():  # topological order
        conds = cs.parent_conditions_of[hp.name]
        if any(not all(p.name in values for p in _parents(c)) or not c.satisfied_by_value(values) for c in conds):
            continue
        if isinstance(hp, UniformFloatHyperparameter):
            values[hp.name] = trial.suggest_float(hp.name, hp.lower, hp.upper, log=hp.log)
        elif isinstance(hp, UniformIntegerHyperparameter):
            values[hp.name] = trial.suggest_int(hp.name, hp.lower, hp.upper, log=hp.log)
        elif isinstance(hp, CategoricalHyperparameter):
            values[hp.name] = trial.suggest_categorical(hp.name, list(hp.choices))
        elif isinstance(hp, OrdinalHyperparameter):
            values[hp.name] = trial.suggest_categorical(hp.name, list(hp.sequence))
        elif isinstance(hp, Constant):
            values[hp.name] = hp.value
        else:
            raise MfhpoError(f"optuna-tpe-hb: hyperparameter type {type(hp).__name__} of {hp.name!r} not supported")
    return values


def _parents(cond) -> list:
    if hasattr(cond, "parent"):
        return [cond.parent]
    return [p for c in cond.components for p in _parents(c)]


class OptunaPipeline:
    """Optuna TPE + Hyperband pruner behind mfhpo's optimizer API (``ask``, ``tell``, ``config_id``,
    ``budget_of``, ``runhistory``; see :class:`mfhpo.study.optimizers.Optimizer`)."""

    kind = "optuna-tpe-hb"
    unsaved = 0  # nothing of its own to save: mfhpo's trial records are the state
    # no new configuration asked ahead while every worker is busy (the dispatcher asks when a slot is
    # free): a finished stretch's continuation then takes its worker first, as in Optuna's own loop
    ask_ahead = False

    def __init__(self, configspace, *, min_budget: float, max_budget: float, eta: int, seed: int, output_dir: Path,
                 name: str):
        try:
            import optuna
        except ImportError:
            raise MfhpoError(NEEDS_OPTUNA) from None
        from smac.runhistory import RunHistory

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.cs = configspace
        self.seed = int(seed)
        self.max_budget = float(max_budget)
        self.rungs = rung_budgets(min_budget, max_budget, eta)
        # Optuna's integer steps: budgets in units of the lowest one, strictly increasing (a top budget
        # that is not min * eta**k may round onto the step below it)
        self._steps: list[int] = []
        for b in self.rungs:
            self._steps.append(max(int(round(b / float(min_budget))), self._steps[-1] + 1 if self._steps else 1))
        self._output_dir = Path(output_dir)
        pruner = optuna.pruners.HyperbandPruner(min_resource=self._steps[0], max_resource=self._steps[-1],
                                                reduction_factor=int(eta))
        # a fixed study name: the pruner assigns trials to brackets by hashing it with the trial number
        self.study = optuna.create_study(study_name=f"{name}-{self.seed}", direction="minimize",
                                         sampler=optuna.samplers.TPESampler(seed=self.seed), pruner=pruner)
        self.rh = RunHistory()
        self._reopened = 0  # chains rebuilt from told-again records (resume)
        # id of the TrialInfo ask() returned -> (that TrialInfo, its Optuna trial): the dispatcher tells
        # exactly the object it was given, so equal configurations in two chains are never confused
        self._live: dict = {}
        self._next: deque = deque()  # (optuna trial, config, rung index) of chains waiting to continue

    # ---- mfhpo's optimizer API --------------------------------------------------------------------
    def ask(self):
        """The next stretch of a chain that goes on, else a new Optuna trial at the lowest budget."""
        from ConfigSpace import Configuration

        if self._next:
            trial, config, k = self._next.popleft()
        else:
            if self._reopened:
                # rebuilt trials had their values fixed and drew nothing: a sampler still at its seed
                # would propose the first run's configurations again
                import optuna

                self.study.sampler = optuna.samplers.TPESampler(seed=self.seed + 7919 * self._reopened)
                self._reopened = 0
            trial = self.study.ask()
            config, k = Configuration(self.cs, values=suggest_from_configspace(trial, self.cs)), 0
        return self._start(trial, config, k)

    def tell(self, info, value, save: bool = True) -> None:
        """Report the stretch's cost at its rung step; the chain ends (complete, pruned, failed) or
        waits to continue. A result with no running stretch (a record told again on resume) opens
        its chain first, with the configuration's values fixed."""
        from smac.runhistory.enumerations import StatusType

        self.rh.add(config=info.config, cost=value.cost, time=value.time, cpu_time=value.cpu_time,
                    status=value.status, seed=info.seed, budget=info.budget, starttime=value.starttime,
                    endtime=value.endtime, additional_info=value.additional_info, force_update=True)
        k = self._rung(info.budget)
        live = self._live.pop(id(info), None)
        trial = live[1] if live is not None and live[0] is info else self._reopen(info.config, k)
        if value.status != StatusType.SUCCESS or not math.isfinite(value.cost):
            self.study.tell(trial, state=_state("FAIL"))
            return
        trial.report(float(value.cost), step=self._steps[k])
        if k == len(self.rungs) - 1:
            self.study.tell(trial, float(value.cost))
        elif trial.should_prune():
            self.study.tell(trial, state=_state("PRUNED"))
        else:
            self._next.append((trial, info.config, k + 1))

    def register(self, configs) -> None:
        """Number ``configs`` (every record's configuration, in trial order) before records are told
        again on resume, so that each configuration of the study, finished or not, gets one id."""
        rh = self.rh
        for c in configs:
            if c not in rh._config_ids:  # RunHistory.add's numbering, without adding a trial
                rh._n_id += 1
                rh._config_ids[c] = rh._n_id
                rh._ids_config[rh._n_id] = c

    def save_due(self, since_last_s: float) -> bool:
        return False

    def save(self) -> None:
        """Nothing to write: the trial records are this optimizer's state (module docstring)."""

    def budget_of(self, info) -> float:
        return float(info.budget)

    @property
    def runhistory(self):
        return self.rh

    @property
    def output_dir(self) -> Path:
        return self._output_dir

    def config_id(self, config) -> int:
        return self.rh.get_config_id(config)

    def n_finished(self) -> int:
        return self.rh.finished

    # ---- internals --------------------------------------------------------------------------------
    def _rung(self, budget) -> int:
        for k, b in enumerate(self.rungs):
            if math.isclose(float(budget), b, rel_tol=1e-9):
                return k
        raise MfhpoError(f"optuna-tpe-hb: budget {budget} is not one of its rungs {self.rungs}")

    def _start(self, trial, config, k: int):
        from smac.runhistory import TrialInfo

        info = TrialInfo(config=config, seed=self.seed, budget=self.rungs[k])
        self.rh.add_running_trial(info)
        self._live[id(info)] = (info, trial)
        return info

    def _reopen(self, config, k: int):
        """The Optuna trial of a told-again record: the chain waiting at rung ``k`` with this
        configuration, else a new trial with its values fixed (a chain's first stretch)."""
        for n, (trial, c, kk) in enumerate(self._next):
            if kk == k and c == config:
                del self._next[n]
                return trial
        self._reopened += 1
        self.study.enqueue_trial(dict(config), skip_if_exists=False)
        trial = self.study.ask()
        suggest_from_configspace(trial, self.cs)  # records the fixed values with their distributions
        return trial


def _state(name: str):
    from optuna.trial import TrialState

    return getattr(TrialState, name)
