"""What ``mfhpo incumbent`` prints about the exported model: the optimised validation metrics next
to their baselines (a warning when it does not beat them), the held-out test metrics with theirs,
and a warning when the model's descriptor has a hard cutoff (its energy is not smooth where a
neighbour crosses the cutoff, so NVE MD does not conserve energy)."""

from __future__ import annotations

import sys
from pathlib import Path

from mfhpo.study import baselines

HARD_CUTOFF_WARNING = ("descriptor.cutoff_function is hard: the potential's energy jumps when a neighbour crosses "
                       "the cutoff, so it is not energy-conserving in MD (NVE drifts); use it for relaxations and "
                       "screening, or retrain with cutoff_function: cosine for dynamics (docs/training.md)")


def study_metric(rundir: Path):
    """The study's metric section, read from the run directory's copy of the study file."""
    from mfhpo.study.config import MetricSection, load_study
    from mfhpo.study.rundir import RunDir

    try:
        return load_study(RunDir(Path(rundir)).study_file).metric
    except Exception:  # an unreadable copy: the default cost
        return MetricSection()


def hard_cutoff(config: dict) -> bool:
    return str(((config or {}).get("descriptor") or {}).get("cutoff_function", "")).lower() == "hard"


def print_incumbent_metrics(val: dict, test: dict, metric, config: dict, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"  val {baselines.summary(val, metric)}", file=stream)
    warn = baselines.warning(val, metric)
    if warn:
        print(f"  WARNING: {warn}", file=stream)
    for key, m in test.items():
        print(f"  {key.replace('_', ' ')} (not used for selection): {baselines.summary(m, metric)}", file=stream)
        warn = baselines.warning(m, metric, subject=f"on the {key.replace('_', ' ')}, the model")
        if warn:
            print(f"  note: {warn}", file=stream)
    if hard_cutoff(config):
        print(f"warning: {HARD_CUTOFF_WARNING}", file=sys.stderr if stream is sys.stdout else stream)
