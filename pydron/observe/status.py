"""``pydron.workers()`` and ``pydron.stats()``: the public view of the pool and of the last run."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydron.observe.events import EVENTS


@dataclass(frozen=True)
class WorkerInfo:
    """One worker of the running pool, as ``pydron.workers()`` reports it."""

    label: str  # e.g. "popen-1"; a replacement of a dead worker is "popen-1+1"
    kind: str  # "popen", "ssh" or "cloud"
    host: str  # the machine it runs on
    pid: int | None  # its process id on that machine
    alive: bool
    busy: bool  # running a task right now
    running: int  # tasks sent to it and not finished yet
    tasks_done: int  # since it started
    busy_seconds: float  # time spent running tasks since it started


@dataclass(frozen=True)
class Stats:
    """The figures of the last top-level schedule call (or of the one running now)."""

    run: int  # 1 for the first top-level call of this process, then 2, ...
    running: bool  # the call has not returned yet
    elapsed: float  # seconds from the call to its return (or to now)
    issued: int  # functional calls made
    tasks: int  # tasks that finished on a worker (a retried task counts once per run it finished)
    failures: int  # tasks whose function raised
    retries: int  # tasks sent again because the worker running them died
    workers_died: int
    bytes_out: int  # functions, arguments and inputs sent to workers
    bytes_in: int  # results that came to the master (with their task, or fetched when needed)
    bytes_kept: int  # results left on the worker that made them
    waits: int  # times the schedule function blocked for a result
    wait_seconds: float
    busy: dict[str, float] = field(default_factory=dict)  # worker label -> seconds running tasks
    tasks_per_worker: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_moved(self) -> int:
        return self.bytes_in + self.bytes_out

    @property
    def task_seconds(self) -> float:
        """The summed time of every task: what a sequential run would have spent in them."""
        return sum(self.busy.values())

    @property
    def speedup(self) -> float:
        """Summed task time over elapsed time (above 1: tasks overlapped)."""
        return self.task_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def busy_fraction(self) -> dict[str, float]:
        """worker label -> the share of the elapsed time it spent running tasks."""
        if self.elapsed <= 0:
            return {label: 0.0 for label in self.busy}
        return {label: seconds / self.elapsed for label, seconds in self.busy.items()}


def workers() -> list[WorkerInfo]:
    """The workers of the running pool (empty when no pool is up; does not start one)."""
    from pydron.remote import pool as pool_module

    pool = pool_module._pool
    if pool is None or pool.closed:
        return []
    out = []
    for worker in pool.workers:
        stats = EVENTS.workers.get(worker.label)
        running = len(worker.inflight)
        out.append(WorkerInfo(
            label=worker.label,
            kind=stats.kind if stats else "?",
            host=stats.host if stats else "?",
            pid=stats.pid if stats else worker.info.get("pid"),
            alive=worker.alive,
            busy=worker.alive and running > 0,
            running=running if worker.alive else 0,
            tasks_done=stats.tasks_done if stats else 0,
            busy_seconds=stats.busy if stats else 0.0,
        ))
    return out


def stats() -> Stats:
    """A snapshot of the last top-level schedule call's figures (all zero before the first)."""
    run = EVENTS.run
    ended = run.ended
    return Stats(
        run=run.number,
        running=ended is None,
        elapsed=(ended if ended is not None else time.perf_counter()) - run.started,
        issued=run.issued, tasks=run.done, failures=run.failures, retries=run.retries,
        workers_died=run.workers_died, bytes_out=run.bytes_out, bytes_in=run.bytes_in,
        bytes_kept=run.bytes_kept,
        waits=run.waits, wait_seconds=run.wait_seconds,
        busy=dict(run.busy), tasks_per_worker=dict(run.tasks),
    )
