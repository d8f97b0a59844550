"""The study YAML's ``cluster:`` section: where trials run.

``kind: local`` starts a :class:`distributed.LocalCluster` on this machine (one worker per GPU, else
``min(2, cpus)`` workers). ``kind: slurm | pbs | sge | lsf`` submits one batch job per Dask worker
through dask-jobqueue; each job holds exactly one worker process, which runs one trial at a time on
its (at most one) GPU.

Every worker declares the Dask resource ``trial=1`` (and ``GPU=1`` when it has a GPU). The study
dispatcher submits each trial with ``resources={"trial": 1}``, so two trials never share a worker or
a GPU. ``distributed.scheduler.allowed-failures`` is 0: a trial whose worker dies (OOM kill, walltime,
``scancel``) fails with ``KilledWorker`` and is recorded CRASHED instead of being retried on (and
killing) other workers. See docs/clusters.md.

Public interface (used by ``mfhpo.study.runner``):

* :class:`ClusterConfig` — pydantic model of the ``cluster:`` mapping;
  :func:`load_cluster_config` validates a mapping and raises one-line :class:`MfhpoError` s.
* :func:`start_cluster` -> :class:`ClusterHandle` (``.client``, ``.dashboard_link``,
  ``.tunnel_command``, ``.n_slots()``, ``.close()``).
* :func:`job_script` and :func:`cluster_script` (``mfhpo cluster-script``).
"""

from __future__ import annotations

import atexit
import copy
import getpass
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfhpo.errors import MfhpoError
from mfhpo.study.security import TLSFiles, credentials_dir, make_security, placeholder_security

log = logging.getLogger(__name__)

JOB_KINDS = ("slurm", "pbs", "sge", "lsf")
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub", "lsf": "bsub"}
_WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")
_MEMORY_RE = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
# keys that only make sense for job clusters / only for local clusters (for friendly errors)
_JOB_ONLY = (
    "queue", "account", "walltime", "gpus_per_job", "cpus_per_job", "memory", "jobs", "adaptive",
    "job_extra_directives", "job_script_prologue", "interface", "scheduler_host", "log_directory",
    "pbs_style", "resource_spec", "python", "job_name", "login_host", "death_timeout",
)
_LOCAL_ONLY = ("workers", "threads_per_worker", "gpus")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class AdaptiveSpec(_Strict):
    """``adaptive: {minimum, maximum}``: dask-jobqueue keeps between minimum and maximum jobs and
    submits replacements for jobs that die, hit their walltime or are cancelled."""

    minimum: int = Field(0, ge=0)
    maximum: int = Field(..., ge=1)

    @model_validator(mode="after")
    def _order(self) -> "AdaptiveSpec":
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) must not exceed maximum ({self.maximum})")
        return self


class ClusterConfig(_Strict):
    """The ``cluster:`` mapping of a study YAML (see docs/clusters.md for every key)."""

    kind: Literal["local", "slurm", "pbs", "sge", "lsf"] = "local"

    # --- local ---------------------------------------------------------------------------------
    workers: Optional[int] = Field(None, ge=1, description="local workers (default: one per GPU, else min(2, cpus))")
    threads_per_worker: int = Field(1, ge=1)
    gpus: Optional[list[str]] = Field(
        None, description="local GPU ids, one worker each (default: autodetect; [] = CPU only)"
    )

    # --- job clusters (slurm / pbs / sge / lsf) ----------------------------------------------
    queue: Optional[str] = Field(None, alias="partition")
    account: Optional[str] = None
    walltime: str = "01:00:00"
    gpus_per_job: int = Field(1, ge=0, le=1)
    cpus_per_job: int = Field(4, ge=1, alias="cores")
    memory: str = "16GB"
    jobs: Optional[int] = Field(None, ge=0)
    adaptive: Optional[AdaptiveSpec] = None
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    interface: Optional[str] = None
    scheduler_host: Optional[str] = None
    local_directory: Optional[str] = None
    log_directory: Optional[str] = None
    pbs_style: Literal["pro", "torque"] = "pro"
    resource_spec: Optional[str] = None
    python: Optional[str] = None
    job_name: str = "mfhpo"
    death_timeout: int = Field(120, ge=1)

    # --- both ------------------------------------------------------------------------------------
    dashboard_port: int = Field(8787, ge=0, le=65535, description="0 = any free port")
    login_host: Optional[str] = Field(None, description="host for the printed ssh tunnel command")
    security: Union[Literal["tls", "off"], TLSFiles] = Field(
        "tls", description="tls: per-run TLS credentials (default); {ca_file, cert, key}; off: plain TCP")

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        m = _WALLTIME_RE.match(str(v).strip())
        if not m:
            raise ValueError(f"walltime must look like HH:MM:SS or D-HH:MM:SS, got {v!r}")
        days, h, mi, s = (int(x) if x else 0 for x in m.groups())
        if mi >= 60 or s >= 60:
            raise ValueError(f"walltime must look like HH:MM:SS (minutes and seconds < 60), got {v!r}")
        total_h = days * 24 + h
        if total_h == 0 and mi == 0 and s == 0:
            raise ValueError("walltime must be longer than zero")
        return f"{total_h:02d}:{mi:02d}:{s:02d}"

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not _MEMORY_RE.match(str(v)):
            raise ValueError(f"memory must look like 16GB or 4000MB, got {v!r}")
        return str(v).replace(" ", "")

    @model_validator(mode="after")
    def _consistency(self) -> "ClusterConfig":
        given = self.model_fields_set
        if self.kind == "local":
            wrong = [k for k in _JOB_ONLY if k in given and k not in ("login_host",)]
            if wrong:
                raise ValueError(f"{wrong[0]}: only applies to job clusters (kind slurm/pbs/sge/lsf), not kind local")
        else:
            wrong = [k for k in _LOCAL_ONLY if k in given]
            if wrong:
                hint = " (use jobs: N or adaptive: {minimum, maximum})" if wrong[0] == "workers" else ""
                raise ValueError(f"{wrong[0]}: only applies to kind local{hint}")
            if self.jobs is not None and self.adaptive is not None:
                raise ValueError("jobs: give either jobs (a fixed number) or adaptive, not both")
            if self.resource_spec is not None and self.kind not in ("pbs", "sge"):
                raise ValueError("resource_spec: only applies to kind pbs or sge")
            if "pbs_style" in given and self.kind != "pbs":
                raise ValueError("pbs_style: only applies to kind pbs")
        return self

    # ------------------------------------------------------------------------------------------
    @property
    def is_job_cluster(self) -> bool:
        return self.kind in JOB_KINDS

    def with_workers(self, n: int) -> "ClusterConfig":
        """``--workers N`` override: local worker count, or a fixed number of jobs for job clusters."""
        if n < 1:
            raise MfhpoError(f"--workers: must be >= 1, got {n}")
        if self.kind == "local":
            return self.model_copy(update={"workers": n})
        return self.model_copy(update={"jobs": n, "adaptive": None})

    def walltime_seconds(self) -> int:
        h, m, s = (int(x) for x in self.walltime.split(":"))
        return h * 3600 + m * 60 + s


def load_cluster_config(mapping: Any, source: str = "study YAML") -> ClusterConfig:
    """Validate a ``cluster:`` mapping; errors become one-line :class:`MfhpoError` naming file and key."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise MfhpoError(f"{source}: cluster: must be a mapping, got {type(mapping).__name__}")
    try:
        return ClusterConfig.model_validate(mapping)
    except ValidationError as exc:
        raise MfhpoError(f"{source}: {format_cluster_error(exc)}") from None


def format_cluster_error(exc: ValidationError) -> str:
    """First pydantic error as ``cluster.<key>: <problem>``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    msg = err.get("msg", "invalid")
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (see docs/clusters.md for the keys of each kind)"
    elif err.get("type") == "literal_error" and loc and loc[-1] == "kind":
        msg = f"unknown kind {err.get('input')!r}; choose local, slurm, pbs, sge or lsf"
    if not loc:
        # model-level validators put the key first in the message ("jobs: ...")
        m = re.match(r"^(\w+): (.*)$", msg)
        if m:
            loc, msg = [m.group(1)], m.group(2)
    return f"cluster.{'.'.join(loc)}: {msg}" if loc else f"cluster: {msg}"


# ------------------------------------------------------------------------------------------------
# GPUs and defaults
# ------------------------------------------------------------------------------------------------

def detect_gpus() -> list[str]:
    """Visible CUDA device ids (honours CUDA_VISIBLE_DEVICES); [] without CUDA."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        ids = [x.strip() for x in vis.split(",") if x.strip() and x.strip() != "-1"]
        if not ids:
            return []
    else:
        ids = None
    # no NVIDIA driver: do not pay for importing torch
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists() or os.environ.get("MFHPO_PROBE_CUDA")):
        return []
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - torch always installed, but be safe
        n = 0
    if n == 0:
        return []
    return ids[:n] if ids is not None else [str(i) for i in range(n)]


def local_worker_plan(cfg: ClusterConfig) -> list[dict]:
    """One entry per local worker: ``{"gpu": id or None}``."""
    gpus = cfg.gpus if cfg.gpus is not None else detect_gpus()
    if gpus:
        n = cfg.workers or len(gpus)
        if n > len(gpus):
            raise MfhpoError(
                f"cluster.workers: {n} workers but only {len(gpus)} GPU(s) ({','.join(gpus)}); "
                "mfhpo runs one trial per GPU"
            )
        return [{"gpu": g} for g in gpus[:n]]
    n = cfg.workers or max(1, min(2, os.cpu_count() or 1))
    return [{"gpu": None} for _ in range(n)]


def worker_resources(gpu: bool) -> dict[str, float]:
    return {"trial": 1, "GPU": 1} if gpu else {"trial": 1}


def _resources_arg(gpu: bool) -> list[str]:
    return ["--resources", ",".join(f"{k}={v}" for k, v in worker_resources(gpu).items())]


def _set_dask_config() -> None:
    import dask

    dask.config.set({
        # a dead worker fails its trial (KilledWorker) instead of passing it on to kill others
        "distributed.scheduler.allowed-failures": 0,
        # a job whose worker vanished (scancel, walltime, node failure) is dropped from the cluster
        # after this long, so that adapt() submits its replacement (dask's default: 15 s)
        "distributed.deploy.lost-worker-timeout": "10s",
    })


# ------------------------------------------------------------------------------------------------
# Job clusters: dask-jobqueue keyword arguments
# ------------------------------------------------------------------------------------------------

def _mem_gb(memory: str) -> int:
    from dask.utils import parse_bytes

    return max(1, -(-parse_bytes(memory) // 10**9))


def _jobqueue_class(kind: str):
    import dask_jobqueue as djq

    return {"slurm": djq.SLURMCluster, "pbs": djq.PBSCluster, "sge": djq.SGECluster, "lsf": djq.LSFCluster}[kind]


def jobqueue_kwargs(cfg: ClusterConfig, *, rundir: Optional[Path] = None, job_name: Optional[str] = None) -> dict:
    """Keyword arguments for the dask-jobqueue cluster class of ``cfg.kind``.

    One worker process per job with one thread (``cores=1, processes=1``); the job itself asks the
    batch system for ``cpus_per_job`` CPUs, ``memory`` and ``gpus_per_job`` (0 or 1) GPUs.
    """
    if not cfg.is_job_cluster:
        raise MfhpoError("cluster.kind: local has no batch job script")
    gpu = cfg.gpus_per_job > 0
    G, N = cfg.gpus_per_job, cfg.cpus_per_job
    extra = list(cfg.job_extra_directives)
    kw: dict[str, Any] = dict(
        cores=1,
        processes=1,
        memory=cfg.memory,
        walltime=cfg.walltime,
        job_name=job_name or cfg.job_name,
        job_script_prologue=list(cfg.job_script_prologue),
        worker_extra_args=_resources_arg(gpu),
        death_timeout=cfg.death_timeout,
        python=cfg.python or sys.executable,
    )
    if cfg.queue:
        kw["queue"] = cfg.queue
    if cfg.interface:
        kw["interface"] = cfg.interface
    if cfg.local_directory:
        kw["local_directory"] = cfg.local_directory
    logdir = cfg.log_directory or (str(Path(rundir) / "cluster-logs") if rundir is not None else None)
    if logdir:
        kw["log_directory"] = logdir

    if cfg.kind == "slurm":
        kw["job_cpu"] = N
        if cfg.account:
            kw["account"] = cfg.account
        if G:
            extra = [f"--gres=gpu:{G}"] + extra
    elif cfg.kind == "pbs":
        if cfg.account:
            kw["account"] = cfg.account
        if cfg.resource_spec:
            kw["resource_spec"] = cfg.resource_spec
        elif cfg.pbs_style == "pro":
            spec = f"select=1:ncpus={N}"
            if G:
                spec += f":ngpus={G}"
            kw["resource_spec"] = spec + f":mem={_mem_gb(cfg.memory)}gb"
        else:  # torque: nodes/ppn/gpus, memory as its own -l line
            spec = f"nodes=1:ppn={N}"
            if G:
                spec += f":gpus={G}"
            kw["resource_spec"] = spec
            extra = [f"-l mem={_mem_gb(cfg.memory)}gb"] + extra
    elif cfg.kind == "sge":
        if cfg.account:
            kw["project"] = cfg.account
        spec = cfg.resource_spec or f"h_vmem={_mem_gb(cfg.memory)}G"
        kw["resource_spec"] = spec
        extra = [f"-pe smp {N}"] + ([f"-l gpu={G}"] if G else []) + extra
    elif cfg.kind == "lsf":
        if cfg.account:
            kw["project"] = cfg.account
        kw["ncpus"] = N
        h, m, _s = cfg.walltime.split(":")
        kw["walltime"] = f"{int(h):02d}:{int(m):02d}"  # LSF -W takes HH:MM
        kw["use_stdin"] = True
        if G:
            extra = [f'-gpu "num={G}"'] + extra
    kw["job_extra_directives"] = extra

    if cfg.scheduler_host:
        kw["scheduler_options"] = {"host": cfg.scheduler_host}
    kw.setdefault("scheduler_options", {})["dashboard_address"] = f":{cfg.dashboard_port}"
    return kw


def job_script(cfg: ClusterConfig, *, rundir: Optional[Path] = None, base_dir: Optional[Path] = None) -> str:
    """The batch script one worker job would be submitted with (no cluster is started); ``base_dir``
    resolves relative certificate files of ``cluster.security``."""
    if not cfg.is_job_cluster:
        raise MfhpoError("cluster.kind: local runs workers on this machine; there is no batch job script")
    _set_dask_config()
    cls = _jobqueue_class(cfg.kind)
    kw = jobqueue_kwargs(cfg, rundir=rundir)
    kw.pop("scheduler_options", None)
    job_cls = cls.job_cls
    # the Job class renders the script; placeholders stand in for the scheduler address and for the
    # worker's TLS files (written into <rundir>/security when the cluster starts)
    if cfg.security != "off":
        kw.update(security=placeholder_security(rundir) if cfg.security == "tls" else make_security(cfg, base_dir),
                  protocol="tls://")
    scheme = "tcp" if cfg.security == "off" else "tls"
    job = job_cls(scheduler=f"{scheme}://SCHEDULER:PORT", name="mfhpo-worker", **kw)
    return job.job_script()


def cluster_script(study_path: Path) -> str:
    """``mfhpo cluster-script STUDY.yaml``: the job script of the study's ``cluster:`` section, with a
    header line (or, for a local cluster, why there is none)."""
    from mfhpo.config import load_yaml

    study_path = Path(study_path)
    doc = load_yaml(study_path)
    cfg = load_cluster_config(doc.get("cluster"), source=str(study_path))
    name = doc.get("name") or study_path.stem
    if not cfg.is_job_cluster:
        return (f"# study {name}: cluster kind 'local' runs {len(local_worker_plan(cfg))} worker(s) on this "
                "machine; there is no batch job script.\n"
                "# Set cluster.kind to slurm, pbs, sge or lsf to run trials as batch jobs (docs/clusters.md).")
    n = f"adaptive {cfg.adaptive.minimum}..{cfg.adaptive.maximum}" if cfg.adaptive else str(cfg.jobs if cfg.jobs is not None else 1)
    return (f"# study {name}: {cfg.kind} job script, one Dask worker (= one trial at a time) per job; jobs: {n}\n"
            + job_script(cfg, rundir=Path("runs") / str(name), base_dir=study_path.resolve().parent))


# ------------------------------------------------------------------------------------------------
# Running clusters
# ------------------------------------------------------------------------------------------------

_OPEN_HANDLES: "weakref.WeakSet[ClusterHandle]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for h in list(_OPEN_HANDLES):
        try:
            h.close()
        except Exception:  # pragma: no cover
            pass


atexit.register(_close_all_at_exit)


class ClusterHandle:
    """A started cluster and its client. ``close()`` is idempotent and cancels every batch job."""

    def __init__(self, cfg: ClusterConfig, cluster, client, *, job_name: Optional[str] = None):
        self.cfg = cfg
        self.cluster = cluster
        self.client = client
        self.job_name = job_name
        self._job_ids: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()
        _OPEN_HANDLES.add(self)

    # -- information --------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def dashboard_link(self) -> str:
        try:
            return str(self.client.dashboard_link)
        except Exception:
            return ""

    @property
    def dashboard_port(self) -> Optional[int]:
        m = re.search(r":(\d+)(/|$)", self.dashboard_link.split("://", 1)[-1])
        return int(m.group(1)) if m else None

    @property
    def tunnel_command(self) -> Optional[str]:
        return tunnel_command(self.cfg, self.dashboard_port)

    def n_slots(self) -> int:
        """Trial slots available now: workers connected to the scheduler that declare ``trial``."""
        if self._closed:
            return 0
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed: no n_workers argument
            info = self.client.scheduler_info()
        except Exception:
            return 0
        self._remember_jobs()
        # a paused (memory) or retiring worker takes no new trial
        return int(sum(int(w.get("resources", {}).get("trial", 0) >= 1) for w in info.get("workers", {}).values()
                       if w.get("status", "running") == "running"))

    def wait_for_slots(self, n: int = 1, timeout: Optional[float] = None) -> int:
        """Block until at least ``n`` slots exist (or ``timeout`` seconds passed); returns n_slots()."""
        t0 = time.monotonic()
        while True:
            k = self.n_slots()
            if k >= n or (timeout is not None and time.monotonic() - t0 > timeout):
                return k
            time.sleep(0.5)

    def job_ids(self) -> list[str]:
        self._remember_jobs()
        return sorted(self._job_ids)

    def _remember_jobs(self) -> None:
        if not self.cfg.is_job_cluster:
            return
        try:
            for job in list(getattr(self.cluster, "workers", {}).values()):
                jid = getattr(job, "job_id", None)
                if jid:
                    self._job_ids.add(str(jid))
        except Exception:
            pass

    def summary(self) -> str:
        if self.cfg.kind == "local":
            return f"local cluster, {self.n_slots()} worker(s)"
        how = (f"adaptive {self.cfg.adaptive.minimum}..{self.cfg.adaptive.maximum} jobs" if self.cfg.adaptive
               else f"{self.cfg.jobs if self.cfg.jobs is not None else 1} job(s)")
        return f"{self.cfg.kind} cluster, {how}, {self.n_slots()} worker(s) up"

    # -- shutdown -----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._remember_jobs()
        try:
            self.client.close(timeout=10)
        except Exception as exc:  # pragma: no cover - best effort
            log.debug("client close: %s", exc)
        try:
            if self.cfg.is_job_cluster:
                try:
                    self.cluster.adapt(minimum=0, maximum=0)  # stop adaptive from resubmitting
                except Exception:
                    pass
            self.cluster.close(timeout=30)
        except Exception as exc:  # pragma: no cover - best effort
            log.debug("cluster close: %s", exc)
        if self.cfg.is_job_cluster:
            cancel_jobs(self.cfg.kind, self._job_ids, self.job_name)
        _OPEN_HANDLES.discard(self)

    def __enter__(self) -> "ClusterHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass


def _run_quiet(cmd: list[str], timeout: float = 30) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def queued_jobs(kind: str, job_name: str) -> list[str]:
    """IDs of this user's jobs named ``job_name`` that the batch system still knows (not finished)."""
    user = getpass.getuser()
    if kind == "slurm":
        out = _run_quiet(["squeue", "-h", "-u", user, "-n", job_name, "-o", "%i"])
    elif kind == "pbs":
        out = _run_quiet(["qselect", "-u", user, "-N", job_name])
    elif kind == "sge":
        out = _run_quiet(["qstat", "-u", user])
        return [ln.split()[0] for ln in out.splitlines()[2:] if len(ln.split()) > 2 and ln.split()[2].startswith(job_name[:10])]
    elif kind == "lsf":
        out = _run_quiet(["bjobs", "-noheader", "-o", "jobid", "-J", job_name])
    else:
        return []
    return [x.strip() for x in out.split() if x.strip() and x.strip()[0].isdigit()]


def cancel_jobs(kind: str, job_ids, job_name: Optional[str]) -> None:
    """Cancel the given jobs and any job still queued under ``job_name`` (a unique per-cluster name)."""
    ids = {str(j) for j in job_ids or ()}
    if job_name:
        ids |= set(queued_jobs(kind, job_name))
    if not ids:
        return
    cmd = {"slurm": ["scancel"], "pbs": ["qdel"], "sge": ["qdel"], "lsf": ["bkill"]}[kind]
    _run_quiet(cmd + sorted(ids))


def _batch_host() -> Optional[str]:
    """The login/submit host when this process itself runs inside a batch job."""
    for var in ("SLURM_SUBMIT_HOST", "PBS_O_HOST", "SGE_O_HOST", "LSB_SUB_HOST"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def tunnel_command(cfg: ClusterConfig, port: Optional[int]) -> Optional[str]:
    """``ssh -L`` line that forwards the dashboard to the user's laptop.

    Given when the scheduler runs on a cluster machine: a job cluster (the scheduler runs where
    ``mfhpo run`` runs, usually a login node), or any kind when ``mfhpo run`` itself is a batch job.
    None for a local cluster on a workstation."""
    if port is None:
        return None
    batch_host = _batch_host()
    if cfg.kind == "local" and batch_host is None and not cfg.login_host:
        return None
    user = os.environ.get("USER") or getpass.getuser()
    here = cfg.scheduler_host if cfg.scheduler_host and cfg.scheduler_host not in ("0.0.0.0",) else socket.gethostname()
    login = cfg.login_host or os.environ.get("MFHPO_LOGIN_HOST") or batch_host
    if login is None or login.split(".")[0] == here.split(".")[0]:
        # the scheduler runs on the login node itself
        login = login or socket.getfqdn()
        target = "localhost"
    else:
        target = here
    return f"ssh -N -L {port}:{target}:{port} {user}@{login}"


class _workers_ignore_sigint:
    """SIGINT is blocked in this thread while the local cluster's threads and worker processes are
    created: they inherit the blocked mask (kept across exec), so Ctrl-C in the terminal reaches only
    the driver, which stops them. A Ctrl-C meanwhile stays pending and is delivered on exit.
    Workers restarted later ignore it through ``mfhpo.study.worker_setup``."""

    def __enter__(self):
        self._prev = None
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self

    def __exit__(self, *exc):
        if self._prev is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._prev)


def _start_local(cfg: ClusterConfig, rundir: Path, base_dir: Optional[Path] = None) -> ClusterHandle:
    from distributed import Client, LocalCluster, Nanny

    plan = local_worker_plan(cfg)
    local_dir = str(Path(rundir) / "dask-worker-space")
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    security = make_security(cfg, base_dir)
    cluster = LocalCluster(
        security=security,
        protocol="tls://" if security is not None else None,
        n_workers=0,
        processes=True,
        host="127.0.0.1",
        threads_per_worker=cfg.threads_per_worker,
        dashboard_address=f"127.0.0.1:{cfg.dashboard_port}" if cfg.dashboard_port else "127.0.0.1:0",
        local_directory=local_dir,
        resources=worker_resources(False),
        preload=["mfhpo.study.worker_setup"],  # workers ignore Ctrl-C: the driver stops them
    )
    try:
        # one spec per worker so that each GPU worker sees exactly its own device
        for i, p in enumerate(plan):
            spec = copy.deepcopy(cluster.new_spec)
            opts = spec.setdefault("options", {})
            opts["resources"] = worker_resources(p["gpu"] is not None)
            opts["nthreads"] = cfg.threads_per_worker
            if p["gpu"] is not None:
                opts["env"] = {**opts.get("env", {}), "CUDA_VISIBLE_DEVICES": str(p["gpu"])}
                name = f"gpu{p['gpu']}"
            else:
                name = f"cpu{i}"
            spec["cls"] = spec.get("cls", Nanny)
            cluster.worker_spec[name] = spec
        cluster.sync(cluster._correct_state)
        client = Client(cluster)
        client.wait_for_workers(len(plan), timeout=120)
    except Exception:
        cluster.close()
        raise
    return ClusterHandle(cfg, cluster, client)


def _start_jobs(cfg: ClusterConfig, rundir: Path, base_dir: Optional[Path] = None) -> ClusterHandle:
    from distributed import Client

    cls = _jobqueue_class(cfg.kind)
    submit = SUBMIT_COMMANDS[cfg.kind]
    if shutil.which(submit) is None:
        raise MfhpoError(f"cluster.kind: {cfg.kind} needs `{submit}` on PATH; run mfhpo on the cluster's login node "
                         "(or in a batch job there), or use kind: local")
    # a unique job name per cluster: lets close() find every job it ever submitted
    job_name = f"{cfg.job_name}-{uuid.uuid4().hex[:6]}"
    kw = jobqueue_kwargs(cfg, rundir=rundir, job_name=job_name)
    security = make_security(cfg, base_dir)
    if security is not None:
        # dask-jobqueue writes the worker's in-memory credentials into this private folder (0600 files)
        # and the job script names the files; the scheduler and workers speak tls:// only
        kw.update(security=security, shared_temp_directory=str(credentials_dir(rundir)))
    log_book: dict[str, Any] = {"submitted": 0, "errors": []}

    class _CheckedJob(cls.job_cls):  # records submission outcomes (sbatch/qsub errors are otherwise only logged)
        async def start(self):
            try:
                await super().start()
            except Exception as exc:
                log_book["errors"].append(exc)
                raise
            log_book["submitted"] += 1

    kw["job_cls"] = _CheckedJob
    _quiet_submit_failures(log_book)
    try:
        cluster = cls(**kw)
    except Exception as exc:
        raise MfhpoError(f"cluster.kind: could not start the {cfg.kind} cluster ({exc})") from exc
    try:
        client = Client(cluster)
    except Exception:
        cluster.close()
        raise
    handle = ClusterHandle(cfg, cluster, client, job_name=job_name)
    try:
        if cfg.adaptive is not None:
            cluster.adapt(minimum=cfg.adaptive.minimum, maximum=cfg.adaptive.maximum)
        else:
            cluster.scale(jobs=cfg.jobs if cfg.jobs is not None else 1)
        first = cfg.adaptive.minimum if cfg.adaptive is not None else (cfg.jobs if cfg.jobs is not None else 1)
        if first > 0:
            # the first submission must go through: a rejected job (bad partition/account/walltime)
            # would otherwise leave the study waiting for workers forever
            t0 = time.monotonic()
            while not log_book["submitted"] and not log_book["errors"] and time.monotonic() - t0 < 120:
                time.sleep(0.1)
            if log_book["errors"] and not log_book["submitted"]:
                raise MfhpoError(f"cluster: the {cfg.kind} worker job could not be submitted (check cluster.queue, account, "
                                 f"walltime, memory; `mfhpo cluster-script` shows the script): "
                                 f"{_submit_error(log_book['errors'][0])}")
    except BaseException:
        handle.close()
        raise
    handle._log_book = log_book
    return handle


class _SubmitFailureFilter(logging.Filter):
    """A rejected batch submission reaches the log as tornado's ~30-line traceback of the cluster's
    state-correction task. Before the first job was accepted ``_start_jobs`` raises its own one-line
    error, so the record is dropped; later (an adaptive resubmission) it becomes one line."""

    def __init__(self, log_book: dict):
        super().__init__()
        self.log_book = log_book

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or "Command exited with non-zero exit code" not in str(exc):
            return True
        if not self.log_book.get("submitted"):
            return False
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"worker job submission failed: {_submit_error(exc)}", (), None, None)
        return True


def _quiet_submit_failures(log_book: dict) -> None:
    logger = logging.getLogger("tornado.application")
    for f in [f for f in logger.filters if isinstance(f, _SubmitFailureFilter)]:
        logger.removeFilter(f)
    logger.addFilter(_SubmitFailureFilter(log_book))


def _submit_error(exc: BaseException) -> str:
    """The batch system's own complaint from dask-jobqueue's RuntimeError, on one line."""
    text = str(exc)
    m = re.search(r"stderr:\s*(.*)", text, re.S)
    lines = [ln.strip() for ln in (m.group(1) if m else text).splitlines() if ln.strip()]
    if lines:
        return " | ".join(lines[:2])
    first = text.strip().splitlines()[:2]
    return " ".join(first) if first else type(exc).__name__


def start_cluster(cfg: ClusterConfig, rundir: Path, base_dir: Optional[Path] = None) -> ClusterHandle:
    """Start the cluster described by ``cfg``; returns at once for job clusters (workers arrive as
    their jobs start: poll ``n_slots()``), after all workers are up for local clusters. ``base_dir``
    resolves relative certificate files of ``cluster.security``."""
    rundir = Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    _set_dask_config()
    if cfg.kind == "local":
        with _workers_ignore_sigint():
            return _start_local(cfg, rundir, base_dir)
    return _start_jobs(cfg, rundir, base_dir)


def install_signal_handlers() -> None:
    """Turn SIGTERM (batch systems send it at walltime / on cancel) into KeyboardInterrupt so that
    ``finally: handle.close()`` runs and no worker job is left behind. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        # importing dask_jobqueue (dask_jobqueue.runner) sets SIGINT to sys.exit(): a Ctrl-C would end the
        # run with exit code 0 and no word. Import it first so that the handlers below stay in place.
        import dask_jobqueue  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency
        pass

    def _raise(signum, frame):
        from mfhpo.study.failures import silence_dask

        silence_dask()  # the shutdown that follows must not print Dask's tracebacks
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, _raise)
        except (ValueError, OSError):  # pragma: no cover
            pass


__all__ = [
    "AdaptiveSpec", "ClusterConfig", "ClusterHandle", "load_cluster_config", "format_cluster_error",
    "start_cluster", "job_script", "jobqueue_kwargs", "cluster_script", "cancel_jobs",
    "queued_jobs", "tunnel_command", "detect_gpus", "local_worker_plan", "worker_resources",
    "install_signal_handlers",
]
