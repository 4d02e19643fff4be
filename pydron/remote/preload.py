"""Which modules a new worker imports before its first task arrives.

A worker imports a user's module only when the first task that needs it is
unpickled; with heavy libraries (numpy, scipy, astropy) that puts seconds of
imports into the first burst of tasks. A new worker instead starts importing,
in a background thread, the modules that the user's script (``__main__``)
imported: the modules bound in its namespace and the modules of the functions
and classes it imported by name. Nothing happens when ``__main__`` is a tool
installed with Python (pytest, an IDE's runner): its imports are not the
user's pipeline.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import types


def _installation_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            *(paths.get(key) or sys.prefix for key in ("stdlib", "platstdlib", "purelib", "platlib"))}
    return tuple(os.path.abspath(d) + os.sep for d in dirs)


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(os.path.abspath(paths[key]) + os.sep for key in ("stdlib", "platstdlib") if paths.get(key))


def modules_to_preload() -> list[str]:
    """Names of the non-standard modules ``__main__`` imported, in the order found."""
    main = sys.modules.get("__main__")
    if main is None:
        return []
    main_file = getattr(main, "__file__", None)
    if isinstance(main_file, str) and os.path.abspath(main_file).startswith(_installation_dirs()):
        return []
    stdlib = _stdlib_dirs()
    names: list[str] = []
    for value in list(vars(main).values()):
        if isinstance(value, types.ModuleType):
            name = value.__name__
        elif isinstance(value, (types.FunctionType, type)):
            name = getattr(value, "__module__", None)
        else:
            continue
        if not isinstance(name, str) or name in names or name in ("__main__", "builtins"):
            continue
        if name.partition(".")[0] in ("pydron", "cloudpickle", "execnet"):
            continue
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or os.path.abspath(path).startswith(stdlib):
            continue  # built in, or the standard library: cheap to import when needed
        names.append(name)
    return names
