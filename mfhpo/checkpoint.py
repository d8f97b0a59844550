"""One self-contained checkpoint file per trained potential.

``torch.save`` of a dict of plain tensors and Python objects (no pickled classes)::

    format_version, mfhpo_version, torch_version, torch_threads,
    config (full TrialConfig dict), setting (GMPSetting.to_dict()), base_dir, elements, n_feat,
    model_state (best-validation weights incl. feature scalers, reference energies, sigma),
    reference_energies {element: eV}, sigma,
    resume: {model_state (last epoch), optimizer, scheduler, best_state, best_loss, best_epoch,
             bad_epochs, stopped_reason, learning_curve}   (TrainingState, for warm-start continuation)
    featurize {share_chunks, chunk_mb, chunk_pairs, layout}   (the FeaturizeOptions the features were made with)
    gmp_chunks ("per-structure" | "shared": featurize.share_chunks in words, for older readers)
    data_hash, split_hash, budget {epochs, subset_fraction}, epochs_run, n_train, metrics, created_at

Written atomically (temporary file in the same folder + ``os.replace``), so a reader never sees a
half-written file. Loads on CPU or GPU (``map_location``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from mfhpo.atomic import atomic_open
from mfhpo.device import resolve_device
from mfhpo.errors import MfhpoError

__all__ = ["FORMAT_VERSION", "LoadedPotential", "TrainingState", "build_potential", "featurize_options_of", "featurize_options_record",
           "load_checkpoint", "load_potential", "resolve_device", "save_checkpoint", "setting_from_checkpoint"]

FORMAT_VERSION = 1
FORMAT_NAME = "mfhpo-potential"


def _versions() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        mv = version("mfhpo")
    except Exception:  # pragma: no cover - not installed
        mv = "unknown"
    # CPU results depend on the thread count in the last digits (float reductions): recorded so that a
    # retrain can use the same (mfhpo.study.incumbent.retrain)
    return {"mfhpo_version": str(mv), "torch_version": str(torch.__version__),
            "torch_threads": int(torch.get_num_threads())}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus format/version fields) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **_versions(), "created_at": time.time()}
    data.update(payload)
    with atomic_open(path) as fh:
        torch.save(data, fh)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict; one-line :class:`MfhpoError` for missing/foreign/incompatible files."""
    path = Path(path)
    if not path.exists():
        raise MfhpoError(f"{path}: checkpoint not found")
    try:
        data = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MfhpoError(f"{path}: not a readable mfhpo checkpoint ({msg[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise MfhpoError(f"{path}: not an mfhpo checkpoint")
    v = data.get("format_version")
    if v != FORMAT_VERSION:
        raise MfhpoError(
            f"{path}: checkpoint format version {v} is not supported by this mfhpo "
            f"(expects {FORMAT_VERSION}); retrain or use the mfhpo version that wrote it "
            f"({data.get('mfhpo_version', 'unknown')})"
        )
    return data


def _on_cpu(state: Optional[dict]) -> Optional[dict]:
    return None if state is None else {k: v.detach().cpu() for k, v in state.items()}


@dataclass
class TrainingState:
    """Where a training stands at an epoch boundary: everything continuing it needs (warm starts).

    A checkpoint stores it as its ``resume`` record (tensors on the CPU) next to ``epochs_run``; the
    record's keys are unchanged since format version 1, so every version-1 checkpoint reads back.
    """

    epochs_run: int = 0
    model_state: Optional[dict] = None  # weights after the last epoch
    optimizer: Optional[dict] = None
    scheduler: Optional[dict] = None
    best_state: Optional[dict] = None  # weights of the best-validation epoch
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_reason: Optional[str] = None  # None | "early_stopping" | "time_limit"
    learning_curve: list[dict[str, float]] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The checkpoint's ``resume`` record."""
        return {"model_state": _on_cpu(self.model_state), "optimizer": self.optimizer, "scheduler": self.scheduler,
                "best_state": _on_cpu(self.best_state), "best_loss": float(self.best_loss),
                "best_epoch": int(self.best_epoch), "bad_epochs": int(self.bad_epochs),
                "stopped_reason": self.stopped_reason, "learning_curve": list(self.learning_curve)}

    @classmethod
    def from_checkpoint(cls, ck: dict) -> Optional["TrainingState"]:
        """The state a checkpoint dict stores (None when it has no resumable state)."""
        r = ck.get("resume")
        if not r:
            return None
        return cls(epochs_run=int(ck["epochs_run"]), model_state=r["model_state"], optimizer=r["optimizer"],
                   scheduler=r.get("scheduler"), best_state=r["best_state"], best_loss=float(r["best_loss"]),
                   best_epoch=int(r["best_epoch"]), bad_epochs=int(r["bad_epochs"]),
                   stopped_reason=r.get("stopped_reason"), learning_curve=[dict(c) for c in r["learning_curve"]])


def featurize_options_record(options, device) -> dict[str, Any]:
    """What a checkpoint records of the :class:`~mfhpo.gmp.featurizer.FeaturizeOptions` its training
    featurized with on ``device``: ``featurize`` (chunk sharing decided for the device) and ``gmp_chunks``."""
    resolved = options.resolved(device)
    return {"featurize": resolved.to_dict(), "gmp_chunks": "shared" if resolved.share_chunks else "per-structure"}


def featurize_options_of(ck: dict):
    """The :class:`~mfhpo.gmp.featurizer.FeaturizeOptions` a checkpoint's features were made with:
    its ``featurize`` record (without ``layout``: the greedy one); for checkpoints without one, the
    device's default of the time where ``gmp_chunks`` is recorded (greedy layout, one structure per
    chunk on the CPU; CUDA shared chunks although such checkpoints say "per-structure"), and shared
    greedy chunks for checkpoints older still (made before one-structure-per-chunk featurization)."""
    from mfhpo.gmp.featurizer import FeaturizeOptions

    if isinstance(ck.get("featurize"), dict):
        return FeaturizeOptions.from_dict(ck["featurize"])
    if ck.get("gmp_chunks") is not None:
        return FeaturizeOptions(layout="greedy")
    return FeaturizeOptions(share_chunks=True, layout="greedy")


def setting_from_checkpoint(ck: dict):
    """Rebuild the GMPSetting a checkpoint was trained with."""
    from mfhpo.gmp.setting import GMPSetting

    if hasattr(GMPSetting, "from_dict") and ck.get("setting") is not None:
        return GMPSetting.from_dict(ck["setting"])
    from mfhpo.config import DescriptorConfig

    desc = DescriptorConfig.model_validate(ck["config"]["descriptor"])
    return GMPSetting.from_descriptor(desc, ck["elements"], base_dir=ck.get("base_dir"))


def build_potential(ck: dict, device: torch.device | str = "cpu"):
    """The best-validation :class:`mfhpo.model.Potential` of a checkpoint dict."""
    from mfhpo.config import ModelConfig, TrialConfig
    from mfhpo.model import Potential

    cfg = TrialConfig.model_validate(ck["config"])
    dtype = torch.float64 if cfg.training.dtype == "float64" else torch.float32
    pot = Potential(int(ck["n_feat"]), ck["elements"], ModelConfig.model_validate(ck["config"]["model"]))
    pot = pot.to(device=device, dtype=dtype)  # before loading: float64 weights must not pass through float32
    pot.load_state_dict(ck["model_state"])
    return pot.eval(), cfg, dtype


@dataclass
class LoadedPotential:
    """A potential ready to predict from structures: network + GMP setting + reference energies +
    dtype + device (``load_potential(path)``, or built in memory at the end of a training)."""

    potential: Any  # mfhpo.model.Potential
    setting: Any  # mfhpo.gmp.GMPSetting
    config: Any  # mfhpo.config.TrialConfig
    reference_energies: dict[str, float]
    dtype: torch.dtype
    device: torch.device
    checkpoint: dict = field(default_factory=dict)
    path: str = "<memory>"
    featurize_options: Any = None  # FeaturizeOptions for new structures; None: the device's defaults

    @property
    def elements(self) -> list[str]:
        return list(self.potential.elements)

    def featurize(self, images: Sequence, derivatives: bool, cache=None, progress: bool = False):
        from mfhpo.gmp.featurizer import featurize_many

        return featurize_many(list(images), self.setting, derivatives=derivatives, dtype=self.dtype,
                              device=self.device, cache=cache, progress=progress, options=self.featurize_options)

    def predict_features(self, store, forces: bool = True, batch_size: int = 64):
        """Energies (np (n,), eV) and forces (list of (natoms, 3) eV/Å, or None) of the structures of a
        :class:`mfhpo.model.FeatureStore`."""
        from mfhpo.model import predict_store, predictions_as_numpy

        e, f = predict_store(self.potential, store, forces=forces, batch_size=batch_size)
        return predictions_as_numpy(e, f, store.natoms.cpu().numpy())

    def predict(self, images: Sequence, forces: bool = True, batch_size: int = 64, cache=None,
                progress: bool = False, source: str = "<data>"):
        """Energies (np (n,), eV) and forces (list of (natoms, 3) eV/Å, or None)."""
        from mfhpo.model import FeatureStore

        images = list(images)
        elem = [self.potential.element_index(a.get_chemical_symbols(), source=source) for a in images]
        feats = self.featurize(images, derivatives=forces, cache=cache, progress=progress)
        store = FeatureStore(feats, elem, device=self.device, dtype=self.dtype, derivatives=forces)
        return self.predict_features(store, forces=forces, batch_size=batch_size)


def load_potential(path: str | Path, device: str | None = "cpu", featurize=None) -> LoadedPotential:
    """Load a checkpoint file for prediction on ``device`` (cpu, cuda, auto); ``featurize``
    (:class:`~mfhpo.gmp.featurizer.FeaturizeOptions`) chunks the featurization of new structures."""
    dev = resolve_device(device)
    ck = load_checkpoint(path, map_location=dev)
    pot, cfg, dtype = build_potential(ck, dev)
    setting = setting_from_checkpoint(ck)
    return LoadedPotential(pot, setting, cfg, dict(ck["reference_energies"]), dtype, dev, ck, str(path),
                           featurize_options=featurize)
