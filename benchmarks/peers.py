"""Every tool of the benchmark, each running the workloads in its own idiom.

A tool has ``start()`` / ``stop()`` (its worker processes) and one method per
workload, returning the same value as the sequential reference in
``workloads.py``.  ``start()`` plus ``first()`` is a cold start to the first
result; ``first()`` on a started tool is a warm one.

``IDIOMS`` says, per tool and workload, how it is written; ``run.py`` prints it
under the table.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import sys
import threading

import workloads as w

# Shown in this order.
NAMES = ["sequential", "pydron", "ProcessPoolExecutor", "multiprocessing.Pool", "joblib", "Dask",
         "pydron on Dask"]
PEERS = ["ProcessPoolExecutor", "multiprocessing.Pool", "joblib", "Dask"]


class Tool:
    name = ""
    requires: tuple[str, ...] = ()

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @classmethod
    def missing(cls) -> str | None:
        """Why this tool cannot run here (a package is not installed), or None."""
        absent = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if absent:
            return (f"{', '.join(absent)} not installed "
                    f"(python3 -m pip install -e '.[bench]')")
        return None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def first(self, x):
        raise NotImplementedError

    def cpu(self, ns):
        raise NotImplementedError

    def trivial(self, count):
        raise NotImplementedError

    def chains(self, count, length, n):
        raise NotImplementedError

    def pipeline(self, items, size):
        raise NotImplementedError

    glue = None  # only sequential and pydron run the glue loop
    progress_off = progress_on = None  # pydron only: its progress line
    trivial_seed = None  # pydron only: the seed's loop (the peers' idiom is row 2's)


class Sequential(Tool):
    name = "sequential"

    def first(self, x):
        return w.first(x)

    def cpu(self, ns):
        return w.cpu(ns)

    def trivial(self, count):
        return w.trivial(count)

    def chains(self, count, length, n):
        return w.chains(count, length, n)

    def pipeline(self, items, size):
        return w.pipeline(items, size)

    def glue(self, n):
        return w.glue(n)


# ----------------------------------------------------------------- pydron


class WireCounter:
    """Bytes through the master's execnet pipes, counted in ``Popen2IO.read``/``write``.

    pydron's workers are execnet popen gateways; every byte between the master
    and a worker goes through one of these two methods (in the master's
    process only: the workers run their own copy of execnet).  pydron's code is
    not touched.  Installed only around the runs that count bytes (``counting``):
    the wrappers cost every other run a lock per read and write.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.installed = False
        self.why_not = ""
        self._lock = threading.Lock()
        self._saved = None

    def install(self) -> None:
        if self.installed:
            return
        try:
            from execnet import gateway_base

            io_class = gateway_base.Popen2IO
            read, write = io_class.read, io_class.write
        except (ImportError, AttributeError) as exc:
            self.why_not = f"execnet has no Popen2IO.read/write to count in ({exc})"
            return
        counter = self

        def counting_read(io, numbytes):
            data = read(io, numbytes)
            with counter._lock:
                counter.received += len(data)
            return data

        def counting_write(io, data):
            write(io, data)
            with counter._lock:
                counter.sent += len(data)

        self._saved = (io_class, read, write)
        io_class.read, io_class.write = counting_read, counting_write
        self.installed = True

    def uninstall(self) -> None:
        if self._saved is not None:
            io_class, io_class.read, io_class.write = self._saved
            self._saved = None
        self.installed = False

    @contextlib.contextmanager
    def counting(self):
        """Count the bytes of the runs inside; ``installed`` says whether it could."""
        self.install()
        try:
            yield
        finally:
            self.uninstall()

    def total(self) -> int:
        with self._lock:
            return self.sent + self.received


class Pydron(Tool):
    """The sequential reference functions themselves, under ``@pydron.schedule``."""

    name = "pydron"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        # The same number of local worker processes as every peer, whatever
        # pydron.conf says: PYDRON_TX wins over the configuration file.
        os.environ["PYDRON_TX"] = f"{workers}*popen//python={sys.executable}"
        import pydron

        self._pydron = pydron
        self.wire = WireCounter()  # counts only in the pipeline runs (run.py)
        self.first = pydron.schedule(w.first)
        self.cpu = pydron.schedule(w.cpu)
        self.trivial = pydron.schedule(w.trivial)
        self.trivial_seed = pydron.schedule(w.trivial_seed)
        self.chains = pydron.schedule(w.chains)
        self.pipeline = pydron.schedule(w.pipeline)
        self.glue = pydron.schedule(w.glue)
        self.drawn = 0  # progress lines drawn by progress_on (0 would mean the row measured nothing)

    def progress_off(self, count):
        """Workload 2 with the progress line off (as when stderr is not a terminal)."""
        with self._pydron.progress(False):
            return self.trivial(count)

    def progress_on(self, count):
        """Workload 2 with the progress line drawn from the start onto a terminal-like sink."""
        from pydron.observe import progress

        sink = _TerminalSink()
        saved, progress.SHOW_AFTER = progress.SHOW_AFTER, 0.0
        try:
            with self._pydron.progress(stream=sink):
                return self.trivial(count)
        finally:
            progress.SHOW_AFTER = saved
            self.drawn += sink.lines

    # start(): nothing -- the first @schedule call starts the pool, as for a user.

    def stop(self) -> None:
        self._pydron.shutdown()


class _TerminalSink:
    """Claims to be a terminal and throws the text away, counting redraws."""

    lines = 0

    def isatty(self):
        return True

    def write(self, text):
        self.lines += text.count("\r")

    def flush(self):
        pass


# ----------------------------------------------------------------- process pools


class ProcessPool(Tool):
    name = "ProcessPoolExecutor"

    def start(self) -> None:
        self.ex = concurrent.futures.ProcessPoolExecutor(self.workers)

    def stop(self) -> None:
        self.ex.shutdown(wait=True)

    def first(self, x):
        return self.ex.submit(w.inc, x).result()

    def cpu(self, ns):
        return list(self.ex.map(w.busy_timed, ns))

    def trivial(self, count):
        futures = [self.ex.submit(w.inc, i) for i in range(count)]
        return [f.result() for f in futures]

    def chains(self, count, length, n):
        """Each step is submitted when the one before it has finished."""
        results = [None] * count
        pending = {self.ex.submit(w.step, (c, 0.0), n): (c, 1) for c in range(count)}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                c, steps = pending.pop(future)
                if steps < length:
                    pending[self.ex.submit(w.step, future.result(), n)] = (c, steps + 1)
                else:
                    results[c] = future.result()
        return results

    def pipeline(self, items, size):
        first = list(self.ex.map(w.produce, range(items), [size] * items))
        second = list(self.ex.map(w.transform, first))
        return list(self.ex.map(w.digest, second))


class MultiprocessingPool(Tool):
    name = "multiprocessing.Pool"

    def start(self) -> None:
        self.pool = multiprocessing.Pool(self.workers)

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()

    def first(self, x):
        return self.pool.apply_async(w.inc, (x,)).get()

    def cpu(self, ns):
        return self.pool.map(w.busy_timed, ns)

    def trivial(self, count):
        results = [self.pool.apply_async(w.inc, (i,)) for i in range(count)]
        return [r.get() for r in results]

    def chains(self, count, length, n):
        return self.pool.starmap(w.run_chain, [(c, length, n) for c in range(count)])

    def pipeline(self, items, size):
        first = self.pool.starmap(w.produce, [(i, size) for i in range(items)])
        second = self.pool.map(w.transform, first)
        return self.pool.map(w.digest, second)


# ----------------------------------------------------------------- joblib


class Joblib(Tool):
    """``Parallel(n_jobs=W)(delayed(f)(x) ...)`` on the loky backend (joblib's default)."""

    name = "joblib"
    requires = ("joblib",)

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        from joblib import Parallel, delayed

        self.Parallel, self.delayed = Parallel, delayed

    def run(self, calls, **options):
        return self.Parallel(n_jobs=self.workers, backend="loky", **options)(calls)

    # start(): nothing -- the first Parallel call starts loky's reusable executor.

    def stop(self) -> None:
        from joblib.externals.loky import reusable_executor

        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)

    def first(self, x):
        return self.run([self.delayed(w.inc)(x)])[0]

    def cpu(self, ns):
        return self.run(self.delayed(w.busy_timed)(n) for n in ns)

    def trivial(self, count):
        return self.run((self.delayed(w.inc)(i) for i in range(count)), batch_size=1)

    def chains(self, count, length, n):
        return self.run(self.delayed(w.run_chain)(c, length, n) for c in range(count))

    def pipeline(self, items, size):
        first = self.run(self.delayed(w.produce)(i, size) for i in range(items))
        second = self.run(self.delayed(w.transform)(data) for data in first)
        return self.run(self.delayed(w.digest)(data) for data in second)


# ----------------------------------------------------------------- Dask


class Dask(Tool):
    """``dask.delayed`` graphs, computed on a distributed LocalCluster of W processes."""

    name = "Dask"
    requires = ("dask", "distributed")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        import dask
        from dask.distributed import Client, LocalCluster

        self.dask, self.LocalCluster, self.Client = dask, LocalCluster, Client

    def start(self) -> None:
        self.cluster = self.LocalCluster(
            n_workers=self.workers, processes=True, threads_per_worker=1,
            dashboard_address=None, silence_logs=logging.ERROR)
        self.client = self.Client(self.cluster)

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def compute(self, values):
        return list(self.dask.compute(*values))

    def first(self, x):
        return self.dask.delayed(w.inc)(x).compute()

    def cpu(self, ns):
        return self.compute(self.dask.delayed(w.busy_timed)(n) for n in ns)

    def trivial(self, count):
        return self.compute(self.dask.delayed(w.inc)(i) for i in range(count))

    def chains(self, count, length, n):
        step = self.dask.delayed(w.step)
        results = []
        for c in range(count):
            x = (c, 0.0)
            for _ in range(length):
                x = step(x, n)
            results.append(x)
        return self.compute(results)

    def pipeline(self, items, size):
        d = self.dask.delayed
        return self.compute(d(w.digest)(d(w.transform)(d(w.produce)(i, size))) for i in range(items))


# ----------------------------------------------------------------- pydron on Dask


class PydronOnDask(Tool):
    """The same ``@pydron.schedule`` functions, run by pydron's Dask backend on a
    ``LocalCluster`` like the Dask row's: what Dask's scheduler costs pydron per task."""

    name = "pydron on Dask"
    requires = ("dask", "distributed")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        import pydron
        from pydron.remote import pool

        self._pool = pool
        self._scheduled = {name: pydron.schedule(getattr(w, name))
                           for name in ("first", "cpu", "trivial", "chains", "pipeline")}

    def start(self) -> None:
        from pydron.remote.dask_backend import DaskBackend
        from pydron.remote.dask_entry import DaskSpec

        self.backend = DaskBackend(DaskSpec("bench", cluster_class_path="distributed.LocalCluster", cluster_options={
            "n_workers": self.workers, "processes": True, "threads_per_worker": 1,
            "dashboard_address": None, "silence_logs": logging.ERROR}))

    def stop(self) -> None:
        self.backend.shutdown()

    def _run(self, name, *args):
        # The pydron row's execnet pool stays the process's pool between our calls.
        previous = self._pool.swap_pool(self.backend)
        try:
            return self._scheduled[name](*args)
        finally:
            self._pool.swap_pool(previous)

    def first(self, x):
        return self._run("first", x)

    def cpu(self, ns):
        return self._run("cpu", ns)

    def trivial(self, count):
        return self._run("trivial", count)

    def chains(self, count, length, n):
        return self._run("chains", count, length, n)

    def pipeline(self, items, size):
        return self._run("pipeline", items, size)


TOOLS = {cls.name: cls for cls in (Sequential, Pydron, ProcessPool, MultiprocessingPool, Joblib, Dask,
                                   PydronOnDask)}

IDIOMS = {
    "pydron": "the sequential functions of `workloads.py`, unchanged, under `@pydron.schedule`",
    "ProcessPoolExecutor": "`ex.map` (1, 4: one map per stage), `ex.submit` per task (2), "
                           "3: each step submitted when its predecessor finishes (`wait(FIRST_COMPLETED)`)",
    "multiprocessing.Pool": "`pool.map` (1, 4: one map per stage), `apply_async` per task (2), "
                            "3: one task per whole chain (`starmap`)",
    "joblib": "`Parallel(n_jobs=W)(delayed(f)(x) ...)`, loky; `batch_size=1` in 2; "
              "3: one task per whole chain; 4: one `Parallel` per stage",
    "Dask": "`dask.compute(*delayed calls)` on `LocalCluster(n_workers=W, processes=True, "
            "threads_per_worker=1)`; 3, 4: the delayed graph of the sequential code",
    "pydron on Dask": "pydron's functions, its Dask backend (`{\"type\": \"dask\", \"cluster\": "
                      "\"distributed.LocalCluster\"}`, the Dask row's options): one `Client.submit` per call",
}
