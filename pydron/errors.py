"""Exceptions that pydron itself raises."""


class PydronError(Exception):
    """Base class of pydron's own errors."""


class ConfigError(PydronError):
    """A configuration file, worker spec or environment variable is invalid."""


class WorkerDied(PydronError):
    """A worker process ended while it was running or holding a task."""


class RemoteError(PydronError):
    """A remote exception that could not be sent back as itself (e.g. unpicklable)."""


class CallCancelled(PydronError):
    """A functional call that the sequential run never makes: an earlier call failed,
    or the run ended (an exception, Ctrl-C) before its value was needed."""
