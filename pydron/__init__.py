"""pydron: sequential Python, run in parallel.

Decorate the pipeline with ``@pydron.schedule`` and its pure helpers with
``@pydron.functional``; the result is the same as the plain run, only sooner.

Only the markers and errors load with ``import pydron``: a worker imports the
user's modules, which import pydron for ``@functional`` alone, so the tracer,
the runtime and the pool load on first use of the names that need them.
"""
from __future__ import annotations

import logging
from typing import Any

from pydron.errors import ConfigError, PydronError, RemoteError, WorkerDied
from pydron.functional import functional

__all__ = [
    "schedule", "functional", "pure", "explain", "shutdown", "workers", "stats",
    "progress", "report", "Stats", "WorkerInfo",
    "ConfigError", "PydronError", "RemoteError", "WorkerDied",
]

# A library's loggers stay silent unless the application configures logging.
logging.getLogger("pydron").addHandler(logging.NullHandler())

# name -> the module that defines it, imported on first use
_LAZY = {
    "schedule": "pydron.scheduling",
    "pure": "pydron.runtime.purity",
    "explain": "pydron.tracer.explain",
    "shutdown": "pydron.remote.pool",
    "workers": "pydron.observe.status",
    "stats": "pydron.observe.status",
    "Stats": "pydron.observe.status",
    "WorkerInfo": "pydron.observe.status",
    "progress": "pydron.observe.progress",
    "report": "pydron.observe.report",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name == "__version__":  # reading package metadata would slow every import of pydron
        from pydron.version import version

        return version()
    raise AttributeError(f"module 'pydron' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})
