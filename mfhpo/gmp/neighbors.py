"""Neighbour lists for GMP: every (j, T) with ``|r_j + T - r_i| < cutoff`` except the centre itself.

Built on vesin's cell list (correct at cell faces, any number of periodic images, cells smaller than
the cutoff). Non-periodic axes get no images, whatever the box; a fully non-periodic structure may
have any cell, including none. The result is grouped by centre and excludes the centre itself
(its constant contribution is added by the featurizer); with ``unique=True`` it also carries the
unique (i, j) atom pairs, in (i, j) order and including every (i, i), used by the sparse
derivative layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from mfhpo.errors import MfhpoError


@dataclass
class NeighborPairs:
    """Pairs of one structure, grouped by centre ``i`` (not sorted by ``j``); the centre itself is
    not a pair (its periodic images are).

    ``i, j`` (npair,) int64; ``d`` (npair, 3) float64 displacement ``r_j + T - r_i``; ``dsq``
    (npair,) ``|d|^2``; ``center_start`` (natoms+1,) offsets of each centre's pairs. With
    ``unique=True`` also: ``pair_i, pair_j`` (nupair,) the unique (i, j), in (i, j) order, *always
    including (i, i)*; ``upair`` (npair,) index of each pair in that list; ``self_upair`` (natoms,)
    index of (i, i); ``ucenter_start`` (natoms+1,) offsets of each centre's unique pairs (else None).
    """

    natoms: int
    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    dsq: np.ndarray
    center_start: np.ndarray
    upair: np.ndarray | None = None
    pair_i: np.ndarray | None = None
    pair_j: np.ndarray | None = None
    self_upair: np.ndarray | None = None
    ucenter_start: np.ndarray | None = None

    @property
    def npair(self) -> int:
        return len(self.i)


_NL_CACHE: dict = {}


def _vesin(cutoff: float):
    from vesin import NeighborList

    nl = _NL_CACHE.get(cutoff)
    if nl is None:
        nl = NeighborList(cutoff=float(cutoff), full_list=False, algorithm="cell_list")  # half list
        _NL_CACHE[cutoff] = nl
    return nl


def neighbor_pairs(atoms: Atoms, cutoff: float, unique: bool = True) -> NeighborPairs:
    """Pairs of ``atoms`` with ``0 < |d| < cutoff``; ``unique=False`` skips the unique (i, j) list."""
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
        # each pair once; views into vesin's buffers (valid until its next call), copied below
        i, j, d = _vesin(cutoff).compute(points=pos, box=box, periodic=pbc.tolist() if pbc.any() else False,
                                         quantities="ijD", copy=False)
    else:
        i = j = np.zeros(0, dtype=np.int64)
        d = np.zeros((0, 3))
    dsq = np.einsum("ij,ij->i", d, d)
    keep = dsq < cutoff * cutoff  # strict, as AMPTorch
    zero = dsq == 0
    if zero.any():  # vesin never returns (i, i, T = 0), but be sure
        keep &= ~(zero & (i == j))
    if not keep.all():
        i, j, d, dsq = i[keep], j[keep], d[keep], dsq[keep]
    i, j, d, dsq = _full_list(n, i, j, d, dsq)
    center_start = np.searchsorted(i, np.arange(n + 1))
    nb = NeighborPairs(n, i, j, np.ascontiguousarray(d), dsq, center_start)
    if unique:
        _unique_pairs(nb)
    return nb


def _full_list(n: int, i, j, d, dsq):
    """Every pair (i, j, T) of a half list also as (j, i, -T), grouped by centre (stable sort by i;
    16-bit keys sort by radix)."""
    ii = np.concatenate([i, j])
    order = np.argsort(ii.astype(np.int16 if n < 1 << 15 else np.int64), kind="stable")
    jj = np.concatenate([j, i])
    dd = np.concatenate([d, -d])
    return (ii[order].astype(np.int64), jj[order].astype(np.int64), dd[order],
            np.concatenate([dsq, dsq])[order])


def _unique_pairs(nb: NeighborPairs) -> None:
    """The unique (i, j) list (with every (i, i)) and each pair's index in it."""
    n = nb.natoms
    ar = np.arange(n, dtype=np.int64)
    key = nb.i * n + nb.j
    self_key = ar * (n + 1)
    if n * n <= max(4 * len(key), 1 << 16):
        # dense (i, j) table: unique pairs in (i, j) order without sorting the pairs
        present = np.zeros(n * n, dtype=bool)
        present[key] = True
        present[self_key] = True
        ukey = np.flatnonzero(present)
        index = np.zeros(n * n, dtype=np.int64)
        index[ukey] = np.arange(len(ukey))
        upair = index[key]
        self_upair = index[self_key]
    else:
        ukey, inv = np.unique(np.concatenate([self_key, key]), return_inverse=True)
        self_upair, upair = inv[:n], inv[n:]
    nb.upair = upair
    nb.pair_i, nb.pair_j = ukey // n, ukey % n
    nb.self_upair = self_upair
    nb.ucenter_start = np.searchsorted(nb.pair_i, np.arange(n + 1))


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
