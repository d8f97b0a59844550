"""Browser views of a study: the Dask dashboard of a running study, and optuna-dashboard over the
run directory's Optuna mirror (``mfhpo dashboard runs/<study>``, see optuna_mirror.py)."""

from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mfhpo.errors import MfhpoError

# distributed warns "Port 8787 is already in use ... Hosting the HTTP server on port N instead" and
# then serves on N: mfhpo prints the link to the port actually bound instead
_PORT_BUSY = r"Port \d+ is already in use"


def quiet_dask_port_warning() -> None:
    warnings.filterwarnings("ignore", message=_PORT_BUSY, category=UserWarning)


def bokeh_available() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _port_of(link: str) -> Optional[int]:
    m = re.search(r":(\d+)(/|$)", link.split("://", 1)[-1])
    return int(m.group(1)) if m else None


def dask_dashboard_lines(handle, requested_port: Optional[int]) -> list[str]:
    """What ``mfhpo run`` prints about the Dask dashboard: the link (with the port actually bound),
    the ``ssh -L`` tunnel on clusters, or why there is none."""
    if not bokeh_available():
        return ["Dask dashboard off: bokeh is not installed (pip install 'bokeh>=3.1')"]
    link = handle.dashboard_link
    if not link:
        return ["Dask dashboard off (the scheduler serves none)"]
    port = _port_of(link)
    busy = f" (port {requested_port} was busy)" if requested_port and port and port != requested_port else ""
    lines = [f"Dask dashboard: {link}{busy}"]
    tunnel = handle.tunnel_command
    if tunnel:
        lines.append(f"  from your laptop: {tunnel}  then open http://localhost:{port}/status")
    return lines


# --------------------------------------------------------------------------------------------
# optuna-dashboard
# --------------------------------------------------------------------------------------------


def _free_port(host: str, port: int) -> int:
    """``port`` when it can be bound on ``host``, else a free one."""
    for p in (port, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, p))
            except OSError:
                continue
            return s.getsockname()[1]
    raise MfhpoError(f"--port: cannot bind {host}")


def sync_mirror(rundir: Path, note=print) -> int:
    """Bring ``<rundir>/optuna/journal.log`` up to date with the run directory's finished trials
    (a study run without optuna, or one interrupted); returns the number of trials added."""
    from mfhpo.study.config import load_study
    from mfhpo.study.optuna_mirror import OptunaMirror
    from mfhpo.study.rundir import RunDir
    from mfhpo.study.space import build_space_spec, to_configspace

    rd = RunDir(Path(rundir))
    study = load_study(rd.study_file)
    cs = to_configspace(build_space_spec(study, str(rd.study_file)), seed=study.seed)
    recs = rd.trial_records()
    added = 0
    for stage in sorted({r.stage or "joint" for r in recs}):
        m = OptunaMirror(rd.root, study.name, stage, cs, study.metric, note=note)
        added += m.sync([r for r in recs if (r.stage or "joint") == stage])
    return added


@dataclass
class DashboardServer:
    """optuna-dashboard on a study's Optuna mirror, bound to ``host:port`` (not yet serving)."""

    root: Path
    host: str
    port: int
    added: int  # finished trials added to the mirror before serving
    journal: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/dashboard/"

    def lines(self) -> list[str]:
        out = [f"[mfhpo] added {self.added} finished trial(s) to {self.journal}"] if self.added else []
        out.append(f"optuna-dashboard: {self.url}  (storage {self.journal}; Ctrl-C stops it)")
        if os.environ.get("SSH_CONNECTION"):
            user = os.environ.get("USER", "you")
            out.append(f"  from your laptop: ssh -N -L {self.port}:localhost:{self.port} {user}@{socket.getfqdn()}  "
                       f"then open http://localhost:{self.port}/dashboard/")
        return out

    def serve(self) -> None:
        """Serve until Ctrl-C (threads per request, no line per request)."""
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        import optuna_dashboard

        from mfhpo.study.optuna_mirror import open_storage

        class _Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:
                pass

        class _Threading(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        app = optuna_dashboard.wsgi(open_storage(self.root, create=False))
        httpd = make_server(self.host, self.port, app, server_class=_Threading, handler_class=_Quiet)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            httpd.server_close()


def open_dashboard(rundir: Path, host: str = "127.0.0.1", port: int = 8080) -> DashboardServer:
    """``mfhpo dashboard runs/<study>``: bring the study's Optuna mirror up to date and pick a free
    port (``port`` or the next free one); :meth:`DashboardServer.serve` then serves it."""
    from mfhpo.study.optuna_mirror import INSTALL_HINT, journal_path
    from mfhpo.study.rundir import RunDir

    rd = RunDir(Path(rundir))
    if not rd.root.is_dir():
        raise MfhpoError(f"{rundir}: no such run directory")
    if not rd.exists():
        raise MfhpoError(f"{rundir}: not a study run directory (no state.json)")
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise MfhpoError(f"mfhpo dashboard needs optuna and optuna-dashboard: {INSTALL_HINT}") from None
    added = sync_mirror(rd.root)
    return DashboardServer(rd.root, host, _free_port(host, port), added, journal_path(rd.root))
