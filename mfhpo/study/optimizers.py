"""Optimizers with one ask/tell API: ``smac-mf`` (SMAC MultiFidelityFacade + Hyperband),
``smac-bo`` (SMAC HyperparameterOptimizationFacade at full budget), ``random`` (random search at
full budget) and, for side-by-side comparisons, ``optuna-tpe-hb`` (Optuna TPE + Hyperband pruner,
the pipeline users come from: :mod:`mfhpo.study.optuna_pipeline`).

Usable from a plain Python objective::

    opt = make_optimizer("smac-mf", cs, min_budget=1, max_budget=27, eta=3, seed=0,
                         output_dir=Path("out"), n_trials=10_000)
    info = opt.ask()                       # smac.runhistory.TrialInfo
    cost = f(info.config, opt.budget_of(info))
    opt.tell(info, TrialValue(cost=cost))  # pass back exactly the TrialInfo ask() gave

The incumbent is mfhpo's, chosen from the trial records (``mfhpo.study.trial.select_incumbent``).

Design notes (docs/studies.md, ../shared hpo_notes): the Scenario is fixed once (``n_trials`` large)
and the caller stops by its own criteria, so resuming never makes SMAC call ``input()``;
``resume_cleanup`` removes RUNNING trials from the saved run history before the facade loads it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfhpo.study.rundir import atomic_write_text

KINDS = ("smac-mf", "smac-bo", "random", "optuna-tpe-hb")
PROMOTIONS = ("sync", "async")  # smac-mf: SMAC's Hyperband (sync) or ASHA (async, mfhpo.study.asha)
ACQUISITIONS = ("ei", "ei_per_second")  # SMAC's EI, or EI per predicted second (mfhpo.study.cost_aware)


class Optimizer:
    """Thin wrapper around a SMAC facade driven by ask/tell."""

    # SMAC rewrites its state files in full (O(trials) each: 25 ms at 100 trials, ~0.5 s at 5,000); a write
    # waits until the tells since the last one would carry its cost at this much per tell (docs/scale.md)
    SAVE_S_PER_TELL = 0.010

    def __init__(self, kind: str, facade, scenario, max_budget: float, save_interval_s: float = 0.0):
        self.kind = kind
        self.facade = facade
        self.scenario = scenario
        self.max_budget = float(max_budget)
        self.save_interval_s = float(save_interval_s)
        self._last_save = float("-inf")
        self.last_save_s = 0.0  # how long the last write of the state files took
        self.unsaved = 0  # tells not yet in SMAC's state files

    # ---- the API -----------------------------------------------------------------------------
    def ask(self):
        return self.facade.ask()

    def tell(self, info, value, save: bool = True) -> None:
        """Tell SMAC; with ``save`` its state files are written when :meth:`save_due`. A resumed study
        re-tells finished trials the files missed from mfhpo's trial records (runner), so a later
        write loses nothing."""
        self.facade.tell(info, value, save=False)
        self.unsaved += 1
        if save and self.save_due(time.monotonic() - self._last_save):
            self.save()

    def save_due(self, since_last_s: float) -> bool:
        """Whether to write SMAC's state files now, ``since_last_s`` after the last write: after every
        tell when ``save_interval_s`` is 0 (as SMAC does); otherwise once ``save_interval_s`` has passed
        AND the tells since the last write number at least its duration / ``SAVE_S_PER_TELL``. SMAC
        rewrites runhistory.json and intensifier.json in full, so without the second rule a study
        whose results arrive slower than ``save_interval_s`` would pay a full rewrite per trial."""
        if self.save_interval_s <= 0:
            return True
        return since_last_s >= self.save_interval_s and self.unsaved * self.SAVE_S_PER_TELL >= self.last_save_s

    def save(self) -> None:
        """Write SMAC's state files now (runhistory, intensifier, optimization.json)."""
        t0 = time.perf_counter()
        self.facade.optimizer.save()
        self.last_save_s = time.perf_counter() - t0
        self._last_save = time.monotonic()
        self.unsaved = 0

    def budget_of(self, info) -> float:
        """The trial's budget; full budget for optimizers without budgets."""
        return float(info.budget) if info.budget is not None else self.max_budget

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


def values_key(config):
    """A hashable key equal for configurations with equal values (numpy or Python numbers alike)."""
    try:
        items = tuple(sorted(dict(config).items()))
        hash(items)
        return items
    except TypeError:  # unhashable values (or not a configuration): fall back on the object itself
        return ("obj", id(config)) if not hasattr(config, "__hash__") or config.__hash__ is None else config


class ConfigList(list):
    """A list of configurations with O(1) membership tests (a set beside the list).

    SMAC's ConfigSelector keeps the configurations it has proposed in a list and tests ``config not in
    self._processed_configs`` for candidates: ``Configuration.__eq__`` compares whole configuration
    spaces (~0.5 ms), so each test cost O(trials), seconds per new configuration after a few thousand
    trials (benchmarks/config_membership.py). Same answers: members are keyed by their values (as
    ``__eq__`` compares them within one configuration space; not by ``Configuration.__hash__``, the
    hash of its repr, which differs between numpy and Python numbers of equal value, e.g. a sampled
    configuration and the same one read back from SMAC's runhistory.json)."""

    def __init__(self, items=()):
        super().__init__(items)
        self._members = {values_key(c) for c in self}
        self._ids = {id(c) for c in self}

    @classmethod
    def reusing(cls, configs, old: "ConfigList") -> "ConfigList":
        """``ConfigList(configs)`` without hashing again the configurations ``old`` holds (SMAC
        reassigns the whole run history's configurations before each batch of proposals)."""
        new = cls.__new__(cls)
        list.__init__(new, configs)
        ids = {id(c) for c in new}
        if not old._ids <= ids:  # something left: start afresh
            new._members, new._ids = {values_key(c) for c in new}, ids
            return new
        new._members, new._ids = old._members.copy(), set(old._ids)  # set.copy keeps the stored hashes
        for c in new:
            if id(c) not in new._ids:
                new._members.add(values_key(c))
                new._ids.add(id(c))
        return new

    def __contains__(self, config) -> bool:
        return values_key(config) in self._members

    def append(self, config) -> None:
        super().append(config)
        self._members.add(values_key(config))
        self._ids.add(id(config))

    def extend(self, configs) -> None:
        configs = list(configs)
        super().extend(configs)
        self._members.update(values_key(c) for c in configs)
        self._ids.update(id(c) for c in configs)

    def __iadd__(self, configs):
        self.extend(configs)
        return self

    # any other change: rebuild the set
    def _rebuilt(self, out):
        self._members = {values_key(c) for c in self}
        self._ids = {id(c) for c in self}
        return out

    def insert(self, i, config) -> None:
        self._rebuilt(super().insert(i, config))

    def remove(self, config) -> None:
        self._rebuilt(super().remove(config))

    def pop(self, i=-1):
        return self._rebuilt(super().pop(i))

    def clear(self) -> None:
        self._rebuilt(super().clear())

    def __setitem__(self, i, v) -> None:
        self._rebuilt(super().__setitem__(i, v))

    def __delitem__(self, i) -> None:
        self._rebuilt(super().__delitem__(i))


def _config_selector_cls():
    from smac.main.config_selector import ConfigSelector

    class MfhpoConfigSelector(ConfigSelector):
        """SMAC's ConfigSelector, its proposed configurations kept in a :class:`ConfigList` (O(1)
        ``in``), with two changes for Hyperband (smac-mf):

        * **Which budget the surrogate is fitted on.** SMAC fits its random forest on the highest
          budget with at least ``min_trials`` results (SMAC default 1): as soon as one configuration
          finished at the top rung the model is refitted on that single point (then 2, 3, ...) and
          the tens of lower-budget results are ignored. Here: the highest budget with at least
          ``min_trials`` results (mfhpo default d + 3, BOHB's N_min + 2 with N_min = d + 1), and if
          no budget has that many yet, the budget with the most results (so the model is used
          from the first result on, as in SMAC, rather than sampling at random).
        * **No repeated proposals.** SMAC's "no data to fit the model yet" path yields
          ``configspace.sample_configuration()`` unchecked, and its first sample repeats the first
          initial-design configuration (same seeded stream), so Hyperband's first bracket held the
          same configuration twice (26 distinct of 27 in the budget-1 rung). Such repeats are
          drawn again. Proposals of the initial design and the acquisition maximizer pass unchanged.
        """

        @property
        def _processed_configs(self):
            return self.__dict__["_mfhpo_processed_configs"]

        @_processed_configs.setter
        def _processed_configs(self, configs) -> None:  # SMAC assigns plain lists: keep O(1) membership
            old = self.__dict__.get("_mfhpo_processed_configs")
            if not isinstance(configs, ConfigList):
                configs = ConfigList.reusing(configs, old) if old is not None else ConfigList(configs)
            self.__dict__["_mfhpo_processed_configs"] = configs

        def _collect_data(self):
            assert self._runhistory is not None and self._runhistory_encoder is not None
            budgets = sorted({k.budget for k in self._runhistory if k.budget is not None}, reverse=True)
            if not budgets:
                return super()._collect_data()
            data = {}
            for b in budgets:
                X, Y = self._runhistory_encoder.transform(budget_subset=[b])
                if X.shape[0] >= self._min_trials:
                    data = {b: (X, Y)}
                    break
                data[b] = (X, Y)
            b = next(iter(data)) if len(data) == 1 else max(data, key=lambda k: (data[k][0].shape[0], k))
            if data[b][0].shape[0] == 0:
                return super()._collect_data()
            # transform() also stores the encoder's y statistics: redo it for the chosen budget
            X, Y = self._runhistory_encoder.transform(budget_subset=[b])
            self._considered_budgets = [b]
            return X, Y, self._runhistory_encoder.get_configurations(budget_subset=self._considered_budgets)

        def __iter__(self):
            skips = 0
            for config in super().__iter__():
                if any(config is c for c in self._processed_configs):  # SMAC recorded it itself
                    skips = 0
                    yield config
                    continue
                if config in self._processed_configs and skips < self._max_new_config_tries:
                    skips += 1  # a repeat from the no-data path: draw again
                    continue
                self._processed_configs.append(config)
                skips = 0
                yield config

    return MfhpoConfigSelector


def _hyperband_cls():
    from collections import defaultdict

    from smac.intensifier.hyperband import Hyperband

    class _HigherStagesFirst(defaultdict):
        """Hyperband's tracker ((bracket, stage) -> batches) listing its keys highest stage first."""

        def keys(self):
            return sorted(super().keys(), key=lambda k: (-k[1], k[0]))

    class MfhpoHyperband(Hyperband):
        """SMAC's Hyperband, except that pending promotions are served before new low-budget trials.

        SMAC's successive halving says it goes through its stages "in reverse order to complete
        higher stages first" but iterates them in insertion order, so with asynchronous workers
        (mfhpo's dispatcher asks while trials run) a configuration promoted to a higher budget
        queued behind every newer budget-1 batch, and new brackets were opened instead. With
        sequential ask/tell (benchmarks/optimizers.py) at most one batch is pending and nothing changes.
        """

        def reset(self) -> None:
            super().reset()
            self._tracker = _HigherStagesFirst(list, self._tracker)

        def set_state(self, state) -> None:
            super().set_state(state)
            self._tracker = _HigherStagesFirst(list, self._tracker)

    return MfhpoHyperband


def _runhistory_cls():
    from itertools import islice

    from smac.runhistory import RunHistory
    from smac.runhistory.enumerations import StatusType

    class MfhpoRunHistory(RunHistory):
        """SMAC's RunHistory with two per-trial costs made independent of the study's length
        (docs/scale.md):

        * the objective bounds (min and max of the successful costs) are updated by each added result
          instead of recomputed from every entry, as SMAC does on every ``add`` (twice per trial:
          RUNNING, then the result). Same bounds: a result that replaces a successful one (a re-told
          trial) falls back to SMAC's full recomputation;
        * :meth:`keys_since` lists the entries added after the first ``n`` from the end (iterating
          SMAC's OrderedDict from the start hashes every key on the way), and :meth:`retold_since`
          the finished entries overwritten since (a trial told again), so that a reader can follow
          the history incrementally (mfhpo.study.asha)."""

        _replacing = None

        def keys_since(self, n: int) -> list:
            """The trial keys added after the first ``n`` entries, oldest first."""
            new = len(self._data) - n
            return list(islice(reversed(self._data), new))[::-1] if new > 0 else []

        def retold_since(self, n: int) -> list:
            """Trial keys whose finished entry was overwritten, after the first ``n`` such events."""
            return self._retold()[n:]

        def _retold(self) -> list:
            # the instance was made as SMAC's RunHistory (its __init__ ran, not a subclass's)
            return self.__dict__.setdefault("_retold_keys", [])

        def _add(self, k, v, status) -> None:
            old = self._data.get(k)
            if old is not None and old.status != StatusType.RUNNING:
                self._retold().append(k)
            self._replacing = (old, v)
            try:
                super()._add(k, v, status)
            finally:
                self._replacing = None

        def _update_objective_bounds(self) -> None:
            pair, bounds = self._replacing, self._objective_bounds
            if pair is None or not bounds or (pair[0] is not None and pair[0].status == StatusType.SUCCESS):
                return super()._update_objective_bounds()
            new = pair[1]
            if new.status != StatusType.SUCCESS:
                return
            costs = new.cost if isinstance(new.cost, (list, tuple)) else [new.cost]
            self._objective_bounds = [(min(lo, float(c)), max(hi, float(c))) for (lo, hi), c in zip(bounds, costs)]

    return MfhpoRunHistory


def smac_state_dir(output_dir: Path, name: str, seed: int) -> Path:
    return Path(output_dir) / name / str(seed)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _repair_killed_writes(state_dir: Path) -> None:
    """SMAC writes its state files in place: a run killed mid-write leaves one empty or truncated.
    An unreadable run history or intensifier state is moved aside (``*.unreadable``): SMAC then starts
    from an empty history and the runner tells it every finished trial from mfhpo's own records. An
    unreadable ``optimization.json`` (SMAC's time counters, which it cannot do without) is reset."""
    for name in ("runhistory.json", "intensifier.json"):
        path = state_dir / name
        if path.exists() and _read_json(path) is None:
            os.replace(path, path.with_suffix(".json.unreadable"))
    opt = state_dir / "optimization.json"
    if opt.exists() and _read_json(opt) is None:
        os.replace(opt, opt.with_suffix(".json.unreadable"))
        atomic_write_text(opt, json.dumps({"used_walltime": 0.0, "used_target_function_walltime": 0.0,
                                           "used_target_function_cputime": 0.0, "last_update": 0.0,
                                           "finished": False}))


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
            atomic_write_text(sc_path, json.dumps(sc, indent=2))
    _repair_killed_writes(Path(state_dir))
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
        atomic_write_text(rh_path, json.dumps(data, indent=2))  # as SMAC writes it (NaN kept)
    return {"dropped": dropped, "completed": completed}


def _seed_reproducible(facade) -> None:
    """Make a seeded SMAC run reproducible across processes.

    SMAC's local search collects its start points in a ``set`` of configurations
    (``LocalSearch._get_initial_points``) and walks them in set order: ``Configuration.__hash__``
    hashes its repr, a string, so the order (and with it every model-based proposal) changes with
    Python's per-process hash seed. The same study with the same seed then proposed different
    configurations from its first model-based trial on. Here the start points are walked in the
    order of their encoded values instead.
    """
    from smac.acquisition.maximizer.local_search import LocalSearch

    class OrderedStartLocalSearch(LocalSearch):
        def _get_initial_points(self, *args, **kwargs):
            points = super()._get_initial_points(*args, **kwargs)
            return sorted(points, key=lambda c: tuple(float(x) if x == x else -1.0 for x in c.get_array()))

    maximizer = getattr(facade._config_selector, "_acquisition_maximizer", None)
    local = getattr(maximizer, "_local_search", None)
    if local is not None and type(local) is LocalSearch:
        local.__class__ = OrderedStartLocalSearch


def _intensifier(kind: str, facade_cls, scenario, eta: int, promotion: str, brackets: int | str):
    if kind != "smac-mf":
        return facade_cls.get_intensifier(scenario, max_config_calls=1)
    if promotion == "async":
        from mfhpo.errors import MfhpoError
        from mfhpo.study.asha import AsyncSuccessiveHalving

        try:
            return AsyncSuccessiveHalving(scenario, eta=int(eta), max_incumbents=10,
                                          incumbent_selection="highest_observed_budget", brackets=brackets)
        except ValueError as e:
            raise MfhpoError(f"optimizer_options.{e}") from None
    return _hyperband_cls()(scenario=scenario, eta=int(eta), n_seeds=1, instance_seed_order="shuffle_once",
                            max_incumbents=10, incumbent_selection="highest_observed_budget")


def _surrogate(facade_cls, scenario, acquisition: str, n_trees: int = 10) -> dict:
    """The facade's model, and with ``ei_per_second`` its encoder and acquisition function too."""

    def random_forest():
        # one thread for the random forest: 10 trees on a few hundred points; joblib's thread pool
        # (n_jobs=-1) costs seconds per refit on a busy machine and starves nothing useful
        model = facade_cls.get_model(scenario, n_trees=int(n_trees))
        model._rf_opts["n_jobs"] = 1
        return model

    if acquisition == "ei_per_second":
        from mfhpo.study.cost_aware import cost_aware_parts

        return cost_aware_parts(scenario, cost_model=random_forest(), seconds_model=random_forest())
    return {"model": random_forest()}


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
    min_trials: int | None = None,
    save_interval_s: float = 0.0,
    promotion: str = "async",
    brackets: int | str = 1,
    acquisition: str = "ei",
    random_probability: float | None = None,
    retrain_after: int = 8,
    n_trees: int = 10,
) -> Optimizer:
    """Build an ask/tell optimizer. With ``overwrite=False`` an identical earlier run in
    ``output_dir/name/seed`` is continued. ``save_interval_s``: see :meth:`Optimizer.tell`.

    ``promotion`` (smac-mf only): ``async`` (default), ASHA (:class:`mfhpo.study.asha.AsyncSuccessiveHalving`:
    a configuration is promoted as soon as it ranks in the top 1/eta of its rung's finished results);
    ``sync``, SMAC's Hyperband (a rung is compared when all its configurations finished).
    ``brackets`` (``async`` only): brackets of ASHA side by side, bracket b starting at rung b
    (asynchronous Hyperband; 1 = ASHA alone; ``"all"``: one per rung; :mod:`mfhpo.study.asha`).

    ``acquisition`` (smac-mf, smac-bo): ``ei``, SMAC's expected improvement; ``ei_per_second``, EI
    divided by a second random forest's prediction of wall seconds per epoch-equivalent
    (:mod:`mfhpo.study.cost_aware`; the told ``TrialValue.time`` and ``epoch_equivalents``).

    ``random_probability`` (smac-mf, smac-bo): share of proposals drawn at random between the
    model-based ones; ``None`` keeps SMAC's 0.2 (0.05 measured no better: docs/optimizers.md).

    ``retrain_after`` (smac-mf): new configurations served from one fit of the surrogate and one
    acquisition ranking before the next fit (SMAC's default 8); ``n_trees`` (smac-mf, smac-bo): trees of
    the random forest (SMAC's default 10). Benchmark settings (docs/optimizers.md), not study options.

    ``min_trials`` (smac-mf only): fewest observations at one budget for SMAC to fit its random
    forest on that budget; SMAC fits on the highest budget having at least this many. SMAC's
    default is 1, so as soon as ONE configuration has finished at the top rung the surrogate is
    refitted on that single point (then 2, 3, ...) and the tens of lower-budget results are
    ignored: for the first Hyperband rounds the model is nearly uninformed. ``None`` (default) uses
    BOHB's rule (Falkner et al. 2018): the highest budget with at least N_min + 2 observations,
    N_min = d + 1, d = number of hyperparameters, i.e. ``d + 3``. Measured on multi-fidelity
    Hartmann-6 (20 seeds, budgets 1..27, docs/optimizers.md): median regret at 10/20/40 full-budget
    equivalents 1.56/1.17/1.0 with it vs 1.48/1.27/1.13 with SMAC's default, and random search's
    final median reached with 0.314 vs 0.578 of its compute.
    """
    from smac import (
        HyperparameterOptimizationFacade,
        MultiFidelityFacade,
        RandomFacade,
        Scenario,
    )

    from mfhpo.errors import MfhpoError

    if kind not in KINDS:
        raise MfhpoError(f"optimizer: must be one of {', '.join(KINDS)}, got {kind!r}")
    if promotion not in PROMOTIONS:
        raise MfhpoError(f"optimizer_options.promotion: must be one of {', '.join(PROMOTIONS)}, got {promotion!r}")
    if acquisition not in ACQUISITIONS:
        raise MfhpoError(f"optimizer_options.acquisition: must be one of {', '.join(ACQUISITIONS)}, "
                         f"got {acquisition!r}")
    name = name or kind
    if kind == "optuna-tpe-hb":
        from mfhpo.study.optuna_pipeline import OptunaPipeline

        return OptunaPipeline(configspace, min_budget=min_budget, max_budget=max_budget, eta=eta, seed=seed,
                              output_dir=Path(output_dir), name=name)
    common: dict[str, Any] = {
        "configspace": configspace,
        "name": name,
        "output_directory": Path(output_dir),
        "deterministic": True,
        "crash_cost": float(crash_cost),
        "n_trials": int(n_trials),
        "seed": int(seed),
    }
    if kind == "smac-mf":
        scenario = Scenario(min_budget=float(min_budget), max_budget=float(max_budget), **common)
        facade_cls = MultiFidelityFacade
    else:
        scenario = Scenario(**common)
        facade_cls = HyperparameterOptimizationFacade if kind == "smac-bo" else RandomFacade
    kwargs: dict[str, Any] = {"intensifier": _intensifier(kind, facade_cls, scenario, eta, promotion, brackets),
                              "overwrite": overwrite, "logging_level": logging_level}
    if kind != "random":
        kwargs.update(_surrogate(facade_cls, scenario, acquisition, n_trees))
        if random_probability is not None:  # share of proposals drawn at random between model-based ones
            kwargs["random_design"] = facade_cls.get_random_design(scenario, probability=float(random_probability))
        kwargs["initial_design"] = facade_cls.get_initial_design(scenario, n_configs=int(initial_design))
    if kind == "smac-mf":
        if min_trials is None:
            min_trials = len(list(configspace.values())) + 3
        # SMAC's defaults (retrain_after 8, 16 retries) except min_trials
        kwargs["config_selector"] = _config_selector_cls()(scenario, retrain_after=int(retrain_after),
                                                                 max_new_config_tries=16,
                                                                 min_trials=int(min_trials))
    # SMAC's local search takes np.mean of an empty list of timings, and numpy warns twice per search:
    # noise in every study's output, nothing the user can act on
    for msg in ("Mean of empty slice", "invalid value encountered in scalar divide"):
        warnings.filterwarnings("ignore", msg, RuntimeWarning, r"numpy\._core")
    facade = facade_cls(scenario, target_function=None, **kwargs)
    facade.runhistory.__class__ = _runhistory_cls()  # the same object (every SMAC part holds it), O(1) bounds
    _seed_reproducible(facade)
    return Optimizer(kind, facade, scenario, max_budget=max_budget, save_interval_s=save_interval_s)


# metrics copied into SMAC's additional_info (DeepCAVE shows them per trial)
_INFO_METRICS = ("energy_mae", "energy_mae_per_atom", "force_mae", "force_mae_free", "baseline_energy_mae_per_atom",
                 "baseline_force_mae", "baseline_force_mae_free")


def _unix(rec: dict, unix_key: str, iso_key: str) -> float | None:
    if rec.get(unix_key) is not None:
        return float(rec[unix_key])
    if rec.get(iso_key):
        from datetime import datetime

        try:
            return datetime.fromisoformat(str(rec[iso_key])).timestamp()
        except ValueError:
            return None
    return None


def trial_value(rec: dict, crash_cost: float):
    """What SMAC is told for a finished mfhpo trial record: the cost (``crash_cost`` unless
    SUCCESS), the trial's wall time, its real start/end (Unix seconds, as SMAC's own runner records
    them: DeepCAVE's Time objective is ``endtime - starttime``) and per-trial information."""
    from smac.runhistory import TrialValue
    from smac.runhistory.enumerations import StatusType

    status = rec["status"]
    cost = rec["cost"] if status == "SUCCESS" and rec.get("cost") is not None else crash_cost
    total = float((rec.get("timings") or {}).get("total_s") or 0.0)
    end = _unix(rec, "finished_unix", "finished_at")
    start = _unix(rec, "started_unix", "started_at")
    if end is None:
        end = 0.0
    if start is None or (rec.get("started_unix") is None and end - start < total):
        start = end - total  # ISO stamps have 1 s resolution: the measured duration is exact
    info: dict = {"trial_id": rec["trial_id"], "epochs": rec.get("epochs"), "subset_fraction": rec.get("subset_fraction"),
                  "epochs_run": rec.get("epochs_run"), "epoch_equivalents": rec.get("epoch_equivalents"),
                  "warm_start_from_trial": (rec.get("warm_start") or {}).get("from_trial")
                  if (rec.get("warm_start") or {}).get("used") else None,
                  "worker": rec.get("worker"), "device": rec.get("device")}
    val = (rec.get("metrics") or {}).get("val") or {}
    info.update({f"val_{k}": float(val[k]) for k in _INFO_METRICS if val.get(k) is not None})
    if rec.get("error"):
        info["error"] = str(rec["error"])[:300]
    return TrialValue(cost=float(cost), time=total, status=StatusType[status], starttime=float(start),
                      endtime=float(end), additional_info={k: v for k, v in info.items() if v is not None})
