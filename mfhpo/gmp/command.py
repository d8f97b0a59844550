"""``mfhpo featurize`` (:func:`featurize_file`): fingerprints of every frame of a structure file, written to one ``.npz``.

File layout (docs/featurizer.md, "The featurize command"): ``natoms`` (nimg,), ``layout``
(``"sparse"`` or ``"dense"``), per image ``fp_000`` (natoms, nfeat) and with derivatives either the
library's sparse layout ``pair_i_000``, ``pair_j_000`` (npair,) int64 and ``dfp_000`` (npair, nfeat,
3) = d fp[pair_i] / d r[pair_j] (default), or with ``dense=True`` ``dfp_000`` (natoms, nfeat,
natoms, 3) = d fp[i, f] / d r[j, a], the fixtures' layout.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfhpo.atomic import atomic_open
from mfhpo.data import geometry_problem, read_structures
from mfhpo.errors import MfhpoError


@dataclass(frozen=True)
class FeaturizedFile:
    """What :func:`featurize_file` wrote."""

    path: Path
    n_structures: int
    n_features: int
    derivatives: str  # "", "sparse" or "dense"

    def summary(self) -> str:
        kind = f" + {self.derivatives} derivatives" if self.derivatives else ""
        return f"wrote {self.n_structures} structures x {self.n_features} features{kind} to {self.path}"


def featurize_file(structures, setting, out, derivatives: bool = False, dtype: str = "float64",
                   device: str = "cpu", dense: bool = False, options=None) -> FeaturizedFile:
    """Featurize every frame of ``structures`` with the AMPTorch-style ``setting`` JSON into ``out``
    (``.npz`` appended when missing; ``options``: :class:`~mfhpo.gmp.featurizer.FeaturizeOptions`, how
    the work is chunked); every frame is validated before anything is computed."""
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting

    structures, setting_path, out = Path(structures), Path(setting), Path(out)
    if dtype not in ("float64", "float32"):
        raise MfhpoError(f"--dtype must be float64 or float32, got {dtype!r}")
    if dense and not derivatives:
        raise MfhpoError("--dense only applies with --derivatives")
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if not out.parent.exists():
        raise MfhpoError(f"{out.parent}: output directory does not exist")
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    gs = GMPSetting.from_amptorch_json(setting_path)
    images = read_structures(structures)
    # validate every frame before computing anything
    for k, atoms in enumerate(images):
        where = f"{structures}: frame {k}"
        if len(atoms) == 0:
            raise MfhpoError(f"{where}: has no atoms")
        geometry = geometry_problem(atoms)  # what the neighbour list cannot take (mfhpo.data)
        if geometry:
            raise MfhpoError(f"{where}: {geometry}")
        missing = sorted(set(atoms.get_chemical_symbols()) - set(gs.elements))
        if missing:
            raise MfhpoError(f"{where}: element(s) {', '.join(missing)} have no density in {setting_path}")
        if np.any(atoms.pbc) and abs(atoms.cell.volume) < 1e-9 and np.all(atoms.pbc):
            raise MfhpoError(f"{where}: periodic cell has zero volume")
    feats = featurize_many(images, gs, derivatives=derivatives, dtype=tdtype, device=device,
                           source=str(structures), options=options)
    with atomic_open(out, fsync=False, suffix=".npz") as fh:
        write_npz(fh, feats, derivatives=derivatives, dense=dense)
    return FeaturizedFile(out, len(images), gs.nfeat, ("dense" if dense else "sparse") if derivatives else "")


def write_npz(fh, feats, derivatives: bool, dense: bool = False) -> None:
    """Write ``feats`` (a list of :class:`~mfhpo.gmp.featurizer.Features`) in the layout above to the
    open binary file ``fh``, one array at a time (``np.load`` reads it; no dict of all arrays is
    built, and dense derivative arrays exist one at a time)."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        def put(name: str, array) -> None:
            with zf.open(name + ".npy", mode="w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)

        put("natoms", np.array([f.natoms for f in feats], dtype=np.int64))
        put("layout", np.array("dense" if dense else "sparse"))
        for k, f in enumerate(feats):
            put(f"fp_{k:03d}", f.fp.detach().cpu().numpy())
            if not derivatives:
                continue
            if dense:
                put(f"dfp_{k:03d}", f.dense_dfp().cpu().numpy())
            else:
                put(f"pair_i_{k:03d}", f.pair_i.cpu().numpy())
                put(f"pair_j_{k:03d}", f.pair_j.cpu().numpy())
                put(f"dfp_{k:03d}", f.dfp.detach().cpu().numpy())


def dense_from_file(z, k: int) -> np.ndarray:
    """Image ``k``'s derivatives from a loaded ``mfhpo featurize`` file as a dense (natoms, nfeat,
    natoms, 3) array, whichever layout the file has."""
    dfp = z[f"dfp_{k:03d}"]
    if str(z["layout"]) == "dense":
        return dfp
    n = int(z["natoms"][k])
    out = np.zeros((n, dfp.shape[1], n, 3), dtype=dfp.dtype)
    out[z[f"pair_i_{k:03d}"], :, z[f"pair_j_{k:03d}"], :] = dfp
    return out
