"""Functional helpers for tests/test_dask_backend.py.

The Dask workers cannot import this module (tests/ is not on their sys.path):
its functions and classes reach them by value.
"""
from __future__ import annotations

import os
import signal
import time

from pydron.functional import functional


class Point:
    """A class of a module the workers cannot import: it must come back as this class."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


class Oops(Exception):
    """An exception class of a module the workers cannot import."""


@functional
def make_point(x: int) -> Point:
    return Point(x, x * 2)


@functional
def shift(p: Point, by: int) -> Point:
    return Point(p.x + by, p.y + by)


@functional
def fail_with_oops(x: int) -> int:
    raise Oops(f"oops {x}")


@functional
def big(n: int) -> bytes:
    return bytes(n)


@functional
def size(data: bytes) -> int:
    return len(data)


@functional
def slow_inc(x: int, seconds: float = 0.3) -> int:
    time.sleep(seconds)
    return x + 1


@functional
def poison(x: int) -> int:
    """Kills whichever worker runs it."""
    os.kill(os.getpid(), signal.SIGKILL)
    return x


@functional
def where() -> int:
    return os.getpid()


@functional(timeout=0.5)
def spin(x: int) -> int:
    """Never returns by itself: pure Python, so a timeout stops it."""
    while True:
        x += 1


@functional(timeout=30)
def inc_within(x: int) -> int:
    return x + 1
