"""Pickle the user's own modules by value, for workers that cannot import them.

A function is normally pickled by reference (module and name); a worker that
lacks the module (a Dask worker started elsewhere, whose sys.path does not
hold the user's directory) cannot load it. cloudpickle can pickle a module's
functions and classes by value instead (``register_pickle_by_value``); this
module decides which modules need it (those imported from outside the Python
installation, as ssh.py's ``local_modules`` does for shipping) and registers
them only while pydron pickles, so that other users of cloudpickle in the
process are not affected. Classes keep their identity across the round trip:
cloudpickle tags a class pickled by value, and the master maps the tag back to
its own class when a result comes back.
"""
from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
import threading
from collections.abc import Iterator

import cloudpickle

_lock = threading.RLock()
_cache: tuple[int, tuple[str, ...]] = (-1, ())


def _installation() -> set[str]:
    return {os.path.abspath(p) for p in (
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        *(sysconfig.get_paths().get(k) or sys.prefix for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    )}


def local_packages() -> tuple[str, ...]:
    """Top-level names of the modules imported from outside the Python installation
    (pydron and cloudpickle excepted; ``__main__`` is pickled by value anyway)."""
    global _cache
    count = len(sys.modules)
    if _cache[0] == count:
        return _cache[1]
    excluded = _installation()
    names = set()
    for name, module in list(sys.modules.items()):
        top = name.partition(".")[0]
        if top in names or name == "__main__" or top in ("pydron", "cloudpickle", "pydron_dask_task"):
            continue
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        path = os.path.abspath(path)
        if any(path.startswith(directory + os.sep) for directory in excluded):
            continue
        if top in sys.modules:
            names.add(top)
    _cache = (count, tuple(sorted(names)))
    return _cache[1]


@contextlib.contextmanager
def by_value() -> Iterator[None]:
    """While inside: the user's own modules pickle by value."""
    with _lock:
        added = []
        registered = cloudpickle.list_registry_pickle_by_value()
        for name in local_packages():
            if name not in registered and name in sys.modules:
                try:
                    cloudpickle.register_pickle_by_value(sys.modules[name])
                except (ValueError, TypeError):  # not a real module (a stand-in object)
                    continue
                added.append(name)
        try:
            yield
        finally:
            for name in added:
                try:
                    cloudpickle.unregister_pickle_by_value(sys.modules[name])
                except (ValueError, KeyError):
                    pass
