"""Stages of a study: ``joint`` (one SMAC run over the whole space), or ``two-stage`` (``descriptor``:
descriptor parameters searched with a fixed cheap model, then ``model``: model parameters searched
with the descriptor stage's best descriptor). What each stage searches, what it holds fixed and its
share of the trial budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mfhpo.errors import MfhpoError
from mfhpo.study.config import StudyConfig
from mfhpo.study.space import SpaceSpec, default_flat, to_configspace


def stage_plan(study: StudyConfig) -> list[tuple[str, float, float]]:
    """(stage, share start, share end) of the whole budget."""
    if study.mode == "joint":
        return [("joint", 0.0, 1.0)]
    f = study.two_stage.descriptor_fraction
    return [("descriptor", 0.0, f), ("model", f, 1.0)]


def stage_trial_cap(study: StudyConfig, trials_cap: Optional[int], stage: str) -> Optional[int]:
    """The trials of ``stage`` out of ``trials_cap`` (None: no trial budget)."""
    if trials_cap is None:
        return None
    if study.mode == "joint":
        return trials_cap
    n1 = max(1, int(round(trials_cap * study.two_stage.descriptor_fraction)))
    return n1 if stage == "descriptor" else max(0, trials_cap - n1)


def stage_tags(stage: str) -> Optional[set[str]]:
    """The parameter tags a stage searches (None: all)."""
    return None if stage == "joint" else {stage}


def drop_inactive(spec: SpaceSpec, flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` without the values that the space's own conditions (its ConfigSpace) make inactive,
    e.g. ``nodes_3`` under ``num_layers: 2``, ``gamma`` without the step scheduler. A condition whose
    parent is not in ``flat`` leaves its child as it is."""
    cs = to_configspace(spec)
    out = dict(flat)
    changed = True
    while changed:  # a dropped parent makes its children inactive in turn
        changed = False
        for cond in cs.conditions:
            parents = [p.name for p in cond.parents] if hasattr(cond, "parents") else [cond.parent.name]
            if cond.child.name in out and all(p in out for p in parents) and not cond.satisfied_by_value(out):
                del out[cond.child.name]
                changed = True
    return out


def cheap_model_flat(study: StudyConfig, spec: SpaceSpec) -> dict[str, Any]:
    """The descriptor stage's fixed model: the space's defaults of every model parameter with
    ``two_stage.cheap_model`` on top (``nodes`` sets every layer's width), inactive values dropped."""
    d = default_flat(spec)
    model_names = {p.name for p in spec.tunable({"model"})}
    out = {k: v for k, v in d.items() if k in model_names or k.startswith("nodes_") or k.endswith("_on")}
    layers = [k for k in d if k.startswith("nodes_")]
    for k, v in study.two_stage.cheap_model.items():
        if k == "nodes":
            out.update({name: v for name in layers})
        else:
            out[k] = v
    return drop_inactive(spec, out)


def fixed_for_stage(study: StudyConfig, spec: SpaceSpec, stage: str, state: dict, root: Path) -> dict[str, Any]:
    """The values a stage holds fixed: nothing (joint), the cheap model (descriptor), the descriptor
    stage's best descriptor (model)."""
    if stage == "joint":
        return {}
    if stage == "descriptor":
        return cheap_model_flat(study, spec)
    best = (state.get("stages") or {}).get("descriptor", {}).get("best_flat")
    if best is None:
        raise MfhpoError(f"{root}: model stage needs the descriptor stage's best configuration")
    return dict(best)


def descriptor_choice(spec: SpaceSpec, searched: dict[str, Any]) -> dict[str, Any]:
    """The descriptor part of a descriptor-stage configuration (what the model stage keeps fixed)."""
    names = {p.name for p in spec.tunable({"descriptor"})}
    return {k: v for k, v in searched.items() if k in names or k.startswith("groups_") or k.endswith("_on")}
