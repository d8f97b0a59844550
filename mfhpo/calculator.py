"""ASE calculator for a trained mfhpo potential (energy, free_energy, forces in eV, eV/Å)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mfhpo.checkpoint import LoadedPotential, load_potential


class MfhpoCalculator(Calculator):
    """``MfhpoCalculator("checkpoint.pt", device="cpu")``.

    Fingerprints and their derivatives are computed on the fly for every new geometry with the GMP
    setting stored in the checkpoint; forces are the exact negative gradient of the energy.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, checkpoint_path: str | Path | LoadedPotential, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        if isinstance(checkpoint_path, LoadedPotential):
            self.potential = checkpoint_path
        else:
            self.potential = load_potential(checkpoint_path, device=device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_forces = "forces" in properties
        e, f = self.potential.predict([self.atoms], forces=want_forces, batch_size=1,
                                      source="MfhpoCalculator")
        self.results["energy"] = float(e[0])
        self.results["free_energy"] = float(e[0])
        if f is not None:
            self.results["forces"] = np.asarray(f[0], dtype=np.float64)
