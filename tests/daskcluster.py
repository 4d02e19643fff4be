"""A real Dask cluster for tests: one ``dask scheduler`` and N ``dask worker`` processes.

Everything listens on 127.0.0.1, on ports chosen free, without dashboards.
The processes run in a directory of their own, with a sys.path that lacks
``tests/``: the test modules (dhelpers, ...) are not importable there, so
functions from them reach the workers by value.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    tests = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != tests]
    env["PYTHONPATH"] = os.pathsep.join(path)
    for name in ("PYDRON_CONF", "PYDRON_TX"):
        env.pop(name, None)
    env.update(extra)
    return env


class DaskCluster:
    """``scheduler`` address, ``processes`` started, ``stop()`` ends them all."""

    def __init__(self, workers: int = 2, allowed_failures: int | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="pydron-dask-test-")
        self.port = free_port()
        self.scheduler = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        extra = {}
        if allowed_failures is not None:
            extra["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        self.env = _clean_env(extra)
        self._log = open(os.path.join(self.directory, "cluster.log"), "wb")
        try:
            self._start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                         "--port", str(self.port), "--no-dashboard",
                         "--dashboard-address", "127.0.0.1:0"])  # its HTTP server: loopback too
            self._wait_for_port()
            for _ in range(workers):
                self.add_worker()
            self.wait_for_workers(workers)
        except BaseException:
            self.stop()
            raise

    def _start(self, argv: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(argv, cwd=self.directory, env=self.env, stdout=self._log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def add_worker(self) -> subprocess.Popen:
        return self._start([sys.executable, "-m", "distributed.cli.dask_worker", self.scheduler,
                            "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                            "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                            "--death-timeout", "60",
                            "--local-directory", self.directory])

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.processes[0].poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self.log_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"dask scheduler did not listen within {START_TIMEOUT} s")

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.scheduler, timeout=START_TIMEOUT, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=START_TIMEOUT)

    def worker_pids(self) -> dict[str, int]:
        """Dask worker address -> the pid of its worker process (a nanny's child)."""
        from distributed import Client

        with Client(self.scheduler, timeout=START_TIMEOUT, set_as_default=False) as client:
            return client.run(os.getpid)

    def log_text(self) -> str:
        self._log.flush()
        with open(os.path.join(self.directory, "cluster.log"), "rb") as handle:
            return handle.read().decode(errors="replace")

    def stop(self) -> None:
        """End every process this cluster started (their whole sessions), and wait for them."""
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._log.close()
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
