"""A small built-in dataset that needs no external file: rattled metal slabs with C/H/O adsorbates,
labelled with ASE's EMT calculator (energies in eV, forces in eV/Å).

It mimics OC20's layout on a small scale: periodic slabs, a ``FixAtoms`` constraint on the bottom
layer, tags 0 (fixed sub-surface) / 1 (surface) / 2 (adsorbate), and an ``info["sid"]`` per
"system" (slab + adsorbate + site) so that group-wise splits can be tried.

The defaults (Cu and Pt slabs, O / H / CO adsorbates 1.6-2.0 Å above their site) give a dataset that
a small model learns within the demo study's budget: the exported incumbent beats the per-element
linear fit and the zero-force baseline several times over. The wider choice (six metals, five
adsorbates, 1.2-2.0 Å) is kept as ``WIDE`` for benchmarks: its closest adsorbates carry forces of up
to ~130 eV/Å, whose heavy tail no small model fits from a few hundred images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc111, fcc100
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

ALL_METALS = ("Cu", "Pt", "Ni", "Pd", "Ag", "Au")
ALL_ADSORBATES = {
    "O": Atoms("O"),
    "H": Atoms("H"),
    "C": Atoms("C"),
    "OH": Atoms("OH", positions=[(0, 0, 0), (0, 0, 0.97)]),
    "CO": Atoms("CO", positions=[(0, 0, 0), (0, 0, 1.15)]),
}


@dataclass(frozen=True)
class DemoChoice:
    """Which systems the generator draws from: metals, adsorbates and adsorbate heights (Å)."""

    metals: tuple[str, ...] = ("Cu", "Pt")
    adsorbates: tuple[str, ...] = ("O", "H", "CO")
    height: tuple[float, float] = (1.6, 2.0)


DEFAULT = DemoChoice()
WIDE = DemoChoice(metals=ALL_METALS, adsorbates=tuple(ALL_ADSORBATES), height=(1.2, 2.0))


def _slab(metal: str, facet: str) -> Atoms:
    build = fcc111 if facet == "111" else fcc100
    slab = build(metal, size=(2, 2, 3), vacuum=6.0)
    z = slab.positions[:, 2]
    layers = np.unique(np.round(z, 3))
    slab.set_tags(np.where(np.isclose(z, layers[0], atol=1e-2), 0, 1))
    slab.set_constraint(FixAtoms(mask=np.isclose(z, layers[0], atol=1e-2)))
    return slab


def generate_demo(n_structures: int = 240, seed: int = 0, rattle: float = 0.08,
                  choice: DemoChoice = DEFAULT) -> list[Atoms]:
    """Generate ``n_structures`` labelled images (about 13-14 atoms each) in a few seconds."""
    rng = np.random.default_rng(seed)
    systems = []
    for metal in choice.metals:
        for facet in ("111", "100"):
            for ads in choice.adsorbates:
                systems.append((metal, facet, ads))
    images: list[Atoms] = []
    calc = EMT()
    k = 0
    while len(images) < n_structures:
        metal, facet, ads = systems[int(rng.integers(len(systems)))]
        slab = _slab(metal, facet)
        site = "ontop" if ads in ("OH", "CO") else ("fcc" if facet == "111" else "hollow")
        adsorbate = ALL_ADSORBATES[ads].copy()
        n_slab = len(slab)
        low, high = choice.height
        add_adsorbate(slab, adsorbate, height=low + rng.uniform(0.0, high - low), position=site)
        tags = slab.get_tags()
        tags[n_slab:] = 2
        slab.set_tags(tags)
        # rattle free atoms only, then small random strain-free displacements of the adsorbate
        free = np.ones(len(slab), bool)
        free[slab.constraints[0].index] = False
        slab.positions[free] += rng.normal(0.0, rattle, size=(free.sum(), 3))
        slab.calc = calc
        e = slab.get_potential_energy()
        f = slab.get_forces(apply_constraint=False)
        slab.calc = SinglePointCalculator(slab, energy=float(e), forces=f)
        slab.info.pop("adsorbate_info", None)  # a dict that extxyz cannot store
        slab.info["sid"] = f"{metal}{facet}-{ads}"
        slab.info["demo_index"] = k
        images.append(slab)
        k += 1
    return images


# studies generate their data with demo_seed 0 (spaces/demo.yaml, the DataSection default);
# `mfhpo demo-data` defaults to another seed, so its structures are none of a study's training frames
STUDY_SEED = 0
HELD_OUT_SEED = 1


def write_demo(path: str | Path, n_structures: int = 240, seed: int = 0) -> Path:
    """Write the demo dataset to an extxyz (or any ASE format by suffix) file."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = generate_demo(n_structures=n_structures, seed=seed)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    ase.io.write(str(tmp), images)
    tmp.replace(path)
    return path
