"""``mfhpo status runs/<study>``: trials per budget and status, the incumbent next to the baselines,
compute used and what warm starts saved. Reads only the run directory."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from mfhpo.errors import MfhpoError
from mfhpo.study import baselines
from mfhpo.study.incumbent_view import study_metric
from mfhpo.study.rundir import RunDir
from mfhpo.study.trial import TrialStatus, select_incumbent


def _f(v, nd=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def summarize(rundir: Path) -> dict:
    rd = RunDir(Path(rundir))
    if not rd.root.is_dir():
        raise MfhpoError(f"{rundir}: no such run directory")
    if not rd.exists():
        raise MfhpoError(f"{rundir}: not a study run directory (no state.json)")
    state = rd.read_state()
    recs = rd.trial_records()
    fin = [r for r in recs if r.finished]
    counts = Counter((float(r.budget), r.status) for r in recs)
    budgets = sorted({b for b, _ in counts})
    per_budget = []
    for b in budgets:
        row = {"budget": b}
        for s in TrialStatus:
            row[s.value] = counts.get((b, s), 0)
        ex = next(r for r in recs if float(r.budget) == b)
        row["epochs"], row["subset_fraction"] = ex.epochs, ex.subset_fraction
        per_budget.append(row)
    warm = [r for r in fin if r.warm_started]
    tried = [r for r in fin if r.warm_start_from_trial is not None]
    compute = {
        "device_hours": sum(r.total_s for r in fin) / 3600,
        "epoch_equivalents": sum(float(r.epoch_equivalents or 0) for r in fin),
        "wall_s": float(state.get("elapsed_s", 0.0)),
    }
    savings = {
        "promotions": len(tried),
        "warm_started": len(warm),
        "epochs_saved": sum(int(r.epochs_saved or 0) for r in warm),
        "epoch_equivalents_saved": sum(r.fidelity().epoch_equivalents(0, int(r.epochs_saved or 0)) for r in warm),
        "time_saved_s": sum(float(r.time_saved_s or 0) for r in warm),
        "not_used_reasons": sorted({(r.warm_start or {}).get("reason") for r in tried if not r.warm_started} - {None}),
    }
    return {"state": state, "records": recs, "per_budget": per_budget, "incumbent": select_incumbent(recs),
            "compute": compute, "warm": savings, "n_finished": len(fin)}


def status_command(rundir: Path) -> dict:
    from rich.console import Console
    from rich.table import Table

    s = summarize(rundir)
    st = s["state"]
    st_metric = study_metric(Path(rundir))
    con = Console()
    con.print(f"[bold]{st.get('study')}[/] ({st.get('optimizer')}, {st.get('mode')}) in {rundir}: "
              f"{s['n_finished']} finished trials; cost = {st.get('metric')}")
    t = Table(title="trials per budget")
    for c in ("budget", "epochs", "subset", "success", "crashed", "memoryout", "running", "interrupted"):
        t.add_column(c, justify="right")
    for r in s["per_budget"]:
        t.add_row(_f(r["budget"]), _f(r["epochs"]), _f(r["subset_fraction"], 3), str(r["SUCCESS"]), str(r["CRASHED"]),
                  str(r["MEMORYOUT"]), str(r["RUNNING"]), str(r["INTERRUPTED"]))
    con.print(t)
    inc = s["incumbent"]
    if inc is None:
        con.print("incumbent: none yet (no successful trial)")
    else:
        v = inc.val
        con.print(f"incumbent: trial {inc.trial_id} (config {inc.config_id}, stage {inc.stage}) at budget "
                  f"{_f(inc.budget)} ({inc.epochs} epochs, subset {_f(inc.subset_fraction, 3)}): cost {_f(inc.cost)}")
        m = Table(title="incumbent validation metrics (* = in the cost)")
        m.add_column("metric")
        m.add_column("unit")
        m.add_column("model", justify="right")
        m.add_column("baseline", justify="right")
        in_cost = {st_metric.energy, st_metric.forces if st_metric.forces and st_metric.force_weight > 0 else None}
        for k in ("energy_mae", "energy_mae_per_atom", "force_mae", "force_mae_free"):
            if k in v:
                r = baselines.versus(k, v)
                m.add_row(("* " if k in in_cost else "  ") + r.label, r.unit, _f(r.value), _f(r.baseline))
        con.print(m)
        warn = baselines.warning(v, st_metric)
        if warn:
            con.print(f"[bold red]WARNING: {warn}[/]")
        con.print("params: " + ", ".join(f"{k}={v}" for k, v in sorted(inc.params.items())))
    c, w = s["compute"], s["warm"]
    con.print(f"compute: {c['device_hours']:.3f} device-hours, {c['epoch_equivalents']:.1f} epoch-equivalents, "
              f"{c['wall_s'] / 60:.1f} min wall")
    con.print(f"warm start: {w['warm_started']}/{w['promotions']} promotions continued from their lower-budget "
              f"checkpoint; saved {w['epochs_saved']} epochs ({w['epoch_equivalents_saved']:.1f} epoch-equivalents, "
              f"~{w['time_saved_s']:.1f} s)" + (f"; not used: {'; '.join(w['not_used_reasons'])}" if w["not_used_reasons"] else ""))
    return s
