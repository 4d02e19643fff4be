"""What a Dask worker runs for one pydron task (see dask_backend.py).

Self-contained (standard library plus cloudpickle, which Dask needs anyway):
the backend uploads this file to every Dask worker, present and future, with
Dask's ``UploadFile`` plugin, where it is imported as ``pydron_dask_task``.
So the workers need no pydron, and the function Dask pickles for each task is
a reference to ``pydron_dask_task.run``, not a copy of it.
"""
import ctypes
import io
import pickle
import threading
import traceback

# Loaded functions by their pickled bytes: a function is unpickled once per worker.
_FUNCTIONS = {}
_FUNCTION_CACHE = 256


class TaskFailed(Exception):
    """A task raised: the exception pickled (or why it could not be), and the worker's traceback.

    Always picklable, whatever the user's exception is; the master unpickles it.
    """

    def __init__(self, error_bytes, traceback_text, worker, timed_out=False):
        super().__init__(error_bytes, traceback_text, worker, timed_out)
        self.error_bytes = error_bytes
        self.traceback_text = traceback_text
        self.worker = worker
        self.timed_out = timed_out  # stopped at its timeout (the master words the error)

    def __str__(self):
        if self.timed_out:
            return "a pydron task ran past its timeout and was stopped"
        lines = self.traceback_text.strip().splitlines()
        return lines[-1] if lines else "a pydron task failed"

    def __repr__(self):
        return f"TaskFailed({str(self)!r})"


class _InputsUnpickler(pickle.Unpickler):
    """The arguments, each pydron future (a persistent id) replaced by its input."""

    def __init__(self, data, inputs):
        super().__init__(io.BytesIO(data))
        self._inputs = inputs

    def persistent_load(self, pid):
        return self._inputs[pid]


def _function(fn_bytes):
    fn = _FUNCTIONS.get(fn_bytes)
    if fn is None:
        if len(_FUNCTIONS) >= _FUNCTION_CACHE:
            _FUNCTIONS.clear()
        fn = _FUNCTIONS[fn_bytes] = pickle.loads(fn_bytes)
    return fn


def run(fn_bytes, args_bytes, pickled, timeout, *inputs):
    """Call the function on its arguments. ``inputs`` are values: Dask has replaced
    each earlier result's future by the value itself; those whose positions are in
    ``pickled`` are values the master sent, as their pickle. ``timeout`` (seconds,
    or None) stops the call, from when it starts here."""
    try:
        fn = _function(fn_bytes)
        values = list(inputs)
        for index in pickled:
            values[index] = pickle.loads(values[index])
        args, kwargs = _InputsUnpickler(args_bytes, values).load()
        values = None
        if timeout is None:
            return fn(*args, **kwargs)
        return _call_with_timeout(fn, args, kwargs, timeout)
    except _TimedOut:
        raise TaskFailed(b"", "", _worker_address(), timed_out=True) from None
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the master
        raise _failed(exc) from None


class _TimedOut(BaseException):
    """Raised in a task's thread at its timeout (a BaseException: the task's own
    ``except Exception`` does not swallow it)."""


def _set_async_exc(thread_id, exc):
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc is not None else None)


def _call_with_timeout(fn, args, kwargs, timeout):
    """``fn(*args, **kwargs)``, interrupted with _TimedOut after ``timeout`` seconds.

    Dask runs tasks in its worker threads, which no signal reaches: the timer
    raises in this thread asynchronously, which takes effect at the next Python
    instruction (a long call into C code ends first). Nothing of it leaks past
    this function: a timer that fires as the call returns is cleared here.
    """
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"running": True, "fired": False}

    def fire():
        with lock:
            if state["running"]:
                state["fired"] = True
                _set_async_exc(thread_id, _TimedOut)

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    try:
        value = fn(*args, **kwargs)
    finally:
        with lock:
            state["running"] = False
        timer.cancel()
    if state["fired"]:  # fired as the call returned: its exception may still be pending
        _set_async_exc(thread_id, None)
        raise _TimedOut()
    return value


def _worker_address():
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:  # noqa: BLE001 - not on a Dask worker (tests call run() directly)
        return "?"


def _failed(exc):
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None  # the text says it all; the frames would be pickled too
    import cloudpickle

    try:
        data = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception:  # noqa: BLE001 - named, not lost
        data = cloudpickle.dumps(("unpicklable", type(exc).__module__ + "." + type(exc).__qualname__,
                                  str(exc)))
    return TaskFailed(data, text, _worker_address())
