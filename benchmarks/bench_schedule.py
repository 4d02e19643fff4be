"""Benchmarks for ``@pydron.schedule``; prints markdown tables.

(a) CPU-bound loop: CALLS calls of ~50 ms of pure-Python work, in the seed's
    loop shape, run
      - plainly (sequential, the baseline),
      - under ``@pydron.schedule`` (cold: pool start-up included; warm: pool
        running and the function already on the workers),
      - with ``concurrent.futures.ProcessPoolExecutor(n).map`` (cold: executor
        creation included; warm: executor running), n = pydron's worker count.
    Figures: seconds and speed-up over sequential.
(b) Glue overhead: a schedule function that loops over N arithmetic
    operations and makes no functional calls, against the same plain function
    (ratio scheduled / plain; 1.00 = no overhead).  A second row adds a call
    of a pure built-in and of a plain Python function to every iteration.

    python benchmarks/bench_schedule.py            # full, about a minute
    python benchmarks/bench_schedule.py --quick    # a few seconds

Workers come from pydron's usual configuration (``PYDRON_TX``, pydron.conf,
or one popen worker per core).  Warm figures are the best of ``--repeat``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # workloads.py, which also puts the checkout on sys.path

import pydron  # noqa: E402
from pydron.remote import pool as pool_module  # noqa: E402
from workloads import best_of, busy, calibrate, glue, glue_calls  # noqa: E402
from workloads import timed as _timed  # noqa: E402


def _time(fn, *args):
    return _timed(fn, *args)[1]


# ----------------------------------------------------------------- the work


def sequential(ns):
    outputs = []
    for n in ns:
        output = busy(n)
        outputs = outputs + [output]
    return outputs


scheduled = pydron.schedule(sequential)
glue_scheduled = pydron.schedule(glue)
glue_calls_scheduled = pydron.schedule(glue_calls)


# ----------------------------------------------------------------- runs


def pool_cold(workers, ns):
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        result = list(ex.map(busy, ns))
    return time.perf_counter() - start, result


def pool_warm(workers, ns, repeat):
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        list(ex.map(busy, [1] * workers * 4))  # every process started
        return best_of(repeat, lambda: list(ex.map(busy, ns)))


def pydron_cold(ns):
    pydron.shutdown()
    start = time.perf_counter()
    result = scheduled(ns)
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument("--calls", type=int, help="functional calls in (a) (default 64; 16 with --quick)")
    parser.add_argument("--task-ms", type=float, default=50.0, help="work per call in (a), ms")
    parser.add_argument("--glue", type=int, help="loop iterations in (b) (default 1e6; 1e5 with --quick)")
    parser.add_argument("--repeat", type=int, help="repeats for warm figures (default 3; 1 with --quick)")
    args = parser.parse_args(argv)
    calls = args.calls or (16 if args.quick else 64)
    glue_n = args.glue or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)

    n = calibrate(args.task_ms / 1000)
    ns = [n] * calls
    measured_ms = 1000 * min(_time(busy, n) for _ in range(3))
    expected = [busy(n)] * calls

    # Sequential first, and the process pool before pydron's dispatch thread
    # exists (ProcessPoolExecutor forks).
    seq_time, result = best_of(repeat, sequential, ns)
    assert result == expected
    workers = len(pydron_workers_preview())
    pp_cold, result = pool_cold(workers, ns)
    assert result == expected
    pp_warm, result = pool_warm(workers, ns, repeat)
    assert result == expected

    pd_cold, result = pydron_cold(ns)
    assert result == expected
    pd_warm, result = best_of(repeat, scheduled, ns)
    assert result == expected
    workers = len(pool_module.get_pool().workers)

    glue_plain, r1 = best_of(repeat + 2, glue, glue_n)
    glue_sched, r2 = best_of(repeat + 2, glue_scheduled, glue_n)
    assert r1 == r2
    calls_plain, r1 = best_of(repeat + 2, glue_calls, glue_n)
    calls_sched, r2 = best_of(repeat + 2, glue_calls_scheduled, glue_n)
    assert r1 == r2
    pydron.shutdown()

    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{workers} pydron workers / {workers} pool processes; "
          f"warm = best of {repeat}\n")
    print(f"### (a) CPU-bound loop: {calls} calls x {measured_ms:.0f} ms\n")
    print("| run | seconds | speed-up vs sequential |")
    print("|---|---:|---:|")
    rows = [
        ("sequential (plain)", seq_time),
        ("pydron @schedule, cold (pool start-up included)", pd_cold),
        ("pydron @schedule, warm", pd_warm),
        (f"ProcessPoolExecutor({workers}).map, cold", pp_cold),
        (f"ProcessPoolExecutor({workers}).map, warm", pp_warm),
    ]
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seq_time / seconds:.2f}x |")
    print(f"| ideal ({workers} workers) | {seq_time / workers:.2f} | {workers:.2f}x |")
    print(f"\n### (b) glue overhead: loop of {glue_n:,} iterations, no functional calls\n")
    print("| loop body | plain s | @schedule s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| `total += i * i; total -= i` | {glue_plain:.3f} | {glue_sched:.3f} "
          f"| {glue_sched / glue_plain:.2f} |")
    print(f"| `total += abs(i) * i; total -= plain_helper(i)` | {calls_plain:.3f} "
          f"| {calls_sched:.3f} | {calls_sched / calls_plain:.2f} |")


def pydron_workers_preview():
    """pydron's worker specs, without starting them (to size the process pool alike)."""
    from pydron.config import worker_specs

    return worker_specs()


if __name__ == "__main__":
    main()
