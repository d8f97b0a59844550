"""Warm starts: a promoted configuration continues from its own checkpoint of the highest lower
budget instead of training from scratch (``fidelity.warm_start``; training objectives only)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from mfhpo.study.trial import TrialRecord, TrialStatus


class WarmStart(NamedTuple):
    checkpoint: Optional[str]  # None: train from scratch
    from_trial: Optional[int]


NONE = WarmStart(None, None)


def warm_start_source(records: Iterable[TrialRecord], config_id: int, budget: float) -> WarmStart:
    """The checkpoint to continue from: the successful trial of the same configuration at the highest
    budget below ``budget`` whose checkpoint still exists (ties: the later trial)."""
    prev = [r for r in records if r.config_id == config_id and r.status == TrialStatus.SUCCESS
            and float(r.budget) < budget and r.checkpoint and Path(r.checkpoint).exists()]
    if not prev:
        return NONE
    best = max(prev, key=lambda r: (float(r.budget), r.trial_id))
    return WarmStart(best.checkpoint, best.trial_id)
