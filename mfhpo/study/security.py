"""TLS for the study's Dask cluster: who may talk to the scheduler and the workers.

A Dask scheduler runs any function a connected client sends it on every worker, so an open scheduler
port lets anyone who can reach it run code as the study's user. Every cluster of a study therefore
uses mutual TLS by default (``cluster.security``, docs/clusters.md):

* ``tls`` (default): a fresh self-signed key and certificate per ``mfhpo run``
  (:meth:`distributed.security.Security.temporary`). A local cluster keeps them in memory; a job
  cluster writes the worker's copy into ``<rundir>/security/`` (mode 0700, files 0600, removed when
  the run ends) through dask-jobqueue's ``shared_temp_directory``, and the job script names those
  files (``--tls-ca-file``, ``--tls-cert``, ``--tls-key``), never their contents.
* ``{ca_file, cert, key}``: certificate files the user provides (e.g. issued by the site); the same
  files serve the scheduler, the workers and the client.
* ``off``: plain TCP, no authentication (only on a machine no one else can reach).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict

from mfhpo.errors import MfhpoError

SECURITY_DIR = "security"


class TLSFiles(BaseModel):
    """``cluster.security: {ca_file, cert, key}``: PEM files (paths relative to the study file)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str
    cert: str
    key: str


def describe(cfg) -> str:
    sec = cfg.security
    if sec == "off":
        return "off (plain TCP: anyone who reaches the scheduler port can run code on the workers)"
    if sec == "tls":
        return "TLS, per-run self-signed credentials (mutual authentication)"
    return f"TLS, certificate files {sec.cert} (CA {sec.ca_file})"


def credentials_dir(rundir: Path) -> Path:
    """``<rundir>/security``: created private (0700) for the worker credentials of a job cluster."""
    d = Path(rundir) / SECURITY_DIR
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def remove_credentials(rundir: Path) -> None:
    shutil.rmtree(Path(rundir) / SECURITY_DIR, ignore_errors=True)


def check_security_files(cfg, base_dir: Optional[Path] = None, source: Optional[str] = None) -> None:
    """Named certificate files exist (one-line error naming the file and key otherwise); nothing to
    check for ``tls`` and ``off``."""
    if not isinstance(cfg.security, TLSFiles):
        return
    for key in ("ca_file", "cert", "key"):
        p = Path(getattr(cfg.security, key)).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        if not p.is_file():
            raise MfhpoError(f"{source + ': ' if source else ''}cluster.security.{key}: {p}: file not found")


def make_security(cfg, base_dir: Optional[Path] = None):
    """The :class:`distributed.security.Security` for ``cfg.security`` (None for ``off``)."""
    from distributed.security import Security

    sec = cfg.security
    if sec == "off":
        return None
    if sec == "tls":
        try:
            return Security.temporary()
        except ImportError:
            raise MfhpoError("cluster.security: tls needs the 'cryptography' package (pip install cryptography), "
                             "or name certificate files, or set security: off") from None
    check_security_files(cfg, base_dir)
    files = {}
    for key in ("ca_file", "cert", "key"):
        p = Path(getattr(sec, key)).expanduser()
        files[key] = str((p if p.is_absolute() or base_dir is None else Path(base_dir) / p).resolve())
    return Security(require_encryption=True, tls_ca_file=files["ca_file"],
                    tls_scheduler_cert=files["cert"], tls_scheduler_key=files["key"],
                    tls_worker_cert=files["cert"], tls_worker_key=files["key"],
                    tls_client_cert=files["cert"], tls_client_key=files["key"])


def placeholder_security(rundir: Optional[Path]):
    """For ``mfhpo cluster-script`` / ``--check``: a Security whose worker files are where a run
    would write them, so that the previewed job script shows the TLS arguments."""
    from distributed.security import Security

    d = (Path(rundir) if rundir is not None else Path("runs/STUDY")) / SECURITY_DIR
    return Security(require_encryption=True, tls_ca_file=str(d / ".dask-jobqueue.worker.ca_file.XXXX"),
                    tls_worker_cert=str(d / ".dask-jobqueue.worker.cert.XXXX"),
                    tls_worker_key=str(d / ".dask-jobqueue.worker.key.XXXX"))


def scheduler_note(handle) -> str:
    """One line for ``mfhpo run``: the scheduler address and whether it authenticates its clients."""
    try:
        addr = handle.client.scheduler.address
    except Exception:
        addr = "?"
    return f"scheduler {addr}; security {describe(handle.cfg)}"
