"""``mfhpo featurize``: fingerprints of every frame of a structure file, in the fixtures' npz layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mfhpo.atomic import atomic_open
from mfhpo.data import geometry_problem, read_structures
from mfhpo.errors import MfhpoError


def featurize_command(structures, setting, out, derivatives: bool = False, dtype: str = "float64",
                      device: str = "cpu") -> Path:
    """Write ``OUT.npz`` with ``natoms``, ``fp_000``, ... and with derivatives dense ``dfp_000``, ...

    ``dfp_k`` has shape (natoms, nfeat, natoms, 3) = d fp[i, f] / d r[j, a].
    """
    from mfhpo.gmp.featurizer import featurize_many
    from mfhpo.gmp.setting import GMPSetting

    structures, setting_path, out = Path(structures), Path(setting), Path(out)
    if dtype not in ("float64", "float32"):
        raise MfhpoError(f"--dtype must be float64 or float32, got {dtype!r}")
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
                           source=str(structures))
    arrays = {"natoms": np.array([len(a) for a in images], dtype=np.int64)}
    for k, f in enumerate(feats):
        arrays[f"fp_{k:03d}"] = f.fp.detach().cpu().numpy()
        if derivatives:
            arrays[f"dfp_{k:03d}"] = f.dense_dfp().cpu().numpy()
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if not out.parent.exists():
        raise MfhpoError(f"{out.parent}: output directory does not exist")
    with atomic_open(out, fsync=False, suffix=".npz") as fh:
        np.savez(fh, **arrays)
    print(f"wrote {len(images)} structures x {gs.nfeat} features{' + derivatives' if derivatives else ''} to {out}")
    return out
