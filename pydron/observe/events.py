"""What the pool does, recorded at almost no cost: counters always, per-task records while watched.

The pool, the graph and ``schedule`` call these hooks on their own threads
(the pool's with its lock held). Each hook updates a few counters and, only
while a report is being recorded (``watch()``), appends one tuple to a list;
nothing is formatted here. The public views are ``pydron.workers()``,
``pydron.stats()``, the progress line and the run report.

Per-task records, in the order they happen (``t`` is ``time.perf_counter()``):

    ("run", run_number, t)                          a top-level schedule call began
    ("end", run_number, t)                          ... and ended
    ("issue", graph_id, seq, name, file, line, [input seqs], t)
    ("send", task_id, graph_id, seq, worker_label, t, bytes_out, [route per input])
        route: "master" (its bytes were sent), "here" (kept on that worker), "peer"
        (fetched from the worker that keeps it)
    ("done", task_id, ok, bytes_in, t, worker_began, worker_ended)   worker clock;
        ok is None for a cancelled task
    ("revoked", task_id, t)                         a queued task taken back unstarted (its
                                                    "send" did not run; another one follows)
    ("start", worker_label, t) / ("stop", worker_label, t) / ("died", worker_label, t)
    ("wait", t_begin, t_end, file, line, inside)   the schedule function waited
                                                    (inside: False at its return, line = the caller's)
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydron.runtime.codes import inline_codes, site_line
from pydron.runtime.future import PENDING
from pydron.runtime.resolve import plain_size

log = logging.getLogger("pydron")  # with a NullHandler (pydron/__init__.py)

# A transfer at least this big is logged (INFO); PYDRON_LOG_BYTES changes it.
BIG_TRANSFER = int(os.environ.get("PYDRON_LOG_BYTES", "1000000") or "1000000")
# Waits of the schedule function shorter than this are counted, not recorded.
MIN_WAIT = 0.0005

_clock = time.perf_counter
_PYDRON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../pydron


@dataclass
class WorkerStats:
    """One worker's lifetime figures (``pydron.workers()`` adds what it runs now)."""

    label: str
    kind: str
    host: str
    pid: int | None
    started: float
    stopped: float | None = None
    died: bool = False
    tasks_done: int = 0
    failures: int = 0
    busy: float = 0.0  # seconds spent running tasks, measured by the worker
    bytes_in: int = 0  # results received from it
    bytes_out: int = 0  # functions, arguments and inputs sent to it


@dataclass
class RunStats:
    """The figures of one top-level schedule call (``pydron.stats()``)."""

    number: int
    started: float
    ended: float | None = None
    issued: int = 0  # functional calls made
    sent: int = 0  # tasks sent to workers (a retried task counts again)
    done: int = 0
    failures: int = 0  # tasks whose function raised
    retries: int = 0  # tasks sent again because their worker died
    workers_died: int = 0
    bytes_in: int = 0  # results that came to the master, with their task or fetched later
    bytes_out: int = 0
    bytes_kept: int = 0  # results left on the worker that made them (the data plane)
    waits: int = 0  # times the schedule function blocked for a task
    wait_seconds: float = 0.0
    busy: dict[str, float] = field(default_factory=dict)  # worker label -> task seconds
    tasks: dict[str, int] = field(default_factory=dict)  # worker label -> tasks done


class Events:
    """The process-wide recorder (one instance: ``EVENTS``)."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerStats] = {}
        self.run = RunStats(0, _clock(), _clock())
        self.runs = 0
        self._depth = 0  # nested top-level calls (another thread, a call from a non-functional)
        self._watchers = 0
        self._lock = threading.Lock()
        self.records: list[tuple] | None = None  # per-task records, only while watched
        self.listeners: list[Any] = []  # objects with run_began(run) / run_ended(run)

    # -- watching ---------------------------------------------------------
    def watch(self) -> list[tuple]:
        """Start keeping per-task records (until the matching ``unwatch``); returns the list."""
        with self._lock:
            self._watchers += 1
            if self.records is None:
                self.records = []
            return self.records

    def unwatch(self) -> None:
        with self._lock:
            self._watchers -= 1
            if self._watchers <= 0:
                self._watchers = 0
                self.records = None

    # -- runs (scheduling) ------------------------------------------------
    def run_began(self) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            self.runs += 1
            run = self.run = RunStats(self.runs, _clock())
            records = self.records
            if records is not None:
                records.append(("run", run.number, run.started))
            listeners = list(self.listeners)
        for listener in listeners:
            listener.run_began(run)

    def run_ended(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0:
                return
            self._depth = 0
            run = self.run
            run.ended = _clock()
            records = self.records
            if records is not None:
                records.append(("end", run.number, run.ended))
            listeners = list(self.listeners)
        for listener in listeners:
            listener.run_ended(run)

    # -- the graph --------------------------------------------------------
    def waited(self, began: float) -> None:
        """The schedule function waited since ``began`` (a sync point or a needed value)."""
        now = _clock()
        if now - began < MIN_WAIT:
            return
        run = self.run
        run.waits += 1
        run.wait_seconds += now - began
        records = self.records
        if records is not None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(_PYDRON_DIR):
                frame = frame.f_back
            if frame is not None:
                # Outside the rewritten code: the final wait, as the schedule function returned.
                inside = id(frame.f_code) in inline_codes
                records.append(("wait", began, now, frame.f_code.co_filename, frame.f_lineno, inside))

    # -- the pool ---------------------------------------------------------
    def issued(self, task: Any) -> None:
        """A functional call became a task (``Pool.prepare``, on the caller's thread)."""
        self.run.issued += 1
        records = self.records
        if records is not None:
            future = task.future
            site = future._pd_site
            file, line = ("?", 0)
            if site:
                frame, lasti = site[-1]
                file, line = frame.f_code.co_filename, site_line(frame, lasti) or 0
            fn = task.fn
            records.append(("issue", future._pd_graph.number, future._pd_seq,
                            getattr(fn, "__qualname__", None) or repr(fn), file, line,
                            [f._pd_seq for f in task.inputs], _clock()))

    def sent(self, worker: Any, sent: list[tuple[int, Any, tuple, int]]) -> None:
        """A batch of tasks was encoded for ``worker``: ``(task_id, task, message, size)``
        each, ``message`` the TASK tuple of protocol.py and ``size`` the bytes of its
        arguments and inputs (the function's own bytes are added here)."""
        sizes = [size + len(message[2]) if message[2] else size for _, _, message, size in sent]
        total = 0
        for (_, task, _, _), size in zip(sent, sizes):
            total += size
            if size >= BIG_TRANSFER:
                log.info("sent %d bytes to %s for %s()", size, worker.label,
                         getattr(task.fn, "__qualname__", "?"))
        run = self.run
        run.sent += len(sent)
        run.bytes_out += total
        stats = self.workers.get(worker.label)
        if stats is not None:
            stats.bytes_out += total
        records = self.records
        if records is not None:
            now = _clock()
            for (task_id, task, message, _), size in zip(sent, sizes):
                future = task.future
                routes = ["master" if type(data) is bytes else data[0] for data in message[4]]
                graph = getattr(future, "_pd_graph", None)  # None: a lost value made again
                records.append(("send", task_id, graph.number if graph is not None else 0, future._pd_seq,
                                worker.label, now, size, routes))
        if log.isEnabledFor(logging.DEBUG):
            for (task_id, task, _, _), size in zip(sent, sizes):
                log.debug("task %d %s() sent to %s (%d bytes)", task_id,
                          getattr(task.fn, "__qualname__", "?"), worker.label, size)

    def finished(self, worker: Any, done: list[tuple[int, bool, Any, float | None, float | None]]) -> None:
        """A batch of results came back (with the pool's lock held):
        ``(task_id, ok, data, began, ended)`` each, ``began``/``ended`` on the worker's clock.

        ``data``: the result's bytes, ``("value", value)`` for a small plain value,
        or ``("kept", key, size, type)`` for a result that stays on the worker
        (no bytes moved); ``b""`` with ``ok`` false: a
        cancelled task, counted as neither done nor failed.
        """
        records = self.records
        label = worker.label
        debug = log.isEnabledFor(logging.DEBUG)
        count = failures = size_total = kept_total = 0
        busy = 0.0
        for task_id, ok, data, began, ended in done:
            if not ok and data == b"":
                if records is not None:
                    records.append(("done", task_id, None, 0, _clock(), began, ended))
                continue
            kept = 0
            if type(data) is bytes:
                size = len(data)
            elif data[0] == "value":
                size = plain_size(data[1])
            else:  # ("kept", key, size, type)
                size, kept = 0, data[2]
            seconds = ended - began if began is not None and ended is not None else 0.0
            count += 1
            busy += seconds
            size_total += size
            kept_total += kept
            if not ok:
                failures += 1
            if records is not None:
                records.append(("done", task_id, ok, size or kept, _clock(), began, ended))
            if size >= BIG_TRANSFER:
                log.info("received %d bytes from %s (task %d)", size, label, task_id)
            elif debug:
                log.debug("task %d %s on %s after %.1f ms (%d bytes back)", task_id,
                          "done" if ok else "failed", label, seconds * 1e3, size)
        if not count:
            return
        run = self.run
        run.bytes_kept += kept_total
        run.done += count
        run.failures += failures
        run.bytes_in += size_total
        run.busy[label] = run.busy.get(label, 0.0) + busy
        run.tasks[label] = run.tasks.get(label, 0) + count
        stats = self.workers.get(label)
        if stats is not None:
            stats.tasks_done += count
            stats.busy += busy
            stats.bytes_in += size_total
            stats.failures += failures

    def revoked(self, worker: Any, task_id: int) -> None:
        """``worker`` gave back a task it had queued, unstarted; it is sent again elsewhere."""
        run = self.run
        run.sent -= 1
        records = self.records
        if records is not None:
            records.append(("revoked", task_id, _clock()))
        log.debug("task %d taken back from %s for an idle worker", task_id, worker.label)

    def fetched(self, worker: Any, size: int) -> None:
        """The master fetched a result that ``worker`` kept (``size`` bytes)."""
        self.run.bytes_in += size
        stats = self.workers.get(worker.label)
        if stats is not None:
            stats.bytes_in += size
        if size >= BIG_TRANSFER:
            log.info("fetched %d bytes kept on %s", size, worker.label)

    def worker_started(self, worker: Any) -> None:
        """A worker is up (its ``info`` holds the worker's own report)."""
        info = worker.info or {}
        spec = worker.spec
        target = getattr(spec, "target", "") or ""
        if hasattr(spec, "cluster"):
            kind = "cloud"
        elif target or "ssh=" in str(getattr(spec, "xspec", spec)):
            kind = "ssh"
        else:
            kind = "popen"
        host = target.rpartition("@")[2].partition(":")[0] if target else info.get("host", "localhost")
        now = _clock()
        self.workers[worker.label] = WorkerStats(worker.label, kind, host, info.get("pid"), now)
        records = self.records
        if records is not None:
            records.append(("start", worker.label, now))
        log.info("worker %s started (%s, host %s, pid %s)", worker.label, kind, host, info.get("pid"))

    def worker_died(self, worker: Any, lost: list, failed: list) -> None:
        """A worker's connection closed while it should have been up.

        ``lost``: the ``(task, graph, sent)`` entries it was running; ``failed``:
        the ``(task, graph, error)`` of those that will not run again.
        """
        now = _clock()
        stats = self.workers.get(worker.label)
        if stats is not None:
            if stats.stopped is not None:
                return  # stopped by the pool (shutdown): its channel closing is no death
            stats.stopped = now
            stats.died = not getattr(worker, "stopped", False)
        if not stats or not stats.died:  # the pool ended it on purpose (a cancelled task ignored it)
            log.info("worker %s stopped by the pool", worker.label)
            records = self.records
            if records is not None:
                records.append(("stop", worker.label, now))
            return
        given_up = {id(entry[0]) for entry in failed}
        retried = [entry[0] for entry in lost
                   if id(entry[0]) not in given_up and entry[0].future._pd_state == PENDING]
        run = self.run
        run.workers_died += 1
        run.retries += len(retried)
        records = self.records
        if records is not None:
            records.append(("died", worker.label, now))
        log.warning("worker %s died with %d task(s) in flight; %d will run again elsewhere",
                    worker.label, len(lost), len(retried))
        for task in retried:
            log.info("retrying %s() (its worker %s died)", getattr(task.fn, "__qualname__", "?"), worker.label)

    def worker_stopped(self, worker: Any) -> None:
        """The pool stopped a worker on purpose (shutdown)."""
        now = _clock()
        stats = self.workers.get(worker.label)
        if stats is not None and stats.stopped is None:
            stats.stopped = now
        records = self.records
        if records is not None:
            records.append(("stop", worker.label, now))
        log.info("worker %s stopped", worker.label)

    def cancelled(self, task: Any, why: str) -> None:
        """A task will not run (e.g. the pool shut down, or an earlier call failed)."""
        log.info("%s() cancelled: %s", getattr(task.fn, "__qualname__", "?"), why)


EVENTS = Events()
