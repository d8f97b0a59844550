"""How a study run ends when it cannot go on: one line, an exit code, and how to resume.

* Ctrl-C or SIGTERM -> :class:`~mfhpo.errors.Interrupted` (exit 130) with the resume command; Dask's
  shutdown chatter of the interrupted cluster is silenced.
* No space left on the device -> :class:`~mfhpo.errors.EnvironmentFailure` (exit 1) naming the file.
  Every file of a run directory is written atomically, so the state stays valid and the same command
  resumes once space is free.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shlex
from pathlib import Path
from typing import Optional

from mfhpo.errors import EnvironmentFailure, Interrupted

NOISY_LOGGERS = ("distributed", "tornado", "asyncio", "dask_jobqueue")


def resume_command(study: Path, rundir: Optional[Path], optimizer: Optional[str]) -> str:
    cmd = ["mfhpo", "run", str(study)]
    if rundir is not None:
        cmd += ["--rundir", str(rundir)]
    if optimizer is not None:
        cmd += ["--optimizer", optimizer]
    return " ".join(shlex.quote(c) for c in cmd)


def silence_dask() -> None:
    """Workers and the scheduler log tracebacks while an interrupted cluster shuts down: drop them."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def one_line_failures(study: Path, root: Path, *, rundir: Optional[Path] = None, optimizer: Optional[str] = None):
    cmd = resume_command(study, rundir, optimizer)
    try:
        yield
    except KeyboardInterrupt:
        silence_dask()
        raise Interrupted(f"{root}: interrupted; finished trials are saved, resume with: {cmd}") from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        silence_dask()
        where = exc.filename or root
        raise EnvironmentFailure(f"{where}: no space left on the device; the run directory is consistent, free "
                                 f"space and resume with: {cmd}") from None
