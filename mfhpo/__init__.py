"""mfhpo: multi-fidelity Bayesian hyperparameter optimization for GMP + SingleNN potentials.

Library API (imported on first use, so ``import mfhpo`` stays fast)::

    import mfhpo

    study = mfhpo.Study.from_yaml("spaces/demo.yaml", rundir="runs/demo")   # mfhpo/study/api.py
    study.optimize(trials=12, workers=2)                         # run or resume (SMAC over Dask)
    best = study.best_trial                                      # TrialRecord; study.trials: all of them
    study.export_incumbent("runs/demo/incumbent")                # config, checkpoint, bundle.zip
    result = mfhpo.train(cfg, dataset, budget, out_dir)          # TrainResult (mfhpo/train.py)
    pot = mfhpo.load_potential("checkpoint.pt", device="cpu")    # LoadedPotential (mfhpo/checkpoint.py)
    metrics = mfhpo.evaluate("checkpoint.pt", "data.extxyz")     # Metrics, with baselines (mfhpo/evaluate.py)
    metrics = mfhpo.score(pot, dataset)                          # the same for a Dataset (mfhpo/scoring.py)
    atoms.calc = mfhpo.MfhpoCalculator("checkpoint.pt")          # ASE calculator (mfhpo/calculator.py)

``mfhpo.train`` and ``mfhpo.evaluate`` are the functions even after their modules of the same name
are imported (``from mfhpo.train import make_split`` keeps working).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "train": "mfhpo.train",
    "evaluate": "mfhpo.evaluate",
    "load_potential": "mfhpo.checkpoint",
    "LoadedPotential": "mfhpo.checkpoint",
    "score": "mfhpo.scoring",
    "Metrics": "mfhpo.metrics",
    "MfhpoCalculator": "mfhpo.calculator",
    "FeaturizeOptions": "mfhpo.gmp.featurizer",
    "Study": "mfhpo.study.api",
    "TrialRecord": "mfhpo.study.trial",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mfhpo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Importing the submodule ``mfhpo.train`` (or ``mfhpo.evaluate``) sets it as an attribute of the
    package; the package attribute stays the function of the same name."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _EXPORTS:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
