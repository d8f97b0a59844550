"""Load a study's SMAC output with DeepCAVE's SMAC3v2 converter and run the analyses a user opens
first: configurations, trials, budgets, incumbent, fANOVA importances, budget correlation, cost over
time. Runs in a Python 3.10 environment with deepcave installed (DeepCAVE needs Python < 3.11):

    python3.10 -m venv dcave && dcave/bin/pip install deepcave
    dcave/bin/python scripts/deepcave_check.py runs/demo/smac/joint/0
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from deepcave.plugins.budget.budget_correlation import BudgetCorrelation  # noqa: E402
from deepcave.plugins.hyperparameter.importances import Importances  # noqa: E402
from deepcave.plugins.objective.cost_over_time import CostOverTime  # noqa: E402
from deepcave.runs import Status  # noqa: E402
from deepcave.runs.converters.smac3v2 import SMAC3v2Run  # noqa: E402


def main(path: str) -> None:
    run = SMAC3v2Run.from_path(Path(path))
    objs = run.get_objectives()
    print(f"run {path}: objectives {[o.name for o in objs]}")
    print(f"configs {run.get_num_configs()}, trials {len(list(run.get_trials()))}, "
          f"budgets {run.get_budgets(human=True)}")
    ok = [t for t in run.get_trials() if t.status == Status.SUCCESS]
    times = [t.end_time - t.start_time for t in ok]
    print(f"successful trials {len(ok)}; trial time min {min(times):.2f} s, max {max(times):.2f} s")
    print("additional info of the first trial:", ok[0].additional)
    cfg, cost = run.get_incumbent()  # default objectives: cost and Time
    print(f"incumbent (cost, time merged): cost {cost:.5g}; {dict(cfg)}")
    cfg0, cost0 = run.get_incumbent(objectives=objs[0], budget=run.get_highest_budget())
    print(f"incumbent (cost at the highest budget {run.get_highest_budget()}): {cost0:.5g}")

    imp = Importances.process(run, {"objective_id1": 0, "objective_id2": None, "method": "global", "n_trees": 10})
    top = imp[len(imp) - 1]  # the combined budget (all budgets)
    ranked = sorted(top.items(), key=lambda kv: -kv[1][0])
    print("fANOVA (all budgets):", ", ".join(f"{k} {v[0]:.3f}" for k, v in ranked[:4]))
    bc = BudgetCorrelation.process(run, {"objective_id": 0})
    print("budget correlation:", {b: {c: round(float(v), 3) for c, v in row.items()} for b, row in bc["correlations"].items()})
    budget_id = len(run.get_budgets(include_combined=True)) - 1
    cot = CostOverTime.process(run, {"objective_id": 0, "budget_id": budget_id})
    print(f"cost over time: {len(cot['times'])} points, t = {cot['times'][0]:.1f} .. {cot['times'][-1]:.1f} s, "
          f"best {min(cot['costs_mean']):.5g}")


if __name__ == "__main__":
    main(sys.argv[1])
