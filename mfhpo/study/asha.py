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

Cost per ``ask()``: the run history is read incrementally (the entries added since the last ask, the
finished entries told again and the trials that were RUNNING then) into per-rung rankings kept sorted,
with each rung's not-yet-promoted successes in rank order beside them, so an ask costs O(changed
entries + running trials) and one bisection per rung, not a scan and sort of the whole history
(docs/scale.md).
"""

from __future__ import annotations

from bisect import bisect_left, insort
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
        self._rung_of = {b: k for k, b in enumerate(self._rungs)}

    def reset(self) -> None:
        super().reset()
        self._assigned: list[tuple[int, Configuration, tuple]] = []  # (rung, configuration, key), in order
        self._assigned_keys: set[tuple[int, tuple]] = set()
        self._first: dict[tuple, int] = {}  # key -> index of its first assignment (ties in cost)
        self._key_of_id: dict[int, tuple] = {}  # run-history config id -> key (ids never change)
        self._forget_history()

    def _forget_history(self) -> None:
        """Empty the view of the run history (:meth:`_read_history` rebuilds it from the start)."""
        self._seen = 0  # run-history entries read so far, in its (insertion) order
        self._retold_seen = 0  # the run history's re-told entries read so far
        self._finished: dict[int, dict[tuple, tuple]] = {}  # rung -> {key: its entry in _ranked}
        self._ranked: dict[int, list[tuple[bool, float, int, tuple]]] = {}  # rung -> results in rank order
        self._unpromoted: dict[int, list[tuple[bool, float, int, tuple]]] = {}  # rung -> its successes not
        # yet assigned one rung up, in rank order
        self._present: dict[tuple[int, tuple], None] = {}  # (rung, key) with any trial, in order
        self._configs: dict[tuple, Configuration] = {}
        self._running: dict[Any, tuple[int, tuple]] = {}  # trial key still RUNNING when read -> (rung, key)

    # ---- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"promotion": "async", "assigned": [[k, dict(c)] for k, c, _ in self._assigned]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._assigned, self._assigned_keys, self._first = [], set(), {}
        self._forget_history()
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
        if rung > 0 and key in self._finished.get(rung - 1, {}):
            self._discard(rung - 1, self._finished[rung - 1][key])

    def _discard(self, rung: int, entry: tuple) -> None:
        """Drop ``entry`` from the rung's not-yet-promoted successes (if there)."""
        waiting = self._unpromoted.get(rung, [])
        i = bisect_left(waiting, entry)
        if i < len(waiting) and waiting[i] == entry:
            del waiting[i]

    # ---- the rule ----------------------------------------------------------------------------
    def _read_history(self) -> None:
        """Bring the view of the run history up to date from what changed since the last read: the
        entries added (``keys_since``), the finished entries told again (``retold_since``) and the
        trials that were RUNNING then; O(changes + running trials) per ask, with mfhpo's run history
        (``make_optimizer``). A run history that shrank is read again from the start."""
        rh = self.runhistory
        if len(rh) < self._seen:
            self._forget_history()
        added = rh.keys_since(self._seen)
        again = rh.retold_since(self._retold_seen)
        self._seen += len(added)
        self._retold_seen += len(again)
        changed = [(tk, self._running.pop(tk)) for tk in
                   [tk for tk in self._running if rh[tk].status != StatusType.RUNNING]]
        new = []
        for tk in added:
            where = self._locate(tk)
            if where is not None:
                self._present[where] = None
                new.append(where)
                changed.append((tk, where))
        changed += [(tk, where) for tk in again if (where := self._locate(tk)) is not None]
        for k, key in new:  # trials the state missed (re-told after a kill): already made
            if (k, key) not in self._assigned_keys:
                self._assign(k, self._configs[key])
        for tk, (k, key) in changed:
            tv = rh[tk]
            if tv.status == StatusType.RUNNING:
                self._running[tk] = (k, key)
                self._unrecord(k, key)
            else:
                self._running.pop(tk, None)
                self._record(k, key, float(tv.cost), tv.status == StatusType.SUCCESS)

    def _locate(self, tk) -> tuple[int, tuple] | None:
        """(rung, config key) of a run-history entry; None for a budget that is not a rung."""
        k = self._rung_of.get(float(tk.budget)) if tk.budget is not None else None
        if k is None:
            return None
        key = self._key_of_id.get(tk.config_id)
        if key is None:
            key = self._key_of_id[tk.config_id] = config_key(self.runhistory.get_config(tk.config_id))
        if key not in self._configs:
            self._configs[key] = self.runhistory.get_config(tk.config_id)
        return k, key

    def _record(self, rung: int, key: tuple, cost: float, succeeded: bool) -> None:
        """A finished result at ``rung``, ranked: successes by cost, ties to the earlier assignment;
        unsuccessful results (crashed, timeouts) after every success."""
        self._unrecord(rung, key)  # told again: the new result replaces the old
        entry = (not succeeded, cost, self._first.get(key, len(self._first)), key)
        self._finished.setdefault(rung, {})[key] = entry
        insort(self._ranked.setdefault(rung, []), entry)
        if succeeded and rung + 1 < len(self._rungs) and (rung + 1, key) not in self._assigned_keys:
            insort(self._unpromoted.setdefault(rung, []), entry)

    def _unrecord(self, rung: int, key: tuple) -> None:
        """Forget the rung's result of ``key`` (if any)."""
        entry = self._finished.get(rung, {}).pop(key, None)
        if entry is not None:
            self._ranked[rung].remove(entry)
            self._discard(rung, entry)

    def promotable(self) -> tuple[int, tuple] | None:
        """The next promotion (target rung, config key) by the ASHA rule, or None: highest rung first;
        within a rung the best-ranked of its ``floor(n_finished / eta)`` best results that has not been
        promoted yet (the best not-yet-promoted success qualifies iff its rank is within the quota).
        Unsuccessful results count as finished but are never promoted."""
        for k in range(len(self._rungs) - 2, -1, -1):
            waiting = self._unpromoted.get(k)
            if waiting and bisect_left(self._ranked[k], waiting[0]) < len(self._ranked[k]) // self._eta:
                return k + 1, waiting[0][3]
        return None

    def _trial(self, config: Configuration, rung: int) -> TrialInfo:
        seed = self.get_instance_seed_keys_of_interest()[0].seed
        return TrialInfo(config=config, instance=None, seed=seed, budget=self.rung_budgets[rung])

    def _new_config(self) -> Configuration | None:
        for _ in range(self._max_new_config_tries):
            try:
                config = next(self.config_generator)
            except StopIteration:
                return None
            key = config_key(config)
            if (0, key) not in self._assigned_keys and (0, key) not in self._present:
                return config
        return None

    def next_trial(self) -> TrialInfo | None:
        """The trial to run next (None: the config selector has nothing new)."""
        self._read_history()
        if len(self._present) < len(self._assigned_keys):  # assigned, but its trial is gone: hand it out again
            for k, config, key in self._assigned:
                if (k, key) not in self._present:
                    return self._trial(config, k)
        nxt = self.promotable()
        if nxt is not None:
            k, key = nxt
            self._assign(k, self._configs[key])
            return self._trial(self._configs[key], k)
        config = self._new_config()
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
