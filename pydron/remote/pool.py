"""The worker pool: execnet gateways that run tasks, and the dispatcher feeding them.

One gateway is one worker process running ``worker.serve``. The dispatcher
thread keeps a small window of tasks in flight on each worker and sends them
in batches, so that trivial tasks are not limited by one round trip each.
"""
from __future__ import annotations

import atexit
import collections
import heapq
import inspect
import logging
import os
import pickle
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import cloudpickle
import execnet

from pydron.errors import ConfigError, PydronError, RemoteError, WorkerDied
from pydron.functional import TIMEOUT_MARK
from pydron.observe.events import EVENTS
from pydron.remote import dataplane, protocol, worker as worker_module
from pydron.remote.backend import Backend
from pydron.remote.preload import modules_to_preload
from pydron.remote.values import Recipe, RemoteValue
from pydron.runtime.codes import site_line
from pydron.runtime.future import _MISSING, DONE, FAILED, PENDING
from pydron.runtime.resolve import plain_size

START_TIMEOUT = float(os.environ.get("PYDRON_START_TIMEOUT", "60"))
# How many workers one task may take down before it fails with WorkerDied
# (pydron.conf "retries", PYDRON_RETRIES, ``--retries``).
DEFAULT_RETRIES = 3
# How long a cancelled or timed-out task may go on after it was told to stop
# before its worker is killed and replaced.
CANCEL_GRACE = float(os.environ.get("PYDRON_CANCEL_GRACE", "2"))
# The dispatcher tells workers about released values at least this often (seconds).
RELEASE_SECONDS = 0.5
# Ready tasks waiting to be sent: above QUEUE_HIGH, the thread that issues
# calls waits until QUEUE_LOW remain or a task that is not trivial heads the
# queue (``make_room``). Calls that take a worker less time than the master
# needs to send them would otherwise pile up, with their arguments, and each
# would have left the CPU's caches long before the dispatcher reached it.
# The program loses no overlap worth having: QUEUE_LOW trivial tasks are at
# most 50 ms of the workers' time.
QUEUE_HIGH = 2048
QUEUE_LOW = 512
TRIVIAL_SECONDS = 0.0001  # a task's own run time on its worker
ROOM_POLL_SECONDS = 0.1  # how often a waiting issuer looks at the workers' liveness
# Task ids are unique in the process, not per pool: records of two pools (an
# old one still finishing, the run report's) never mix up two tasks.
_TASK_IDS = iter(range(1, sys.maxsize))
# A result whose pickle is larger than this stays on its worker (the data plane).
INLINE_LIMIT = int(os.environ.get("PYDRON_INLINE_LIMIT", str(64 * 1024)))
KEEP_FREED_VAR = "PYDRON_KEEP_FREED_MEMORY"
_DATAPLANE_SOURCE = inspect.getsource(dataplane)
_CLOSED = object()


class Worker:
    """The master's handle on one worker process."""

    def __init__(self, label: str, gateway: execnet.Gateway, channel: Any, spec: Any = None) -> None:
        self.label = label
        self.base_label = label  # a replacement's label is this plus "+N"
        self.spec = spec  # what started it: a replacement is started from the same
        self.started = time.monotonic()
        self.quick_deaths = 0  # predecessors that died soon after they started
        self.died_young = False  # died on its own (no task running) soon after it started
        self.gateway = gateway
        self.channel = channel
        self.control: Any = None  # read by the worker's receiving thread, even mid-task
        self.data_address: tuple[str, int] | None = None  # its data server (None: values come inline)
        self.holding: dict[int, RemoteValue] = {}  # values it keeps for the master
        self.to_release: list[int] = []  # keys the master no longer needs (appended from __del__)
        self.stopped = False  # killed by the pool (a task would not stop): not the task's fault
        self.inflight: dict[int, tuple[Any, Any, float]] = {}
        # Long tasks queued behind another long one (see Pool._free_worker): task
        # id -> whether the master has asked for it back for an idle worker.
        self.prefetched: dict[int, bool] = {}
        # Tasks of its window asked back because their function turned out long
        # after they were sent (see Pool._take_back_turned_long_locked).
        self.asked: set[int] = set()
        self.functions_sent: set[int] = set()
        self.forget: list[int] = []  # keys to drop before the next batch
        self.alive = True
        self.window = 1
        self.start_steps = (0.0, 0.0)  # see Pool._start_one
        self.info: dict[str, Any] = {}
        # What the worker can import from: the master's sys.path as last sent
        # (local workers), or the files shipped so far (remote ones).
        self.sys_path: list[str] | None = None
        self.shipped: set[str] | None = None
        self.modules_seen = 0  # len(sys.modules) when the shipment was last brought up to date

    def __repr__(self) -> str:
        return f"<Worker {self.label} inflight={len(self.inflight)} alive={self.alive}>"


class Pool(Backend):
    """Runs tasks on execnet gateways; results go back to each task's graph (backend.py)."""

    def __init__(self, specs: Sequence[Any], retries: int = DEFAULT_RETRIES,
                 timeout: float | None = None) -> None:
        if not specs:
            raise PydronError("no workers configured")
        self._specs = list(specs)
        # How many workers a task may take down with it before it fails.
        self.retries = retries
        self.timeout = timeout  # seconds per call unless its function says otherwise
        self._starting = 0  # replacements being started
        # Labels of the workers that died (a replacement takes a dead worker's
        # place in ``workers``), and how many replacements started.
        self.deaths: list[str] = []
        self.replacements = 0
        self._restarts = 0
        self._group = execnet.Group()
        # We stop our own gateways (see shutdown); execnet's exit hook would try to
        # start threads while the interpreter shuts down, which 3.12+ refuses.
        atexit.unregister(self._group._cleanup_atexit)
        self._workers: list[Worker] = []
        # Ready tasks, a heap in program order: a task that consumes a result
        # goes before later calls that would produce more (bounded memory).
        self._queue: list[tuple[int, int, Any, Any]] = []
        self._queue_order = iter(range(1, sys.maxsize))
        # One lock for the queue, the workers' windows and the conditions below;
        # the paths taken once per call or per batch hold ``_mutex`` itself
        # (no Python-level Condition.__enter__/__exit__).
        self._mutex = threading.RLock()
        self._lock = threading.Condition(self._mutex)
        self._task_ids = _TASK_IDS
        # function -> (key, pickled), the newest last; at most FUNCTION_CACHE
        # (closures made per call would otherwise pile up, here and on workers).
        self._functions: collections.OrderedDict[Any, tuple[int, bytes]] = collections.OrderedDict()
        self._function_keys = iter(range(1, sys.maxsize))
        self._closed = False
        self._next_worker = 0  # round-robin among equally busy workers
        self._short: dict[Any, bool] = {}  # function -> its last task was short
        self._turned_long = False  # a function seen short ran long: windows may hold its tasks
        self._trivial: dict[Any, bool] = {}  # function -> its last task ran under TRIVIAL_SECONDS
        # (when, order, kind, worker, task_id): a timeout to enforce, or the end of
        # a cancelled task's grace; a watchdog thread acts on them.
        self._deadlines: list[tuple[float, int, str, Worker, int]] = []
        # The run's secret for the data plane: given to workers over their
        # execnet channels, never written anywhere.
        self._secret = secrets.token_bytes(32)
        self._client = dataplane.Client(self._secret)
        # Bytes of values and arguments that passed through the master (both ways),
        # and of kept values sent from one worker to another.
        self.bytes_through_master = 0
        self.bytes_between_workers = 0
        self._deadline_cv = threading.Condition(self._mutex)
        self._room = threading.Condition(self._mutex)
        self._issuers_waiting = 0  # threads in make_room
        self._dispatcher_idle = False  # the dispatch thread waits on _lock: submit wakes it
        self._watchdog: threading.Thread | None = None
        began = time.perf_counter()
        self._start_workers()
        self.start_seconds = time.perf_counter() - began  # every worker ready
        for worker in self._workers:
            EVENTS.worker_started(worker)
        self._thread = threading.Thread(target=self._dispatch_loop, name="pydron-dispatch", daemon=True)
        self._thread.start()

    # -- start-up ---------------------------------------------------------
    def _start_workers(self) -> None:
        try:
            with ThreadPoolExecutor(max_workers=min(16, len(self._specs))) as starter:
                started = list(starter.map(self._start_one, self._specs))
        except BaseException:  # e.g. Ctrl-C while starting: give back what was taken
            self._group.terminate(timeout=2)
            _release(self._specs)
            raise
        errors = [item for item in started if isinstance(item, BaseException)]
        self._workers = [item for item in started if isinstance(item, Worker)]
        if errors:
            self._group.terminate(timeout=2)
            release_error = _release(self._specs)
            if release_error is not None:
                raise release_error from errors[0]
            raise errors[0]

    def _start_one(self, spec: Any) -> Worker | BaseException:
        label = getattr(spec, "label", str(spec))
        xspec = getattr(spec, "xspec", spec)
        began = time.perf_counter()
        try:
            make = getattr(spec, "make_gateway", None)  # e.g. ssh.SshGatewaySpec
            gateway = make(self._group) if make else self._group.makegateway(xspec)
            connected = time.perf_counter()
            channel = gateway.remote_exec(worker_module)
            control = gateway.newchannel()
            local = gateway.spec.popen and not gateway.spec.via
            init = {
                "control": control,
                "dataplane": _DATAPLANE_SOURCE,
                "secret": self._secret,
                "data": _data_bind(spec, local),
                "inline_limit": INLINE_LIMIT,
                "keep_freed_memory": _keep_freed_memory(),
                "preload": modules_to_preload(),
                "sys_path": [p for p in sys.path if p] if local else [],
                "chdir": os.getcwd() if local else None,
                "parent_pid": os.getpid() if local else None,
                "label": label,
                # tasks' log records at or above the master's root level are sent back
                "log_level": logging.getLogger().getEffectiveLevel(),
                "log_configured": bool(logging.getLogger().handlers),
            }
            modules_seen = len(sys.modules)
            if not local:  # the remote has only Python: send what the worker needs
                from pydron.remote.ssh import shipment

                init["ship"] = shipment(getattr(spec, "tmp_dir", None))
            channel.send(("init", init))
            kind, info = channel.receive(timeout=START_TIMEOUT)
            if kind == "failed":
                gateway.exit()
                raise PydronError(info)
        except ConfigError as exc:  # already names the file, the entry and the field
            return exc
        except BaseException as exc:  # noqa: BLE001 - reported with the worker's name
            return PydronError(f"worker {label} ({xspec}) failed to start: {exc}")
        master = "%d.%d" % sys.version_info[:2]
        if info["python"].rsplit(".", 1)[0] != master:
            gateway.exit()
            return PydronError(
                f"worker {label} ({xspec}) runs Python {info['python']}, but the master "
                f"runs {master}: functions travel as bytecode, so the versions must match"
            )
        worker = Worker(label, gateway, channel, spec)
        # seconds to a running interpreter with execnet's channel up, then to "ready"
        worker.start_steps = (connected - began, time.perf_counter() - connected)
        worker.control = control
        worker.info = info
        if info.get("data_port"):
            worker.data_address = (_data_host(spec, local), info["data_port"])
        if local:
            worker.sys_path = init["sys_path"]
        else:
            worker.shipped = set(init["ship"]["files"])
            worker.modules_seen = modules_seen
        channel.setcallback(lambda message, w=worker: self._on_message(w, message), endmarker=_CLOSED)
        return worker

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- submitting -------------------------------------------------------
    def prepare(self, task: Any) -> None:
        """Pickle a task's arguments (on the caller's thread, at the call).

        An argument that cannot be pickled fails the task when it is sent.
        """
        task.timeout = getattr(task.fn, TIMEOUT_MARK, None) or self.timeout
        EVENTS.issued(task)
        try:
            task.payload = protocol.task_args(task.args, task.kwargs, task.slots)
        except Exception as exc:  # noqa: BLE001 - reported through the task's future
            task.payload = exc

    def make_room(self) -> None:
        """With QUEUE_HIGH ready tasks waiting, wait until QUEUE_LOW remain or a task
        that is not trivial heads the queue (the queue then leaves at the workers'
        pace, not the master's, and the program's own work goes on meanwhile).

        Only the thread that issues calls waits here, never one that receives
        results. It stops waiting when the pool closes, when no worker is alive
        or starting (the next submit fails the task), or when the dispatcher is gone.
        """
        if len(self._queue) < QUEUE_HIGH:  # read without the lock: a hint, checked below
            return
        with self._lock:
            while (not self._queue_drained_locked() and not self._closed and self._thread.is_alive()
                   and (self._starting or _any_alive(self._workers))):
                self._issuers_waiting += 1
                try:
                    self._room.wait(ROOM_POLL_SECONDS)
                finally:
                    self._issuers_waiting -= 1

    def _queue_drained_locked(self) -> bool:
        return len(self._queue) <= QUEUE_LOW or not self._trivial.get(_key(self._queue[0][2].fn), False)

    def submit(self, task: Any, graph: Any) -> None:
        """Queue a ready task; the dispatcher sends it to a worker."""
        with self._mutex:
            if self._closed:
                graph.finish(task.future, ok=False, error=PydronError("the pydron pool is shut down"))
                return
            if not self._starting and not _any_alive(self._workers):
                name = getattr(task.fn, "__qualname__", repr(task.fn))
                graph.finish(task.future, ok=False, error=WorkerDied(
                    f"every pydron worker has died; {name}() was not run (the next top-level "
                    f"schedule call starts new workers)"))
                return
            heapq.heappush(self._queue, (task.future._pd_seq, next(self._queue_order), task, graph))
            if self._dispatcher_idle:
                self._lock.notify()

    def _dispatch_loop(self) -> None:
        while True:
            with self._lock:
                revokes = []
                while not self._closed and not (self._queue and self._free_worker(self._queue[0][2])):
                    revokes = [] if self._queue else self._revokes_locked()
                    if revokes:
                        break
                    self._dispatcher_idle = True
                    try:
                        self._lock.wait(RELEASE_SECONDS)
                    finally:
                        self._dispatcher_idle = False
                    if any(worker.to_release for worker in self._workers):
                        break
                if self._closed:
                    return
                batches = self._assign_locked() if self._queue else []
                if self._issuers_waiting and self._queue_drained_locked():
                    self._room.notify_all()
            for worker, task_ids in revokes:
                self._control(worker, ("revoke", task_ids))
            for worker, batch in batches:
                self._send(worker, batch)
            self.flush_releases()  # values the program dropped: the workers free them
            # Hold no task while idle: its arguments would outlive the call.
            batches = worker = batch = None  # type: ignore[assignment]

    def _free_worker(self, task: Any, short_room: int | None = None,
                     short: bool | None = None) -> Worker | None:
        """The least busy worker with room; ties go to a worker that has run the function
        before (it has imported its module), then round the pool, so every worker gets work.

        Only a function seen to be short may queue deeply behind other tasks on
        a worker, up to ``short_room`` (``_short_room()`` unless the caller has it).
        A long one goes to an idle worker; when none is idle it waits
        behind one long task (the worker then starts it without a round trip to
        the master), and is taken back if a worker falls idle first
        (``_revokes_locked``). ``short``: ``_is_short(task)``, if the caller has it.
        """
        if short is None:
            short = self._is_short(task)
        holder = _holder(task) if task.inputs else None
        if holder is not None and holder.alive and len(holder.inflight) < (holder.window if short else 1):
            return holder  # most of its input bytes are there already
        if short:
            return self._least_busy(task, self._short_room() if short_room is None else short_room)
        best = self._least_busy(task, 1)
        if best is None and task.timeout is None:
            if (holder is not None and holder.alive and len(holder.inflight) == 1
                    and not holder.prefetched):
                return holder
            best = self._least_busy(task, 2)
        return best

    def _short_room(self) -> int:
        """How many short tasks any worker may have in flight: the widest window.
        A worker's window grows with the short tasks it runs; one that has run
        none yet must still take its share of a burst, not one task at a time."""
        room = 1
        for worker in self._workers:
            if worker.window > room:
                room = worker.window
        return room

    def _is_short(self, task: Any) -> bool:
        # A task with a timeout is timed from when it is sent: it never queues.
        return self._short.get(_key(task.fn), False) and task.timeout is None

    def _least_busy(self, task: Any, room: int) -> Worker | None:
        """The least busy worker with fewer than ``room`` tasks in flight, as
        ``_free_worker`` prefers."""
        best = None
        count = len(self._workers)
        try:
            key = self._functions.get(task.fn, (None,))[0]
        except TypeError:  # unhashable: never cached
            key = None
        for offset in range(count):
            worker = self._workers[(self._next_worker + offset) % count]
            if worker.alive and len(worker.inflight) < room:
                if (best is None or len(worker.inflight) < len(best.inflight)
                        or (len(worker.inflight) == len(best.inflight) and key is not None
                            and key in worker.functions_sent and key not in best.functions_sent)):
                    best = worker
        return best

    def _revokes_locked(self) -> list[tuple[Worker, list[int]]]:
        """Long tasks to take back from the workers they wait on, one for each idle
        worker (nothing else is queued): ``[(worker, task_ids)]``. First those of
        a function that turned long while its tasks sat in windows, all of them."""
        if not self._turned_long:
            for worker in self._workers:
                if worker.prefetched:
                    break
            else:
                return []  # the common case, checked at every wake of the dispatch thread
        idle = sum(1 for worker in self._workers if worker.alive and not worker.inflight)
        if not idle:
            return []
        if self._turned_long:
            revokes = self._take_back_turned_long_locked()
            if revokes:
                return revokes
        idle -= sum(asked for worker in self._workers for asked in worker.prefetched.values())
        revokes = []
        for worker in self._workers:
            if idle <= 0:
                break
            waiting = [task_id for task_id, asked in worker.prefetched.items() if not asked]
            if worker.alive and waiting:
                taken = waiting[-idle:]
                for task_id in taken:
                    worker.prefetched[task_id] = True
                idle -= len(taken)
                revokes.append((worker, taken))
        return revokes

    def _take_back_turned_long_locked(self) -> list[tuple[Worker, list[int]]]:
        """With a worker idle: the tasks that wait in a window behind the task a
        worker runs, sent while their function looked short, that has since run
        long. They come back to the queue and spread again, one per idle worker
        and one behind each busy one."""
        revokes = []
        for worker in self._workers:
            if not worker.alive or len(worker.inflight) < 2:
                continue
            first = next(iter(worker.inflight))  # sent first: it may be running
            taken = [task_id for task_id, entry in worker.inflight.items()
                     if task_id != first and task_id not in worker.prefetched
                     and task_id not in worker.asked and not self._is_short(entry[0])]
            if taken:
                worker.asked.update(taken)
                revokes.append((worker, taken))
        if not revokes:
            self._turned_long = False  # nothing left to take back until a function turns long again
        return revokes

    def _assign_locked(self) -> list[tuple[Worker, list]]:
        """Tasks for free workers, as batches to send in order. A long task queued
        behind another goes alone in its own batch: the worker reports every
        earlier result before it starts it (see ``_worker_died``)."""
        batches: list[tuple[Worker, list]] = []
        open_batch: dict[Worker, list] = {}
        short_room = self._short_room()  # windows change only under the lock held here
        last_fn: Any = _NOT_A_FUNCTION  # ready tasks come in runs of one function
        last_short = False
        while self._queue:
            task = self._queue[0][2]
            if task.timeout is not None:
                short = False  # see _is_short
            else:
                if task.fn is not last_fn:
                    last_fn, last_short = task.fn, self._is_short(task)
                short = last_short
            worker = self._free_worker(task, short_room, short)
            if worker is None:
                break
            _, _, task, graph = heapq.heappop(self._queue)
            if task.future._pd_state is not PENDING:
                continue  # cancelled while it waited for a recomputed input
            self._next_worker = (self._workers.index(worker) + 1) % len(self._workers)
            task_id = next(self._task_ids)
            queued = bool(worker.inflight) and not short
            worker.inflight[task_id] = (task, graph, time.perf_counter())
            if task.timeout is not None:
                self._add_deadline(time.monotonic() + task.timeout, "timeout", worker, task_id)
            if queued:
                worker.prefetched[task_id] = False
                batches.append((worker, [(task_id, task, graph)]))
                open_batch.pop(worker, None)
                continue
            batch = open_batch.get(worker)
            if batch is None:
                batch = open_batch[worker] = []
                batches.append((worker, batch))
            batch.append((task_id, task, graph))
        return batches

    def _send(self, worker: Worker, batch: list) -> None:
        messages = []
        sent = []  # (task_id, task, message, bytes), for EVENTS
        for task_id, task, graph in batch:
            try:
                message, size = self._encode(worker, task_id, task)
            except _NeedsRecompute as lost:  # an input died with its worker: make it again first
                with self._lock:
                    worker.inflight.pop(task_id, None)
                    worker.prefetched.pop(task_id, None)
                    self._lock.notify()
                self._wait_for_recompute(lost.value, task, graph)
            except BaseException as exc:  # noqa: BLE001 - e.g. an unpicklable argument
                with self._lock:
                    worker.inflight.pop(task_id, None)
                    worker.prefetched.pop(task_id, None)
                    self._lock.notify()
                graph.finish(task.future, ok=False, error=exc)
            else:
                messages.append(message)
                sent.append((task_id, task, message, size))
        # Only the worker's inflight entry holds a task from here on (its
        # arguments then die when it finishes, as in the plain run).
        batch.clear()
        task = graph = None
        if not messages:
            return
        EVENTS.sent(worker, sent)  # before any of their results can be recorded
        sent.clear()
        try:
            for update in _import_updates(worker):
                worker.channel.send(update)
            worker.channel.send(("run", protocol.batch(messages)))
            self._flush_releases(worker)
            if worker.forget:  # after the batch: a task in it may still name one of them
                forget, worker.forget = worker.forget, []
                worker.channel.send(("forget", forget))
        except (OSError, EOFError, execnet.RemoteError, ValueError):
            self._worker_died(worker)

    def _encode(self, worker: Worker, task_id: int, task: Any) -> tuple[tuple, int]:
        """The TASK message for ``worker``, and the bytes of its arguments and inputs."""
        args = task.payload
        if isinstance(args, BaseException):
            raise args
        if args is None:
            args = protocol.dump_args(task.args, task.kwargs, task.slots)
        size = protocol.args_size(args)
        sources = task.sources
        if sources is None:
            sources = task.sources = ([_input_source(future) for future in task.inputs]
                                      if task.inputs else _NO_INPUTS)
        if sources:  # a task made again from its recipe has sources and no input futures
            inputs = [self._input_for(worker, source) for source in sources]
            for data in inputs:
                if type(data) is bytes:  # else a reference: the worker fetches it from a peer
                    size += len(data)
        else:
            inputs = _NO_INPUTS
        key, fn_bytes = self._function(task.fn)
        # Marked as sent only once nothing can fail: a task that is never sent
        # must not leave the worker without the function (KeyError later).
        if key is not None and key in worker.functions_sent:
            fn_bytes = None
        elif key is not None:
            worker.functions_sent.add(key)
        self.bytes_through_master += size
        return (task_id, key, fn_bytes, args, inputs), size

    def _input_for(self, worker: Worker, source: Any) -> Any:
        """What ``worker`` is sent for one input: its bytes, or where to fetch it."""
        if isinstance(source, bytes):
            return source
        value: RemoteValue = source
        if value.inline is not None:
            return value.inline
        if value.lost or value.released or not value.worker.alive:
            raise _NeedsRecompute(value)
        if value.worker is worker:
            return ("here", value.key)
        self.bytes_between_workers += value.size
        return ("peer", value.key, value.worker.data_address)

    def _function(self, fn: Any) -> tuple[int | None, bytes]:
        try:
            cached = self._functions.get(fn)
        except TypeError:  # unhashable, e.g. a bound method of an unhashable object
            return None, protocol.dump_function(fn)
        if cached is None:
            cached = (next(self._function_keys), protocol.dump_function(fn))
            self._functions[fn] = cached
            if len(self._functions) > FUNCTION_CACHE:
                _, (old_key, _) = self._functions.popitem(last=False)
                with self._lock:
                    for worker in self._workers:
                        if old_key in worker.functions_sent:
                            worker.functions_sent.discard(old_key)
                            worker.forget.append(old_key)
        else:
            self._functions.move_to_end(fn)
        return cached

    # -- results ----------------------------------------------------------
    def _on_message(self, worker: Worker, message: Any) -> None:
        if message is _CLOSED:
            self._worker_died(worker)
            return
        kind, body = message
        if kind == "output":
            _print_output(worker, *body)
            return
        if kind == "log":
            _log_record(worker, body)
            return
        if kind == "revoked":
            self._revoked(worker, body)
            return
        if kind != "done":
            return
        if type(body) is bytes:  # a pickled batch (see protocol.py)
            body = pickle.loads(body)
        finished = []
        lost_inputs = []
        done = []  # (task_id, ok, data, began, ended), for EVENTS
        now = time.perf_counter()
        last_fn = last_key = None  # a batch is mostly one function's results
        with self._mutex:
            inflight, prefetched, asked = worker.inflight, worker.prefetched, worker.asked
            for task_id, ok, data, remote_tb, began, ended in body:
                entry = inflight.pop(task_id, None)
                queued = bool(prefetched) and prefetched.pop(task_id, None) is not None
                if asked:
                    asked.discard(task_id)  # it had started when asked back
                if entry is None:
                    continue
                task = entry[0]
                if not ok and type(data) is tuple and data[0] == "lost":
                    lost_inputs.append((task, entry[1], data))
                    continue
                done.append((task_id, ok, data, began, ended))
                if type(data) is bytes:
                    if ok:
                        self.bytes_through_master += len(data)
                elif data[0] == "value":  # a small plain value, as itself
                    self.bytes_through_master += plain_size(data[1])
                else:  # ("kept", key, size, type): it stays on the worker
                    data = self._kept(worker, task, data)
                # Only the future: the task (and its arguments) is dropped
                # before anyone learns it finished, as in the plain run.
                finished.append((task.future, entry[1], ok, data, remote_tb))
                # Round trip included; but one that waited behind another task
                # on the worker counts its own run time only.
                seconds = ended - began if queued else now - entry[2]
                _adapt_window(worker, seconds)
                fn = task.fn
                if fn is not last_fn:
                    if len(self._short) > 10_000:
                        self._short.clear()
                        self._trivial.clear()
                    last_fn, last_key = fn, _key(fn)
                # A large result stays on the worker: such tasks queue at most one
                # deep there, as long ones do (their results would pile up in its memory).
                short = seconds < SHORT_SECONDS and type(data) is not RemoteValue
                if not short and self._short.get(last_key):
                    self._turned_long = True
                self._short[last_key] = short
                self._trivial[last_key] = ended - began < TRIVIAL_SECONDS
            if done:
                EVENTS.finished(worker, done)
            entry = task = fn = last_fn = last_key = None
        done.clear()
        for task, graph, (_, key, address) in lost_inputs:
            self._input_lost(task, graph, key, address)
        values: list[tuple] = []  # successes in a row for one graph, finished together
        values_graph = None
        for future, graph, ok, data, remote_tb in finished:
            if future._pd_state is not PENDING:  # cancelled, or timed out, while it ran
                if type(data) is RemoteValue:
                    data.release()  # nobody will read it
                continue
            if values and (graph is not values_graph or not ok):
                values_graph.finish_values(values)
                values = []
            if ok:
                values_graph = graph
                if type(data) is RemoteValue:
                    values.append((future, _MISSING, None, data))
                elif type(data) is tuple:  # ("value", value)
                    values.append((future, data[1], None, None))
                else:
                    values.append((future, _MISSING, data, None))
            else:
                graph.finish(future, ok=False, error=_remote_error(data, remote_tb, worker))
        if values:
            values_graph.finish_values(values)
        # Only now, with the tasks these results made ready queued: the next task
        # sent is the first in program order, a consumer before another producer.
        with self._lock:
            self._lock.notify()

    def _revoked(self, worker: Worker, task_ids: list[int]) -> None:
        """``worker`` gave back these queued tasks unstarted: they go to idle workers."""
        with self._lock:
            for task_id in task_ids:
                entry = worker.inflight.pop(task_id, None)
                worker.prefetched.pop(task_id, None)
                worker.asked.discard(task_id)
                if entry is None:
                    continue
                task, graph, _ = entry
                EVENTS.revoked(worker, task_id)
                if task.future._pd_state is PENDING:
                    heapq.heappush(self._queue, (task.future._pd_seq, next(self._queue_order), task, graph))
            entry = task = graph = None
            self._lock.notify()

    def _worker_died(self, worker: Worker) -> None:
        """A worker is gone: its tasks run again elsewhere (up to ``retries`` deaths each),
        and a new worker is started in its place."""
        with self._lock:
            if not worker.alive:
                return
            worker.alive = False
            for value in list(worker.holding.values()):
                if value.worker is worker:
                    value.lost = True  # made again from its recipe when someone needs it
            worker.holding.clear()
            lost = list(worker.inflight.values())
            # A long task queued behind an unfinished one never started (every
            # earlier result reaches the master before it starts): not its fault.
            first = next(iter(worker.inflight), None)
            unstarted = {id(worker.inflight[task_id][0]) for task_id in worker.prefetched
                         if task_id != first and task_id in worker.inflight}
            worker.inflight.clear()
            worker.prefetched.clear()
            worker.asked.clear()
            failed = []
            if not self._closed and not worker.stopped:
                DEATHS.append(worker.label)
            if not self._closed:
                self.deaths.append(worker.label)
            for task, graph, _ in lost:
                if task.future._pd_state is not PENDING:
                    continue  # cancelled or timed out: nobody waits for it
                if not worker.stopped and id(task) not in unstarted:
                    task.killed_on += (worker.label,)
                if self._closed:
                    failed.append((task, graph, PydronError(
                        f"the pydron pool was shut down while worker {worker.label} ran it")))
                elif len(task.killed_on) >= self.retries:
                    failed.append((task, graph, WorkerDied(_poison_message(task, self.retries))))
                else:
                    if not worker.stopped and id(task) not in unstarted:
                        RETRIED.append(getattr(task.fn, "__qualname__", repr(task.fn)))
                    heapq.heappush(self._queue, (task.future._pd_seq, next(self._queue_order), task, graph))
            # A death while a task ran is the task's (its retries count it); only the
            # spec's own young deaths stop its restarts.
            worker.died_young = (not worker.stopped and not lost
                                 and time.monotonic() - worker.started < QUICK_DEATH_SECONDS)
            quick = worker.quick_deaths + worker.died_young
            # Not while the interpreter exits, and not for ever if every new one dies at once.
            replace = (not self._closed and worker.spec is not None and not sys.is_finalizing()
                       and quick < MAX_QUICK_DEATHS)
            if replace:
                self._starting += 1
            elif not self._closed and not self._starting and not _any_alive(self._workers):
                # Nobody is left to run what is queued: fail it now rather than wait for ever.
                why = "every pydron worker has died and none is started again"
                if quick >= MAX_QUICK_DEATHS:
                    why += (f": the workers of {worker.label}'s spec died on their own within "
                            f"{QUICK_DEATH_SECONDS:g} s of their start {quick} times")
                failed += [(task, graph, WorkerDied(why)) for _, _, task, graph in self._queue
                           if task.future._pd_state is PENDING]
                self._queue.clear()
            self._lock.notify()
        EVENTS.worker_died(worker, lost, failed)
        for task, graph, error in failed:
            graph.finish(task.future, ok=False, error=error)
        if replace:
            threading.Thread(target=self._replace, args=(worker,), name="pydron-restart",
                             daemon=True).start()

    def _replace(self, dead: Worker) -> None:
        """Start a worker from the dead one's spec, in its place in the pool; if none can
        start and none is left, fail the queue."""
        with self._lock:
            self._restarts += 1
            number = self._restarts
        try:
            started = self._start_one(dead.spec)
        except BaseException as exc:  # noqa: BLE001 - reported below
            started = exc
        orphans: list = []
        with self._lock:
            self._starting -= 1
            if isinstance(started, Worker):
                if self._closed:
                    _exit_quietly(started)
                else:
                    started.base_label = dead.base_label
                    started.label = f"{dead.base_label}+{number}"
                    started.quick_deaths = dead.quick_deaths + dead.died_young
                    self.replacements += 1
                    if dead in self._workers:
                        self._workers[self._workers.index(dead)] = started
                    else:
                        self._workers.append(started)
                    EVENTS.worker_started(started)
            elif not _any_alive(self._workers) and not self._starting:
                orphans = [(task, graph) for _, _, task, graph in self._queue]
                self._queue.clear()
            self._lock.notify()
        if isinstance(started, BaseException) and not orphans:
            # The others carry on; say why the pool is one worker short.
            logging.getLogger("pydron").warning("worker %s could not be replaced: %s", dead.label, started)
        reason = f"{started}" if isinstance(started, BaseException) else ""
        for task, graph in orphans:
            graph.finish(task.future, ok=False, error=WorkerDied(
                f"every pydron worker has died and none could be started again: {reason}"))

    # -- values kept on workers (the data plane) ---------------------------
    def _kept(self, worker: Worker, task: Any, note: tuple) -> RemoteValue:
        """A result that stayed on ``worker``: remember where, and how to make it again."""
        _, key, size, typename = note
        value = getattr(task, "remake", None)
        if value is not None:  # a recomputation: the same RemoteValue, now here
            value.worker, value.key, value.lost = worker, key, False
            # One the program had dropped was made again only as another's input: it
            # stays on this worker until the pool ends (rare: a death, then lineage).
            value.released = False
        else:
            payload = task.payload
            if payload is None:  # pickled late, in _encode
                payload = protocol.dump_args(task.args, task.kwargs, task.slots)
            recipe = Recipe(task.fn, payload, task.sources or [], task.future._pd_seq,
                            task.future._pd_label)
            value = RemoteValue(worker, key, size, typename, recipe)
        worker.holding[key] = value
        return value

    def fetch(self, value: RemoteValue) -> Any:
        """Bring a kept value to the master (the schedule thread), making it again if it was lost."""
        while True:
            if value.inline is not None:
                return cloudpickle.loads(value.inline)
            if value.lost or not value.worker.alive:
                self._recompute_and_wait(value)
                continue
            try:
                result = self._client.fetch(value.worker.data_address, value.key)
            except dataplane.LostValue:
                self.check_alive()
                value.lost = True  # its worker is gone (or dropped it): make it again
                continue
            self.bytes_through_master += value.size
            EVENTS.fetched(value.worker, value.size)
            return result

    def _recompute_and_wait(self, value: RemoteValue) -> None:
        done = threading.Event()
        waiter = _Waiter(done)
        self._wait_for_recompute(value, waiter, waiter)
        while not done.wait(0.5):
            if not self.any_alive():
                raise WorkerDied(f"a value of {value.recipe.label}() was lost with its worker "
                                 f"{value.worker.label}, and no worker is left to compute it again")
        if waiter.error is not None:
            raise waiter.error

    def _input_lost(self, task: Any, graph: Any, key: int, address: list) -> None:
        """A task could not fetch an input: its holder died. Run it again once the input is remade."""
        address = tuple(address)
        value = next((v for v in (task.sources or []) if type(v) is RemoteValue and v.key == key
                      and v.worker.data_address == address), None)
        holder = value.worker if value is not None else None
        if holder is not None:
            self.check_alive()  # the holder's death may not be known yet
            holder.holding.pop(key, None)  # it is made again elsewhere
        if value is None:
            graph.finish(task.future, ok=False, error=WorkerDied(
                f"an input of {_call_text(task)} was lost with the worker at {address[0]}:{address[1]}"))
            return
        value.lost = True
        self._wait_for_recompute(value, task, graph)

    def _wait_for_recompute(self, value: RemoteValue, task: Any, graph: Any) -> None:
        """Park ``task`` until ``value`` is made again (starting that, once)."""
        with self._lock:
            value.waiters.append((task, graph))
            if value.recomputing:
                return
            value.recomputing = True
            value.ready.clear()
        recipe = value.recipe
        remake = _RemakeTask(recipe, value)
        self._enqueue(remake, _Remade(self, value))

    def _enqueue(self, task: Any, graph: Any) -> None:
        with self._lock:
            heapq.heappush(self._queue, (task.future._pd_seq, next(self._queue_order), task, graph))
            if self._dispatcher_idle:
                self._lock.notify()

    def _remade(self, value: RemoteValue, ok: bool, inline: bytes | None, error: BaseException | None) -> None:
        with self._lock:
            waiters, value.waiters = value.waiters, []
            value.recomputing = False
            if inline is not None:
                value.inline = inline
            value.ready.set()
        for task, graph in waiters:
            if not ok:
                graph.finish(task.future, ok=False, error=error)
            elif isinstance(task, _Waiter):
                task.done.set()
            else:
                self._enqueue(task, graph)

    def _flush_releases(self, worker: Worker) -> None:
        if not worker.to_release:
            return
        keys, worker.to_release = worker.to_release, []
        for key in keys:
            worker.holding.pop(key, None)
        try:
            worker.control.send(("release", keys))
        except (OSError, EOFError, execnet.RemoteError, ValueError):
            pass  # it is dying: the values go with it

    def flush_releases(self) -> None:
        """Tell the workers which kept values the program dropped (at sync points)."""
        for worker in self._workers:
            if worker.to_release and worker.alive:
                self._flush_releases(worker)

    def held_bytes(self) -> dict[str, int]:
        """Bytes each worker keeps for the master now (worker label -> bytes)."""
        return {w.label: sum(v.size for v in list(w.holding.values())) for w in self._workers if w.alive}

    # -- cancelling and timeouts ---------------------------------------
    def cancel(self, futures: Sequence[Any]) -> None:
        """Stop the tasks of these futures: queued ones are dropped, running ones are
        interrupted on their worker, whose process is killed and replaced if the task
        does not stop within CANCEL_GRACE seconds (C code may not heed the interrupt)."""
        wanted = {id(future) for future in futures}
        running = []
        with self._lock:
            kept, dropped = [], []
            for entry in self._queue:
                (dropped if id(entry[2].future) in wanted else kept).append(entry)
            if dropped:
                heapq.heapify(kept)
                self._queue = kept
            for worker in self._workers:
                tasks = [(task_id, task) for task_id, (task, _, _) in worker.inflight.items()
                         if id(task.future) in wanted]
                if tasks and worker.alive:
                    running.append((worker, tasks))
            kept = None  # type: ignore[assignment]
        for entry in dropped:
            EVENTS.cancelled(entry[2], "dropped from the queue")
        for worker, tasks in running:
            for _, task in tasks:
                EVENTS.cancelled(task, f"interrupted on worker {worker.label}")
            self._stop_running(worker, [task_id for task_id, _ in tasks])

    def _control(self, worker: Worker, message: tuple) -> bool:
        """Send ``message`` on ``worker``'s control channel; False if it is gone."""
        try:
            worker.control.send(message)
            return True
        except (OSError, EOFError, execnet.RemoteError, ValueError):
            self._worker_died(worker)
            return False

    def _stop_running(self, worker: Worker, task_ids: list[int]) -> None:
        # A task queued behind another is taken back if it has not started, so
        # that the grace below does not run out while it waits its turn.
        with self._lock:
            queued = [task_id for task_id in task_ids if task_id in worker.prefetched]
            for task_id in queued:
                worker.prefetched[task_id] = True
        if queued and not self._control(worker, ("revoke", queued)):
            return
        if not self._control(worker, ("cancel", task_ids)):
            return
        with self._lock:
            for task_id in task_ids:
                self._add_deadline(time.monotonic() + CANCEL_GRACE, "grace", worker, task_id)

    def _add_deadline(self, when: float, kind: str, worker: Worker, task_id: int) -> None:
        """Have the watchdog look at ``task_id`` at ``when`` (the pool's lock is held)."""
        heapq.heappush(self._deadlines, (when, next(self._queue_order), kind, worker, task_id))
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch_deadlines, name="pydron-watchdog",
                                              daemon=True)
            self._watchdog.start()
        self._deadline_cv.notify()

    def _watch_deadlines(self) -> None:
        """Time out tasks that run too long; kill the workers of tasks that ignore a cancel."""
        while True:
            due = []
            with self._lock:
                while not self._closed and not due:
                    now = time.monotonic()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        _, _, kind, worker, task_id = heapq.heappop(self._deadlines)
                        entry = worker.inflight.get(task_id)
                        if entry is not None and worker.alive:  # else it finished meanwhile
                            due.append((kind, worker, task_id, entry[0], entry[1]))
                    if not due:
                        wait = self._deadlines[0][0] - now if self._deadlines else None
                        self._deadline_cv.wait(wait)
                if self._closed:
                    return
            for kind, worker, task_id, task, graph in due:
                if kind == "timeout":
                    graph.finish(task.future, ok=False, error=TimeoutError(
                        _timeout_message(task, worker)))
                    self._stop_running(worker, [task_id])
                else:
                    self._kill(worker)
            due = task = graph = None  # type: ignore[assignment]

    def _kill(self, worker: Worker) -> None:
        """End a worker whose task would not stop; it is replaced like one that died."""
        worker.stopped = True
        process = getattr(worker.gateway._io, "popen", None)
        try:
            if process is not None:
                process.kill()
            else:
                worker.gateway.exit()
        except Exception:  # noqa: BLE001 - gone already
            pass
        self._worker_died(worker)

    def any_alive(self) -> bool:
        """True if at least one worker is up or being started (dead ones noticed first)."""
        self.check_alive()
        with self._lock:
            return self._starting > 0 or _any_alive(self._workers)

    def check_alive(self) -> None:
        """Notice workers whose connection closed without telling us."""
        for worker in self._workers:
            if worker.alive and worker.channel.isclosed():
                self._worker_died(worker)

    # -- shutdown ---------------------------------------------------------
    def shutdown(self) -> None:
        """Stop every worker process; nothing is left running."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            self._deadline_cv.notify_all()
        for worker in self._workers:
            EVENTS.worker_stopped(worker)
            try:
                if worker.alive:
                    worker.channel.send(("stop", None))
                worker.gateway.exit()
            except Exception:  # noqa: BLE001 - it is going away anyway
                pass
        # Wait for the processes ourselves: execnet's Group.terminate starts
        # threads, which an interpreter that is shutting down refuses.
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            process = getattr(worker.gateway._io, "popen", None)
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - still running: end it
                process.kill()
                process.wait()
        self._client.close()
        error = _release(self._specs)
        if error is not None:
            raise error


def _release(specs: Sequence[Any]) -> BaseException | None:
    """Give back what the specs hold beyond their process (e.g. cloud nodes: terminated).

    Every spec's ``release()`` is called; the first failure is returned.
    """
    first = None
    for spec in specs:
        release = getattr(spec, "release", None)
        if release is None:
            continue
        try:
            release()
        except Exception as exc:  # noqa: BLE001 - the others are released all the same
            first = first or exc
    return first


def _poison_message(task: Any, retries: int) -> str:
    workers = ", ".join(task.killed_on)
    return (f"{_call_text(task)} killed {len(task.killed_on)} worker(s) it ran on: {workers}; "
            f"given up after retries={retries}")


class _NeedsRecompute(Exception):
    def __init__(self, value: RemoteValue) -> None:
        super().__init__(repr(value))
        self.value = value


class _RemakeMark:
    """The future-like handle of a recomputation: its program-order place, nothing else."""

    def __init__(self, seq: int) -> None:
        self._pd_seq = seq
        self._pd_state = PENDING
        self._pd_site = None
        self._pd_label = ""


class _RemakeTask:
    """A kept value's call, run again from its recipe because its worker died."""

    def __init__(self, recipe: Recipe, value: RemoteValue) -> None:
        self.future = _RemakeMark(recipe.seq)
        self.fn = recipe.fn
        self.payload = recipe.payload
        self.sources = recipe.sources
        self.inputs: list = []
        self.args, self.kwargs, self.slots = (), {}, {}
        self.timeout = None
        self.killed_on: tuple[str, ...] = ()
        self.remake = value


class _Remade:
    """Where a recomputation's outcome goes (in place of a graph)."""

    def __init__(self, pool: Pool, value: RemoteValue) -> None:
        self._pool = pool
        self._value = value

    def finish(self, future: Any, ok: bool, payload: bytes | None = None,
               error: BaseException | None = None, remote: Any = None) -> None:
        future._pd_state = DONE if ok else FAILED
        self._pool._remade(self._value, ok, payload if remote is None else None, error)

    def finish_values(self, results: list[tuple[Any, Any, bytes | None, Any]]) -> None:
        for future, value, payload, remote in results:
            if value is not _MISSING:  # a small plain value came as itself: the recipe keeps bytes
                payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            self.finish(future, ok=True, payload=payload, remote=remote)


class _Waiter:
    """The master itself waiting for a recomputation (``Pool.fetch``)."""

    def __init__(self, done: threading.Event) -> None:
        self.done = done
        self.error: BaseException | None = None
        self.future = self

    def finish(self, future: Any, ok: bool, error: BaseException | None = None, **_: Any) -> None:
        self.error = error
        self.done.set()

    def finish_values(self, results: list[tuple[Any, Any, bytes | None, Any]]) -> None:
        for future, *_ in results:
            self.finish(future, ok=True)


_NO_INPUTS: tuple = ()  # a TASK's inputs when it has none
_NOT_A_FUNCTION = object()


def _holder(task: Any) -> Worker | None:
    """The worker keeping most of ``task``'s input bytes, if any are kept."""
    best, most = None, 0
    for future in task.inputs:
        value = future._pd_remote
        if value is not None and future._pd_value is _MISSING and not value.lost and value.size > most:
            best, most = value.worker, value.size
    return best


def _any_alive(workers: list[Worker]) -> bool:
    for worker in workers:  # a loop, not any(genexpr): this runs once per task
        if worker.alive:
            return True
    return False


def _keep_freed_memory() -> bool:
    """Whether workers keep the memory their tasks free for the next task
    (worker._keep_freed_memory): yes unless PYDRON_KEEP_FREED_MEMORY=0."""
    value = os.environ.get(KEEP_FREED_VAR, "").strip() or "1"
    if value not in ("0", "1"):
        raise ConfigError(f"{KEEP_FREED_VAR}={value!r}: expected 0 or 1")
    return value == "1"


def _data_bind(spec: Any, local: bool) -> dict | None:
    """Where a worker's data server listens: loopback for local workers, ``data_ports``
    for remote ones reached directly; None (values travel inline) otherwise."""
    if local:
        return {"host": "127.0.0.1", "ports": [0, 0]}
    host, ports = getattr(spec, "data_host", None), getattr(spec, "data_ports", None)
    if host is None or ports is None:
        return None
    loopback = host in ("localhost", "127.0.0.1", "::1")
    return {"host": "127.0.0.1" if loopback else "0.0.0.0", "ports": list(ports)}


def _data_host(spec: Any, local: bool) -> str:
    return "127.0.0.1" if local else spec.data_host


def _input_source(future: Any) -> Any:
    """A finished input as the pool keeps it: the bytes to send, or the RemoteValue.

    Once the master holds the value as an object, the schedule function may
    have changed it (``r.append(x)`` after a sync point): it is pickled as it
    is now, never taken from the bytes the worker sent.
    """
    remote = future._pd_remote
    data = future._pd_bytes  # read first: the graph drops the bytes once it has the value
    value = future._pd_value
    if value is not _MISSING:
        return protocol.dump_value(value)
    if remote is not None:
        return remote
    return data


def _timeout_message(task: Any, worker: Worker) -> str:
    return (f"{_call_text(task)} did not finish within its timeout of {task.timeout:g} s "
            f"(on worker {worker.label}); it was stopped")


def _call_text(task: Any) -> str:
    """``name() (called at FILE, line N)``: a call as the user wrote it."""
    name = getattr(task.fn, "__qualname__", repr(task.fn))
    site = task.future._pd_site
    if not site:
        return f"{name}()"
    frame, lasti = site[-1]
    return f"{name}() (called at {frame.f_code.co_filename}, line {site_line(frame, lasti)})"


def _print_output(worker: Worker, stream: str, text: str) -> None:
    """What a task printed, on the master's stdout or stderr, each line labelled with its worker."""
    target = sys.stdout if stream == "out" else sys.stderr
    if not text.endswith("\n"):
        text += "\n"  # the worker's last words, sent when it stops
    lines = text.splitlines(keepends=True)
    try:
        target.write("".join(f"[{worker.label}] {line}" for line in lines))
        target.flush()
    except (OSError, ValueError):  # the master's own stream is closed
        pass


def _log_record(worker: Worker, data: dict) -> None:
    """A task's log record, handled by the master's logger of the same name, labelled."""
    logger = logging.getLogger(data["name"])
    if not logger.isEnabledFor(data["levelno"]):
        return
    data["msg"] = f"[{worker.label}] {data['msg']}"
    data["args"] = None
    try:
        logger.handle(logging.makeLogRecord(data))
    except Exception:  # noqa: BLE001 - a broken handler must not stop the results
        pass


def _exit_quietly(worker: Worker) -> None:
    try:
        worker.channel.send(("stop", None))
        worker.gateway.exit()
    except Exception:  # noqa: BLE001 - it is going away anyway
        pass


# A worker that dies this soon after it started counts as a quick death; after
# this many in a row its spec is not started again.
QUICK_DEATH_SECONDS = 2.0
MAX_QUICK_DEATHS = 3

# Pickled functions kept (and kept on each worker), least recently used dropped first.
FUNCTION_CACHE = 256

# A task is short below this (seconds): short tasks need a deep pipeline.
SHORT_SECONDS = 0.005


def _adapt_window(worker: Worker, seconds: float) -> None:
    """Many tasks in flight when they are short, one at a time when they are long.

    One at a time keeps long tasks from queueing behind each other on one
    worker while another is idle; short tasks need a deep pipeline instead.
    """
    if seconds < SHORT_SECONDS:
        worker.window = min(worker.window * 2, 128)
    elif seconds > 0.02:
        worker.window = 1


def _key(fn: Any) -> Any:
    """``fn`` as a dict key (a bound method of an unhashable object: its function)."""
    try:
        hash(fn)
        return fn
    except TypeError:
        return getattr(fn, "__func__", id(fn))


def _import_updates(worker: Worker) -> list[tuple[str, Any]]:
    """Messages that let ``worker`` import what the master imported since it started.

    A function is pickled by reference when the master can import its module;
    a local worker gets the master's newer sys.path entries, a remote one the
    source of modules imported since (cheap to check: sys.modules grew).
    """
    if worker.sys_path is not None:
        path = [p for p in sys.path if p]
        if path == worker.sys_path:
            return []
        worker.sys_path = path
        return [("path", path)]
    if worker.shipped is None or len(sys.modules) == worker.modules_seen:
        return []
    from pydron.remote.ssh import local_modules

    worker.modules_seen = len(sys.modules)
    files = {name: text for name, text in local_modules().items() if name not in worker.shipped}
    if not files:
        return []
    worker.shipped |= set(files)
    return [("ship", files)]


def _remote_error(data: bytes, remote_tb: str | None, worker: Worker) -> BaseException:
    try:
        error = cloudpickle.loads(data)
    except Exception as exc:  # noqa: BLE001
        error = RemoteError(f"a task failed on worker {worker.label} and its exception "
                            f"could not be unpickled here: {exc}")
    if isinstance(error, tuple) and error and error[0] == "unpicklable":
        error = RemoteError(f"{error[1]}: {error[2]}")
    if not isinstance(error, BaseException):
        error = RemoteError(repr(error))
    if remote_tb:
        error.add_note(f"Remote traceback (worker {worker.label}):\n{remote_tb.rstrip()}")
    return error


_pool: Backend | None = None
_pool_lock = threading.Lock()

#: Over every pool of this process: the labels of the workers that died (not those pydron
#: stopped itself), and one entry per task sent again after such a death, its function's
#: name (the pytest plugin's summary reports them).
DEATHS: list[str] = []
RETRIED: list[str] = []


def get_pool() -> Backend:
    """The process-wide pool (or other backend), started on first use from the configuration."""
    global _pool
    with _pool_lock:
        if _pool is not None and not _pool.closed and not _pool.any_alive():
            _pool.shutdown()  # every worker died: start afresh rather than hang
        if _pool is None or _pool.closed:
            from pydron.config import retries, timeout, worker_specs

            specs = worker_specs()
            make = getattr(specs[0], "make_backend", None) if len(specs) == 1 else None
            if make is not None:  # a "dask" entry: its own backend, alone in its configuration
                _pool = make(retries=retries(), timeout=timeout())
            else:
                _pool = Pool(specs, retries=retries(), timeout=timeout())
        return _pool


def swap_pool(pool: Backend | None) -> Backend | None:
    """Make ``pool`` the process-wide pool (None: the next use starts one from the
    configuration) and return the one it replaces, still running (pytest's per-test pools)."""
    global _pool
    with _pool_lock:
        previous, _pool = _pool, pool
    return previous


def shutdown() -> None:
    """Stop the process-wide pool (a later use starts a new one)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown)
