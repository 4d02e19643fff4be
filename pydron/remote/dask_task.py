"""What a Dask worker runs for one pydron task (see dask_backend.py).

Self-contained (standard library plus cloudpickle, which Dask needs anyway):
the backend uploads this file to every Dask worker, present and future, with
Dask's ``UploadFile`` plugin, where it is imported as ``pydron_dask_task``.
So the workers need no pydron, and the function Dask pickles for each task is
a reference to ``pydron_dask_task.run``, not a copy of it.
"""
import io
import pickle
import traceback

# Loaded functions by their pickled bytes: a function is unpickled once per worker.
_FUNCTIONS = {}
_FUNCTION_CACHE = 256


class TaskFailed(Exception):
    """A task raised: the exception pickled (or why it could not be), and the worker's traceback.

    Always picklable, whatever the user's exception is; the master unpickles it.
    """

    def __init__(self, error_bytes, traceback_text, worker):
        super().__init__(error_bytes, traceback_text, worker)
        self.error_bytes = error_bytes
        self.traceback_text = traceback_text
        self.worker = worker

    def __str__(self):
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


def run(fn_bytes, args_bytes, pickled, *inputs):
    """Call the function on its arguments. ``inputs`` are values: Dask has replaced
    each earlier result's future by the value itself; those whose positions are in
    ``pickled`` are values the master sent, as their pickle."""
    try:
        fn = _function(fn_bytes)
        values = list(inputs)
        for index in pickled:
            values[index] = pickle.loads(values[index])
        args, kwargs = _InputsUnpickler(args_bytes, values).load()
        values = None
        return fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the master
        raise _failed(exc) from None


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
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # noqa: BLE001 - not on a Dask worker (tests call run() directly)
        worker = "?"
    return TaskFailed(data, text, worker)
