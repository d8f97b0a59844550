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


@contextlib.contextmanager
def atomic_open(path: str | Path, fsync: bool = True, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """``with atomic_open(p) as fh: fh.write(...)`` publishes ``p`` only if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    try:
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
