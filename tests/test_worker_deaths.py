"""Deaths the fuzzer's worker-death variant (test_fuzz.py) ran into, as plain pool tests.

Real worker processes, killed for real: by the task they run (``fuzzgen.fz_die``)
or on their own shortly after they start (a wrapper around the interpreter).
"""
from __future__ import annotations

import os
import sys
import time

import fuzzgen
import poolhelpers as H
from pydron.config import GatewaySpec, local_python_spec
from pydron.errors import WorkerDied
from pydron.remote import pool as pool_module
from pydron.remote.pool import Pool
from pydron.runtime.graph import Graph


def test_tasks_that_kill_young_workers_do_not_shrink_the_pool(tmp_path):
    """Five calls in a row, each killing the worker it first runs on within a second of
    that worker's start: each runs again and returns, and the pool keeps its worker.
    (Such deaths once counted as the spec's own: after three the spec was not started
    again, and the next call waited for ever.)"""
    pool = Pool([GatewaySpec("only", local_python_spec())], retries=3)
    try:
        g = Graph(lambda: pool)
        for k in range(5):
            token = (str(tmp_path / f"marker{k}"), os.getpid())
            kind, value = H.call_with_timeout(g.submit(fuzzgen.fz_die, (k, token), {})._pd_result, 20)
            assert (kind, value) == ("ok", k), (k, kind, value)
            assert os.path.exists(token[0])  # it did kill a worker first
        deadline = time.monotonic() + 20
        while not any(w.alive for w in pool.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(w.alive for w in pool.workers) == 1 and len(pool.workers) == 1, pool.workers
        assert pool.replacements == 5 and len(pool.deaths) == 5, pool.deaths
    finally:
        pool.shutdown()


def test_workers_that_die_on_their_own_fail_the_call_instead_of_hanging(tmp_path):
    """A spec whose workers die by themselves 1 s after they start is started
    MAX_QUICK_DEATHS times, then given up; a call then fails at once with WorkerDied."""
    wrapper = tmp_path / "dying-python"
    python = os.path.realpath(sys.executable)
    wrapper.write_text(f'#!/bin/sh\n(sleep 1; kill -9 $$) &\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    pool = Pool([GatewaySpec("doomed", f"popen//python={wrapper}")], retries=3)
    try:
        deadline = time.monotonic() + 30
        while (pool._starting or any(w.alive for w in pool.workers)) and time.monotonic() < deadline:
            pool.check_alive()
            time.sleep(0.05)
        labels = pool.deaths
        assert len(labels) == pool_module.MAX_QUICK_DEATHS and not any(w.alive for w in pool.workers), labels
        start = time.monotonic()
        kind, error = H.call_with_timeout(Graph(lambda: pool).submit(H.add, (1, 2), {})._pd_result, 10)
        assert kind == "error" and isinstance(error, WorkerDied), (kind, error)
        assert "every pydron worker has died" in str(error)
        assert time.monotonic() - start < 5
    finally:
        pool.shutdown()
