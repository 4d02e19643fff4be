"""The wire protocol between the master and its workers, in one place.

Every message is a tuple sent over an execnet channel:

master -> worker
    ("init", {...})                                once, first; its fields:
      "sys_path", "chdir", "parent_pid"   local workers: the master's sys.path entries and
                                          working directory; the worker ends when that pid goes
      "label"                             the worker's name in messages
      "control": CHANNEL                  a second execnet channel that the worker reads in
                                          execnet's receiving thread, so it is heard while a
                                          task runs:
        ("cancel", [task_id, ...])          drop these tasks if they have not started; the one
                                            running gets SIGUSR1, which raises in it (the master
                                            kills the worker if it has not stopped within
                                            CANCEL_GRACE)
        ("release", [key, ...])             values kept here that the program dropped
        ("revoke", [task_id, ...])          give back these queued tasks if they have not
                                            started (the master has an idle worker for them);
                                            answered with "revoked" on the task channel
      "dataplane": source, "secret": bytes, "data": {"host":, "ports": [...]} or None
                                          dataplane.py's source, the pool's secret, and where
                                          to serve kept values (None: no server; every result
                                          goes back inline)
      "inline_limit": int                 a result up to this many bytes goes back inline;
                                          a larger one is kept here
      "keep_freed_memory": bool           glibc keeps freed memory for the next task
      "preload": [module, ...]            imported in the background once ready
      "log_level", "log_configured"       which log records go back, and whether the master
                                          has logging configured
      "ship": {"tmp_dir": str or None, "files": {"cloudpickle/__init__.py": source, ...}}
                                          non-local workers (ssh, ...): cloudpickle and the
                                          user's modules the master imported; the worker writes
                                          them into a fresh directory under tmp_dir, imports
                                          from there and removes it when it ends
    ("path", [...])                                the master's sys.path changed (local
                                                   workers): add the new entries
    ("ship", {"relative/path.py": source, ...})    modules the master imported since the
                                                   last shipment (remote workers)
    ("forget", [fn_key, ...])                      functions the master no longer caches
    ("run", BATCH of TASK)                         a batch of tasks, run in order after the
                                                   earlier ones; the results of a batch are all
                                                   sent before the next batch starts
    ("stop", None)                                 finish and exit
  TASK = (task_id, fn_key, fn_bytes or None, ARGS, [INPUT, ...])
    fn_bytes is sent once per worker and function; later tasks name fn_key.
  ARGS = the tuple of positional arguments itself, when they are a few small
    plain values and there are no keywords (see task_args), or bytes that
    pickle ``(args, kwargs)``; each future inside those is a persistent id: an
    index into the input list.
  INPUT = the pickled result of a task it depends on, or ("here", key) for a
    value this worker keeps, or ("peer", key, (host, port)) for one another
    worker keeps (fetched over the data plane, dataplane.py)

worker -> master
    ("ready", {"python": "3.11.7", "pid": int,     once, after init
               "tmp_dir": str or None,           (the directory of shipped files)
               "data_port": int or None,         (where it serves kept values)
               "host": str})                     (the worker machine's hostname)
    ("failed", text)                               instead of "ready": e.g. no data port free
    ("done", BATCH of RESULT)                      a batch of results
    ("revoked", [task_id, ...])                    these revoked tasks will not run here
    ("output", ("out" or "err", text))             whole lines a task printed (before its result)
    ("log", {"name":, "levelno":, "msg":, ...})     a task's log record at or above init's
                                                   "log_level", its message formatted
  BATCH = the list pickled as one bytes object, or, when a byte string in it is
    over BATCH_PICKLE_LIMIT (64 KiB, which pickling would copy), the list itself.
    execnet's own serializer is written in Python and costs microseconds per
    item: a pickled batch of trivial tasks or results costs a tenth of that.
  RESULT = (task_id, ok, value_bytes or error_bytes, remote_traceback_text, began, ended)
    A number, bool, None, or a str or bytes of at most PLAIN_RESULT_LIMIT
    (4 KiB) comes as ("value", the value itself): the batch's pickle carries
    it, and unpickling such a value runs no user code, so the receiving thread
    may do it. A result over init's "inline_limit" stays on the worker:
    value_bytes is then ("kept", key, size, type_name). A task whose INPUT could not be had
    fails with ("lost", key, (host, port)): the master makes it again.
    A cancelled task's RESULT is (task_id, False, b"", None, began, ended); the
    master has already failed its future and ignores it.
    began/ended: the worker's time.perf_counter() around the task (unpickling
    its arguments, the call, pickling its result). The worker's own clock:
    only differences mean something on the master (stats() and the run
    report use them for the time a task ran).
"""
from __future__ import annotations

import collections
import io
import pickle
import sys
import types
from typing import Any

import cloudpickle

from pydron.runtime.future import Future
from pydron.runtime.resolve import PLAIN_TYPES, plain_size


class _ArgsPickler(cloudpickle.Pickler):
    """Pickles task arguments with each future replaced by its input index."""

    def __init__(self, file: io.BytesIO, slots: dict[int, int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._slots = slots

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is Future:
            return self._slots[id(obj)]
        return None


# A batch whose byte strings are all smaller goes as one pickle (see BATCH above).
BATCH_PICKLE_LIMIT = 64 * 1024


def batch(tasks: list[tuple]) -> Any:
    """A batch of TASKs as the master sends it: one pickle, or the list itself when
    an argument or input is a large byte string."""
    for task in tasks:
        args, fn_bytes = task[3], task[2]
        if ((type(args) is bytes and len(args) > BATCH_PICKLE_LIMIT)
                or (fn_bytes is not None and len(fn_bytes) > BATCH_PICKLE_LIMIT)):
            return tasks
        for data in task[4]:
            if type(data) is bytes and len(data) > BATCH_PICKLE_LIMIT:
                return tasks
    return pickle.dumps(tasks, protocol=pickle.HIGHEST_PROTOCOL)


# A str or bytes argument up to this size may travel as itself (see task_args).
PLAIN_ARG_LIMIT = 4096


def task_args(args: tuple, kwargs: dict, slots: dict[int, int]) -> tuple | bytes:
    """A task's ARGS: small plain positional arguments as their own tuple, which
    the batch's one pickle carries (immutable, so a later change by the program
    cannot reach them; a pickle of its own costs the issuing thread about a
    microsecond per call); anything else pickled now by ``dump_args``."""
    if not slots and not kwargs:
        for arg in args:  # a loop, not all(genexpr): this runs once per call
            kind = type(arg)
            if kind not in PLAIN_TYPES or ((kind is str or kind is bytes) and len(arg) > PLAIN_ARG_LIMIT):
                break
        else:
            return args
    return dump_args(args, kwargs, slots)


def args_size(data: tuple | bytes) -> int:
    """About the bytes a task's ARGS take on the wire (for the byte counts)."""
    if type(data) is bytes:
        return len(data)
    size = 0
    for arg in data:
        size += plain_size(arg)
    return size


def dump_args(args: tuple, kwargs: dict, slots: dict[int, int]) -> bytes:
    """Pickle a task's arguments; ``slots`` maps id(future) to its input index."""
    if not slots:
        if not kwargs:
            for arg in args:  # a loop, not all(genexpr): this runs once per call
                if type(arg) not in PLAIN_TYPES:
                    break
            else:
                return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)  # ~10x faster
        return dump_value((args, kwargs))
    buffer = io.BytesIO()
    try:
        _ArgsPickler(buffer, slots).dump((args, kwargs))
    except (RecursionError, pickle.PicklingError) as exc:
        if not _too_deep(exc):
            raise
        return dump_deep((args, kwargs), lambda obj: slots[id(obj)] if type(obj) is Future else None)
    return buffer.getvalue()


def dump_value(value: Any) -> bytes:
    """Pickle a value that a task or the master produced."""
    try:
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (RecursionError, pickle.PicklingError) as exc:
        if not _too_deep(exc):
            raise
        return dump_deep(value)


def _too_deep(exc: BaseException) -> bool:
    """The C pickler gave up on nesting (cloudpickle says so with a PicklingError)."""
    return isinstance(exc, RecursionError) or "recursion" in str(exc)


# How deep a value the pure-Python pickler may follow (Python frames, not C stack).
DEEP_LIMIT = 100_000


def dump_deep(value: Any, persistent_id: Any = None) -> bytes:
    """Pickle a value nested deeper than the C pickler's recursion limit.

    The plain run passes such values around freely; the pure-Python pickler
    recurses in Python frames only, so the recursion limit can be raised for
    it without risking the C stack.
    """
    buffer = io.BytesIO()
    pickler = pickle._Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[attr-defined]
    if persistent_id is not None:
        pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, DEEP_LIMIT))
    try:
        pickler.dump(value)
    finally:
        sys.setrecursionlimit(limit)
    return buffer.getvalue()


def dump_function(fn: Any) -> bytes:
    """Pickle a functional function (by reference when importable, else by value).

    Code pickled by value keeps its file name (cloudpickle replaces it with
    ``<dynamic-code>``), so warnings and tracebacks from a task name the real
    source file and line.
    """
    buffer = io.BytesIO()
    _FunctionPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(fn)
    return buffer.getvalue()


def _code_reduce_keeping_filename(code: types.CodeType) -> Any:
    rebuild, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return rebuild, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)


_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


class _FunctionPickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap({types.CodeType: _code_reduce_keeping_filename},
                                          cloudpickle.Pickler.dispatch_table)
