"""pydron: sequential Python, run in parallel.

Decorate the pipeline with ``@pydron.schedule`` and its pure helpers with
``@pydron.functional``; the result is the same as the plain run, only sooner.
"""
from pydron.errors import ConfigError, PydronError, RemoteError, WorkerDied
from pydron.functional import functional
from pydron.remote.pool import shutdown

__all__ = [
    "schedule", "functional", "shutdown",
    "ConfigError", "PydronError", "RemoteError", "WorkerDied",
]


def __getattr__(name):
    # The tracer imports bytecode; load it only when a schedule is defined.
    if name == "schedule":
        from pydron.schedule import schedule

        return schedule
    raise AttributeError(f"module 'pydron' has no attribute {name!r}")
