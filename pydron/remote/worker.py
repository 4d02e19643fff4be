"""The worker loop, run inside each execnet gateway with ``remote_exec``.

Self-contained (standard library plus cloudpickle) so that a remote machine
needs nothing but a Python interpreter. See protocol.py for the messages.
"""
import io
import os
import pickle
import signal
import sys
import threading
import time
import traceback

# Results are flushed at the end of each batch, or sooner once this much time
# has passed, so the master learns about long tasks promptly.
FLUSH_SECONDS = 0.002
# A worker idle this long gives the memory its tasks freed back to the kernel.
IDLE_TRIM_SECONDS = 2.0


class _InputsUnpickler(pickle.Unpickler):
    def __init__(self, data, inputs, cache):
        super().__init__(io.BytesIO(data))
        self._inputs = inputs
        self._cache = cache

    def persistent_load(self, pid):
        if pid not in self._cache:
            self._cache[pid] = _input_value(self._inputs[pid])
        return self._cache[pid]


# The data plane (dataplane.py, whose source the master sends in "init"): the
# values this worker keeps, its server, and its client for other workers' values.
_data = {"module": None, "store": None, "server": None, "client": None, "inline_limit": None}


def _start_data_plane(init):
    """Run dataplane.py's source, keep a store and serve it on a data port."""
    import types

    source = init.get("dataplane")
    if not source:
        return None
    module = types.ModuleType("pydron_dataplane")
    exec(compile(source, "pydron/remote/dataplane.py", "exec"), module.__dict__)
    _data["module"] = module
    _data["store"] = module.Store()
    _data["client"] = module.Client(init["secret"])
    data = init.get("data")
    if data is None:  # not reachable from other processes: every value goes back inline
        return None
    _data["server"] = module.Server(_data["store"], init["secret"], data["host"], tuple(data["ports"]))
    _data["inline_limit"] = init.get("inline_limit")
    return _data["server"].port


def _input_value(source):
    """One input of a task: pickled bytes, or a value kept here or on another worker."""
    if isinstance(source, bytes):
        return pickle.loads(source)
    kind, key = source[0], source[1]
    if kind == "here":
        try:
            return _data["store"].get(key)
        except KeyError:
            raise _data["module"].LostValue(key, ("this worker", 0), "it no longer holds it") from None
    return _data["client"].fetch(source[2], key)


def _result(task_id, value):
    """What goes back for a result: a small plain value itself, its pickle, or,
    above the inline limit, a note that it is kept."""
    kind = type(value)
    if kind in _PLAIN and (kind not in (str, bytes) or len(value) <= PLAIN_RESULT_LIMIT):
        return ("value", value)
    limit = _data["inline_limit"]
    if limit is None:
        return _dumps(value)
    size = _cheap_size(value)
    if size is None:
        data = _dumps(value)
        if len(data) <= limit:
            return data
        size = len(data)
        data = None
    elif size <= limit:
        return _dumps(value)
    _data["store"].put(task_id, value)
    return ("kept", task_id, size, type(value).__module__ + "." + type(value).__qualname__)


# A batch whose byte strings are all smaller goes as one pickle (protocol.py has the
# same limits; this module imports nothing of pydron).
BATCH_PICKLE_LIMIT = 64 * 1024
PLAIN_RESULT_LIMIT = 4096  # a str or bytes result up to this size goes as itself


def _batch(items, field):
    """A batch of results as one pickle (execnet's own serializer, in Python, costs
    microseconds per item), or as the list itself when one holds a large byte string
    that pickling would copy."""
    for item in items:
        data = item[field]
        if type(data) is bytes and len(data) > BATCH_PICKLE_LIMIT:
            return items
    return pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)


def _cheap_size(value):
    """The size of a value that exposes its buffer (bytes, numpy arrays), else None."""
    if type(value) in _PLAIN and type(value) not in (str, bytes):
        return 16
    try:
        return memoryview(value).nbytes
    except TypeError:
        return None


# glibc's allocator, when the master asked to keep freed memory (see _keep_freed_memory).
_allocator = {"libc": None, "last_task": 0.0, "dirty": False}


def _keep_freed_memory():
    """Let glibc keep the memory tasks free for the next task instead of unmapping it.

    By default every allocation above 32 MB is a fresh mmap whose pages the
    kernel zeroes at first touch: about a quarter of the time of allocation-heavy numpy
    code. The worker serves the next allocation from the freed memory instead
    and gives it back once it has been idle IDLE_TRIM_SECONDS (see _watch).
    Tasks run on the main thread, whose heap this covers. Without glibc, nothing.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - AttributeError off glibc
        mallopt, libc.malloc_trim.argtypes = libc.mallopt, [ctypes.c_size_t]
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4
    if mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, 2 ** 31 - 1):
        _allocator["libc"] = libc


def _trim_when_idle():
    """Give freed memory back to the kernel once no task has run for a while."""
    libc = _allocator["libc"]
    if (libc is not None and _allocator["dirty"] and _running[0] is None
            and time.monotonic() - _allocator["last_task"] > IDLE_TRIM_SECONDS):
        _allocator["dirty"] = False
        libc.malloc_trim(0)


def _watch(channel, parent_pid):
    """End this process as soon as the master is gone, even mid-task; trim memory when idle."""
    while True:
        time.sleep(0.2)
        _trim_when_idle()
        if channel.isclosed() or (parent_pid and os.getppid() != parent_pid):
            _remove_shipped()
            os._exit(3)


# Directories this worker made for files the master sent (see _unpack).
_SHIPPED = []


def _unpack(ship):
    """Write the master's files (cloudpickle) into a fresh directory under
    ``ship["tmp_dir"]`` (default: the system's temp dir) and import from there."""
    import atexit
    import tempfile

    base = ship.get("tmp_dir")
    if base:
        base = os.path.expanduser(base)
        os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix="pydron-", dir=base or None)
    _SHIPPED.append(path)
    atexit.register(_remove_shipped)
    for name, text in ship["files"].items():
        target = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
    sys.path.insert(0, path)
    return path


def _update_imports(kind, body):
    """The master imported more since this worker started: newer sys.path
    entries (local workers), or the source of more modules (remote ones)."""
    import importlib

    if kind == "path":
        for path in reversed(body):
            if path not in sys.path:
                sys.path.insert(0, path)
    elif _SHIPPED:
        for name, text in body.items():
            target = os.path.join(_SHIPPED[0], *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)
    importlib.invalidate_caches()


def _remove_shipped():
    import shutil

    while _SHIPPED:
        shutil.rmtree(_SHIPPED.pop(), ignore_errors=True)


def _cleanup_on_signals():
    """A hang-up (the ssh session closed) or SIGTERM still removes the shipped files."""
    import signal

    def end(signum, frame):
        _remove_shipped()
        os._exit(128 + signum)

    for name in ("SIGHUP", "SIGTERM"):
        try:
            signal.signal(getattr(signal, name), end)
        except (ValueError, AttributeError):  # not the main thread, or no such signal
            pass


class _Forward:
    """``sys.stdout``/``sys.stderr`` of a worker: whole lines go to the master, which
    prints them with the worker's label (the channel owns the real stdout). A line
    is sent as soon as it is complete, so it reaches the master before the
    result of the task that printed it."""

    def __init__(self, channel, name):
        self._channel = channel
        self._name = name
        self._pending = ""
        self._lock = threading.Lock()
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text):
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                lines, self._pending = self._pending.rsplit("\n", 1)
                self._send(lines + "\n")
        return len(text)

    def flush(self):
        with self._lock:
            if self._pending:
                text, self._pending = self._pending, ""
                self._send(text)

    def _send(self, text):
        try:
            self._channel.send(("output", (self._name, text)))
        except Exception:  # the master is gone: nowhere to write
            pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("a pydron worker's output goes to the master")

    def writable(self):
        return True


def _preload(names):
    """Import what the master's script imported, before the first task needs it
    (preload.py); a module this worker cannot import is simply left out."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the task that needs it will say why
            pass


def _forward_logging(channel, level, configured):
    """Log records made in tasks go to the master, which hands them to its own loggers
    (so its levels, handlers and format apply); below ``level`` they are not sent.

    If the master's logging is not configured, only what would reach its last-resort
    handler is sent, and a task's ``logging.warning()`` configures the worker's own
    logging as it would the master's in the plain run (its output then comes as stderr).
    """
    import logging

    class Forward(logging.Handler):
        def emit(self, record):
            try:
                data = {
                    "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                    "msg": record.getMessage(), "pathname": record.pathname,
                    "filename": record.filename, "module": record.module,
                    "lineno": record.lineno, "funcName": record.funcName,
                    "created": record.created, "msecs": record.msecs,
                    "process": record.process, "threadName": record.threadName,
                }
                if record.exc_info:
                    data["exc_text"] = logging.Formatter().formatException(record.exc_info)
                channel.send(("log", data))
            except Exception:  # the master is gone, or a bad record: like logging, carry on
                pass

    if configured:
        root = logging.getLogger()
        root.addHandler(Forward())
        root.setLevel(level)
    else:
        logging.lastResort = Forward(logging.WARNING)


# resolve.PLAIN_TYPES (this module imports nothing from pydron: see above).
_PLAIN = frozenset({int, float, complex, bool, str, bytes, type(None)})


def _dumps(value):
    if type(value) in _PLAIN:  # the standard pickler, ~10x faster for these
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (RecursionError, pickle.PicklingError) as exc:  # too deep for the C pickler (protocol.dump_deep)
        if not isinstance(exc, RecursionError) and "recursion" not in str(exc):
            raise
        buffer = io.BytesIO()
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 100000))
        try:
            pickle._Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        finally:
            sys.setrecursionlimit(limit)
        return buffer.getvalue()


def _error_payload(exc):
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = _dumps(exc)
        pickle.loads(data)
    except Exception:
        data = _dumps(("unpicklable", type(exc).__module__ + "." + type(exc).__qualname__, str(exc)))
    return data, text


class _Cancelled(BaseException):
    """Raised in a running task that the master cancelled (a BaseException, so that
    the task's own ``except Exception`` does not swallow it)."""


# The task running now, and the ids the master cancelled (see _on_control).
_running = [None]
_cancelled = set()
# Queued tasks the master took back for an idle worker (see _on_control); the
# lock makes "not started yet" and "taken back" one decision.
_started = [0]  # the newest task id started (ids reach a worker in increasing order)
_revoked = set()
_start_lock = threading.Lock()
_reply = [None]  # the task channel, for the answer to a revoke


def _on_control(message):
    """The master's control channel, read by execnet's receiving thread even while
    a task runs: a cancelled task that is running is interrupted with SIGUSR1;
    released values are dropped; revoked tasks that have not started are
    skipped, and the master is told which (it sends them to an idle worker)."""
    kind, task_ids = message
    if kind == "release":
        _data["store"].release(task_ids)
    elif kind == "cancel":
        _cancelled.update(task_ids)
        if _running[0] in _cancelled:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
    elif kind == "revoke":  # only those not started: a started one runs to its end
        with _start_lock:
            taken = [task_id for task_id in task_ids if task_id > _started[0]]
            _revoked.update(taken)
        if taken:
            _reply[0].send(("revoked", taken))


def _interrupt(signum, frame):
    if _running[0] is not None and _running[0] in _cancelled:
        raise _Cancelled()


class _Unloaded:
    """A function's pickle that came with a task that did not run: unpickled when a task needs it."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def _keep_function(task, functions):
    """A task skipped unrun (cancelled, revoked) may carry its function's pickle,
    which the master sends once per worker: later tasks name it by key."""
    if task[2] is not None and task[1] is not None and task[1] not in functions:
        functions[task[1]] = _Unloaded(task[2])


def _run(task, functions):
    task_id, fn_key, fn_bytes, args_bytes, inputs = task
    if task_id in _cancelled:
        _keep_function(task, functions)
        return (task_id, False, b"", None)
    try:
        if fn_bytes is not None:
            fn = pickle.loads(fn_bytes)
            if fn_key is not None:
                functions[fn_key] = fn
        else:
            fn = functions[fn_key]
            if type(fn) is _Unloaded:
                fn = functions[fn_key] = pickle.loads(fn.data)
        if inputs:
            try:
                args, kwargs = _InputsUnpickler(args_bytes, inputs, {}).load()
            except Exception as exc:  # noqa: BLE001 - an input is gone: the master recomputes it
                if _data["module"] is not None and isinstance(exc, _data["module"].LostValue):
                    return (task_id, False, ("lost", exc.key, list(exc.address)), str(exc))
                raise
        elif type(args_bytes) is tuple:  # small plain arguments, as themselves
            args, kwargs = args_bytes, {}
        else:
            args, kwargs = pickle.loads(args_bytes)
        _running[0] = task_id
        value = fn(*args, **kwargs)
        _running[0] = None
        return (task_id, True, _result(task_id, value), None)
    except _Cancelled:
        return (task_id, False, b"", None)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the master
        _running[0] = None
        data, text = _error_payload(exc)
        return (task_id, False, data, text)
    finally:
        _running[0] = None
        if _cancelled:  # ids are sent in increasing order: older ones are done with
            _cancelled.difference_update([i for i in _cancelled if i <= task_id])


def serve(channel):
    """Receive batches of tasks, run them in order, send their results back."""
    kind, init = channel.receive()
    assert kind == "init", kind
    for path in reversed(init.get("sys_path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    if init.get("chdir"):
        os.chdir(init["chdir"])
    shipped = _unpack(init["ship"]) if init.get("ship") else None
    if shipped:
        _cleanup_on_signals()
    watcher = threading.Thread(
        target=_watch, args=(channel, init.get("parent_pid")), daemon=True, name="pydron-watch"
    )
    watcher.start()
    import cloudpickle  # noqa: F401 - fail early, at start-up, if it is missing

    try:
        signal.signal(signal.SIGUSR1, _interrupt)
    except (ValueError, AttributeError):  # not the main thread, or no SIGUSR1 (Windows)
        pass
    _reply[0] = channel
    if init.get("control") is not None:
        init["control"].setcallback(_on_control)
    if init.get("keep_freed_memory"):
        _keep_freed_memory()
    try:
        data_port = _start_data_plane(init)
    except OSError as exc:
        channel.send(("failed", f"{exc}"))
        return
    import socket

    channel.send(("ready", {"python": "%d.%d.%d" % sys.version_info[:3], "pid": os.getpid(),
                            "tmp_dir": shipped, "data_port": data_port, "host": socket.gethostname()}))
    streams = (_Forward(channel, "out"), _Forward(channel, "err"))
    sys.stdout, sys.stderr = streams
    if init.get("preload"):
        threading.Thread(target=_preload, args=(init["preload"],), name="pydron-preload",
                         daemon=True).start()
    if init.get("log_level") is not None:
        _forward_logging(channel, init["log_level"], init.get("log_configured", False))
    functions = {}
    while True:
        try:
            kind, body = channel.receive()
        except EOFError:
            _remove_shipped()
            os._exit(0)
        if kind == "stop":
            for stream in streams:  # a last line without its newline
                stream.flush()
            _remove_shipped()
            return
        if kind in ("path", "ship"):
            _update_imports(kind, body)
            continue
        if kind == "forget":  # the master dropped these functions from its cache
            for key in body:
                functions.pop(key, None)
            continue
        if type(body) is bytes:  # a pickled batch (see protocol.py)
            body = pickle.loads(body)
        results = []
        flushed = time.perf_counter()
        for task in body:
            with _start_lock:
                if task[0] in _revoked:
                    _revoked.discard(task[0])
                    _keep_function(task, functions)
                    continue
                _started[0] = task[0]
            began = time.perf_counter()  # unpickling arguments and pickling the result count as running
            try:
                results.append(_run(task, functions) + (began, time.perf_counter()))
            except _Cancelled:  # the interrupt came as the task ended
                results.append((task[0], False, b"", None, began, time.perf_counter()))
            now = time.perf_counter()
            if now - flushed > FLUSH_SECONDS:
                channel.send(("done", _batch(results, 2)))
                results = []
                flushed = now
        if results:
            channel.send(("done", _batch(results, 2)))
        _allocator["last_task"], _allocator["dirty"] = time.monotonic(), True


if __name__ == "__channelexec__":
    serve(channel)  # noqa: F821 - execnet provides ``channel``
