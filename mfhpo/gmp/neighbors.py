"""Neighbour lists for GMP: every (j, T) with ``|r_j + T - r_i| < cutoff``, the centre itself included.

Built on vesin's cell list (correct at cell faces, any number of periodic images, cells smaller than
the cutoff). Non-periodic axes get no images, whatever the box; a fully non-periodic structure may
have any cell, including none. The result is grouped by centre (self pair first) and also
carries the unique (i, j) atom pairs, in (i, j) order, used by the sparse derivative layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from ase import Atoms

from mfhpo.errors import MfhpoError


@dataclass
class NeighborPairs:
    """Pairs of one structure, sorted by ``(i, j)``.

    ``i, j`` (npair,) int64; ``d`` (npair, 3) float64 displacement ``r_j + T - r_i``;
    ``upair`` (npair,) index into the unique (i, j) list ``pair_i, pair_j`` (nupair,);
    ``self_upair`` (natoms,) index of (i, i) in that list; ``center_start`` (natoms+1,) offsets of
    each centre's pairs; ``ucenter_start`` (natoms+1,) offsets of each centre's unique pairs. Pairs are
    grouped by centre (not sorted by j). The unique-pair fields are None with ``unique=False``.
    """

    natoms: int
    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    upair: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    self_upair: np.ndarray
    center_start: np.ndarray
    ucenter_start: Optional[np.ndarray] = None

    @property
    def npair(self) -> int:
        return len(self.i)


_NL_CACHE: dict = {}


def _vesin(cutoff: float):
    from vesin import NeighborList

    nl = _NL_CACHE.get(cutoff)
    if nl is None:
        nl = NeighborList(cutoff=float(cutoff), full_list=True, algorithm="cell_list")
        _NL_CACHE[cutoff] = nl
    return nl


def neighbor_pairs(atoms: Atoms, cutoff: float, unique: bool = True) -> NeighborPairs:
    """Pairs of ``atoms`` within ``cutoff``; ``unique=False`` skips the unique (i, j) list (those
    fields are None; pairs are then only grouped by centre, not sorted by j)."""
    n = len(atoms)
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if n == 0:
        raise MfhpoError("structure has no atoms")
    if pbc.any():
        if abs(np.linalg.det(cell)) < 1e-9:
            # vesin needs a full-rank box even for mixed pbc; complete it along non-periodic axes
            cell = _complete_cell(cell, pbc, pos, cutoff)
        box = cell
    else:
        box = np.zeros((3, 3))
    if n > 1 or pbc.any():
        i, j, S = _vesin(cutoff).compute(points=pos, box=box, periodic=pbc.tolist() if pbc.any() else False,
                                         quantities="ijS")
        i = i.astype(np.int64)
        j = j.astype(np.int64)
        d = pos[j] - pos[i]
        if len(i):
            d += S.astype(np.float64) @ box
    else:
        i = j = np.zeros(0, dtype=np.int64)
        d = np.zeros((0, 3))
    keep = np.einsum("ij,ij->i", d, d) < cutoff * cutoff
    ar = np.arange(n, dtype=np.int64)
    i, j, d = i[keep], j[keep], d[keep]
    if len(i) < 2 or bool(np.all(i[1:] >= i[:-1])):
        # vesin already groups pairs by centre: insert each centre's self pair in front (O(npair))
        at = np.searchsorted(i, ar)
        i = np.insert(i, at, ar)
        j = np.insert(j, at, ar)
        d = np.insert(d, at, 0.0, axis=0)
    else:
        order = np.argsort(np.concatenate([ar, i]), kind="stable")
        i = np.concatenate([ar, i])[order]
        j = np.concatenate([ar, j])[order]
        d = np.concatenate([np.zeros((n, 3)), d])[order]
    center_start = np.searchsorted(i, np.arange(n + 1))
    if not unique:
        return NeighborPairs(n, i, j, np.ascontiguousarray(d), None, None, None, None, center_start)
    key = i * n + j
    if n * n <= max(4 * len(key), 1 << 16):
        # dense (i, j) table: unique pairs in (i, j) order without sorting the pairs
        present = np.zeros(n * n, dtype=bool)
        present[key] = True
        ukey = np.flatnonzero(present)
        index = np.zeros(n * n, dtype=np.int64)
        index[ukey] = np.arange(len(ukey))
        upair = index[key]
    else:
        ukey, upair = np.unique(key, return_inverse=True)
    pair_i, pair_j = ukey // n, ukey % n
    self_upair = np.searchsorted(ukey, ar * n + ar)
    ucenter_start = np.searchsorted(pair_i, np.arange(n + 1))
    return NeighborPairs(n, i, j, np.ascontiguousarray(d), upair, pair_i, pair_j, self_upair, center_start,
                         ucenter_start)


def _complete_cell(cell: np.ndarray, pbc: np.ndarray, pos: np.ndarray, cutoff: float) -> np.ndarray:
    """Replace missing non-periodic cell vectors by orthogonal ones large enough to hold the atoms."""
    cell = cell.copy()
    for ax in range(3):
        if not pbc[ax] and np.linalg.norm(cell[ax]) < 1e-9:
            others = [cell[k] for k in range(3) if k != ax]
            v = np.cross(others[0], others[1])
            if np.linalg.norm(v) < 1e-9:
                v = np.eye(3)[ax]
            v = v / np.linalg.norm(v)
            span = np.ptp(pos @ v) if len(pos) else 0.0
            cell[ax] = v * (span + 2 * cutoff + 1.0)
    if abs(np.linalg.det(cell)) < 1e-9:
        raise MfhpoError("periodic cell is singular")
    return cell
