"""On-disk cache of fingerprints, safe under concurrent writers (several Dask worker processes).

Layout: ``<root>/<setting key>/<structure hash>.<dtype>.<fp|fpd>.npz`` (uncompressed npz with
``fp`` and, with derivatives, ``pair_i``, ``pair_j``, ``dfp``) plus ``setting.json`` per setting
folder for humans. Writes go to a unique temporary file in the same folder and are published with
``os.replace`` (atomic on POSIX), so a reader sees either nothing or a complete file; two workers
computing the same entry simply both write identical content.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from mfhpo.data import structure_hash


class FeatureCache:
    """Fingerprint cache keyed by (setting.key(), structure_hash(atoms), dtype, derivatives)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.writes = 0

    # ----------------------------------------------------------------------------------------
    def path(self, setting, atoms, dtype: torch.dtype, derivatives: bool) -> Path:
        dt = str(dtype).replace("torch.", "")
        return self.root / setting.key() / f"{structure_hash(atoms)}.{dt}.{'fpd' if derivatives else 'fp'}.npz"

    def get(self, setting, atoms, dtype: torch.dtype, derivatives: bool):
        """Cached :class:`~mfhpo.gmp.featurizer.Features` (on the CPU) or None.

        A derivative entry also serves a request without derivatives.
        """
        from mfhpo.gmp.featurizer import Features

        cands = [self.path(setting, atoms, dtype, derivatives)]
        if not derivatives:
            cands.append(self.path(setting, atoms, dtype, True))
        for p in cands:
            try:
                with np.load(p) as z:
                    fp = torch.from_numpy(z["fp"])
                    if derivatives:
                        f = Features(fp, torch.from_numpy(z["pair_i"]), torch.from_numpy(z["pair_j"]),
                                     torch.from_numpy(z["dfp"]))
                    else:
                        f = Features(fp)
            except (FileNotFoundError, OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
                continue
            if f.fp.shape[0] != len(atoms):
                continue
            self.hits += 1
            return f
        self.misses += 1
        return None

    def put(self, setting, atoms, dtype: torch.dtype, derivatives: bool, features) -> Path:
        p = self.path(setting, atoms, dtype, derivatives)
        folder = p.parent
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "setting.json"
            if not meta.exists():
                self._atomic_write_text(meta, json.dumps(setting.to_dict(), indent=1))
        arrays = {"fp": features.fp.detach().cpu().numpy()}
        if derivatives:
            arrays.update(pair_i=features.pair_i.cpu().numpy(), pair_j=features.pair_j.cpu().numpy(),
                          dfp=features.dfp.detach().cpu().numpy())
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.writes += 1
        return p

    @staticmethod
    def _atomic_write_text(path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"
