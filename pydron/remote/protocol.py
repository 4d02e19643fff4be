"""The wire protocol between the master and its workers, in one place.

Every message is a tuple sent over an execnet channel:

master -> worker
    ("init", {"sys_path": [...], "label": str})   once, first
      non-local workers (ssh, ...) also get "ship": {"tmp_dir": str or None,
      "files": {"cloudpickle/__init__.py": source, ...}} (cloudpickle and the
      user's modules the master imported); the worker writes them into a
      fresh directory under tmp_dir, imports from there and removes it when
      it ends
    ("path", [...])                                the master's sys.path changed (local
                                                   workers): add the new entries
    ("ship", {"relative/path.py": source, ...})    modules the master imported since the
                                                   last shipment (remote workers)
    ("run", [TASK, ...])                           a batch of tasks
    ("stop", None)                                 finish and exit
  TASK = (task_id, fn_key, fn_bytes or None, args_bytes, [input_bytes, ...])
    fn_bytes is sent once per worker and function; later tasks name fn_key.
    args_bytes pickles ``(args, kwargs)``; each future inside it is a
    persistent id: an index into the input list, whose bytes are the
    pickled results of the tasks it depends on.

worker -> master
    ("ready", {"python": "3.11.7", "pid": int,     once, after init
               "tmp_dir": str or None})          (the directory of shipped files)
    ("done", [RESULT, ...])                        a batch of results
  RESULT = (task_id, ok, value_bytes or error_bytes, remote_traceback_text)
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle

from pydron.runtime.future import Future
from pydron.runtime.resolve import PLAIN_TYPES


class _ArgsPickler(cloudpickle.Pickler):
    """Pickles task arguments with each future replaced by its input index."""

    def __init__(self, file: io.BytesIO, slots: dict[int, int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._slots = slots

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is Future:
            return self._slots[id(obj)]
        return None


def dump_args(args: tuple, kwargs: dict, slots: dict[int, int]) -> bytes:
    """Pickle a task's arguments; ``slots`` maps id(future) to its input index."""
    if not slots:
        if not kwargs and all(type(arg) in PLAIN_TYPES for arg in args):
            return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)  # ~10x faster
        return cloudpickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    _ArgsPickler(buffer, slots).dump((args, kwargs))
    return buffer.getvalue()


def dump_value(value: Any) -> bytes:
    """Pickle a value that a task or the master produced."""
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def dump_function(fn: Any) -> bytes:
    """Pickle a functional function (by reference when importable, else by value)."""
    return cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
