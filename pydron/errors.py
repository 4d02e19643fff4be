"""Exceptions that pydron itself raises."""


class PydronError(Exception):
    """Base class of pydron's own errors."""


class ConfigError(PydronError):
    """A configuration file, worker spec or environment variable is invalid."""


class WorkerDied(PydronError):
    """A worker process ended while it was running or holding a task."""


class RemoteError(PydronError):
    """A remote exception that could not be sent back as itself (e.g. unpicklable)."""
