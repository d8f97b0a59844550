"""Tables for reports, each as (headers, rows) rendered to both HTML and Markdown."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from mfhpo.report import analysis
from mfhpo.report.load import CFG_PREFIX, StudyResults
from mfhpo.report.metrics_info import HEADLINE, METRICS, fmt, metric_info


class Table:
    def __init__(self, headers: list[str], rows: list[list[str]], caption: str = ""):
        self.headers, self.rows, self.caption = headers, rows, caption

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        head = f"<thead><tr>{head}</tr></thead>" if any(self.headers) else ""
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        cap = f"<p class='cap'>{html.escape(self.caption)}</p>" if self.caption else ""
        return f"{cap}<div class='tw'><table>{head}<tbody>{body}</tbody></table></div>"

    def markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines = ["| " + " | ".join(esc(h) for h in self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        out = "\n".join(lines)
        return (f"*{self.caption}*\n\n" + out) if self.caption else out


def _value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "inactive"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}" if float(v) != int(float(v)) or abs(float(v)) >= 1e6 else f"{int(float(v))}"
    return str(v)


def overview(study: StudyResults) -> Table:
    t = study.trials
    status = ", ".join(f"{k}: {v}" for k, v in t["status"].value_counts().items()) or "none"
    rows = [["study", study.name], ["run directory", str(study.rundir)],
            ["minimised metric", study.objective_label],
            ["trials finished", f"{len(t)} ({status})"],
            ["optimizers", ", ".join(study.optimizers) or "–"],
            ["budgets evaluated", ", ".join(f"{b:g}" for b in study.budgets) or "–"],
            ["compute spent", f"{t['epoch_equivalents'].fillna(0).sum():.4g} epoch-equivalents, "
                              f"{t['wall_time_s'].fillna(0).sum() / 3600:.3g} worker-hours"]]
    if t["finished_at"].notna().any():
        start = t["started_at"].min() if t["started_at"].notna().any() else t["finished_at"].min()
        rows.append(["first start / last finish", f"{start:%Y-%m-%d %H:%M} / {t['finished_at'].max():%Y-%m-%d %H:%M} UTC"])
    devices = t["device"].dropna().astype(str)
    devices = devices[devices != ""]
    if len(devices):
        rows.append(["devices", ", ".join(sorted(devices.unique()))])
    return Table(["", ""], rows)  # no header row in HTML


def incumbent_metrics(study: StudyResults) -> Table | None:
    inc = study.incumbent()
    if inc is None:
        return None
    rows = []
    for name in HEADLINE:
        col = f"val_{name}"
        if col not in inc.index or pd.isna(inc[col]):
            continue
        info = METRICS[name]
        base = fmt(inc.get(f"val_{info.baseline}", float("nan")), info.unit) if info.baseline else "–"
        rows.append([info.label, fmt(inc[col], info.unit), base, info.definition])
    n = inc.get("val_n_structures", float("nan"))
    cap = (f"incumbent: trial {inc['trial_id']} (config {inc['config_id']}, budget {inc['budget']:g}, "
           f"{inc['optimizer']}); validation split"
           + (f", {int(n)} structures" if pd.notna(n) else "")
           + ". Baselines on the same split: energies = per-element linear fit on the training split, "
             "forces = zero-force predictor.")
    return Table(["metric", "incumbent", "baseline", "definition"], rows, cap)


def incumbent_config(study: StudyResults) -> Table | None:
    inc = study.incumbent()
    if inc is None:
        return None
    rows = [[c[len(CFG_PREFIX):], _value(inc[c])] for c in study.hp_columns]
    rows += [["(budget)", f"{inc['budget']:g}"], ["(epochs run × subset)",
             f"{inc.get('epochs', float('nan')):g} × {inc.get('subset_fraction', float('nan')):g}"]]
    return Table(["hyperparameter", "value"], rows,
                 f"configuration of the incumbent (trial {inc['trial_id']}; full config: "
                 f"trials/{inc['trial_id']}/config.yaml)")


def rung_table(study: StudyResults) -> Table:
    rows = []
    for opt in study.optimizers:
        r = analysis.rungs(study, opt)
        for _, x in r.iterrows():
            rows.append([opt, f"{x['budget']:g}", int(x["trials"]), int(x["success"]), int(x["failed"]),
                         int(x["configs"]), int(x["promoted"]), int(x["warm_started"])])
    return Table(["optimizer", "budget", "trials", "success", "failed", "configs", "promoted from lower budget",
                  "warm-started"], rows)


def top_table(study: StudyResults, k: int = 5) -> Table | None:
    top = analysis.top_trials(study, k)
    if top.empty:
        return None
    cols = [c for c in ["val_energy_mae_per_atom", "val_energy_mae", "val_force_mae_free", "val_force_mae"]
            if c in top and top[c].notna().any()]
    rows = [[str(r["trial_id"]), str(r["config_id"]), r["optimizer"], f"{r['cost']:.4g}"]
            + [fmt(r[c], metric_info(c).unit) for c in cols] for _, r in top.iterrows()]
    return Table(["trial", "config", "optimizer", "cost"] + [metric_info(c).label for c in cols], rows,
                 f"top {len(rows)} trials at budget {top['budget'].max():g}")


def importance_table(imp: pd.DataFrame, info: dict) -> Table | None:
    if imp is None or imp.empty:
        return None
    rows = [[r["hp"], f"{100 * r['importance']:.1f} ± {100 * r['std']:.1f} %"] for _, r in imp.iterrows()]
    notes = "; ".join(info.get("notes", []))
    cap = f"{info.get('method', '')}; {info.get('data', '')}; OOB R² {info.get('r2_oob', float('nan')):.2f}"
    return Table(["hyperparameter", "importance (main effect)"], rows, cap + (f"; dropped: {notes}" if notes else ""))


def split_table(splits) -> Table:
    """The incumbent on each split (parity-plot predictions), each metric next to its baseline."""
    names = [n for n in ("energy_mae_per_atom", "energy_mae", "force_mae_free", "force_mae")
             if any(n in sp.metrics for sp in splits)]
    rows = []
    for sp in splits:
        m = sp.metrics
        cells = []
        for n in names:
            info = METRICS[n]
            b = m.get(info.baseline) if info.baseline else None
            cells.append(fmt(m.get(n, float("nan")), info.unit) + (f" ({fmt(b)})" if b is not None else ""))
        rows.append([sp.name, str(len(sp.natoms))] + cells + [sp.note or "all structures"])
    return Table(["split", "structures"] + [f"{METRICS[n].label} (baseline)" for n in names] + ["sample"], rows,
                 "test splits are never used for selection; validation numbers should equal the trial table's; "
                 "baselines on the same split: per-element linear energy fit on the training split, zero forces")


def cross_metrics(studies: list[StudyResults]) -> Table:
    """One row per study (so that many studies fit a window): each headline metric of its incumbent
    with the baseline in parentheses, and the minimised metric."""
    incs = [s.incumbent() for s in studies]
    names = [n for n in HEADLINE if any(inc is not None and f"val_{n}" in inc.index and pd.notna(inc[f"val_{n}"])
                                        for inc in incs)]
    rows = []
    for s, inc in zip(studies, incs):
        cells = []
        for name in names:
            info = METRICS[name]
            if inc is None or f"val_{name}" not in inc.index or pd.isna(inc[f"val_{name}"]):
                cells.append("–")
                continue
            base = inc.get(f"val_{info.baseline}", float("nan")) if info.baseline else float("nan")
            cells.append(fmt(inc[f"val_{name}"]) + (f" ({fmt(base)})" if pd.notna(base) else ""))
        rows.append([s.name] + cells + [s.objective_label])
    return Table(["study"] + [f"{METRICS[n].label} [{METRICS[n].unit}]" for n in names] + ["minimised metric"], rows,
                 "incumbent of each study (best trial at its highest budget), validation split of its own data; "
                 "in parentheses the baseline on the same split: per-element linear fit (energies), zero forces "
                 "(forces)")


REFERENCE_OPTIMIZER = "random"


def meaningful_pairs(studies: list[StudyResults]) -> list[tuple[StudyResults, StudyResults]]:
    """Ordered pairs (A, B) worth a compute-to-match row: the same problem (data, split, metric) and
    different optimizers; where the problem has a random-search study, only each other optimizer
    against it (B = the reference); otherwise both orders of each pair."""
    def opt(s: StudyResults) -> str:
        return ",".join(sorted(s.optimizers))

    out = []
    for a in studies:
        group = [b for b in studies if b is not a and analysis.comparable(a, b) and opt(b) != opt(a)]
        has_ref = any(opt(b) == REFERENCE_OPTIMIZER for b in group) or opt(a) == REFERENCE_OPTIMIZER
        for b in group:
            if has_ref and (opt(b) != REFERENCE_OPTIMIZER or opt(a) == REFERENCE_OPTIMIZER):
                continue
            out.append((a, b))
    return out


def compute_to_reach(studies: list[StudyResults]) -> Table | None:
    """For every ordered pair of comparable studies (same data, split and metric): the compute one
    needed to match the other's final result."""
    rows = []
    for a, b in meaningful_pairs(studies):
        if True:
            r = analysis.compute_to_reach(a, b)
            if r is None:
                continue
            reached = math.isfinite(r["a_epoch_equivalents"])
            rows.append([a.name, b.name, f"{r['target']:.4g}",
                         f"{r['a_epoch_equivalents']:.0f}" if reached else "not reached",
                         f"{r['b_total']:.0f}", f"{r['ratio']:.2f}" if reached else "–", f"{r['b_self']:.0f}"])
    if not rows:
        return None
    return Table(["study A", "study B", "B's final best cost", "A's compute to reach it", "B's total compute",
                  "ratio A / B total", "B's own compute to reach it"], rows,
                 "compute in epoch-equivalents (epochs × training-subset fraction, crashed trials included); "
                 "A's incumbent counts only at the budget of its final incumbent; pairs of studies on the same "
                 "data, split and metric (from each run's state.json) with different optimizers, each against "
                 "random search where the problem has one")


def cross_hyperparameters(studies: list[StudyResults], imps: list[pd.DataFrame]) -> Table:
    """One row per hyperparameter, one column per study: the incumbent's value and, in parentheses,
    the hyperparameter's importance in that study."""
    names: list[str] = []
    for s in studies:
        for c in s.hp_columns:
            n = c[len(CFG_PREFIX):]
            if n not in names:
                names.append(n)
    rows = []
    for n in names:
        row = [n]
        for s, imp in zip(studies, imps):
            inc = s.incumbent()
            col = CFG_PREFIX + n
            val = _value(inc[col]) if (inc is not None and col in inc.index) else "–"
            hit = imp[imp["hp"] == n] if imp is not None and not imp.empty else pd.DataFrame()
            im = f" ({100 * hit['importance'].iloc[0]:.0f} ± {100 * hit['std'].iloc[0]:.0f} %)" if len(hit) else ""
            row.append(val + im)
        rows.append(row)
    return Table(["hyperparameter"] + [s.name for s in studies], rows,
                 "the incumbent's value, in parentheses the importance (main-effect share of variance, "
                 "random-forest functional ANOVA, ± std over trees); – = not in that study's space")


def definitions() -> Table:
    rows = [[f"val_{m.name}", m.label, m.unit or "–", m.definition] for m in METRICS.values()]
    return Table(["trial-table column", "label", "unit", "definition"], rows)
