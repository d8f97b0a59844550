"""One self-contained checkpoint file per trained potential.

``torch.save`` of a dict of plain tensors and Python objects (no pickled classes)::

    format_version, mfhpo_version, torch_version,
    config (full TrialConfig dict), setting (GMPSetting.to_dict()), base_dir, elements, n_feat,
    model_state (best-validation weights incl. feature scalers, reference energies, sigma),
    reference_energies {element: eV}, sigma,
    resume: {model_state (last epoch), optimizer, scheduler, best_state, best_loss, best_epoch,
             bad_epochs, stopped_reason, learning_curve}   (for warm-start continuation)
    data_hash, split_hash, budget {epochs, subset_fraction}, epochs_run, n_train, created_at

Written atomically (temporary file in the same folder + ``os.replace``), so a reader never sees a
half-written file. Loads on CPU or GPU (``map_location``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mfhpo.atomic import atomic_open
from mfhpo.errors import MfhpoError

FORMAT_VERSION = 1
FORMAT_NAME = "mfhpo-potential"


def _versions() -> dict[str, str]:
    try:
        from importlib.metadata import version

        mv = version("mfhpo")
    except Exception:  # pragma: no cover - not installed
        mv = "unknown"
    # CPU results depend on the thread count in the last digits (float reductions): recorded so that a
    # retrain can use the same (mfhpo.study.incumbent.retrain). gmp_chunks: features are computed one
    # structure per chunk on the CPU (mfhpo.gmp.featurizer._run); checkpoints without it predate that.
    return {"mfhpo_version": str(mv), "torch_version": str(torch.__version__),
            "torch_threads": int(torch.get_num_threads()), "gmp_chunks": "per-structure"}


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


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MfhpoError(f"device '{device}' is not a valid torch device (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MfhpoError(f"device '{device}' requested but CUDA is not available on this machine")
    return dev


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
    """A checkpoint ready to predict: potential + GMP setting + dtype + device."""

    potential: Any
    setting: Any
    config: Any
    dtype: torch.dtype
    device: torch.device
    checkpoint: dict
    path: str = "<memory>"

    @property
    def elements(self) -> list[str]:
        return list(self.potential.elements)

    @property
    def reference_energies(self) -> dict[str, float]:
        return dict(self.checkpoint["reference_energies"])

    def featurize(self, images: Sequence, derivatives: bool, cache=None, progress: bool = False):
        from mfhpo.gmp.featurizer import featurize_many

        return featurize_many(list(images), self.setting, derivatives=derivatives, dtype=self.dtype,
                              device=self.device, cache=cache, progress=progress)

    def predict(self, images: Sequence, forces: bool = True, batch_size: int = 64, cache=None,
                progress: bool = False, source: str = "<data>"):
        """Energies (np (n,), eV) and forces (list of (natoms, 3) eV/Å, or None)."""
        from mfhpo.model import FeatureStore

        images = list(images)
        elem = [self.potential.element_index(a.get_chemical_symbols(), source=source) for a in images]
        feats = self.featurize(images, derivatives=forces, cache=cache, progress=progress)
        store = FeatureStore(feats, elem, device=self.device, dtype=self.dtype, derivatives=forces)
        e, f = predict_store(self.potential, store, forces=forces, batch_size=batch_size)
        e = e.detach().cpu().numpy().astype(np.float64)
        if f is None:
            return e, None
        f = f.detach().cpu().numpy().astype(np.float64)
        splits = np.cumsum([len(a) for a in images])[:-1]
        return e, list(np.split(f, splits))


def predict_store(pot, store, forces: bool, batch_size: int = 64):
    """Energies (n,) and concatenated forces (n_atoms, 3) in eV / eV/Å for every structure of a store."""
    pot.eval()
    es, fs = [], []
    ids = torch.arange(store.n, device=store.device)
    for s in range(0, store.n, batch_size):
        batch, _ = store.batch(ids[s:s + batch_size], derivatives=forces)
        if forces:
            with torch.enable_grad():
                e, f = pot(batch, forces=True)
            fs.append(f.detach())
        else:
            with torch.no_grad():
                e, _ = pot(batch, forces=False)
        es.append(e.detach())
    dt = store.dtype
    e = torch.cat(es) if es else torch.zeros(0, dtype=dt, device=store.device)
    f = (torch.cat(fs) if fs else torch.zeros(0, 3, dtype=dt, device=store.device)) if forces else None
    return e, f


def load_potential(path: str | Path, device: str | None = "cpu") -> LoadedPotential:
    """Load a checkpoint file for prediction on ``device`` (cpu, cuda, auto)."""
    dev = resolve_device(device)
    ck = load_checkpoint(path, map_location=dev)
    pot, cfg, dtype = build_potential(ck, dev)
    setting = setting_from_checkpoint(ck)
    return LoadedPotential(pot, setting, cfg, dtype, dev, ck, str(path))
