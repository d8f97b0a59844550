"""The study's search space -> ConfigSpace (with conditions), and flat configuration -> TrialConfig.

Parameters have flat names (see ``PARAMS``); each is tagged ``descriptor`` or ``model`` (model =
network + training) for the two-stage mode. A parameter in ``space:`` is either a fixed value,
``{low, high[, log][, type]}`` (int when both bounds are ints, else float), ``{choices: [...]}``
(categorical), and may carry ``default`` and ``or_zero: true`` (value 0 or a log-scale range,
for ``force_coefficient``).

Conditions: ``nodes`` expands to ``nodes_1 .. nodes_K`` (K = largest ``num_layers``), ``nodes_k``
active only when ``num_layers >= k``; ``groups_k`` (the group subset of MCSH order k, e.g.
``choices: [[1], [1, 2]]``) active only when ``max_order >= k``; ``step_size``/``gamma`` only with
``scheduler == step``, ``plateau_patience`` only with ``plateau``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfhpo.config import GMP_GROUPS, TrialConfig, format_validation_error
from mfhpo.errors import MfhpoError
from mfhpo.gmp.densities import channels_problem

# name -> (tag, kind of value)
PARAMS: dict[str, str] = {
    # descriptor
    "max_order": "descriptor",
    "groups_2": "descriptor",
    "groups_3": "descriptor",
    "groups_4": "descriptor",
    "groups_5": "descriptor",
    "sigma_count": "descriptor",
    "sigma_min": "descriptor",
    "sigma_max": "descriptor",
    "sigma_spacing": "descriptor",
    "sigmas": "descriptor",
    "cutoff": "descriptor",
    "cutoff_function": "descriptor",
    "scheme": "descriptor",
    "square": "descriptor",
    "densities": "descriptor",
    "channels": "descriptor",
    # model (network)
    "kind": "model",
    "num_layers": "model",
    "nodes": "model",
    "activation": "model",
    "batchnorm": "model",
    "dropout": "model",
    "init": "model",
    "element_input": "model",
    # model (training)
    "lr": "model",
    "optimizer": "model",
    "weight_decay": "model",
    "scheduler": "model",
    "step_size": "model",
    "gamma": "model",
    "plateau_patience": "model",
    "batch_size": "model",
    "loss": "model",
    "energy_per_atom": "model",
    "force_coefficient": "model",
    "feature_scaling": "model",
    "scale_per_element": "model",
    "grad_clip": "model",
}

_TRAINING = {"lr", "optimizer", "weight_decay", "scheduler", "step_size", "gamma", "plateau_patience",
             "batch_size", "loss", "energy_per_atom", "force_coefficient", "feature_scaling", "scale_per_element", "grad_clip"}
_MODEL = {"kind", "activation", "batchnorm", "dropout", "init", "element_input"}


@dataclass
class ParamSpec:
    name: str
    tag: str
    kind: str  # fixed | int | float | cat
    value: Any = None
    low: Any = None
    high: Any = None
    log: bool = False
    choices: list = field(default_factory=list)
    default: Any = None
    or_zero: bool = False


@dataclass
class SpaceSpec:
    params: dict[str, ParamSpec]

    def tunable(self, tags: set[str] | None = None) -> list[ParamSpec]:
        return [p for p in self.params.values() if p.kind != "fixed" and (tags is None or p.tag in tags)]


def _encode_choice(v: Any) -> Any:
    """ConfigSpace categoricals hold scalars: lists (group subsets, channels) become '1,2' /
    'valence,period'; bools become 'true'."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _decode_choice(name: str, v: Any) -> Any:
    if name.startswith("groups_"):
        return [int(x) for x in str(v).split(",")] if not isinstance(v, list) else v
    if name == "channels":
        return str(v).split(",") if not isinstance(v, list) else v
    if v == "true":
        return True
    if v == "false":
        return False
    if isinstance(v, np.generic):
        return v.item()
    return v


def _parse_param(name: str, raw: Any, where: str) -> ParamSpec:
    tag = PARAMS[name]
    if not isinstance(raw, dict):
        return ParamSpec(name, tag, "fixed", value=raw)
    raw = dict(raw)
    tag = raw.pop("tag", tag)
    if tag not in ("descriptor", "model"):
        raise MfhpoError(f"{where}.tag: must be descriptor or model")
    default = raw.pop("default", None)
    if "choices" in raw:
        ch = raw.pop("choices")
        if raw:
            raise MfhpoError(f"{where}.{next(iter(raw))}: unknown key (a categorical takes choices, default, tag)")
        if not isinstance(ch, list) or not ch:
            raise MfhpoError(f"{where}.choices: must be a non-empty list")
        if len(ch) == 1:
            return ParamSpec(name, tag, "fixed", value=ch[0])
        return ParamSpec(name, tag, "cat", choices=ch, default=default)
    if "value" in raw:
        return ParamSpec(name, tag, "fixed", value=raw["value"])
    for k in ("low", "high"):
        if k not in raw:
            raise MfhpoError(f"{where}: needs low and high, or choices, or a fixed value")
    low, high = raw.pop("low"), raw.pop("high")
    log = bool(raw.pop("log", False))
    typ = raw.pop("type", None)
    or_zero = bool(raw.pop("or_zero", False))
    if raw:
        raise MfhpoError(f"{where}.{next(iter(raw))}: unknown key")
    for k, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MfhpoError(f"{where}.{k}: must be a number, got {v!r}")
    if typ is None:
        typ = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    if typ not in ("int", "float"):
        raise MfhpoError(f"{where}.type: must be int or float")
    if high <= low:
        raise MfhpoError(f"{where}.high: must be greater than low ({low})")
    if log and low <= 0:
        raise MfhpoError(f"{where}.low: must be > 0 on a log scale")
    return ParamSpec(name, tag, typ, low=low, high=high, log=log, default=default, or_zero=or_zero)


def build_space_spec(study, source: str = "<study>") -> SpaceSpec:
    params: dict[str, ParamSpec] = {}
    for name, raw in study.space.items():
        where = f"{source}: space.{name}"
        if name not in PARAMS:
            raise MfhpoError(f"{where}: unknown parameter (known: {', '.join(sorted(PARAMS))})")
        params[name] = _parse_param(name, raw, where)
    spec = SpaceSpec(params)
    # structural checks
    mo = params.get("max_order")
    if mo is not None and mo.kind in ("int", "float") and not (0 <= mo.low and mo.high <= 5):
        raise MfhpoError(f"{source}: space.max_order: must lie in [0, 5] for the gmp scheme")
    for k in range(2, 6):
        g = params.get(f"groups_{k}")
        if g is None:
            continue
        opts = g.choices if g.kind == "cat" else [g.value]
        for o in opts:
            if o == "all":
                continue
            if not isinstance(o, list) or not o or any(x not in GMP_GROUPS[k] for x in o):
                raise MfhpoError(f"{source}: space.groups_{k}: each choice must be a non-empty subset of {GMP_GROUPS[k]} (or 'all'), got {o!r}")
    ch = params.get("channels")
    if ch is not None:
        for o in (ch.choices if ch.kind == "cat" else [ch.value]):
            problem = channels_problem(o)
            if problem:
                raise MfhpoError(f"{source}: space.channels: {problem}")
    if "nodes" in params and "num_layers" not in params:
        raise MfhpoError(f"{source}: space.nodes: needs num_layers (fixed or searched)")
    nl = params.get("num_layers")
    if nl is not None and nl.kind == "float":
        raise MfhpoError(f"{source}: space.num_layers: must be an integer range")
    if study.mode == "two-stage":
        for name in study.two_stage.cheap_model:
            if name not in PARAMS or PARAMS[name] != "model":
                raise MfhpoError(f"{source}: two_stage.cheap_model.{name}: not a model parameter")
        if not spec.tunable({"descriptor"}):
            raise MfhpoError(f"{source}: mode: two-stage needs at least one searched descriptor parameter")
        if not spec.tunable({"model"}):
            raise MfhpoError(f"{source}: mode: two-stage needs at least one searched model parameter")
    # a trial config built from the defaults must validate
    try:
        materialize(study, spec, default_flat(spec))
    except MfhpoError as exc:
        from mfhpo.study.check import default_failure  # names the space key behind the invalid field

        raise MfhpoError(default_failure(spec, source, str(exc))) from None
    return spec


def _max_layers(spec: SpaceSpec) -> int:
    nl = spec.params.get("num_layers")
    if nl is None:
        return 0
    return int(nl.value) if nl.kind == "fixed" else int(nl.high)


def default_flat(spec: SpaceSpec) -> dict[str, Any]:
    """A flat configuration from each parameter's default (fixed value, given default, or a mid value)."""
    out: dict[str, Any] = {}
    for p in spec.params.values():
        if p.kind == "fixed":
            out[p.name] = p.value
        elif p.kind == "cat":
            out[p.name] = p.default if p.default is not None else p.choices[0]
        else:
            if p.default is not None:
                v = p.default
            elif p.log:
                v = math.sqrt(p.low * p.high)
            else:
                v = (p.low + p.high) / 2
            out[p.name] = int(round(v)) if p.kind == "int" else float(v)
    if "nodes" in out:
        for k in range(1, _max_layers(spec) + 1):
            out[f"nodes_{k}"] = out["nodes"]
        del out["nodes"]
    return out


# --------------------------------------------------------------------------------------------
# ConfigSpace
# --------------------------------------------------------------------------------------------


def to_configspace(spec: SpaceSpec, seed: int = 0, tags: set[str] | None = None, fixed_flat: dict | None = None):
    """ConfigSpace for the searched parameters with the given tags (None: all). ``fixed_flat`` pins
    parameters (e.g. the cheap model of the descriptor stage) so that they are left out."""
    from ConfigSpace import (Categorical, ConfigurationSpace, EqualsCondition, Float, GreaterThanCondition,
                             Integer)

    fixed_flat = fixed_flat or {}
    cs = ConfigurationSpace(seed=seed)
    hps: dict[str, Any] = {}

    def want(p: ParamSpec) -> bool:
        return p.kind != "fixed" and (tags is None or p.tag in tags) and p.name not in fixed_flat

    def make(p: ParamSpec, name: str):
        if p.kind == "cat":
            choices = [_encode_choice(c) for c in p.choices]
            if p.default is not None:
                return Categorical(name, choices, default=_encode_choice(p.default))
            return Categorical(name, choices)
        if p.kind == "int":
            kw = {} if p.default is None else {"default": int(p.default)}
            return Integer(name, (int(p.low), int(p.high)), log=p.log, **kw)
        kw = {} if p.default is None else {"default": float(p.default)}
        return Float(name, (float(p.low), float(p.high)), log=p.log, **kw)

    for p in spec.params.values():
        if not want(p):
            continue
        if p.name == "nodes":
            for k in range(1, _max_layers(spec) + 1):
                hps[f"nodes_{k}"] = make(p, f"nodes_{k}")
        else:
            hps[p.name] = make(p, p.name)
        if p.or_zero:
            hps[f"{p.name}_on"] = Categorical(f"{p.name}_on", ["on", "off"])
    cs.add(list(hps.values()))
    conds = []
    nl = spec.params.get("num_layers")
    if "num_layers" in hps and nl is not None:
        for k in range(2, int(nl.high) + 1):
            if f"nodes_{k}" in hps and k > int(nl.low):
                conds.append(GreaterThanCondition(hps[f"nodes_{k}"], hps["num_layers"], k - 1))
    if "max_order" in hps:
        mo = spec.params["max_order"]
        for k in range(2, 6):
            if f"groups_{k}" in hps and k > mo.low:
                conds.append(GreaterThanCondition(hps[f"groups_{k}"], hps["max_order"], k - 1))
    if "scheduler" in hps:
        sched = [_encode_choice(c) for c in spec.params["scheduler"].choices]
        for name, value in (("step_size", "step"), ("gamma", "step"), ("plateau_patience", "plateau")):
            if name in hps and value in sched:
                conds.append(EqualsCondition(hps[name], hps["scheduler"], value))
    for p in spec.params.values():
        if p.or_zero and p.name in hps:
            conds.append(EqualsCondition(hps[p.name], hps[f"{p.name}_on"], "on"))
    if conds:
        cs.add(conds)
    return cs


def config_to_flat(config) -> dict[str, Any]:
    """Active values of a ConfigSpace Configuration as plain Python values."""
    out = {}
    for k, v in dict(config).items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# flat -> TrialConfig
# --------------------------------------------------------------------------------------------


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def full_flat(spec: SpaceSpec, flat: dict[str, Any]) -> dict[str, Any]:
    """Searched values + fixed values of the space (what materialize consumes)."""
    out = {p.name: p.value for p in spec.params.values() if p.kind == "fixed"}
    if "nodes" in out:
        v = out.pop("nodes")
        for k in range(1, _max_layers(spec) + 1):
            out[f"nodes_{k}"] = v
    out.update(flat)
    return out


def materialize(study, spec: SpaceSpec, flat: dict[str, Any]) -> TrialConfig:
    """Flat configuration (searched + fixed values) -> validated :class:`TrialConfig`.

    Precedence: the study's ``fixed:`` (nested TrialConfig keys) < the flat values. The split always
    comes from the study's ``data`` section and the seed from the study.
    """
    f = full_flat(spec, flat)
    f = {k: _decode_choice(k, v) for k, v in f.items()}
    desc: dict[str, Any] = {}
    model: dict[str, Any] = {}
    training: dict[str, Any] = {}
    # descriptor
    if "max_order" in f:
        mo = int(f["max_order"])
        orders = {}
        for k in range(0, mo + 1):
            g = f.get(f"groups_{k}", GMP_GROUPS[k] if k >= 2 else [1])
            orders[k] = {"groups": g}
        desc["orders"] = orders
    if "sigmas" in f:
        desc["sigmas"] = [float(s) for s in f["sigmas"]]
    elif "sigma_count" in f or "sigma_min" in f or "sigma_max" in f:
        n = int(f.get("sigma_count", 5))
        lo, hi = float(f.get("sigma_min", 0.2)), float(f.get("sigma_max", 2.66))
        lo, hi = min(lo, hi), max(lo, hi)
        if n <= 1 or hi == lo:
            sig = [lo]
        elif f.get("sigma_spacing", "linear") == "log":
            sig = np.geomspace(lo, hi, n).tolist()
        else:
            sig = np.linspace(lo, hi, n).tolist()
        desc["sigmas"] = [round(float(s), 4) for s in sig]
    for k in ("cutoff", "cutoff_function", "scheme", "square", "densities", "channels"):
        if k in f:
            desc[k] = f[k]
    if desc.get("scheme") == "gmpordernorm" and "orders" in desc:
        desc["orders"] = {k: {"groups": "all"} for k in desc["orders"]}
    # model
    if "num_layers" in f:
        nl = int(f["num_layers"])
        widths = [int(f.get(f"nodes_{k}", 32)) for k in range(1, nl + 1)]
        model["hidden_layers"] = widths
    for k in _MODEL:
        if k in f:
            model[k] = f[k]
    if model.get("kind") == "bpnn":
        model.pop("element_input", None)  # one network per element already sees the element
    for k in _TRAINING:
        if k in f:
            training[k] = f[k]
    for p in spec.params.values():
        if p.or_zero and f.get(f"{p.name}_on") == "off":
            training[p.name] = 0.0
    for k in ("batch_size", "step_size", "plateau_patience"):
        if k in training:
            training[k] = int(training[k])
    data = _deep_merge(study.fixed, {"descriptor": desc, "model": model, "training": training})
    data["split"] = {
        "val_fraction": study.data.val_fraction,
        "test_fraction": study.data.test_fraction,
        "seed": study.data.split_seed,
        "group_key": study.data.group_key,
    }
    data.setdefault("seed", study.seed)
    from pydantic import ValidationError

    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise MfhpoError(format_validation_error("materialized config", err)) from None
