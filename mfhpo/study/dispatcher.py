"""mfhpo's own dispatcher: SMAC ask/tell over Dask futures.

* The original ``TrialInfo`` from ``ask()`` is kept for each future and passed back to ``tell()``
  unchanged (never a pickled copy: ConfigSpace log-int hyperparameters do not compare equal to their
  unpickled selves, which orphans trials and stops Hyperband promoting).
* A trial's exception -> ``CRASHED`` with a finite crash cost; ``KilledWorker`` / a lost future ->
  ``CRASHED``; CUDA OOM -> ``MEMORYOUT``. ``distributed.scheduler.allowed-failures`` must be 0 (set
  by the runner before the cluster starts) so a killing trial is not retried on other workers.
* At most ``n_slots()`` trials are in Dask at once, each with ``resources={"trial": 1}`` so two
  trials never share a worker (GPU). With zero workers the dispatcher waits.
* SMAC runs in its own thread (asks ahead ``prefetch`` trials, processes tells in order), so model
  refits (seconds) do not leave workers idle; the main thread only moves futures. An optimizer
  with ``ask_ahead = False`` (optuna-tpe-hb) is asked only while a slot is free. When the thread
  stops it writes SMAC's state files if tells are not yet in them (``Optimizer.save_interval_s``).
* ``trace(event, seconds, cpu_seconds)`` (optional) receives the wall-clock duration and the calling
  thread's CPU time of every ``ask``, ``tell``, ``submit`` (prepare + Dask submit), ``finish``
  (recording a result) and ``slots`` call (benchmarks/driver_scale.py).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Pending:
    info: Any  # the TrialInfo object ask() returned
    config_id: int
    record: Any = None  # the TrialRecord prepare() made
    spec: Any = None  # the TrialSpec the worker runs
    future: Any = None
    submitted: float = 0.0


class _OptimizerThread(threading.Thread):
    """Owns every call into SMAC: asks ahead into ``ready``, tells from ``tells`` in order."""

    def __init__(self, optimizer, wake: "queue.Queue", prefetch: int, may_ask: Callable[[], bool],
                 trace: Optional[Callable[[str, float, float], None]] = None,
                 slot_free: Callable[[], bool] = lambda: True):
        super().__init__(daemon=True, name="mfhpo-optimizer")
        self.trace = trace
        self.opt = optimizer
        self.wake = wake
        self.prefetch = max(1, int(prefetch))
        self.may_ask = may_ask
        # an optimizer with ask_ahead = False is asked only when a slot is free (optuna-tpe-hb)
        self.slot_free = slot_free if not getattr(optimizer, "ask_ahead", True) else (lambda: True)
        self.ready: "queue.Queue[tuple[Any, int]]" = queue.Queue()
        self.tells: "queue.Queue[tuple[Any, Any]]" = queue.Queue()
        self.cv = threading.Condition()
        self.stop_flag = False
        self.asked = 0
        self.error: Optional[BaseException] = None
        self.exhausted = False  # the search space has no new configuration left
        self.ask_s = 0.0
        self.tell_s = 0.0

    def poke(self) -> None:
        with self.cv:
            self.cv.notify_all()

    def run(self) -> None:
        try:
            while True:
                did = False
                while True:
                    try:
                        info, value = self.tells.get_nowait()
                    except queue.Empty:
                        break
                    t0, c0 = time.perf_counter(), time.thread_time()
                    self.opt.tell(info, value)
                    dt = time.perf_counter() - t0
                    self.tell_s += dt
                    if self.trace is not None:
                        self.trace("tell", dt, time.thread_time() - c0)
                    did = True
                if self.stop_flag:
                    if getattr(self.opt, "unsaved", 0):
                        self.opt.save()
                    return
                if self.ready.qsize() < self.prefetch and not self.exhausted and self.may_ask() and self.slot_free():
                    t0, c0 = time.perf_counter(), time.thread_time()
                    try:
                        info = self.opt.ask()
                    except (StopIteration, RuntimeError) as exc:
                        if not isinstance(exc, StopIteration) and "StopIteration" not in repr(exc):
                            raise
                        self.exhausted = True
                        self.wake.put(("exhausted", None))
                        continue
                    except Exception as exc:
                        if type(exc).__name__ != "ConfigurationSpaceExhaustedException":
                            raise
                        self.exhausted = True
                        self.wake.put(("exhausted", None))
                        continue
                    cid = self.opt.config_id(info.config)
                    dt = time.perf_counter() - t0
                    self.ask_s += dt
                    if self.trace is not None:
                        self.trace("ask", dt, time.thread_time() - c0)
                    self.asked += 1
                    self.ready.put((info, cid))
                    self.wake.put(("ready", None))
                    did = True
                if not did:
                    with self.cv:
                        if self.tells.empty() and not self.stop_flag:
                            self.cv.wait(timeout=0.5)
        except BaseException as exc:  # surfaced by the dispatcher
            self.error = exc
            self.wake.put(("error", exc))


class Dispatcher:
    """Drive ``optimizer`` (``ask``/``tell``/``config_id``) over a Dask ``client``.

    Callbacks (all run in the calling thread):

    * ``prepare(info, config_id) -> (spec, record)``: trial spec for the worker, record to keep
    * ``finish(pending, result | None, error | None) -> TrialValue``: record the outcome, return
      what SMAC is told
    * ``may_start(n_active) -> bool``: budget check before asking / submitting one more trial
    * ``n_slots() -> int``: trial slots now available in the cluster; asked at most every
      ``slots_every_s`` seconds (it is a scheduler round trip: 20-30 ms with 256 workers, which
      every loop turn paid before), and again at once after a trial's worker was lost
    * ``tick(dispatcher)``: called every loop (progress display)
    """

    def __init__(self, client, optimizer, fn: Callable, *, prepare, finish, may_start, n_slots,
                 prefetch: int = 1, tick: Callable | None = None, poll_s: float = 0.5,
                 resources: dict | None = None, trace: Optional[Callable[[str, float, float], None]] = None,
                 slots_every_s: float = 1.0):
        self.client = client
        self.opt = optimizer
        self.fn = fn
        self.prepare = prepare
        self.finish = finish
        self.may_start = may_start
        self.n_slots = n_slots
        self.prefetch = prefetch
        self.tick = tick
        self.poll_s = poll_s
        self.resources = resources if resources is not None else {"trial": 1}
        self.trace = trace
        self.inflight: dict[str, Pending] = {}
        self.wake: "queue.Queue" = queue.Queue()
        self.n_done = 0
        self.busy_s = 0.0
        self.slots_every_s = slots_every_s
        self._slots = (0, -float("inf"))  # (count, when counted)

    def _slot_count(self) -> int:
        count, when = self._slots
        now = time.monotonic()
        if now - when >= self.slots_every_s:
            count = self._timed("slots", self.n_slots)
            self._slots = (count, now)
        return count

    def _active(self) -> int:
        return len(self.inflight) + self._thread.ready.qsize()

    def _on_done(self, fut) -> None:
        self.wake.put(("done", fut.key))

    def _timed(self, event: str, fn: Callable, *args):
        if self.trace is None:
            return fn(*args)
        t0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*args)
        self.trace(event, time.perf_counter() - t0, time.thread_time() - c0)
        return out

    def _submit(self, info, cid) -> None:
        self._timed("submit", self._submit_now, info, cid)

    def _submit_now(self, info, cid) -> None:
        spec, record = self.prepare(info, cid)
        p = Pending(info=info, config_id=cid, record=record, spec=spec)
        fut = self.client.submit(self.fn, spec, resources=self.resources, pure=False,
                                 key=f"trial-{getattr(record, 'trial_id', id(p))}-{time.time_ns()}")
        p.future = fut
        p.submitted = time.time()
        self.inflight[fut.key] = p
        fut.add_done_callback(self._on_done)

    def _collect(self, key: str) -> None:
        p = self.inflight.pop(key, None)
        if p is None:
            return
        fut = p.future
        result, error = None, None
        try:
            if fut.status == "finished":
                result = fut.result()
            elif fut.status == "cancelled":
                error = "future cancelled (worker or scheduler lost)"
            else:
                exc = fut.exception()
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        except BaseException as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            self._slots = (0, -float("inf"))  # a worker may be gone: count the slots again
        value = self._timed("finish", self.finish, p, result, error)
        self.n_done += 1
        if result is not None:
            self.busy_s += float(getattr(result, "wall_s", 0.0))
        try:
            fut.release()
        except Exception:
            pass
        self._thread.tells.put((p.info, value))
        self._thread.poke()

    def run(self) -> dict:
        may_ask = lambda: self.may_start(self._active())  # noqa: E731
        slot_free = lambda: self._active() < self._slots[0]  # noqa: E731  (the last count; the main thread renews it)
        self._thread = _OptimizerThread(self.opt, self.wake, self.prefetch, may_ask, trace=self.trace,
                                        slot_free=slot_free)
        self._thread.start()
        t_start = time.time()
        try:
            while True:
                if self._thread.error is not None:
                    raise self._thread.error
                # submit asked trials into free slots
                slots = self._slot_count()
                while len(self.inflight) < slots and not self._thread.ready.empty():
                    if not self.may_start(len(self.inflight)):
                        break
                    info, cid = self._thread.ready.get_nowait()
                    self._submit(info, cid)
                    self._thread.poke()
                if self.tick is not None:
                    self.tick(self)
                if not self.inflight and (not self.may_start(0) or (self._thread.exhausted and self._thread.ready.empty())):
                    break  # budget spent; asked-ahead trials stay unsubmitted (re-queued on resume)
                try:
                    kind, payload = self.wake.get(timeout=self.poll_s)
                except queue.Empty:
                    continue
                batch = [(kind, payload)]
                while True:
                    try:
                        batch.append(self.wake.get_nowait())
                    except queue.Empty:
                        break
                for kind, payload in batch:
                    if kind == "done":
                        self._collect(payload)
                    elif kind == "error":
                        raise payload
        finally:
            self._thread.stop_flag = True
            self._thread.poke()
            self._thread.join(timeout=120)
        return {"wall_s": time.time() - t_start, "done": self.n_done, "busy_s": self.busy_s,
                "ask_s": self._thread.ask_s, "tell_s": self._thread.tell_s,
                "unsubmitted": self._thread.ready.qsize(), "exhausted": self._thread.exhausted}


def local_slots(client, resource: str = "trial") -> int:
    """Workers that declare ``resource`` (one trial each) in ``client``'s cluster."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:
        workers = client.scheduler_info()["workers"]
    except Exception:
        return 0
    return sum(int(w.get("resources", {}).get(resource, 0) >= 1) for w in workers.values())
