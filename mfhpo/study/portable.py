"""What a reproducibility bundle may say about the machine that ran the study: nothing.

Bundles (``mfhpo incumbent``) travel to other people and machines, so they hold no absolute path,
user or host name: data files are named by file name and hash, paths inside the run directory are
relative to it, worker names lose their host. :func:`bundle_data_name` is the one rule for turning a
manifest's data entry into a bare file name that retrain may create (only inside its out dir).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional

from mfhpo.errors import MfhpoError

# run-record keys that only describe the machine
MACHINE_KEYS = ("host", "python_executable")


def _is_abs(s: str) -> bool:
    return PurePosixPath(s).is_absolute() or PureWindowsPath(s).is_absolute() or s.startswith("~")


def relative_path(s: str, root: Optional[Path]) -> str:
    """``s`` relative to ``root`` when it lies inside it, else its file name."""
    if root is not None:
        try:
            return str(Path(s).resolve().relative_to(Path(root).resolve()))
        except (ValueError, OSError):
            pass
    return PurePosixPath(s.replace("\\", "/")).name


def portable(obj: Any, root: Optional[Path] = None) -> Any:
    """A copy of a JSON-like record with absolute paths made relative (to ``root``) or reduced to file
    names, worker names without their host, and machine-only keys dropped."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in MACHINE_KEYS:
                continue
            if k == "worker" and isinstance(v, str):
                out[k] = v.rsplit(":", 1)[-1]
            elif k == "path" and isinstance(v, str):
                out["file"] = relative_path(v, None)
            else:
                out[k] = portable(v, root)
        return out
    if isinstance(obj, list):
        return [portable(v, root) for v in obj]
    if isinstance(obj, str) and _is_abs(obj):
        return relative_path(obj, root)
    return copy.deepcopy(obj)


def portable_study_text(text: str, data: dict) -> str:
    """The study file's text with absolute data paths replaced by their file names."""
    for role in ("train", "test"):
        p = (data.get(role) or {}).get("path")
        if p and _is_abs(p):
            text = text.replace(p, PurePosixPath(p).name)
    return text


def portable_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint without the study's ``base_dir`` (the setting it holds is complete)."""
    import torch

    from mfhpo.atomic import atomic_open

    ck = torch.load(str(src), map_location="cpu", weights_only=True)
    ck["base_dir"] = None
    buf = io.BytesIO()
    torch.save(ck, buf)
    with atomic_open(dst) as fh:
        fh.write(buf.getvalue())


def bundle_data_name(entry: dict, role: str = "train") -> str:
    """The bare file name of a manifest data entry (``file``, or the last part of an older ``path``);
    a name that is not a plain file name is refused."""
    name = entry.get("file") or PurePosixPath(str(entry.get("path") or "").replace("\\", "/")).name
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~"):
        raise MfhpoError(f"manifest.json: data.{role}.file: {name!r} is not a plain file name")
    return name


def generated_demo_args(entry: dict) -> tuple[int, int]:
    """``(n_structures, seed)`` of a manifest's ``generated_demo``, bounded as the study schema bounds them."""
    g = entry.get("generated_demo")
    if not isinstance(g, dict):
        raise MfhpoError("manifest.json: data.train.generated_demo: must be a mapping")
    n, seed = g.get("n_structures"), g.get("seed")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 5000:
        raise MfhpoError(f"manifest.json: data.train.generated_demo.n_structures: must be an integer in [1, 5000], "
                         f"got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise MfhpoError(f"manifest.json: data.train.generated_demo.seed: must be an integer, got {seed!r}")
    return n, seed
