"""Data files under a study: their hashes are recorded when the study starts, and a resume with a
file whose bytes changed is refused (as a changed study file is), so that one study never mixes
trials trained on different data."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from mfhpo.errors import MfhpoError


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def record_file_hashes(prov: dict, paths: dict) -> dict:
    """Add ``file_sha256`` (the bytes of the file) next to each data entry of ``prov``."""
    for role in ("train", "test"):
        if paths.get(role) and role in prov:
            prov[role]["file_sha256"] = file_sha256(paths[role])
    return prov


def refuse_changed_data(prov: dict, paths: dict, *, study_path: Path, root: Path) -> Optional[dict]:
    """Raise a one-line error naming the file when a data file differs from the one the study started
    with. Returns the hashes to add to an older state that recorded none (None when nothing to add)."""
    added = {}
    for role in ("train", "test"):
        rec = prov.get(role)
        path = paths.get(role)
        if rec is None and path is None:
            continue
        if rec is None or path is None:
            raise MfhpoError(f"{study_path}: data.{role}: {'added' if rec is None else 'removed'} since {root} was "
                             f"started; restore it, or start a new study with --rundir NEW_DIR")
        now = file_sha256(path)
        old = rec.get("file_sha256")
        if old is None:
            added[role] = now
        elif now != old:
            raise MfhpoError(f"{path}: data.{role} changed since {root} was started (sha256 {now[:16]} != "
                             f"{old[:16]}); restore the file, or start a new study with --rundir NEW_DIR")
    return added or None
