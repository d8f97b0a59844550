"""Data layer: read and validate structures, hash them, split them, fit reference energies.

Everything downstream (featurizer, trainer, study) takes a :class:`Dataset`: the ASE images plus
their labels pulled out once into numpy arrays (energies in eV, forces in eV/Å, *raw* forces, i.e.
not zeroed by ``FixAtoms``), a free-atom mask per image, and a content hash.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from mfhpo.errors import MfhpoError

# 1 kcal/mol in eV (ase.units: kcal / mol)
KCAL_PER_MOL_IN_EV = 0.04336410390059322


# --------------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------------


def structure_hash(atoms: Atoms) -> str:
    """Stable hash of what a fingerprint depends on: numbers, positions, cell, pbc (not labels)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.pbc, dtype=np.uint8).tobytes())
    return h.hexdigest()[:32]


def _labels_hash(h: "hashlib._Hash", energy: float, forces: np.ndarray | None, free: np.ndarray) -> None:
    h.update(np.float64(energy).tobytes())
    if forces is not None:
        h.update(np.ascontiguousarray(forces, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(free, dtype=np.uint8).tobytes())


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _read_npz_md17(path: Path) -> list[Atoms]:
    """Read an MD17 (``z, R, E, F``) or rMD17 (``nuclear_charges, coords, energies, forces``) file.

    Both store kcal/mol and kcal/mol/Å; we convert to eV and eV/Å.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    with np.load(path) as z:
        keys = set(z.files)
        if {"nuclear_charges", "coords", "energies"} <= keys:
            numbers, coords, energies = z["nuclear_charges"], z["coords"], z["energies"]
            forces = z["forces"] if "forces" in keys else None
        elif {"z", "R", "E"} <= keys:
            numbers, coords, energies = z["z"], z["R"], z["E"]
            forces = z["F"] if "F" in keys else None
        else:
            raise MfhpoError(
                f"{path}: not an MD17/rMD17 .npz (need keys nuclear_charges/coords/energies or z/R/E; "
                f"found {sorted(keys)})"
            )
    energies = np.asarray(energies, dtype=np.float64).reshape(-1) * KCAL_PER_MOL_IN_EV
    images = []
    for k in range(len(coords)):
        atoms = Atoms(numbers=np.asarray(numbers).reshape(-1), positions=coords[k], pbc=False)
        f = None if forces is None else np.asarray(forces[k], dtype=np.float64) * KCAL_PER_MOL_IN_EV
        atoms.calc = SinglePointCalculator(atoms, energy=float(energies[k]), forces=f)
        images.append(atoms)
    return images


def read_structures(path: str | Path, index: str = ":") -> list[Atoms]:
    """Read every frame of an ASE-readable file (traj, extxyz, ASE db, ...) or an MD17 ``.npz``."""
    path = Path(path)
    if not path.exists():
        raise MfhpoError(f"{path}: file not found")
    if path.suffix == ".npz":
        images = _read_npz_md17(path)
        return images if index == ":" else images[_parse_index(index)]
    import ase.io

    try:
        images = ase.io.read(str(path), index)
    except Exception as exc:  # ASE raises many types; turn them into one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MfhpoError(f"{path}: cannot read structures ({msg})") from None
    if isinstance(images, Atoms):
        images = [images]
    if len(images) == 0:
        raise MfhpoError(f"{path}: contains no structures")
    return list(images)


def _parse_index(index: str) -> slice:
    parts = [int(p) if p else None for p in index.split(":")]
    return slice(*parts)


def free_mask(atoms: Atoms) -> np.ndarray:
    """True for atoms not held by a ``FixAtoms`` constraint (the OC20 scoring convention)."""
    mask = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.index] = False
    return mask


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


# What the neighbour list and the featurizer are built for (checked for every frame on loading, so
# that no data file reaches native code with values it cannot take).
MAX_ABS_COORDINATE = 1.0e4  # Å, |x|, |y|, |z| of every atom
MAX_CELL_LENGTH = 1.0e4  # Å, length of each cell vector
MIN_PLANE_SPACING = 0.5  # Å, distance between opposite faces of a periodic cell, along periodic axes


def geometry_problem(atoms: Atoms) -> str | None:
    """Why the neighbour list cannot take this structure (None when it can): unknown elements, NaN or
    out-of-range coordinates, a cell that is too large, degenerate or too thin."""
    numbers = np.asarray(atoms.numbers)
    bad = (numbers < 1) | (numbers > 118)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        sym = atoms.get_chemical_symbols()[k] if 0 <= numbers[k] <= 118 else str(numbers[k])
        return f"atom {k}: unknown element {sym!r} (atomic number {int(numbers[k])}); every atom needs a real element"
    pos = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        k = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        return f"positions contain NaN or inf (atom {k})"
    far = np.abs(pos).max(axis=1) > MAX_ABS_COORDINATE
    if far.any():
        k = int(np.flatnonzero(far)[0])
        return (f"atom {k}: coordinate {float(np.abs(pos[k]).max()):.6g} Å is outside |r| <= "
                f"{MAX_ABS_COORDINATE:g} Å")
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        return "cell contains NaN or inf"
    lengths = np.linalg.norm(cell, axis=1)
    if (lengths > MAX_CELL_LENGTH).any():
        return f"cell vector length {float(lengths.max()):.6g} Å is above {MAX_CELL_LENGTH:g} Å"
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        vol = abs(float(np.linalg.det(cell)))
        if vol < 1e-6:
            return f"periodic cell has zero volume (cell {np.round(cell, 6).tolist()})"
        for ax in np.flatnonzero(pbc):
            other = [c for c in range(3) if c != ax]
            area = float(np.linalg.norm(np.cross(cell[other[0]], cell[other[1]])))
            spacing = vol / area if area > 0 else 0.0
            if spacing < MIN_PLANE_SPACING:
                return (f"periodic cell is {spacing:.3g} Å thin along cell vector {int(ax)} (below "
                        f"{MIN_PLANE_SPACING:g} Å)")
    return None


def validate_images(
    images: Sequence[Atoms],
    source: str,
    require_energy: bool = True,
    require_forces: bool = False,
    known_elements: Iterable[str] | None = None,
) -> None:
    """Raise :class:`MfhpoError` naming ``source``, the frame and the problem, on the first bad frame."""
    known = None if known_elements is None else set(known_elements)
    for k, atoms in enumerate(images):
        where = f"{source}: frame {k}"
        if len(atoms) == 0:
            raise MfhpoError(f"{where}: has no atoms")
        geometry = geometry_problem(atoms)
        if geometry:
            raise MfhpoError(f"{where}: {geometry}")
        if known is not None:
            missing = sorted(set(atoms.get_chemical_symbols()) - known)
            if missing:
                raise MfhpoError(f"{where}: element(s) {', '.join(missing)} have no density parameters")
        if require_energy or require_forces:
            if atoms.calc is None:
                raise MfhpoError(f"{where}: has no energy/forces (no calculator results stored)")
        if require_energy:
            try:
                e = atoms.get_potential_energy()
            except Exception:
                raise MfhpoError(f"{where}: missing energy") from None
            if e is None or not np.isfinite(e):
                raise MfhpoError(f"{where}: energy is NaN or inf")
        if require_forces:
            try:
                f = atoms.get_forces(apply_constraint=False)
            except Exception:
                raise MfhpoError(f"{where}: missing forces") from None
            if f is None or f.shape != (len(atoms), 3):
                raise MfhpoError(f"{where}: missing forces")
            if not np.all(np.isfinite(f)):
                raise MfhpoError(f"{where}: forces contain NaN or inf")


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Images with labels pulled out once. Forces are raw (not zeroed on fixed atoms)."""

    images: list[Atoms]
    energies: np.ndarray  # (n,) eV
    forces: list[np.ndarray] | None  # n x (natoms, 3) eV/Å, or None when the data has none
    free: list[np.ndarray]  # n x (natoms,) bool
    source: str = "<memory>"
    groups: np.ndarray | None = None  # optional group label per image (e.g. OC20 sid)
    _hash: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def natoms(self) -> np.ndarray:
        return np.array([len(a) for a in self.images], dtype=np.int64)

    @property
    def elements(self) -> list[str]:
        """Sorted element symbols present in the data."""
        return sorted({s for a in self.images for s in a.get_chemical_symbols()})

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    def hash(self) -> str:
        """Content hash of structures and labels (stable across runs and machines)."""
        if self._hash is None:
            h = hashlib.sha256()
            for k, atoms in enumerate(self.images):
                h.update(structure_hash(atoms).encode())
                _labels_hash(h, self.energies[k], None if self.forces is None else self.forces[k], self.free[k])
            self._hash = h.hexdigest()[:32]
        return self._hash

    def structure_hashes(self) -> list[str]:
        return [structure_hash(a) for a in self.images]

    def subset(self, indices: Sequence[int]) -> "Dataset":
        idx = [int(i) for i in indices]
        return Dataset(
            images=[self.images[i] for i in idx],
            energies=self.energies[idx],
            forces=None if self.forces is None else [self.forces[i] for i in idx],
            free=[self.free[i] for i in idx],
            source=self.source,
            groups=None if self.groups is None else self.groups[idx],
        )

    @classmethod
    def from_images(
        cls,
        images: Sequence[Atoms],
        source: str = "<memory>",
        require_forces: bool = False,
        group_key: str | None = None,
        known_elements: Iterable[str] | None = None,
    ) -> "Dataset":
        images = list(images)
        validate_images(images, source, require_energy=True, require_forces=require_forces,
                        known_elements=known_elements)
        energies = np.array([a.get_potential_energy() for a in images], dtype=np.float64)
        per_frame = [_frame_forces(a) for a in images]
        lacking = [k for k, f in enumerate(per_frame) if f is None]
        if lacking and len(lacking) < len(images):
            shown = ", ".join(str(k) for k in lacking[:10]) + (", ..." if len(lacking) > 10 else "")
            raise MfhpoError(f"{source}: frame(s) {shown} ({len(lacking)} of {len(images)}) have no forces while the "
                             "others do; label every frame or none")
        forces = None if lacking else per_frame
        if forces is not None and not all(np.all(np.isfinite(f)) for f in forces):
            validate_images(images, source, require_energy=True, require_forces=True)
        groups = None
        if group_key is not None:
            missing = [k for k, a in enumerate(images) if group_key not in a.info]
            if missing:
                raise MfhpoError(f"{source}: frame {missing[0]}: info has no group key '{group_key}'")
            groups = np.array([str(a.info[group_key]) for a in images])
        return cls(images=images, energies=energies, forces=forces,
                   free=[free_mask(a) for a in images], source=source, groups=groups)


def _frame_forces(atoms: Atoms) -> np.ndarray | None:
    """Raw forces of one frame, or None when the frame stores none."""
    try:
        f = atoms.get_forces(apply_constraint=False)
    except Exception:
        return None
    if f is None or np.shape(f) != (len(atoms), 3):
        return None
    return np.array(f, dtype=np.float64)


def load_dataset(
    path: str | Path,
    require_forces: bool = False,
    group_key: str | None = None,
    known_elements: Iterable[str] | None = None,
    max_force: float | None = None,
) -> Dataset:
    """Read and validate a file. ``max_force`` drops frames whose largest |F| component exceeds it."""
    images = read_structures(path)
    ds = Dataset.from_images(images, source=str(path), require_forces=require_forces,
                             group_key=group_key, known_elements=known_elements)
    if max_force is not None and ds.forces is not None:
        keep = [k for k, f in enumerate(ds.forces) if np.abs(f).max() <= max_force]
        ds = ds.subset(keep)
        if len(ds) == 0:
            raise MfhpoError(f"{path}: no frame left after filtering max |F| <= {max_force} eV/Å")
    return ds


# --------------------------------------------------------------------------------------------
# splits and nested subsets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}


def split_indices(
    n: int,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    groups: Sequence | None = None,
) -> Split:
    """Seeded random split of ``range(n)``; with ``groups`` whole groups go to one side.

    Fractions count images (for groups: groups are assigned in shuffled order until the
    running image count reaches the fraction). Indices are returned sorted.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise MfhpoError(f"split fractions must be in [0, 1) and sum below 1 (val={val_fraction}, test={test_fraction})")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_test = int(round(test_fraction * n))
        n_val = int(round(val_fraction * n))
        test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    else:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise MfhpoError(f"group labels ({len(groups)}) do not match the number of images ({n})")
        uniq = np.unique(groups)
        order = uniq[rng.permutation(len(uniq))]
        test_l, val_l, train_l = [], [], []
        count_test = count_val = 0
        for g in order:
            members = np.flatnonzero(groups == g)
            if count_test < test_fraction * n:
                test_l.append(members); count_test += len(members)
            elif count_val < val_fraction * n:
                val_l.append(members); count_val += len(members)
            else:
                train_l.append(members)
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
        test, val, train = cat(test_l), cat(val_l), cat(train_l)
    split = Split(np.sort(train).astype(np.int64), np.sort(val).astype(np.int64), np.sort(test).astype(np.int64))
    if len(split.train) == 0:
        raise MfhpoError(f"empty training split (n={n}, val={val_fraction}, test={test_fraction})")
    return split


def nested_subset(train: Sequence[int], fraction: float, seed: int = 0) -> np.ndarray:
    """The first ``ceil(fraction * len(train))`` images of one seeded permutation of ``train``.

    Because the permutation depends only on ``train`` and ``seed``, the subset for a larger
    fraction always contains the subset for a smaller one (nested subsets for the fidelity).
    """
    if not 0 < fraction <= 1:
        raise MfhpoError(f"subset fraction must be in (0, 1], got {fraction}")
    train = np.asarray(train, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(train))
    k = max(1, int(math.ceil(fraction * len(train) - 1e-9)))
    return np.sort(train[perm[:k]])


# --------------------------------------------------------------------------------------------
# per-element reference energies (the linear baseline)
# --------------------------------------------------------------------------------------------


def composition_matrix(images: Sequence[Atoms], elements: Sequence[str]) -> np.ndarray:
    col = {e: k for k, e in enumerate(elements)}
    X = np.zeros((len(images), len(elements)))
    for r, atoms in enumerate(images):
        for s in atoms.get_chemical_symbols():
            X[r, col[s]] += 1
    return X


def fit_reference_energies(images: Sequence[Atoms], energies: np.ndarray, elements: Sequence[str] | None = None) -> dict[str, float]:
    """Least-squares per-element energies E ≈ Σ_e n_e ε_e (minimum-norm where compositions are collinear).

    For a single composition (e.g. aspirin) this reproduces the mean energy exactly.
    """
    if elements is None:
        elements = sorted({s for a in images for s in a.get_chemical_symbols()})
    X = composition_matrix(images, elements)
    coef, *_ = np.linalg.lstsq(X, np.asarray(energies, dtype=np.float64), rcond=None)
    return {e: float(c) for e, c in zip(elements, coef)}


def reference_energy(atoms: Atoms, refs: dict[str, float]) -> float:
    """Sum of per-element reference energies; elements unseen in training count 0."""
    return float(sum(refs.get(s, 0.0) for s in atoms.get_chemical_symbols()))
