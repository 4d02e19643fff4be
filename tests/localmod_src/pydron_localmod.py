"""A module that is NOT on sys.path by default and not installed.

Tests put this directory on the master's sys.path only; pydron must still
run its functions on workers that cannot import it (cloudpickle by value).
"""

OFFSET = 1000


def shifted(x):
    """Uses a module global, so the worker needs this module's globals too."""
    return x + OFFSET


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def make_point(x, y):
    return Point(x, y)


def norm1(point):
    return abs(point.x) + abs(point.y)
