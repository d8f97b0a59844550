"""Per-study figures built from the trial table (and the trial folders for learning curves).

Each function returns a matplotlib Figure, or None when the study has nothing to show yet.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mfhpo.report import analysis  # noqa: E402
from mfhpo.report.load import CFG_PREFIX, StudyResults  # noqa: E402
from mfhpo.report.metrics_info import axis_label  # noqa: E402

STYLE = {"smac-mf": dict(color="tab:blue"), "smac-bo": dict(color="tab:orange"),
         "random": dict(color="0.35", ls="--"), "optuna-tpe-hb": dict(color="tab:green"),
         "unknown": dict(color="tab:purple")}


def _style(opt: str) -> dict:
    return dict(STYLE.get(opt, {"color": "tab:green"}))


def _wrap(label: str, width: int = 38) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width)) if len(label) > width else label


def _positive(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) > 0 and bool(np.all(v > 0))


def _plain(v, _pos=None) -> str:
    """A tick label as a plain number (``1.45``, ``0.002``, ``300``), never ``1.45×10⁰``."""
    return f"{v:.3g}"


def plain_ticks(ax, which: str = "y") -> None:
    """Plain-number tick labels on a (log) axis; minor ticks labelled only within one decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(FuncFormatter(_plain))
    lo, hi = (ax.get_ylim() if which == "y" else ax.get_xlim())
    few_majors = lo > 0 and hi / lo < 10
    axis.set_minor_formatter(FuncFormatter(_plain) if few_majors else NullFormatter())


def log_scale(ax, values, which: str = "y", min_ratio: float = 3.0) -> None:
    """Log scale when ``values`` are positive and span at least ``min_ratio``; plain tick labels."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) and np.all(v > 0) and v.max() / v.min() >= min_ratio:
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    plain_ticks(ax, which)


def progress(study: StudyResults) -> plt.Figure | None:
    """Incumbent cost vs compute (epoch-equivalents, worker-hours, elapsed time), one line per optimizer."""
    trajs = analysis.trajectories(study)
    if not any(tr["incumbent_cost"].notna().any() for tr in trajs.values()):
        return None
    axes_def = [("epoch_equivalents", "compute [epoch-equivalents = epochs × subset fraction]"),
                ("worker_hours", "compute [worker-hours = Σ trial wall time; GPU-hours on GPU workers]"),
                ("elapsed_hours", "elapsed wall-clock time [h]")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    ys = []
    jumps = False
    for ax, (col, label) in zip(axes, axes_def):
        for opt, tr in trajs.items():
            ok = tr["incumbent_cost"].notna() & tr[col].notna()
            if not ok.any():
                continue
            name = f"{opt} (reference)" if opt == "random" else opt
            st = _style(opt)
            ax.step(tr.loc[ok, col], tr.loc[ok, "incumbent_cost"], where="post", lw=2, label=name, **st)
            ys.extend(tr.loc[ok, "incumbent_cost"].tolist())
            # where a higher budget is first reached the incumbent moves to that budget (its cost may be higher)
            b = tr.loc[ok, "incumbent_budget"].to_numpy()
            x, y = tr.loc[ok, col].to_numpy(), tr.loc[ok, "incumbent_cost"].to_numpy()
            for i in np.flatnonzero(b[1:] > b[:-1]) + 1:
                ax.plot(x[i], y[i], "o", mfc="w", ms=6, color=st["color"])
                ax.annotate(f"budget {b[i]:g}", (x[i], y[i]), textcoords="offset points", xytext=(4, 5), fontsize=7,
                            color=st["color"])
                jumps = jumps or bool(y[i] > y[i - 1])
        ax.set_xlabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes:
        log_scale(ax, ys)
    axes[0].set_ylabel(_wrap(f"incumbent {study.objective_label}"), fontsize=9)
    axes[0].plot([], [], "o", mfc="w", color="0.3", label="first trial at a higher budget")
    axes[0].legend(fontsize=8)
    rule = ("incumbent = best trial at the highest budget reached; open circles: a higher budget is reached and "
            "the incumbent moves to it")
    if jumps:
        rule += " (the curve rises there: a lower-budget cost is not comparable)"
    fig.suptitle(f"{study.name}: best validation result vs compute\n{rule}", fontsize=10)
    return fig


def pareto_front(energy: np.ndarray, force: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both coordinates (lower is better), by energy."""
    order = np.lexsort((force, energy))
    front, best_f = [], np.inf
    for i in order:
        if force[i] < best_f:
            front.append(i)
            best_f = force[i]
    return np.asarray(front, dtype=int)


def energy_force_front(study: StudyResults) -> plt.Figure | None:
    """Validation energy vs force error of the trials at the highest budget reached, with their
    Pareto front, the incumbent and both baselines: where the cost's weighting puts the chosen model."""
    m = study.spec.get("metric") if isinstance(study.spec.get("metric"), dict) else {}
    ecol = f"val_{m.get('energy', 'energy_mae_per_atom')}"
    fcol = f"val_{m.get('forces') or 'force_mae_free'}"
    ok = study.ok
    if ok.empty or ecol not in ok or fcol not in ok:
        return None
    top = ok[ok["budget"] == ok["budget"].max()]
    e, f = top[ecol].astype(float).to_numpy(), top[fcol].astype(float).to_numpy()
    good = np.isfinite(e) & np.isfinite(f)
    if good.sum() < 2:
        return None
    top, e, f = top[good], e[good], f[good]
    fig, ax = plt.subplots(figsize=(8, 5.2), constrained_layout=True)
    ax.scatter(e, f, s=22, color="0.6", label=f"trials at budget {top['budget'].max():g}")
    front = pareto_front(e, f)
    ax.plot(e[front], f[front], "o-", color="tab:blue", ms=6, lw=1.5, label="Pareto front")
    inc = study.incumbent()
    if inc is not None and ecol in inc.index and fcol in inc.index:
        ax.plot(float(inc[ecol]), float(inc[fcol]), "*", ms=16, color="tab:red", label="incumbent (lowest cost)")
    for col, line in ((f"val_baseline_{ecol[4:]}", ax.axvline), (f"val_baseline_{fcol[4:]}", ax.axhline)):
        if col in top and np.isfinite(top[col].astype(float)).any():
            line(float(top[col].astype(float).median()), color="0.3", ls=":", lw=1)
    ax.plot([], [], ":", color="0.3", label="baselines (linear fit; zero force)")
    ax.set_xlabel(axis_label(ecol), fontsize=9)
    ax.set_ylabel(axis_label(fcol), fontsize=9)
    log_scale(ax, f, "y")
    log_scale(ax, e, "x")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{study.name}: energy vs force error at the highest budget (validation); "
                 f"{len(front)} of {len(top)} trials on the front", fontsize=10)
    return fig


def budgets(study: StudyResults) -> plt.Figure | None:
    """Trials per budget (by optimizer and status) and Hyperband promotions across rungs."""
    t = study.trials.dropna(subset=["budget"])
    if t.empty:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 4.4), constrained_layout=True)
    bvals = sorted(t["budget"].astype(float).unique())
    x = np.arange(len(bvals))
    opts = study.optimizers
    width = 0.8 / max(1, len(opts))
    for k, opt in enumerate(opts):
        r = analysis.rungs(study, opt).set_index("budget").reindex(bvals).fillna(0)
        pos = x - 0.4 + width * (k + 0.5)
        color = _style(opt)["color"]
        a1.bar(pos, r["success"], width, color=color, label=f"{opt}: success")
        a1.bar(pos, r["failed"], width, bottom=r["success"], color=color, alpha=0.35, hatch="//",
               label=f"{opt}: crashed / failed")
        for p, (_, row) in zip(pos, r.iterrows()):
            if row["trials"]:
                txt = f"{int(row['configs'])} cfg"
                if row["promoted"]:
                    txt += f"\n{int(row['promoted'])} promoted"
                a1.text(p, row["trials"], txt, ha="center", va="bottom", fontsize=7)
    a1.set_xticks(x, [f"{b:g}" for b in bvals])
    a1.set_xlabel("budget (SMAC fidelity; epochs × subset per study.yaml)")
    a1.set_ylabel("trials")
    a1.set_title("trials per budget (configs reaching each rung)")
    a1.legend(fontsize=7)
    a1.set_ylim(0, max(1, a1.get_ylim()[1] * 1.2))
    ok = study.ok
    mf = ok[ok["optimizer"] != "random"]
    ymax = []
    for cid, g in mf.groupby("config_id"):
        g = g.sort_values("budget")
        promoted = len(g) > 1
        a2.plot(g["budget"], g["cost"], "-o", ms=3, lw=1.2 if promoted else 0.6,
                color="tab:red" if promoted else "0.6", alpha=0.9 if promoted else 0.5)
        ymax.extend(g["cost"].tolist())
    a2.plot([], [], "-o", color="tab:red", label="promoted configuration")
    a2.plot([], [], "-o", color="0.6", label="stopped at this budget")
    a2.set_xscale("log")
    log_scale(a2, ymax)
    a2.set_xticks(bvals, [f"{b:g}" for b in bvals])
    a2.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a2.set_xlabel("budget")
    a2.set_ylabel(_wrap(study.objective_label), fontsize=9)
    a2.set_title("each configuration across budgets (multi-fidelity trials)")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle(f"{study.name}: budgets and Hyperband promotions")
    return fig


CURVE_PANELS = [("val_energy_mae_per_atom", "val_energy_mae"), ("val_force_mae_free", "val_force_mae")]


def learning_curves(study: StudyResults, k: int = 5) -> plt.Figure | None:
    """Validation learning curves of the top-k trials at the highest budget."""
    top = analysis.top_trials(study, k)
    curves = [(row, study.learning_curve(row["trial_id"])) for _, row in top.iterrows()]
    curves = [(r, c) for r, c in curves if c is not None and "epoch" in c]
    if not curves:
        return None
    panels = []
    for options in CURVE_PANELS:
        for col in options:
            if any(col in c and c[col].notna().any() for _, c in curves):
                panels.append(col)
                break
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), constrained_layout=True, squeeze=False)
    for ax, col in zip(axes[0], panels):
        for rank, (row, c) in enumerate(curves):
            if col not in c:
                continue
            warm = " (warm start)" if str(row.get("warm_started", "")).lower() in ("true", "1", "1.0") else ""
            ax.plot(c["epoch"], c[col], lw=2 if rank == 0 else 1.2,
                    label=f"#{rank + 1} trial {row['trial_id']}, cost {row['cost']:.3g}{warm}")
        log_scale(ax, pd.concat([c[col] for _, c in curves if col in c]))
        ax.set_xlabel("epoch")
        ax.set_ylabel(axis_label(col))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{study.name}: learning curves of the top {len(curves)} trials at budget "
                 f"{top['budget'].max():g}")
    return fig


def _encode_axis(s: pd.Series):
    """Values in [0, 1] for a parallel-coordinates axis, and tick positions/labels."""
    num = pd.to_numeric(s, errors="coerce")
    active = s.notna()
    is_num = num[active].notna().all() and active.any() and not s[active].map(lambda v: isinstance(v, bool)).any()
    if is_num:
        v = num.to_numpy(dtype=float)
        a = v[active.to_numpy()]
        log = bool(np.all(a > 0) and a.max() / a.min() > 20)
        w = np.log10(v) if log else v
        lo, hi = np.nanmin(w), np.nanmax(w)
        span = hi - lo if hi > lo else 1.0
        y = (w - lo) / span
        ticks = np.linspace(0, 1, 3)
        labels = [f"{(10 ** (lo + t * span)) if log else (lo + t * span):.3g}" for t in ticks]
    else:
        cats = sorted(s[active].astype(str).unique())
        lut = {c: i for i, c in enumerate(cats)}
        n = max(1, len(cats) - 1)
        y = np.array([lut[str(x)] / n if ok else np.nan for x, ok in zip(s, active)], dtype=float)
        ticks = np.array([i / n for i in range(len(cats))])
        labels = cats
    y = np.where(np.isnan(y), -0.12, y)  # inactive below the axis
    return y, ticks, labels


def configurations(study: StudyResults, order: list[str] | None = None, max_axes: int = 10) -> plt.Figure | None:
    """Parallel coordinates of the successful configurations, coloured by cost (best drawn on top).

    Axes in ``order`` (e.g. by importance) first; at most ``max_axes``.
    """
    ok = study.ok
    cols = [c for c in (order or []) if c in study.hp_columns]
    cols += [c for c in study.hp_columns if c not in cols]
    cols = [c for c in cols if ok[c].nunique(dropna=True) > 1][:max_axes]
    if ok.empty or not cols:
        return None
    ok = ok.sort_values("cost", ascending=False)  # best last = on top
    cost = ok["cost"].astype(float).to_numpy()
    norm = (matplotlib.colors.LogNorm(cost.min(), cost.max()) if _positive(cost) and cost.max() > cost.min()
            else matplotlib.colors.Normalize(cost.min(), cost.max() + 1e-12))
    cmap = plt.get_cmap("viridis_r")
    fig, ax = plt.subplots(figsize=(min(15, max(9, 1.3 * len(cols) + 3)), 5.5), constrained_layout=True)
    enc = [_encode_axis(ok[c]) for c in cols]
    Y = np.column_stack([e[0] for e in enc])
    xs = np.arange(len(cols))
    budgets = ok["budget"].astype(float).to_numpy()
    bmax = np.nanmax(budgets)
    for yrow, c, b in zip(Y, cost, budgets):
        ax.plot(xs, yrow, color=cmap(norm(c)), lw=1.6 if b == bmax else 0.8, alpha=0.9 if b == bmax else 0.45)
    for x, (_, ticks, labels) in zip(xs, enc):
        ax.axvline(x, color="k", lw=0.6)
        for t, lab in zip(ticks, labels):
            ax.text(x + 0.03, t, lab, fontsize=8, va="center")
    ax.axhline(-0.12, color="0.8", lw=0.5, ls=":")
    ax.text(-0.45, -0.12, "inactive", fontsize=7, va="bottom", ha="left", color="0.4")
    ax.set_xticks(xs, [c[len(CFG_PREFIX):] for c in cols], rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.5, len(cols) - 0.3)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, label=_wrap(study.objective_label), shrink=0.85)
    cb.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_plain))
    cb.ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_plain) if cost.max() / max(cost.min(), 1e-300) < 10
                                    else matplotlib.ticker.NullFormatter())
    shown = f"{len(cols)} most important varied hyperparameters" if order else f"{len(cols)} hyperparameters"
    ax.set_title(f"{study.name}: configurations ({shown}; thick = highest budget {bmax:g}; "
                 "colour = cost, lower is better)")
    return fig


def importance(study: StudyResults, imp: pd.DataFrame, info: dict) -> plt.Figure | None:
    if imp is None or imp.empty:
        return None
    imp = imp.iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(imp) + 1.8), constrained_layout=True)
    ax.barh(imp["hp"], 100 * imp["importance"], xerr=100 * imp["std"], color="tab:blue", alpha=0.8,
            error_kw=dict(lw=1, capsize=3, ecolor="0.3"))
    ax.set_xlabel("main-effect share of the surrogate's variance [%] (± std over trees)")
    ax.set_xlim(0, 100)
    r2 = info.get("r2_oob", float("nan"))
    ax.set_title(f"{study.name}: hyperparameter importance\n{info.get('data', '')}; surrogate OOB R² = "
                 f"{r2:.2f}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def cross_progress(studies: list[StudyResults]) -> plt.Figure | None:
    """Incumbent vs epoch-equivalents for every study and optimizer (only studies with the same objective)."""
    if len(studies) < 2:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8), constrained_layout=True)
    ys = []
    labels = {s.objective_label for s in studies}
    for s in studies:
        for opt, tr in analysis.trajectories(s).items():
            ok = tr["incumbent_cost"].notna()
            if ok.any():
                st = _style(opt)
                st.pop("color", None)
                ax.step(tr.loc[ok, "epoch_equivalents"], tr.loc[ok, "incumbent_cost"], where="post", lw=2,
                        label=f"{s.name} / {opt}", **st)
                ys.extend(tr.loc[ok, "incumbent_cost"].tolist())
    if not ys:
        plt.close(fig)
        return None
    log_scale(ax, ys)
    ax.set_xscale("log")
    plain_ticks(ax, "x")
    ax.set_xlabel("compute [epoch-equivalents = epochs × subset fraction]")
    ax.set_ylabel(_wrap(labels.pop() if len(labels) == 1 else "incumbent cost (objectives differ between studies)"),
                  fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("all studies: incumbent vs compute (incumbent = best trial at the highest budget reached)",
                 fontsize=10)
    return fig
