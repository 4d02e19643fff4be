"""pydron: sequential Python, run in parallel.

Decorate the pipeline with ``@pydron.schedule`` and its pure helpers with
``@pydron.functional``; the result is the same as the plain run, only sooner.
"""
from pydron.errors import ConfigError, PydronError, RemoteError, WorkerDied
from pydron.functional import functional
from pydron.observe.progress import progress
from pydron.observe.report import report
from pydron.observe.status import Stats, WorkerInfo, stats, workers
from pydron.remote.pool import shutdown
from pydron.runtime.purity import pure
from pydron.scheduling import schedule
from pydron.tracer.explain import explain

__all__ = [
    "schedule", "functional", "pure", "explain", "shutdown", "workers", "stats",
    "progress", "report", "Stats", "WorkerInfo",
    "ConfigError", "PydronError", "RemoteError", "WorkerDied",
]


def __getattr__(name: str) -> str:
    # Looked up on first use: reading package metadata would slow every import of pydron.
    if name == "__version__":
        from pydron.version import version

        return version()
    raise AttributeError(f"module 'pydron' has no attribute {name!r}")
