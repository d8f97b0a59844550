"""Score a potential on a set of structures: the one path from a potential and labelled structures
to the metrics record with its baselines (``mfhpo evaluate``, the end of a training, incumbent test
metrics and report parity plots all come through here).

    metrics = score(potential, dataset)                     # Metrics (mfhpo.metrics)
    metrics, energies, forces = score_with_predictions(potential, dataset)

``potential`` is a :class:`mfhpo.checkpoint.LoadedPotential` (``mfhpo.load_potential(path)``, or the
one a training builds) or a checkpoint path. The energy baseline is the per-element linear fit with
the potential's reference energies (fitted on its training split); the force baseline is zero force.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from mfhpo.metrics import Metrics, dataset_metrics


def score_with_predictions(potential, dataset, *, indices: Optional[Sequence[int]] = None, features=None,
                           batch_size: int = 64, device: Optional[str] = None, source: Optional[str] = None):
    """``(Metrics, energies (n,) eV, forces list of (natoms, 3) eV/Å or None)`` of ``potential`` on
    ``dataset`` (or on its structures ``indices``, e.g. a split).

    Forces are predicted when the data have force labels. ``features``: a
    :class:`mfhpo.model.FeatureStore` of exactly these structures when their fingerprints are already
    computed (a training's stores); otherwise they are featurized with the potential's GMP setting.
    ``device`` only applies when ``potential`` is a path (default cpu). ``source`` names the data in
    errors (default: the dataset's source).
    """
    from mfhpo.checkpoint import LoadedPotential, load_potential

    if not isinstance(potential, LoadedPotential):
        potential = load_potential(Path(potential), device=device or "cpu")
    if indices is not None:
        dataset = dataset.subset(indices)
    forces = dataset.has_forces
    if features is None:
        source = source or dataset.source
        potential.potential.element_index(dataset.elements, source=source)  # unknown elements: one line, first
        e, f = potential.predict(dataset.images, forces=forces, batch_size=batch_size, source=source)
    else:
        e, f = potential.predict_features(features, forces=forces, batch_size=batch_size)
    return Metrics.from_dict(dataset_metrics(dataset, e, f, potential.reference_energies)), e, f


def score(potential, dataset, *, indices: Optional[Sequence[int]] = None, features=None, batch_size: int = 64,
          device: Optional[str] = None, source: Optional[str] = None) -> Metrics:
    """The metrics record (model errors, counts, baselines) of ``potential`` on ``dataset``; see
    :func:`score_with_predictions` for the arguments."""
    return score_with_predictions(potential, dataset, indices=indices, features=features, batch_size=batch_size,
                                  device=device, source=source)[0]

