"""``mfhpo report``: HTML + Markdown reports of one or more run directories (see docs/reports.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mfhpo.report.build import build_report
from mfhpo.report.load import Study, load_study, load_trials

__all__ = ["report_command", "build_report", "load_study", "load_trials", "Study"]


def report_command(rundirs: Sequence[Path], out: Path, link_figures: bool = False) -> None:
    """Write ``out``/report.html, ``out``/summary.md and ``out``/figures/*.png."""
    res = build_report([Path(r) for r in rundirs], Path(out), embed=not link_figures)
    print(f"wrote {res['html']} ({len(res['figures'])} figures) and {res['markdown']}")
