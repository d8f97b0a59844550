"""Terminal views of a study: the optimised metrics labelled with their atom set next to their
baselines, the warning while the incumbent does not beat them, the budget progress bars, and the
hard-cutoff warning of the incumbent export."""

from __future__ import annotations

import io

from rich.console import Console

from mfhpo.study import baselines
from mfhpo.study.config import MetricSection
from mfhpo.study.incumbent_view import print_incumbent_metrics
from mfhpo.study.progress import ProgressView
from mfhpo.study.trial import TrialRecord, TrialStatus

METRIC = MetricSection(energy="energy_mae_per_atom", forces="force_mae_free", force_weight=1.0)
VAL = {"energy_mae_per_atom": 0.1838, "baseline_energy_mae_per_atom": 0.1866, "force_mae": 0.939,
       "baseline_force_mae": 0.929, "force_mae_free": 1.271, "baseline_force_mae_free": 1.253}


def _rec(tid, budget, cost, val):
    return TrialRecord(trial_id=tid, budget=budget, status=TrialStatus.SUCCESS, cost=cost, metrics={"val": val})


def test_optimised_metrics_are_labelled_and_compared_with_their_baselines():
    text = baselines.summary(VAL, METRIC)
    assert text == ("energy MAE / atom 0.1838 eV/atom (baseline 0.1866, ×1.02 better) · "
                    "force MAE (free atoms) 1.271 eV/Å (zero-force 1.253)")
    assert baselines.warning(VAL, METRIC) == ("the incumbent does not beat its baseline: "
                                              "force MAE (free atoms) 1.271 >= zero-force 1.253")
    better = {**VAL, "force_mae_free": 1.0}
    assert baselines.warning(better, METRIC) is None
    assert "force MAE (free atoms) 1 eV/Å (zero-force 1.253, ×1.25 better)" in baselines.summary(better, METRIC)
    # all-atom forces in the cost: the all-atom metric and its own baseline
    allf = MetricSection(energy="energy_mae_per_atom", forces="force_mae", force_weight=1.0)
    assert "force MAE (all atoms) 0.939 eV/Å (zero-force 0.929)" in baselines.summary(VAL, allf)
    assert baselines.baseline_cost(baselines.optimised(VAL, METRIC)) == 0.1866 + 1.253


def test_live_view_shows_budget_bars_and_the_baseline_warning():
    view = ProgressView("demo", METRIC, lambda: "", enabled=True,
                        budget_parts=lambda: [("trials", 12, 30, "12/30"), ("wall", 120.0, 540.0, "2.0/9.0 min")])
    view.load([_rec(1, 1.0, 1.2, {**VAL, "force_mae_free": 1.0}), _rec(2, 3.0, 1.45, VAL)])
    out = io.StringIO()
    Console(file=out, width=140, force_terminal=False).print(view._render())
    text = out.getvalue()
    assert "incumbent: trial 2 at budget 3" in text  # the highest budget, though its cost is higher
    assert "force MAE (free atoms) 1.271 eV/Å (zero-force 1.253)" in text
    assert "WARNING: the incumbent does not beat its baseline" in text
    assert "12/30" in text and "2.0/9.0 min" in text and "━" in text  # progress bars
    # plain (batch log) lines: the new incumbent's metrics and the warning
    log = io.StringIO()
    plain = ProgressView("demo", METRIC, lambda: "trials 1/30", enabled=True, stream=log)
    plain.started(_rec(3, 1.0, None, {}))
    plain.finished(_rec(3, 1.0, 1.45, VAL))
    assert "new incumbent: energy MAE / atom" in log.getvalue() and "WARNING: the incumbent" in log.getvalue()


def test_incumbent_printout_warns_on_hard_cutoff():
    out = io.StringIO()
    test = {"test_split": {**VAL, "force_mae_free": 1.3}}
    print_incumbent_metrics(VAL, test, METRIC, {"descriptor": {"cutoff_function": "hard"}}, stream=out)
    text = out.getvalue()
    assert "test split (not used for selection): energy MAE / atom" in text
    assert "not energy-conserving in MD" in text
    out = io.StringIO()
    print_incumbent_metrics({**VAL, "force_mae_free": 1.0}, {}, METRIC, {"descriptor": {"cutoff_function": "cosine"}},
                            stream=out)
    assert "not energy-conserving" not in out.getvalue() and "WARNING" not in out.getvalue()
