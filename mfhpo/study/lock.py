"""The run-directory lock: one ``mfhpo run`` per run directory.

An advisory ``fcntl.flock`` on ``<rundir>/run.lock`` taken without blocking: the kernel grants it to
exactly one process however many start at the same instant, and releases it when that process ends,
however it ends (so a lock left by a killed run is never stale). The file holds the owner's pid for
the message; it is never deleted (deleting would let a second process lock a new file while a third
still holds the old one).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from mfhpo.errors import EnvironmentFailure, MfhpoError


class RunLock:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise EnvironmentFailure(f"{self.path}: no space left on the device; free space and run again"
                                         ) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").split()
            except OSError:
                owner = []
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                pid = owner[0] if owner else "?"
                raise MfhpoError(f"{self.path.parent}: another mfhpo run (pid {pid}) is using this run directory"
                                 ) from None
            raise
        try:  # the pid is for the message only; the flock is the lock (a full disk must not stop here)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def lock_for_study(study_path: Path, rundir: Path | None):
    """The lock of the run directory ``mfhpo run STUDY [--rundir R]`` will use, found from the study's
    ``name`` alone (no heavy imports), so that a second run exits at once; a no-op context when the name
    cannot be read (the study's validation then reports the problem)."""
    import contextlib
    import re

    import yaml

    if rundir is None:
        try:
            name = (yaml.safe_load(Path(study_path).read_text()) or {}).get("name")
        except Exception:  # noqa: BLE001 - validation names the problem later
            name = None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            return contextlib.nullcontext()
        rundir = Path("runs") / name
    return RunLock(Path(rundir) / "run.lock")
