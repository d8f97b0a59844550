"""``mfhpo report``: HTML + Markdown reports of one or more run directories (see docs/reports.md).

Submodules load lazily, so that ``mfhpo.report.metrics_info`` (metric names, units, baselines; also
used by the terminal views) does not import matplotlib."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

__all__ = ["build_report", "load_study", "load_trials", "StudyResults"]
_LAZY = {"build_report": "mfhpo.report.build", "load_study": "mfhpo.report.load", "load_trials": "mfhpo.report.load",
         "StudyResults": "mfhpo.report.load"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"mfhpo.report.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'mfhpo.report' has no attribute {name!r}") from None
