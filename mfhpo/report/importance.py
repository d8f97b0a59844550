"""Hyperparameter importance: functional-ANOVA main effects of a random-forest surrogate.

The ``fanova`` package needs ``pyrfr``, which does not build with pip alone (it needs SWIG), so
mfhpo estimates the same quantity itself (see docs/reports.md):

1. fit a random forest (scikit-learn) to log10(cost) of the successful trials of one budget
   (hyperparameters encoded: log scale for positive ranges spanning > 20x, categories as codes,
   inactive values as a sentinel outside the active range);
2. for each tree and each hyperparameter j, the marginal f_j(v) = mean over the observed
   configurations x of tree(x with x_j := v), on a grid of v (the observed values, or 16 quantiles);
3. importance_j = Var_v f_j(v) / Var_x tree(x): the fraction of the surrogate's variance explained
   by j alone (its main effect), averaged over trees; the spread over trees is the uncertainty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfhpo.report.load import CFG_PREFIX

METHOD = ("functional-ANOVA main effects of a random-forest surrogate of log10(cost) "
          "(mean ± std over trees)")


def encode(df: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Numeric design matrix. Returns (X, kept column names, notes on dropped ones)."""
    cols, names, notes = [], [], []
    for c in columns:
        s = df[c]
        num = pd.to_numeric(s, errors="coerce")
        active = s.notna()
        if active.sum() == 0:
            notes.append(f"{c}: never active")
            continue
        if num[active].notna().all() and s[active].map(lambda v: not isinstance(v, bool)).all():
            v = num.to_numpy(dtype=float)
            a = v[active.to_numpy()]
            if np.all(a > 0) and a.max() / a.min() > 20:
                v = np.log10(np.where(np.isfinite(v) & (v > 0), v, np.nan))
                a = v[active.to_numpy()]
        else:
            cats = sorted(s[active].astype(str).unique())
            lut = {k: i for i, k in enumerate(cats)}
            v = np.array([lut[str(x)] if ok else np.nan for x, ok in zip(s, active)], dtype=float)
            a = v[active.to_numpy()]
        lo, hi = np.nanmin(a), np.nanmax(a)
        if hi == lo and active.all():
            notes.append(f"{c}: constant")
            continue
        v = np.where(np.isnan(v), lo - max(hi - lo, 1.0) * 0.5, v)  # inactive: out of the active range
        cols.append(v)
        names.append(c)
    X = np.column_stack(cols) if cols else np.zeros((len(df), 0))
    return X, names, notes


def _grid(col: np.ndarray, n: int = 16) -> np.ndarray:
    u = np.unique(col)
    return u if len(u) <= n else np.unique(np.quantile(col, np.linspace(0, 1, n)))


def rf_fanova(df: pd.DataFrame, columns: list[str], cost: str = "cost", n_trees: int = 64,
              seed: int = 0, n_background: int = 128) -> tuple[pd.DataFrame, dict]:
    """Importance table (hp, importance, std) sorted by importance, and info (n, r2_oob, notes)."""
    from sklearn.ensemble import RandomForestRegressor

    y = df[cost].astype(float).to_numpy()
    y = np.log10(y) if np.all(y > 0) else y
    X, names, notes = encode(df, columns)
    info = {"n": len(df), "notes": notes, "method": METHOD, "r2_oob": float("nan")}
    if X.shape[1] == 0 or len(df) < 5:
        return pd.DataFrame(columns=["hp", "importance", "std"]), info
    rf = RandomForestRegressor(n_estimators=n_trees, min_samples_leaf=1, max_features=0.8, bootstrap=True,
                               oob_score=len(df) >= 8, random_state=seed)
    rf.fit(X, y)
    if len(df) >= 8:
        info["r2_oob"] = float(rf.oob_score_)
    rng = np.random.default_rng(seed)
    bg = X if len(X) <= n_background else X[rng.choice(len(X), n_background, replace=False)]
    grids = [_grid(X[:, j]) for j in range(len(names))]
    blocks = []
    for j, grid in enumerate(grids):  # one design for every (hyperparameter, grid value, background row)
        Xg = np.repeat(bg[None, :, :], len(grid), axis=0)
        Xg[:, :, j] = grid[:, None]
        blocks.append(Xg.reshape(-1, X.shape[1]))
    design = np.vstack([bg] + blocks)
    frac = np.zeros((n_trees, len(names)))
    for t, tree in enumerate(rf.estimators_):
        pred = tree.predict(design)
        total = pred[: len(bg)].var()
        if total <= 0:
            continue
        pos = len(bg)
        for j, grid in enumerate(grids):
            marg = pred[pos: pos + len(grid) * len(bg)].reshape(len(grid), len(bg)).mean(axis=1)
            pos += len(grid) * len(bg)
            frac[t, j] = min(marg.var() / total, 1.0)
    out = pd.DataFrame({"hp": names, "importance": frac.mean(axis=0), "std": frac.std(axis=0)})
    return out.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True), info


def study_importance(study, min_trials: int = 10) -> tuple[pd.DataFrame, dict]:
    """Importance for a study on the highest budget with enough trials (see ``analysis.importance_data``)."""
    from mfhpo.report.analysis import importance_data

    rows, desc = importance_data(study, min_trials=min_trials)
    cols = [c for c in study.hp_columns if c.startswith(CFG_PREFIX)]
    if "all" in desc and rows["budget"].nunique() > 1:
        rows = rows.assign(budget_=rows["budget"].astype(float))
        cols = cols + ["budget_"]
    imp, info = rf_fanova(rows, cols)
    info["data"] = desc
    imp["hp"] = imp["hp"].str.replace(CFG_PREFIX, "", regex=False).str.replace("budget_", "(budget)", regex=False)
    return imp, info
