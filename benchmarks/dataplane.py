"""The data plane: large values stay on workers and travel worker to worker.

    python3 benchmarks/dataplane.py [--workers 2] [--repeats 3] [--json FILE]
    python3 benchmarks/dataplane.py --quick            # seconds, small sizes

Rows (each the median of --repeats runs after a warm-up, in this one process):

- the README's 3-stage pipeline (produce, transform, digest) over 8 items of
  20 MB: pydron, the plain run and Dask (``dask.delayed`` on a distributed
  LocalCluster with the same number of processes), with the bytes that went
  through pydron's master (its channels and data sockets, both ways);
- a numpy pipeline, 8 items x 3 stages on 50 MB arrays, against the plain run,
  and against the plain run with the allocator setting pydron's workers use
  (glibc keeps freed memory for reuse, PYDRON_KEEP_FREED_MEMORY), run in a
  subprocess, so that the table shows what the setting gives and what the
  parallelism gives;
- one 200 MB result returned to the master.

Each row also prints the master's peak RSS above where it started (sampled
every 5 ms). Results are checked against the plain run; exit status 1 if one
is wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pydron  # noqa: E402
import workloads as w  # noqa: E402
from pydron.remote import pool as pool_module  # noqa: E402

MB = 1024 * 1024
THROUGH_MASTER_TARGET = 0.01  # fraction of the bytes the pipeline produces
NUMPY_TARGET = 1.5  # speed-up over the plain run on 2 workers
RESULT_TARGET_S = 2.0


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """The largest RSS of this process while the block runs, above where it started."""

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / MB


def timed(repeats: int, fn, *args):
    fn(*args)  # warm-up
    times, result = [], None
    with PeakRss() as rss:
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn(*args)
            times.append(time.perf_counter() - start)
    return statistics.median(times), result, rss.mb


# ---------------------------------------------------------------- numpy stages
try:
    import numpy as np
except ImportError:  # the row is skipped
    np = None


@pydron.functional
def np_make(i, size):
    rng = np.random.default_rng(i)
    return rng.random(size // 8)


@pydron.functional
def np_smooth(a):
    out = a
    for _ in range(6):
        out = np.sqrt(out * out + 1.0) - 0.5
    return out


@pydron.functional
def np_norm(a):
    return float(np.linalg.norm(a))


def numpy_pipeline(items, size):
    return [np_norm(np_smooth(np_smooth(np_make(i, size)))) for i in range(items)]


@pydron.functional
def big_value(size):
    return b"\x07" * size


def one_result(size):
    return len(big_value(size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    scale = 1 / 16 if args.quick else 1
    repeats = 1 if args.quick else args.repeats
    os.environ["PYDRON_TX"] = f"{args.workers}*popen"
    pool = pool_module.get_pool()
    rows, wrong = [], []

    # 1. the 3-stage pipeline, against Dask
    items, size = 8, int(20 * MB * scale)
    plain_s, expected, plain_mb = timed(repeats, w.pipeline, items, size)
    scheduled = pydron.schedule(w.pipeline)
    before = pool.bytes_through_master
    pydron_s, got, pydron_mb = timed(repeats, scheduled, items, size)
    moved = (pool.bytes_through_master - before) / (repeats + 1)
    if got != expected:
        wrong.append("pipeline")
    produced = items * 2 * size  # produce and transform each make one value per item
    dask_s = _dask_pipeline(args.workers, repeats, items, size, expected)
    rows.append({
        "row": f"3-stage pipeline, {items} x {size // MB} MB",
        "plain_s": plain_s, "pydron_s": pydron_s, "dask_s": dask_s,
        "through_master_fraction": moved / produced, "master_peak_mb": pydron_mb,
        "plain_peak_mb": plain_mb,
    })

    # 2. numpy
    if np is not None:
        size = int(50 * MB * scale)
        plain_s, expected, plain_mb = timed(repeats, numpy_pipeline, 8, size)
        pydron_s, got, pydron_mb = timed(repeats, pydron.schedule(numpy_pipeline), 8, size)
        if got != expected:
            wrong.append("numpy")
        rows.append({"row": f"numpy, 8 x 3 stages, {size // MB} MB arrays", "plain_s": plain_s,
                     "pydron_s": pydron_s, "master_peak_mb": pydron_mb, "plain_peak_mb": plain_mb,
                     "plain_kept_memory_s": _plain_with_kept_memory(repeats, 8, size)})

    # 3. one large result to the master
    size = int(200 * MB * scale)
    plain_s, expected, plain_mb = timed(repeats, one_result, size)
    pydron_s, got, pydron_mb = timed(repeats, pydron.schedule(one_result), size)
    if got != expected:
        wrong.append("result")
    rows.append({"row": f"one {size // MB} MB result to the master", "plain_s": plain_s,
                 "pydron_s": pydron_s, "master_peak_mb": pydron_mb, "plain_peak_mb": plain_mb})
    pydron.shutdown()

    print(f"\n{args.workers} workers, medians of {repeats}; speed-up = plain / pydron\n")
    print("| workload | plain s | pydron s | speed-up | Dask s | through master | master peak MB (plain) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        dask = f"{row['dask_s']:.3f}" if row.get("dask_s") else "-"
        through = f"{100 * row['through_master_fraction']:.3f} %" if "through_master_fraction" in row else "-"
        print(f"| {row['row']} | {row['plain_s']:.3f} | {row['pydron_s']:.3f} | "
              f"{row['plain_s'] / row['pydron_s']:.2f}x | {dask} | {through} | "
              f"{row['master_peak_mb']:.0f} ({row['plain_peak_mb']:.0f}) |")
    for row in rows:
        if row.get("plain_kept_memory_s"):
            kept = row["plain_kept_memory_s"]
            print(f"\n{row['row']}: the plain run with the allocator setting of pydron's workers "
                  f"(glibc keeps freed memory, as PYDRON_KEEP_FREED_MEMORY=1 does) takes {kept:.3f} s; "
                  f"pydron is {kept / row['pydron_s']:.2f}x that.")
    if wrong:
        print(f"\nWRONG RESULTS: {', '.join(wrong)}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "wrong": wrong}, handle, indent=2)
    return 1 if wrong else 0


def _plain_with_kept_memory(repeats, items, size):
    """The plain numpy pipeline's median time in a subprocess whose glibc keeps
    freed memory as pydron's workers do (worker._keep_freed_memory)."""
    import subprocess

    code = ("import sys, time, statistics; sys.path.insert(0, sys.argv[1]); import dataplane as d; "
            "n, size, repeats = map(int, sys.argv[2:]); d.numpy_pipeline(n, size); times = []\n"
            "for _ in range(repeats):\n"
            "    t = time.perf_counter(); d.numpy_pipeline(n, size); times.append(time.perf_counter() - t)\n"
            "print(statistics.median(times))")
    env = {**os.environ, "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2 ** 31 - 1)}
    out = subprocess.run([sys.executable, "-c", code, HERE, str(items), str(size), str(repeats)],
                         env=env, capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.split()[-1])


def _dask_pipeline(workers, repeats, items, size, expected):
    """Dask's time for the same pipeline, or None if dask.distributed is missing."""
    try:
        import dask
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        def run():
            calls = [dask.delayed(w.digest)(dask.delayed(w.transform)(dask.delayed(w.produce)(i, size)))
                     for i in range(items)]
            return list(dask.compute(*calls))

        seconds, got, _ = timed(repeats, run)
    return seconds if got == expected else None


if __name__ == "__main__":
    sys.exit(main())
