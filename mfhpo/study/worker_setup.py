"""Dask worker preload of the local cluster (``preload=["mfhpo.study.worker_setup"]``).

Local worker processes share the terminal's process group with ``mfhpo run``, so Ctrl-C reaches them
too. They ignore SIGINT: the driver stops them (and records the interruption) itself, and the
terminal shows one line instead of a traceback per worker.
"""

from __future__ import annotations

import logging
import signal
import threading


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tasks cancelled by the driver's shutdown are expected, not worth a warning each
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
