"""Live view of a running study: trials done/running/crashed per budget, the incumbent with the
optimised metrics next to their baselines (a warning while it does not beat them), progress bars of
the trial, wall-time and device-hour budgets. A rich ``Live`` view on a terminal; plain lines
otherwise (batch logs)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Callable

from mfhpo.study import baselines
from mfhpo.study.trial import TrialRecord, TrialStatus, select_incumbent


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}"
    return str(v)


class ProgressView:
    def __init__(self, title: str, metric, budget_text: Callable[[], str], enabled: bool = True,
                 stream=None, budget_parts: Callable[[], list] | None = None):
        self.title = title
        self.metric = metric
        self.budget_text = budget_text
        self.budget_parts = budget_parts  # () -> [(name, used, cap or None, text)]
        self.stream = stream or sys.stdout
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self._live = None
        self._last = 0.0
        self.records: list[TrialRecord] = []
        self.incumbent: TrialRecord | None = None  # select_incumbent(self.records), kept as records arrive
        self.running: dict[int, dict] = {}
        self.note = ""

    def start(self) -> None:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=2,
                              transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def set_note(self, note: str) -> None:
        if note != self.note:
            self.note = note
            if not self.tty and self.enabled and note:
                print(f"[mfhpo] {note}", file=self.stream, flush=True)

    def load(self, finished: list[TrialRecord]) -> None:
        """The trials a resumed study finished before."""
        self.records = list(finished)
        self.incumbent = select_incumbent(self.records)

    def started(self, rec: TrialRecord) -> None:
        self.running[rec.trial_id] = rec

    def finished(self, rec: TrialRecord) -> None:
        self.running.pop(rec.trial_id, None)
        self.records.append(rec)
        # the rule is a total order (budget, cost, trial id), so the best of (incumbent, new record) is the
        # incumbent of all records: O(1) per trial instead of a pass over the study
        self.incumbent = inc = select_incumbent([r for r in (self.incumbent, rec) if r is not None])
        if self.enabled and not self.tty:
            cost = _fmt(rec.cost)
            ws = " warm" if rec.warm_started else ""
            err = f" ({rec.error})" if rec.error else ""
            line = (f"[mfhpo] trial {rec.trial_id} {rec.stage or ''} budget {_fmt(rec.budget)} "
                    f"({rec.epochs} ep, subset {_fmt(rec.subset_fraction, 3)}){ws}: "
                    f"{rec.status} cost {cost}{err} | done {len(self.records)}, running "
                    f"{len(self.running)}, best {_fmt(inc.cost) if inc else '-'} | {self.budget_text()}")
            print(line, file=self.stream, flush=True)
            if inc is not None and inc is rec:  # a new incumbent: its metrics next to the baselines
                val = inc.val
                print(f"[mfhpo]   new incumbent: {baselines.summary(val, self.metric)}", file=self.stream, flush=True)
                warn = baselines.warning(val, self.metric)
                if warn:
                    print(f"[mfhpo]   WARNING: {warn}", file=self.stream, flush=True)

    def refresh(self) -> None:
        if self._live is not None and time.time() - self._last > 0.5:
            self._last = time.time()
            self._live.update(self._render())

    def _bars(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        for _ in range(3):
            grid.add_column()
        for name, used, cap, text in self.budget_parts():
            if cap:
                grid.add_row(name, ProgressBar(total=float(cap), completed=min(float(used), float(cap)), width=40), text)
            else:
                grid.add_row(name, "", text)
        return grid

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        by = Counter((r.budget, r.status) for r in self.records)
        run_by = Counter(r.budget for r in self.running.values())
        budgets = sorted({b for b, _ in by} | set(run_by), key=lambda x: float(x or 0))
        t = Table(title=f"{self.title}: trials per budget", expand=False)
        for c in ("budget", "done", "running", "crashed", "best cost"):
            t.add_column(c, justify="right")
        for b in budgets:
            done = sum(n for (bb, s), n in by.items() if bb == b)
            crashed = sum(n for (bb, s), n in by.items() if bb == b and s != "SUCCESS")
            costs = [r.cost for r in self.records if r.budget == b and r.status == TrialStatus.SUCCESS]
            t.add_row(_fmt(b), str(done), str(run_by.get(b, 0)), str(crashed), _fmt(min(costs) if costs else None))
        inc = self.incumbent
        parts: list[Any] = [t, Text(f"cost = {self.metric.describe()}")]
        if self.budget_parts is not None:
            parts.append(self._bars())
        else:
            parts.append(Text(self.budget_text()))
        if inc:
            v = inc.val
            rows = baselines.optimised(v, self.metric)
            bc = baselines.baseline_cost(rows)
            parts.append(Text(f"incumbent: trial {inc.trial_id} at budget {_fmt(inc.budget)}, cost {_fmt(inc.cost)}"
                              + (f" (baselines {_fmt(bc)})" if bc is not None else "")))
            parts.append(Text(f"  val {baselines.summary(v, self.metric)}"))
            warn = baselines.warning(v, self.metric)
            if warn:
                parts.append(Text(f"WARNING: {warn}", style="bold red"))
        if self.note:
            parts.append(Text(self.note))
        return Group(*parts)
