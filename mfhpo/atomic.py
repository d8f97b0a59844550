"""Atomic file writes: write to a temporary file in the target's folder, then ``os.replace``.

Readers never see a half-written file, and concurrent writers (several Dask workers filling the
feature cache) each publish a complete file; the last one wins.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once at import: os.umask() can only be read by setting it, which is not thread-safe later
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_open(path: str | Path, fsync: bool = True, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with atomic_open(p) as fh: fh.write(...)`` publishes ``p`` only if the block succeeds.

    The file gets the permissions of a normally created one (0666 minus the umask), not mkstemp's
    private 0600, so that group members of a shared project folder can read checkpoints and caches.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
