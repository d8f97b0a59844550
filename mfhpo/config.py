"""The configuration of one trial: descriptor + model + training hyperparameters, and its budget.

This is the contract between the study engine (which materialises a SMAC configuration into a
:class:`TrialConfig`), the featurizer (``descriptor``), and the trainer (``model``, ``training``).
``mfhpo train CONFIG.yaml`` reads exactly this schema from YAML. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfhpo.errors import MfhpoError
from mfhpo.gmp.densities import channels_problem

SEED_SIGMAS = [0.2, 0.69, 1.1, 1.66, 2.66]
# groups available per order in AMPTorch's "gmp" scheme (spec table 4.4)
GMP_GROUPS = {0: [1], 1: [1], 2: [1, 2], 3: [1, 2, 3], 4: [1, 2, 3, 4], 5: [1, 2, 3, 4, 5]}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OrderSpec(_Strict):
    """Groups (``gmp`` scheme only) and optionally a sigma list of its own for one MCSH order."""

    groups: list[int] | Literal["all"] = "all"
    sigmas: Optional[list[float]] = None


class DescriptorConfig(_Strict):
    """GMP descriptor hyperparameters (see docs/featurizer.md)."""

    scheme: Literal["gmp", "gmpordernorm"] = "gmp"
    orders: dict[int, OrderSpec] = Field(
        default_factory=lambda: {0: OrderSpec(groups=[1]), 1: OrderSpec(groups=[1]), 2: OrderSpec(groups=[1, 2])}
    )
    sigmas: list[float] = Field(default_factory=lambda: list(SEED_SIGMAS))
    cutoff: float = Field(8.0, gt=0, le=20)
    cutoff_function: Literal["hard", "cosine"] = "hard"
    square: bool = False
    rs_setup: dict[str, Any] = Field(default_factory=lambda: {"setup": "constant", "rs": 1.0})
    # "default": mfhpo's built-in Gaussian density model; otherwise a directory of AMPTorch .g files
    densities: str = "default"
    # one block of features per density channel (docs/featurizer.md, "Chemical channels")
    channels: list[str] = Field(default_factory=lambda: ["valence"])

    @field_validator("channels")
    @classmethod
    def _valid_channels(cls, v: list[str]) -> list[str]:
        problem = channels_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("sigmas")
    @classmethod
    def _positive_sigmas(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("sigmas must be a non-empty list of positive numbers (Å)")
        return v

    @model_validator(mode="after")
    def _check_orders(self) -> "DescriptorConfig":
        if not self.orders:
            raise ValueError("orders must name at least one MCSH order")
        for n, spec in self.orders.items():
            if not 0 <= n <= (5 if self.scheme == "gmp" else 9):
                raise ValueError(f"order {n} is not available for scheme {self.scheme}")
            if self.scheme == "gmp" and spec.groups != "all":
                bad = [g for g in spec.groups if g not in GMP_GROUPS[n]]
                if bad or not spec.groups:
                    raise ValueError(f"order {n}: groups must be a non-empty subset of {GMP_GROUPS[n]}, got {spec.groups}")
        return self


class ModelConfig(_Strict):
    kind: Literal["singlenn", "bpnn"] = "singlenn"
    hidden_layers: list[int] = Field(default_factory=lambda: [32, 32])
    activation: Literal["tanh", "gelu", "silu", "softplus", "relu", "celu"] = "tanh"
    batchnorm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    init: Literal["xavier", "zero", "default"] = "xavier"
    # "onehot": append the centre atom's element as a one-hot vector to the scaled fingerprint, so
    # the shared SingleNN can respond to an environment differently per element (needed with many
    # elements, e.g. OC20). "none": AMPTorch's SingleNN, the element enters only via the fingerprint.
    element_input: Literal["none", "onehot"] = "none"

    @field_validator("hidden_layers")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 for w in v):
            raise ValueError("hidden_layers must be a non-empty list of positive widths")
        return v

    @model_validator(mode="after")
    def _element_input(self) -> "ModelConfig":
        if self.kind == "bpnn" and self.element_input != "none":
            raise ValueError("element_input: bpnn already has one network per element; use 'none'")
        return self


class TrainingConfig(_Strict):
    epochs: int = Field(100, ge=1, description="epochs at full budget (budget.epochs overrides)")
    lr: float = Field(1e-3, gt=0, le=1.0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "step", "cosine", "plateau"] = "none"
    schedule_epochs: Optional[int] = Field(
        None, ge=1, description="epochs the cosine schedule spans (None: this training's epochs); a study sets the "
                                "top budget's (fidelity.schedule_epochs: top) so that promotions can continue")
    step_size: int = Field(20, ge=1)
    gamma: float = Field(0.5, gt=0, le=1.0)
    plateau_patience: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    loss: Literal["mae", "mse"] = "mse"
    energy_per_atom: bool = True
    force_coefficient: float = Field(0.0, ge=0)
    feature_scaling: Literal["normalize", "standardize"] = "normalize"
    # AMPTorch scales each element's atoms separately (elementwise=True). With many elements
    # (OC20) one scaler for all atoms keeps the element signal of the order-0 self term.
    scale_per_element: bool = True
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "auto"


class SplitConfig(_Strict):
    val_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    seed: int = 0
    group_key: Optional[str] = None


class TrialConfig(_Strict):
    descriptor: DescriptorConfig = Field(default_factory=DescriptorConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    seed: int = 0


class Fidelity(_Strict):
    """What a trial may spend: epochs and the nested training-subset fraction.

    ``subset_schedule`` (optional): a growing subset, ``[[start_epoch, fraction], ...]`` from epoch 0
    on, epochs increasing, fractions increasing up to ``subset_fraction`` (the last phase's): each
    epoch trains on the nested subset of its phase. A study's curriculum fidelity
    (``fidelity.subset.curriculum``) gives every budget a prefix of the top budget's schedule, so a
    promoted trial continues its lower-budget checkpoint exactly."""

    epochs: int = Field(..., ge=1)
    subset_fraction: float = Field(1.0, gt=0, le=1)
    subset_schedule: Optional[list[tuple[int, float]]] = None

    @model_validator(mode="after")
    def _schedule(self) -> "Fidelity":
        sch = self.subset_schedule
        if sch is None:
            return self
        if not sch or sch[0][0] != 0:
            raise ValueError("subset_schedule must start at epoch 0")
        for (e0, f0), (e1, f1) in zip(sch, sch[1:]):
            if not (e1 > e0 and f1 > f0):
                raise ValueError("subset_schedule: epochs and fractions must increase")
        if sch[-1][0] >= self.epochs:
            raise ValueError(f"subset_schedule: last phase starts at epoch {sch[-1][0]}, not before {self.epochs}")
        if not (0 < sch[0][1] and abs(sch[-1][1] - self.subset_fraction) < 1e-12):
            raise ValueError("subset_schedule must end at subset_fraction")
        return self

    def fraction_at(self, epoch: int) -> float:
        """The subset fraction epoch ``epoch`` (0-based) trains on."""
        if self.subset_schedule is None:
            return float(self.subset_fraction)
        return float([f for e, f in self.subset_schedule if e <= epoch][-1])

    def phases(self) -> list[tuple[int, int, float]]:
        """(first epoch, end epoch, fraction) of each phase within ``epochs``."""
        sch = self.subset_schedule or [(0, self.subset_fraction)]
        ends = [e for e, _ in sch[1:]] + [self.epochs]
        return [(int(e0), int(e1), float(f)) for (e0, f), e1 in zip(sch, ends)]

    def epoch_equivalents(self, start: int = 0, end: Optional[int] = None) -> float:
        """Epochs ``start`` .. ``end`` (default: all) weighted by their subset fraction."""
        end = self.epochs if end is None else end
        return sum(max(0, min(e1, end) - max(e0, start)) * f for e0, e1, f in self.phases())


def format_validation_error(source: str, err: ValidationError) -> str:
    """First pydantic error as one line: ``source: key.path: message``."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "<root>"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {loc}: {msg}"


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MfhpoError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise MfhpoError(f"{path}: invalid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MfhpoError(f"{path}: top level must be a mapping")
    return data


def parse_trial_config(data: dict, source: str = "<config>") -> TrialConfig:
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise MfhpoError(format_validation_error(source, err)) from None


def load_trial_config(path: str | Path) -> TrialConfig:
    return parse_trial_config(load_yaml(path), str(path))
