"""Helpers for tests/test_parallel.py (real worker processes).

Module level so that pydron's workers import them by reference (local workers
get the master's ``sys.path``; conftest.py puts ``tests/`` on it).

Functional helpers *sleep* instead of computing, so that overlap shows up in
wall time even when the machine's cores are busy with other test processes.
Each returns a ``Span``: the value it computed plus when (``time.time()``, one
clock for all local processes) and where (pid) it ran, so a test can prove
that two calls really overlapped instead of relying on wall time alone.

The marker helpers write files into a directory given as an argument: a
test-only side effect that lets the test process see *when* a task started
and finished relative to a sync point.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

from pydron.functional import functional


class Span(NamedTuple):
    value: object
    start: float
    end: float
    pid: int


def _span(value, start):
    return Span(value, start, time.time(), os.getpid())


# ------------------------------------------------------------------ functional


@functional
def process(x, seconds=0.4):
    """Sleep, then ``x * 10``."""
    start = time.time()
    time.sleep(seconds)
    return _span(x * 10, start)


@functional
def f(x, seconds=0.3):
    """First link of a chain: sleep, then ``x + 1``."""
    start = time.time()
    time.sleep(seconds)
    return _span(x + 1, start)


@functional
def g(span, seconds=0.3):
    """Second link of a chain: takes ``f``'s Span, sleeps, then ``value * 2``."""
    start = time.time()
    time.sleep(seconds)
    return _span(span.value * 2, start)


@functional
def h(a, b, seconds=0.1):
    """Combine two Spans; also hands back both, so the test sees their timing."""
    start = time.time()
    time.sleep(seconds)
    return _span((a.value + b.value, a, b), start)


@functional
def mark(directory, name, seconds):
    """Write ``started-<name>``, sleep, write ``done-<name>``."""
    start = time.time()
    _touch(directory, f"started-{name}")
    time.sleep(seconds)
    _touch(directory, f"done-{name}")
    return _span(name, start)


@functional
def fail_at(x, bad, seconds=0.2, late=None):
    """Sleep, then ``x`` -- or ``ValueError`` if ``x == bad``.

    ``x == late`` fails at once with a different message: a later call that
    fails *first* in wall time must not win over the earlier one.
    """
    if x == late:
        raise ValueError(f"late failure {x}")
    time.sleep(seconds)
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


@functional
def tiny(x):
    """Cheap, for the generated function of the rewriting-speed test."""
    return x * 3 + 1


# ------------------------------------------------------------ non-functional

LOG: list = []


def log(*args):
    """NON-functional: record ``args`` (a sync point under pydron)."""
    LOG.append(args)


def listing(directory):
    """NON-functional: the marker files present now, sorted."""
    return sorted(os.listdir(directory))


def _touch(directory, name):
    with open(os.path.join(directory, name), "w") as fh:
        fh.write(str(time.time()))


# ------------------------------------------------------------ test process only


def max_overlap(spans):
    """The largest number of spans running at one instant."""
    events = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans],
                    key=lambda e: (e[0], e[1]))
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best
