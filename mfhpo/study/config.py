"""The study file (``spaces/<study>.yaml``): what to tune, on which data, with which budget.

Validated with pydantic (unknown keys are errors); every problem becomes one line
``<file>: <key.path>: <reason>`` (an :class:`~mfhpo.errors.MfhpoError`). See docs/studies.md.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfhpo.config import format_validation_error, load_yaml
from mfhpo.errors import MfhpoError

FORCE_METRICS = ("force_mae", "force_mae_free", "force_rmse", "force_rmse_free")
ENERGY_METRICS = ("energy_mae_per_atom", "energy_mae", "energy_rmse_per_atom", "energy_rmse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    """Where the structures come from and how they are split (validation always from ``train``)."""

    train: str = Field(..., description="path relative to the study file, or 'demo' (built-in generated data)")
    test: Optional[str] = Field(None, description="separate held-out test file (never used for selection)")
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1, description="held-out test split of the train file")
    group_key: Optional[str] = Field(None, description="atoms.info key for group-wise splits, e.g. sid")
    split_seed: int = 0
    max_force: Optional[float] = Field(None, gt=0, description="drop frames with max |F| above this (eV/Å)")
    demo_structures: int = Field(160, ge=10, le=5000, description="size of the generated demo dataset")
    demo_seed: int = 0

    @model_validator(mode="after")
    def _fractions(self) -> "DataSection":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


class MetricSection(_Strict):
    """cost = val[energy] + force_weight * val[forces] (validation split of the train file)."""

    energy: Literal[ENERGY_METRICS] = "energy_mae_per_atom"  # type: ignore[valid-type]
    forces: Optional[Literal[FORCE_METRICS]] = "force_mae"  # type: ignore[valid-type]
    force_weight: float = Field(1.0, ge=0)
    crash_cost: float = Field(1000.0, gt=0, description="finite cost told to SMAC for crashed trials")

    def describe(self) -> str:
        s = f"val {self.energy}"
        if self.forces and self.force_weight > 0:
            s += f" + {self.force_weight:g} * val {self.forces}"
        return s

    def cost(self, val: dict) -> float:
        c = float(val[self.energy])
        if self.forces and self.force_weight > 0:
            c += self.force_weight * float(val[self.forces])
        return c


class EpochAxis(_Strict):
    min: int = Field(..., ge=1)
    max: int = Field(..., ge=1)
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _order(self) -> "EpochAxis":
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class SubsetAxis(_Strict):
    min: float = Field(1.0, gt=0, le=1)
    max: float = Field(1.0, gt=0, le=1)
    scale: Literal["linear", "log"] = "linear"
    saturate_at: Optional[float] = Field(
        None, gt=0, description="budget at which the subset reaches max (so that top rungs can warm start)"
    )
    curriculum: bool = Field(
        False, description="the subset grows with the epochs: each epoch trains on the subset of the lowest rung "
                           "that reaches it, so every promotion continues its lower-budget checkpoint exactly")

    @model_validator(mode="after")
    def _order(self) -> "SubsetAxis":
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


class FidelitySection(_Strict):
    """One SMAC budget -> (epochs, training-subset fraction)."""

    min_budget: float = Field(1.0, gt=0)
    max_budget: float = Field(9.0, gt=0)
    eta: int = Field(3, ge=2)
    epochs: EpochAxis
    subset: SubsetAxis = Field(default_factory=SubsetAxis)
    warm_start: bool = True
    schedule_epochs: Literal["trial", "top"] = Field(
        "trial", description="what a cosine learning-rate schedule spans: each trial's epochs, or the top budget's "
                             "(every budget then follows one schedule, so promotions can continue)")

    @model_validator(mode="after")
    def _order(self) -> "FidelitySection":
        if self.max_budget < self.min_budget:
            raise ValueError("max_budget must be >= min_budget")
        s = self.subset.saturate_at
        if s is not None and not (self.min_budget <= s <= self.max_budget):
            raise ValueError(f"subset.saturate_at must lie in [min_budget, max_budget], got {s}")
        return self


_DUR = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$")


def parse_duration(v: Any) -> float:
    """Seconds from a number (seconds) or a string like '90s', '10m', '2h', '1d'."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    m = _DUR.match(str(v))
    if not m:
        raise ValueError(f"not a duration: {v!r} (use seconds or e.g. '30m', '2h')")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Limits(_Strict):
    """When to stop: any of these (whichever comes first)."""

    trials: Optional[int] = Field(None, ge=1, description="number of trial evaluations (any budget)")
    wall_time: Optional[float] = Field(None, gt=0, description="seconds, or '30m', '2h'")
    gpu_hours: Optional[float] = Field(None, gt=0, description="sum of trial wall times over devices, hours")

    @field_validator("wall_time", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _some(self) -> "Limits":
        if self.trials is None and self.wall_time is None and self.gpu_hours is None:
            raise ValueError("give at least one of trials, wall_time, gpu_hours")
        return self


class OptimizerOptions(_Strict):
    initial_design: int = Field(5, ge=1, description="random configurations before the model is used")
    max_trials_scenario: int = Field(100000, ge=10, description="n_trials fixed in the SMAC scenario (never reached)")
    prefetch: int = Field(1, ge=0, le=64, description="trials asked ahead (hides SMAC's model refits)")
    smac_save_s: float = Field(10.0, ge=0, description="seconds between writes of SMAC's state files (0: after "
                               "every result); each write also waits for results enough to spread its cost at "
                               "10 ms each; mfhpo's own trial records are written at once either way")
    promotion: Literal["sync", "async"] = Field(
        "async", description="smac-mf: async = ASHA (promoted as soon as in the top 1/eta of the rung's finished "
        "results; mfhpo/study/asha.py); sync = SMAC's Hyperband (a rung is compared once all its trials finished). "
        "A resumed study keeps the rule it was started with unless the file names one")
    brackets: Union[int, str] = Field(
        1, description="smac-mf with promotion async: brackets side by side, bracket b starting new "
        "configurations at rung b, each new configuration in the bracket with the least budget so far "
        "(asynchronous Hyperband); 1 = ASHA alone; all = one bracket per rung")

    @field_validator("brackets", mode="before")
    @classmethod
    def _brackets(cls, v: Any) -> Any:
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be a whole number >= 1 or 'all', got {v!r}")

    acquisition: Literal["ei", "ei_per_second"] = Field(
        "ei", description="smac-mf, smac-bo: ei = SMAC's expected improvement; ei_per_second = EI divided by the "
        "predicted wall seconds per epoch-equivalent (mfhpo/study/cost_aware.py)")


class TwoStageSection(_Strict):
    descriptor_fraction: float = Field(0.5, gt=0, lt=1, description="share of the budget for the descriptor stage")
    cheap_model: dict[str, Any] = Field(
        default_factory=dict, description="fixed model parameters (flat names) used in the descriptor stage"
    )


class ToySection(_Strict):
    """Synthetic objective (tests, benchmarks): no training, a cheap function of the configuration."""

    sleep_s: float = Field(0.0, ge=0, description="seconds per trial at max budget (scaled by budget/max_budget)")
    sleep_fixed_s: float = Field(0.0, ge=0, description="seconds per trial regardless of budget")
    fail_trials: list[int] = Field(default_factory=list, description="trial numbers that raise")
    kill_trials: list[int] = Field(default_factory=list, description="trial numbers whose worker is SIGKILLed")
    oom_trials: list[int] = Field(default_factory=list, description="trial numbers that raise a CUDA OOM error")


class StudyConfig(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    seed: int = 0
    data: DataSection
    metric: MetricSection = Field(default_factory=MetricSection)
    space: dict[str, Any] = Field(..., description="parameter name -> fixed value | {low, high, log} | {choices}")
    fixed: dict[str, Any] = Field(default_factory=dict, description="partial TrialConfig (nested) applied to every trial")
    fidelity: FidelitySection
    budget: Limits
    optimizer: Literal["smac-mf", "smac-bo", "random", "optuna-tpe-hb"] = "smac-mf"
    optimizer_options: OptimizerOptions = Field(default_factory=OptimizerOptions)
    mode: Literal["joint", "two-stage"] = "joint"
    two_stage: TwoStageSection = Field(default_factory=TwoStageSection)
    cluster: dict[str, Any] = Field(default_factory=dict)
    feature_cache: Optional[str] = Field(None, description="feature cache directory (default <rundir>/feature_cache)")
    trial_time_limit: Optional[float] = Field(None, gt=0, description="seconds; enforced inside the training loop")
    objective: Literal["train", "toy"] = "train"
    toy: ToySection = Field(default_factory=ToySection)

    @field_validator("trial_time_limit", mode="before")
    @classmethod
    def _dur(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    # ---- set after loading -------------------------------------------------------------------
    _path: Optional[Path] = None
    _text: str = ""

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else Path("<memory>")

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path is not None else Path.cwd()

    @property
    def text(self) -> str:
        return self._text

    def file_hash(self) -> str:
        return hashlib.sha256(self._text.encode()).hexdigest()[:16]

    def resolve(self, rel: str) -> Path:
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


def parse_study(data: dict, source: str = "<study>", text: str | None = None, path: Path | None = None) -> StudyConfig:
    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as err:
        raise MfhpoError(format_validation_error(source, err)) from None
    study._path = path
    study._text = text if text is not None else yaml.safe_dump(data, sort_keys=True)
    # deeper checks: the cluster section and the search space
    from mfhpo.study.space import build_space_spec

    _validate_cluster(study, source)
    _validate_brackets(study, source)
    build_space_spec(study, source)
    return study


def _validate_brackets(study: StudyConfig, source: str) -> None:
    from mfhpo.study.fidelity import rungs

    ladder, b = rungs(study.fidelity), study.optimizer_options.brackets
    if b != 1 and (study.optimizer != "smac-mf" or study.optimizer_options.promotion != "async"):
        raise MfhpoError(f"{source}: optimizer_options.brackets: applies to optimizer smac-mf with promotion async "
                         f"only, got {b!r} with {study.optimizer}"
                         + (f", promotion {study.optimizer_options.promotion}" if study.optimizer == "smac-mf" else ""))
    if b != "all" and b > len(ladder):
        raise MfhpoError(f"{source}: optimizer_options.brackets: at most {len(ladder)}, the rungs of the fidelity "
                         f"ladder ({', '.join(f'{r:g}' for r in ladder)}), got {b}")


def _validate_cluster(study: StudyConfig, source: str) -> None:
    from mfhpo.study.clusters import load_cluster_config  # one-line errors naming cluster.<key>

    load_cluster_config(study.cluster, source=source)


def load_study(path: str | Path) -> StudyConfig:
    path = Path(path)
    data = load_yaml(path)
    return parse_study(data, str(path), text=path.read_text(), path=path.resolve())
