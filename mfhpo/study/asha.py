"""Asynchronous successive halving (ASHA; Li et al., MLSys 2020) as a SMAC intensifier.

``optimizer_options.promotion: async`` selects it for ``smac-mf`` (docs/optimizers.md). The rule, at
every ``ask()``: for the rungs from the second-highest down to the lowest, the configurations whose
results finished at that rung are ranked by cost; a configuration among the best
``floor(n_finished / eta)`` of them (unsuccessful results ranked last) that has not been promoted yet
is promoted to the next rung's budget. If no rung has one, a new configuration from SMAC's config
selector (random forest + acquisition, ``MfhpoConfigSelector``) starts at the lowest budget (at its
bracket's, below). No rung waits for its running trials, so ``ask()`` always returns work.

The rungs are SMAC's successive-halving budgets (``min_budget * eta^k`` up to ``max_budget``).

``optimizer_options.brackets: B`` (default 1; ``all``: one per rung) runs B brackets of this rule side
by side, asynchronous Hyperband (Li et al. 2020, section 3): bracket ``b`` starts its configurations at
rung ``b`` and ranks and promotes them among themselves. Each new configuration goes to the bracket
with the least budget handed out so far (a promotion adds the budget it trains beyond the lower rung;
ties to the lower bracket), so every bracket gets about the same compute, as Hyperband's brackets do.
With ``all`` and four rungs the fourth configuration of a fresh study already trains at the top
budget: a hedge against low budgets that rank configurations badly.

The class is SMAC's :class:`~smac.intensifier.successive_halving.SuccessiveHalving` with its trial
generator, state and tracker replaced; incumbents, run history, callbacks and the state files
(``intensifier.json``) are SMAC's own.

State (``get_state``): the ordered list of assignments ``[rung, configuration]`` (every start and every
promotion; a configuration's first assignment is its start, whose rung is its bracket). On resume it is
merged with the run history, so that

* an assignment whose trial is gone (RUNNING when the driver died, dropped by ``resume_cleanup``)
  is handed out again before anything else: no promotion is lost;
* a trial found in the run history at a rung budget (e.g. re-told from mfhpo's trial records after a
  kill between two state writes) counts as an assignment: no promotion is made twice.

Cost per ``ask()``: the run history is read incrementally (the entries added since the last ask, the
finished entries told again and the trials that were RUNNING then) into rankings per (bracket, rung)
kept sorted, with each one's not-yet-promoted successes in rank order beside them, so an ask costs
O(changed entries + running trials) and one bisection per (bracket, rung), not a scan and sort of the
whole history (docs/scale.md).

The budget a bracket is charged assumes warm starts (a promotion adds the budget beyond its lower
rung); where promotions retrain from scratch (``fidelity.warm_start: false``, a subset that changes
between rungs) the lower brackets get somewhat more compute than the upper ones.
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
                 max_new_config_tries: int = 64, brackets: int | str = 1):
        super().__init__(scenario=scenario, eta=eta, n_seeds=1, instance_seed_order="shuffle_once",
                         max_incumbents=max_incumbents, incumbent_selection=incumbent_selection, seed=seed)
        self._max_new_config_tries = int(max_new_config_tries)
        # SMAC's successive-halving budgets, as its __post_init__ computes them (before any ask)
        max_iter = self._get_max_iterations(eta, self._max_budget, self._min_budget)
        self._rungs = [float(b) for b in self._compute_configs_and_budgets_for_stages(eta, self._max_budget, max_iter)[0]]
        self._rung_of = {b: k for k, b in enumerate(self._rungs)}
        if brackets == "all":
            brackets = len(self._rungs)
        if not isinstance(brackets, int) or not 1 <= brackets <= len(self._rungs):
            raise ValueError(f"brackets: must be 1 to {len(self._rungs)} (the rungs of budgets "
                             f"{', '.join(f'{b:g}' for b in self._rungs)}), got {brackets!r}")
        self._brackets = int(brackets)

    def reset(self) -> None:
        super().reset()
        self._assigned: list[tuple[int, Configuration, tuple]] = []  # (rung, configuration, key), in order
        self._assigned_keys: set[tuple[int, tuple]] = set()
        self._first: dict[tuple, int] = {}  # key -> index of its first assignment (ties in cost)
        self._top: dict[tuple, int] = {}  # key -> highest rung assigned
        self._spent: dict[int, float] = {}  # bracket -> budget handed out to its configurations
        self._key_of_id: dict[int, tuple] = {}  # run-history config id -> key (ids never change)
        self._forget_history()

    def _forget_history(self) -> None:
        """Empty the view of the run history (:meth:`_read_history` rebuilds it from the start)."""
        self._seen = 0  # run-history entries read so far, in its (insertion) order
        self._retold_seen = 0  # the run history's re-told entries read so far
        # per cell (bracket, rung): the results finished there, in rank order, and the successes not yet
        # assigned one rung up, in rank order
        self._finished: dict[tuple[int, int], dict[tuple, tuple]] = {}  # cell -> {key: its entry in _ranked}
        self._ranked: dict[tuple[int, int], list[tuple[bool, float, int, tuple]]] = {}
        self._unpromoted: dict[tuple[int, int], list[tuple[bool, float, int, tuple]]] = {}
        self._present: dict[tuple[int, tuple], None] = {}  # (rung, key) with any trial, in order
        self._configs: dict[tuple, Configuration] = {}
        self._running: dict[Any, tuple[int, tuple]] = {}  # trial key still RUNNING when read -> (rung, key)

    # ---- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"promotion": "async", "brackets": self._brackets,
                "assigned": [[k, dict(c)] for k, c, _ in self._assigned]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._assigned, self._assigned_keys, self._first = [], set(), {}
        self._top, self._spent = {}, {}
        self._forget_history()
        for k, values in state.get("assigned", []):
            self._assign(int(k), Configuration(self._scenario.configspace, values))
        if state.get("brackets", 1) != self._brackets and self._spent:  # resumed with another count:
            # a bracket new to the study starts level with the least-fed one, not at 0 (it would take
            # every new configuration until it caught up)
            level = min(self._spent.values())
            for b in range(self._brackets):
                self._spent.setdefault(b, level)

    @property
    def assignments(self) -> list[tuple[int, Configuration]]:
        """Every (rung, configuration) handed out so far, in order (a configuration's first: its start)."""
        return [(k, c) for k, c, _ in self._assigned]

    @property
    def rung_budgets(self) -> list[float]:
        return list(self._rungs)

    def bracket_of(self, config: Configuration) -> int | None:
        """The bracket (= starting rung) of an assigned configuration, None if never assigned."""
        return self._bracket(config_key(config))

    def _bracket(self, key: tuple) -> int | None:
        """The rung of the key's first assignment, its bracket (None: never assigned)."""
        i = self._first.get(key)
        return None if i is None else self._assigned[i][0]

    def _cell(self, rung: int, key: tuple) -> tuple[int, int]:
        """(bracket, rung) where a result of ``key`` at ``rung`` is ranked."""
        return min(self._bracket(key) or 0, rung), rung

    def _assign(self, rung: int, config: Configuration) -> None:
        key = config_key(config)
        self._first.setdefault(key, len(self._assigned))
        self._assigned.append((rung, config, key))
        self._assigned_keys.add((rung, key))
        below = self._top.get(key)
        if below is None or rung > below:  # the budget this assignment adds to its bracket (warm start)
            added = self._rungs[rung] - (self._rungs[below] if below is not None else 0.0)
            bracket = self._bracket(key)
            self._spent[bracket] = self._spent.get(bracket, 0.0) + added
            self._top[key] = rung
        cell = self._cell(rung - 1, key)
        if rung > 0 and key in self._finished.get(cell, {}):
            self._discard(cell, self._finished[cell][key])

    def _discard(self, cell: tuple[int, int], entry: tuple) -> None:
        """Drop ``entry`` from the cell's not-yet-promoted successes (if there)."""
        waiting = self._unpromoted.get(cell, [])
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
        """A finished result at ``rung``, ranked in its bracket: successes by cost, ties to the earlier
        assignment; unsuccessful results (crashed, timeouts) after every success."""
        self._unrecord(rung, key)  # told again: the new result replaces the old
        cell = self._cell(rung, key)
        entry = (not succeeded, cost, self._first.get(key, len(self._first)), key)
        self._finished.setdefault(cell, {})[key] = entry
        insort(self._ranked.setdefault(cell, []), entry)
        if succeeded and rung + 1 < len(self._rungs) and (rung + 1, key) not in self._assigned_keys:
            insort(self._unpromoted.setdefault(cell, []), entry)

    def _unrecord(self, rung: int, key: tuple) -> None:
        """Forget the result of ``key`` at ``rung`` (if any)."""
        cell = self._cell(rung, key)
        entry = self._finished.get(cell, {}).pop(key, None)
        if entry is not None:
            self._ranked[cell].remove(entry)
            self._discard(cell, entry)

    def promotable(self) -> tuple[int, tuple] | None:
        """The next promotion (target rung, config key) by the ASHA rule, or None: highest rung first
        (lower bracket first within a rung; every bracket that has configurations, also beyond
        ``brackets`` after a resume with fewer); within a bracket's rung the best-ranked of its
        ``floor(n_finished / eta)`` best results that has not been promoted yet (the best
        not-yet-promoted success qualifies iff its rank is within the quota). Unsuccessful results
        count as finished but are never promoted."""
        for k in range(len(self._rungs) - 2, -1, -1):
            for b in range(k + 1):
                waiting = self._unpromoted.get((b, k))
                ranked = self._ranked.get((b, k), ())
                if waiting and bisect_left(ranked, waiting[0]) < len(ranked) // self._eta:
                    return k + 1, waiting[0][3]
        return None

    def _next_bracket(self) -> int:
        """The bracket of the next new configuration: the least budget handed out so far, ties to the
        lower bracket."""
        return min(range(self._brackets), key=lambda b: (self._spent.get(b, 0.0), b))

    def _trial(self, config: Configuration, rung: int) -> TrialInfo:
        seed = self.get_instance_seed_keys_of_interest()[0].seed
        return TrialInfo(config=config, instance=None, seed=seed, budget=self.rung_budgets[rung])

    def _new_config(self) -> Configuration | None:
        for _ in range(self._max_new_config_tries):
            try:
                config = next(self.config_generator)
            except StopIteration:
                return None
            if config_key(config) not in self._first:  # never assigned (every trial read is assigned)
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
        bracket = self._next_bracket()
        self._assign(bracket, config)
        return self._trial(config, bracket)

    def __iter__(self) -> Iterator[TrialInfo]:
        self.__post_init__()  # SMAC's: budgets, seeds, incumbents from the run history
        while True:
            trial = self.next_trial()
            if trial is None:
                return
            yield trial
