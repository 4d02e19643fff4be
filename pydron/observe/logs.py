"""pydron's logging: everything goes to the ``pydron`` logger, which says nothing by default.

The library only attaches a ``NullHandler`` (events.py); an application that
configures ``logging`` sees pydron's records like any other. ``-v``/``-vv`` of
``python -m pydron run`` call ``enable`` to print them on stderr.
"""
from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("pydron")
_FORMAT = "pydron %(levelname)s %(asctime)s.%(msecs)03d %(message)s"


def level_for(verbosity: int) -> int:
    """``-v`` -> INFO, ``-vv`` (or more) -> DEBUG, none -> WARNING."""
    return logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING


def enable(verbosity: int, stream: object = None) -> logging.Handler:
    """Print pydron's log records at the level ``verbosity`` asks for on ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level_for(verbosity))
    return handler
