"""The benchmark workloads, shared by every script in ``benchmarks/``.

The work functions are marked ``@pydron.functional``; marking does not wrap
them, so the peers (process pools, joblib, Dask) call the very same functions.
The sequential reference of each workload is written here once, as plain
Python; pydron runs that same source under ``@pydron.schedule``
(``benchmarks/peers.py``), the other tools run their own idiom.

Workloads (issue 7):
  1. cpu       CPU-bound, embarrassingly parallel: tasks of pure-Python work
  2. trivial   task overhead: many trivial tasks, issued one by one
  3. chains    independent chains of dependent tasks
  4. pipeline  3 stages that pass large ``bytes`` values from stage to stage
  5. glue      a loop of arithmetic and no functional calls
  6. first     start-up: one call, cold and warm
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

import pydron  # noqa: E402

# ----------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    cpu_tasks: int          # 1. how many tasks
    cpu_ms: float           # 1. work per task
    trivial_tasks: int      # 2.
    chains: int             # 3. independent chains
    chain_length: int       # 3. dependent tasks per chain
    chain_ms: float         # 3. work per task
    pipeline_items: int     # 4. items, each through 3 stages
    pipeline_mb: int        # 4. size of the values passed between stages
    glue_iterations: int    # 5.
    repeats: int            # timed runs per figure (the median counts)
    cold_repeats: int       # 6. cold starts
    warm_repeats: int       # 6. warm first results
    progress_tasks: int = 20_000  # 2. again, with pydron's progress line drawn and not


FULL = Sizes(cpu_tasks=64, cpu_ms=50, trivial_tasks=5000, chains=16, chain_length=4,
             chain_ms=20, pipeline_items=4, pipeline_mb=20, glue_iterations=1_000_000,
             repeats=3, cold_repeats=3, warm_repeats=10)
QUICK = Sizes(cpu_tasks=8, cpu_ms=5, trivial_tasks=200, chains=4, chain_length=2,
              chain_ms=5, pipeline_items=2, pipeline_mb=1, glue_iterations=10_000,
              repeats=1, cold_repeats=1, warm_repeats=3, progress_tasks=400)

# ----------------------------------------------------------------- the work


@pydron.functional
def busy(n):
    """Pure-Python CPU work: ``n`` loop iterations."""
    x = 0
    for i in range(n):
        x += i * i % 7
    return x


@pydron.functional
def busy_timed(n):
    """``(busy(n), seconds it took)``, timed where it ran: what the tasks themselves
    cost, so that a run's time outside them is the tool's own (run.py)."""
    start = time.perf_counter()
    value = busy(n)
    return value, time.perf_counter() - start


@pydron.functional
def inc(x):
    """A trivial task."""
    return x + 1


@pydron.functional
def step(link, n):
    """One link of a chain: ``busy(n)`` worth of work on the previous link's value.
    A link is ``(value, seconds)``: the chain's own time so far, timed where each
    link ran (run.py's time outside the tasks)."""
    start = time.perf_counter()
    value, seconds = link
    value = (value * 31 + busy(n)) % 1_000_003
    return value, seconds + time.perf_counter() - start


def run_chain(c, length, n):
    """A whole chain in one task (how a plain pool runs dependent steps)."""
    x = (c, 0.0)
    for _ in range(length):
        x = step(x, n)
    return x


_SHIFT = bytes((b + 1) % 256 for b in range(256))


@pydron.functional
def produce(i, size):
    """Stage 1: a ``size``-byte value."""
    return i.to_bytes(4, "little") * (size // 4)


@pydron.functional
def transform(data):
    """Stage 2: a new value of the same size."""
    return data.translate(_SHIFT)


@pydron.functional
def digest(data):
    """Stage 3: a small summary of the value."""
    return len(data), zlib.crc32(data)


# ----------------------------------------------------------------- sequential references
# pydron runs exactly these under @pydron.schedule.


def cpu(ns):
    return [busy_timed(n) for n in ns]


def trivial(count):
    return [inc(i) for i in range(count)]


def trivial_seed(count):
    """Workload 2 in the seed's own loop shape (a new list per step, as written)."""
    out = []
    for i in range(count):
        out = out + [inc(i)]
    return out


def chains(count, length, n):
    results = []
    for c in range(count):
        x = (c, 0.0)
        for _ in range(length):
            x = step(x, n)
        results.append(x)
    return results


def pipeline(items, size):
    return [digest(transform(produce(i, size))) for i in range(items)]


def first(x):
    return inc(x)


def glue(n):
    """Arithmetic only, no functional calls: the cost of @schedule's rewrite itself."""
    total = 0
    for i in range(n):
        total += i * i
        total -= i
    return total


def plain_helper(i):
    return i + 1


def glue_calls(n):
    """Like ``glue``, with a pure built-in and a plain Python function called per iteration."""
    total = 0
    for i in range(n):
        total += abs(i) * i
        total -= plain_helper(i)
    return total


# ----------------------------------------------------------------- timing


def calibrate(target_seconds):
    """The ``n`` for which ``busy(n)`` takes about ``target_seconds`` here."""
    n = 20_000
    while True:
        elapsed = timed(busy, n)[1]
        if elapsed > 0.02:
            break
        n *= 2
    n = int(n * target_seconds / elapsed)
    best = min(timed(busy, n)[1] for _ in range(3))
    return max(1, int(n * target_seconds / best))


def timed(fn, *args):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def best_of(repeat, fn, *args):
    """``(fastest seconds, last result)`` of ``repeat`` calls."""
    times, result = [], None
    for _ in range(repeat):
        result, seconds = timed(fn, *args)
        times.append(seconds)
    return min(times), result
