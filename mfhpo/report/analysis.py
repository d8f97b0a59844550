"""Derived tables: incumbent trajectories, Hyperband rungs, top configurations.

Everything here is computed from :attr:`StudyResults.trials` (the trial table) and nothing else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfhpo.report.load import SUCCESS, StudyResults


def trajectory(trials: pd.DataFrame) -> pd.DataFrame:
    """Incumbent after each finished trial, with the compute spent so far.

    The incumbent is the best successful trial at the highest budget reached so far (the rule
    ``mfhpo incumbent`` uses), so low-budget costs never count as the best result.
    Columns: trial_id, epoch_equivalents (cumulative), worker_hours (cumulative trial wall time),
    elapsed_hours (since the first trial started), incumbent_cost, incumbent_budget.
    Crashed trials count as compute spent.
    """
    t = trials.reset_index(drop=True)
    cum_ee = t["epoch_equivalents"].fillna(0.0).astype(float).cumsum()
    cum_h = t["wall_time_s"].fillna(0.0).astype(float).cumsum() / 3600.0
    start = t["started_at"].min() if "started_at" in t and t["started_at"].notna().any() else pd.NaT
    if pd.notna(start) and t["finished_at"].notna().any():
        elapsed = (t["finished_at"] - start).dt.total_seconds() / 3600.0
    else:
        elapsed = pd.Series(np.nan, index=t.index)
    best_cost, best_budget = [], []
    top_budget, top_cost = -np.inf, np.inf
    for _, row in t.iterrows():
        c, b = float(row["cost"]), float(row["budget"]) if pd.notna(row["budget"]) else 0.0
        if row["status"] == SUCCESS and np.isfinite(c):
            if b > top_budget:
                top_budget, top_cost = b, c
            elif b == top_budget:
                top_cost = min(top_cost, c)
        best_cost.append(top_cost if np.isfinite(top_cost) else np.nan)
        best_budget.append(top_budget if np.isfinite(top_budget) else np.nan)
    return pd.DataFrame({
        "trial_id": t["trial_id"].to_numpy(),
        "epoch_equivalents": cum_ee.to_numpy(),
        "worker_hours": cum_h.to_numpy(),
        "elapsed_hours": elapsed.to_numpy(dtype=float),
        "incumbent_cost": best_cost,
        "incumbent_budget": best_budget,
    })


def trajectories(study: StudyResults) -> dict[str, pd.DataFrame]:
    """One trajectory per optimizer present in the study."""
    return {opt: trajectory(study.trials[study.trials["optimizer"] == opt]) for opt in study.optimizers}


def comparable(a: StudyResults, b: StudyResults) -> bool:
    """Same data, split and minimised metric: the two studies' costs measure the same thing."""
    return a.objective == b.objective and a.problem is not None and a.problem == b.problem


def compute_to_reach(a: StudyResults, b: StudyResults) -> dict | None:
    """How much compute study ``a`` spent until its incumbent was at least as good as ``b``'s final one.

    Only ``a``'s incumbents at the budget of its final incumbent count (a low-budget cost is not a
    result). Returns target (``b``'s final incumbent cost), a_epoch_equivalents (NaN: never reached),
    b_total (``b``'s whole compute), b_self (what ``b`` itself needed to get there) and
    ratio = a_epoch_equivalents / b_total; None when either study has no incumbent."""
    ta, tb = trajectory(a.trials), trajectory(b.trials)
    if ta.empty or tb.empty or tb["incumbent_cost"].isna().all() or ta["incumbent_cost"].isna().all():
        return None
    target = float(tb["incumbent_cost"].iloc[-1])

    def first_at(t: pd.DataFrame) -> float:  # compute until the incumbent at the final budget <= target
        hit = t[(t["incumbent_budget"] == t["incumbent_budget"].iloc[-1]) & (t["incumbent_cost"] <= target)]
        return float(hit["epoch_equivalents"].iloc[0]) if len(hit) else float("nan")

    a_ee, b_self = first_at(ta), first_at(tb)
    b_total = float(tb["epoch_equivalents"].iloc[-1])
    return {"target": target, "a_epoch_equivalents": a_ee, "b_total": b_total, "b_self": b_self,
            "ratio": a_ee / b_total if b_total > 0 else float("nan")}


def rungs(study: StudyResults, optimizer: str | None = None) -> pd.DataFrame:
    """Per budget: trials, successes, distinct configurations, and configurations promoted from a lower
    budget (of one optimizer, or of all)."""
    t = study.trials if optimizer is None else study.trials[study.trials["optimizer"] == optimizer]
    t = t.dropna(subset=["budget"])
    rows, seen = [], set()
    for b in sorted(t["budget"].astype(float).unique()):
        at = t[t["budget"] == b]
        configs = set(at["config_id"].astype(str))
        rows.append({
            "budget": b,
            "trials": len(at),
            "success": int((at["status"] == SUCCESS).sum()),
            "failed": int((at["status"] != SUCCESS).sum()),
            "configs": len(configs),
            "promoted": len(configs & seen),
            "warm_started": int(pd.to_numeric(at.get("warm_started", pd.Series(dtype=float)), errors="coerce")
                                .fillna(0).astype(bool).sum()) if "warm_started" in at else 0,
        })
        seen |= configs
    return pd.DataFrame(rows, columns=["budget", "trials", "success", "failed", "configs", "promoted", "warm_started"])


def top_trials(study: StudyResults, k: int = 5) -> pd.DataFrame:
    """The ``k`` best successful trials at the highest budget reached (the incumbent first)."""
    ok = study.ok
    if ok.empty:
        return ok
    top = ok[ok["budget"] == ok["budget"].max()]
    return top.sort_values("cost", kind="stable").head(k)


def importance_data(study: StudyResults, min_trials: int = 10) -> tuple[pd.DataFrame, str]:
    """Successful trials for importance: the highest budget with >= ``min_trials`` of them, else all
    budgets (budget then becomes an input). Returns (rows, description)."""
    ok = study.ok
    counts = ok.groupby("budget").size()
    enough = counts[counts >= min_trials]
    if len(enough):
        b = float(enough.index.max())
        return ok[ok["budget"] == b], f"{int(counts[b])} successful trials at budget {b:g}"
    return ok, f"all {len(ok)} successful trials (no budget has {min_trials}); budget is an extra input"
