"""Per-task overhead of pydron's pool, beside concurrent.futures.ProcessPoolExecutor.

    python benchmarks/bench_pool.py            # about 10 s
    python benchmarks/bench_pool.py --quick    # about 1 s
    python benchmarks/bench_pool.py --workers 4 --tasks 50000

Two measurements, each on an already started and warmed-up pool:

* throughput: N trivial tasks (``abs``) submitted one by one, then all waited
  for, in tasks per second; pydron's runtime (Graph.submit on a Pool) beside
  ``ProcessPoolExecutor(W).submit``;
* latency: one task submitted and waited for, repeated; the median round trip.

Prints a markdown table. Worker start-up time is reported separately.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pydron.config import local_python_spec  # noqa: E402
from pydron.remote.pool import Pool  # noqa: E402
from pydron.runtime.graph import Graph  # noqa: E402


def pydron_throughput(pool: Pool, n: int) -> float:
    g = Graph(lambda: pool)
    start = time.perf_counter()
    futs = [g.submit(abs, (-i,), {}) for i in range(n)]
    g.sync()
    elapsed = time.perf_counter() - start
    assert futs[-1]._pd_result() == n - 1
    return n / elapsed


def ppe_throughput(ex: concurrent.futures.ProcessPoolExecutor, n: int) -> float:
    start = time.perf_counter()
    futs = [ex.submit(abs, -i) for i in range(n)]
    concurrent.futures.wait(futs)
    elapsed = time.perf_counter() - start
    assert futs[-1].result() == n - 1
    return n / elapsed


def pydron_latency(pool: Pool, n: int) -> list[float]:
    g = Graph(lambda: pool)
    times = []
    for i in range(n):
        start = time.perf_counter()
        g.submit(abs, (-i,), {})._pd_result()
        times.append(time.perf_counter() - start)
    return times


def ppe_latency(ex: concurrent.futures.ProcessPoolExecutor, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        ex.submit(abs, -i).result()
        times.append(time.perf_counter() - start)
    return times


def best_of(repeats: int, fn, *args):
    return max(fn(*args) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (about 1 s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=None, help="tasks per throughput run")
    parser.add_argument("--repeats", type=int, default=None, help="throughput runs (best counts)")
    parser.add_argument("--roundtrips", type=int, default=None, help="latency samples")
    opts = parser.parse_args()
    n = opts.tasks or (500 if opts.quick else 50000)
    repeats = opts.repeats or (1 if opts.quick else 3)
    trips = opts.roundtrips or (50 if opts.quick else 500)
    w = opts.workers

    start = time.perf_counter()
    pool = Pool([local_python_spec()] * w)
    pool_start = time.perf_counter() - start
    start = time.perf_counter()
    ex = concurrent.futures.ProcessPoolExecutor(w)
    list(ex.map(abs, range(-w * 4, 0)))  # really start its processes
    ppe_start = time.perf_counter() - start
    try:
        # Warm up: functions cached, windows grown, code paths hot.
        pydron_throughput(pool, min(n, 1000))
        ppe_throughput(ex, min(n, 1000))
        pydron_latency(pool, 10)
        ppe_latency(ex, 10)

        pd_tput = best_of(repeats, pydron_throughput, pool, n)
        ppe_tput = best_of(repeats, ppe_throughput, ex, n)
        pd_lat = statistics.median(pydron_latency(pool, trips))
        ppe_lat = statistics.median(ppe_latency(ex, trips))
    finally:
        pool.shutdown()
        ex.shutdown()

    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {w} workers, "
          f"{n} tasks x best of {repeats}, {trips} round trips\n")
    print("| measure | pydron | ProcessPoolExecutor | pydron / PPE |")
    print("|---|---:|---:|---:|")
    print(f"| throughput, trivial tasks (tasks/s) | {pd_tput:,.0f} | {ppe_tput:,.0f} "
          f"| {pd_tput / ppe_tput:.2f} |")
    print(f"| per-task overhead (us) | {1e6 / pd_tput:,.1f} | {1e6 / ppe_tput:,.1f} "
          f"| {ppe_tput / pd_tput:.2f} |")
    print(f"| round-trip latency, median (ms) | {pd_lat * 1e3:.3f} | {ppe_lat * 1e3:.3f} "
          f"| {pd_lat / ppe_lat:.2f} |")
    print(f"| start-up of {w} workers (s) | {pool_start:.2f} | {ppe_start:.2f} "
          f"| {pool_start / ppe_start:.2f} |")


if __name__ == "__main__":
    main()
