"""Asynchronous successive halving (ASHA; Li et al., MLSys 2020) as a SMAC intensifier.

``optimizer_options.promotion: async`` selects it for ``smac-mf`` (docs/optimizers.md). The rule, at
every ``ask()``: for the rungs from the second-highest down to the lowest, the configurations whose
results finished at that rung are ranked by cost; a configuration among the best
``floor(n_finished / eta)`` of them (unsuccessful results ranked last) that has not been promoted yet
is promoted to the next rung's budget. If no rung has one, a new configuration from SMAC's config
selector (random forest + acquisition, ``MfhpoConfigSelector``) starts at the lowest budget. No rung
waits for its running trials, so ``ask()`` always returns work.

The rungs are SMAC's successive-halving budgets (``min_budget * eta^k`` up to ``max_budget``, one
bracket). The class is SMAC's :class:`~smac.intensifier.successive_halving.SuccessiveHalving` with
its trial generator, state and tracker replaced; incumbents, run history, callbacks and the state
files (``intensifier.json``) are SMAC's own.

State (``get_state``): the ordered list of assignments ``[rung, configuration]`` (every start at the
lowest rung and every promotion). On resume it is merged with the run history, so that

* an assignment whose trial is gone (RUNNING when the driver died, dropped by ``resume_cleanup``)
  is handed out again before anything else: no promotion is lost;
* a trial found in the run history at a rung budget (e.g. re-told from mfhpo's trial records after a
  kill between two state writes) counts as an assignment: no promotion is made twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ConfigSpace import Configuration
from smac.intensifier.successive_halving import SuccessiveHalving
from smac.runhistory import TrialInfo
from smac.runhistory.enumerations import StatusType

from mfhpo.study.optimizers import values_key as config_key


class AsyncSuccessiveHalving(SuccessiveHalving):
    """ASHA promotions over SMAC's rungs; see the module docstring. ``max_new_config_tries``: draws
    from the config selector before giving up on a configuration that has not started yet."""

    def __init__(self, scenario, eta: int = 3, max_incumbents: int = 10,
                 incumbent_selection: str = "highest_observed_budget", seed: int | None = None,
                 max_new_config_tries: int = 64):
        super().__init__(scenario=scenario, eta=eta, n_seeds=1, instance_seed_order="shuffle_once",
                         max_incumbents=max_incumbents, incumbent_selection=incumbent_selection, seed=seed)
        self._max_new_config_tries = int(max_new_config_tries)
        # SMAC's successive-halving budgets, as its __post_init__ computes them (before any ask)
        max_iter = self._get_max_iterations(eta, self._max_budget, self._min_budget)
        self._rungs = [float(b) for b in self._compute_configs_and_budgets_for_stages(eta, self._max_budget, max_iter)[0]]

    def reset(self) -> None:
        super().reset()
        self._assigned: list[tuple[int, Configuration, tuple]] = []  # (rung, configuration, key), in order
        self._assigned_keys: set[tuple[int, tuple]] = set()
        self._first: dict[tuple, int] = {}  # key -> index of its first assignment (ties in cost)
        self._key_of_id: dict[int, tuple] = {}  # run-history config id -> key (ids never change)

    # ---- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"promotion": "async", "assigned": [[k, dict(c)] for k, c, _ in self._assigned]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._assigned, self._assigned_keys, self._first = [], set(), {}
        for k, values in state.get("assigned", []):
            self._assign(int(k), Configuration(self._scenario.configspace, values))

    @property
    def assignments(self) -> list[tuple[int, Configuration]]:
        """Every (rung, configuration) handed out so far, in order (rung 0: a start)."""
        return [(k, c) for k, c, _ in self._assigned]

    @property
    def rung_budgets(self) -> list[float]:
        return list(self._rungs)

    def _assign(self, rung: int, config: Configuration) -> None:
        key = config_key(config)
        self._first.setdefault(key, len(self._assigned))
        self._assigned.append((rung, config, key))
        self._assigned_keys.add((rung, key))

    # ---- the rule ----------------------------------------------------------------------------
    def _rungs_from_history(self) -> tuple[list[dict[tuple, tuple[float, bool]]], dict[tuple[int, tuple], None], dict]:
        """Per rung the finished results {config key: (cost, succeeded)}, the (rung, key) pairs with
        any trial (running or finished; in run-history order) and each key's configuration."""
        rh = self.runhistory
        rung_of = {float(b): k for k, b in enumerate(self.rung_budgets)}
        finished: list[dict[tuple, tuple[float, bool]]] = [{} for _ in rung_of]
        present: dict[tuple[int, tuple], None] = {}
        configs: dict[tuple, Configuration] = {}
        keys = self._key_of_id
        for tk, tv in rh.items():
            k = rung_of.get(float(tk.budget)) if tk.budget is not None else None
            if k is None:
                continue
            key = keys.get(tk.config_id)
            if key is None:
                key = keys[tk.config_id] = config_key(rh.get_config(tk.config_id))
            if key not in configs:
                configs[key] = rh.get_config(tk.config_id)
            present[(k, key)] = None
            if tv.status != StatusType.RUNNING:
                finished[k][key] = (float(tv.cost), tv.status == StatusType.SUCCESS)
        return finished, present, configs

    def promotable(self, finished: list[dict[tuple, tuple[float, bool]]]) -> tuple[int, tuple] | None:
        """The next promotion (target rung, config key) by the ASHA rule, or None: highest rung first;
        within a rung the best-ranked candidate. Unsuccessful results (crashed, timeouts) count as
        finished but rank below every success and are never promoted; ties in cost go to the earlier
        assignment."""
        for k in range(len(finished) - 2, -1, -1):
            results = finished[k]
            quota = len(results) // self._eta
            if quota == 0:
                continue
            ranked = sorted(results, key=lambda key: (not results[key][1], results[key][0],
                                                      self._first.get(key, len(self._first))))
            for key in ranked[:quota]:
                if results[key][1] and (k + 1, key) not in self._assigned_keys:
                    return k + 1, key
        return None

    def _trial(self, config: Configuration, rung: int) -> TrialInfo:
        seed = self.get_instance_seed_keys_of_interest()[0].seed
        return TrialInfo(config=config, instance=None, seed=seed, budget=self.rung_budgets[rung])

    def _new_config(self, present: dict[tuple[int, tuple], None]) -> Configuration | None:
        for _ in range(self._max_new_config_tries):
            try:
                config = next(self.config_generator)
            except StopIteration:
                return None
            key = config_key(config)
            if (0, key) not in self._assigned_keys and (0, key) not in present:
                return config
        return None

    def next_trial(self) -> TrialInfo | None:
        """The trial to run next (None: the config selector has nothing new)."""
        finished, present, configs = self._rungs_from_history()
        for k, key in present:  # trials the state missed (re-told after a kill): already made
            if (k, key) not in self._assigned_keys:
                self._assign(k, configs[key])
        for k, config, key in self._assigned:  # assigned, but its trial is gone: hand it out again
            if (k, key) not in present:
                return self._trial(config, k)
        nxt = self.promotable(finished)
        if nxt is not None:
            k, key = nxt
            self._assign(k, configs[key])
            return self._trial(configs[key], k)
        config = self._new_config(present)
        if config is None:
            return None
        self._assign(0, config)
        return self._trial(config, 0)

    def __iter__(self) -> Iterator[TrialInfo]:
        self.__post_init__()  # SMAC's: budgets, seeds, incumbents from the run history
        while True:
            trial = self.next_trial()
            if trial is None:
                return
            yield trial
