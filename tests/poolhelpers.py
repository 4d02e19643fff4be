"""Helpers for tests/test_pool.py and tests/test_lifetime.py.

Everything here is module level so that worker processes can import it by
reference (local workers get the master's ``sys.path``; conftest.py puts
``tests/`` on it).  The process helpers (``pid_alive`` and friends) run in
the test process only.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time

from pydron.functional import functional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCALMOD_DIR = os.path.join(HERE, "localmod_src")
LOCALMOD_NAME = "pydron_localmod"


# --------------------------------------------------------------- task bodies


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return args, kwargs


def slow_add(a, b, seconds):
    time.sleep(seconds)
    return a + b


def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


def sleep_then_raise(seconds, exc):
    time.sleep(seconds)
    raise exc


def worker_pid():
    return os.getpid()


@functional
def shout(i):
    """Prints a line and logs a warning in the worker."""
    import logging

    print("shouting", i)
    logging.warning("careful %d", i)
    return i


def exit_process():
    """Kills the worker that runs it."""
    os._exit(7)


def pid_then_sleep(path, seconds):
    """Write this worker's pid to ``path`` (atomically), then sleep."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(tmp, path)
    time.sleep(seconds)
    return os.getpid()


def can_import(name):
    """Whether the worker running this can import module ``name``."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def make_lock():
    """A result that cannot be pickled."""
    return threading.Lock()


class CustomError(Exception):
    """A user exception with several args and an extra attribute."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code

    def __str__(self):
        return f"custom failure {self.args[0]}: {self.args[1]}"


def raise_custom(code, detail):
    raise CustomError(code, detail)


class UnunpicklableError(Exception):
    """Pickles fine, but cannot be rebuilt from its args (init needs two)."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raise_ununpicklable():
    raise UnunpicklableError("x", "y")


def raise_value_error(message):
    raise ValueError(message)


# ------------------------------------------------------- process inspection


def pid_alive(pid):
    """True if ``pid`` runs (a zombie counts as gone: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_gone(pids, timeout):
    """Poll until no pid in ``pids`` runs; return the ones still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def result(fut, timeout=20):
    """``fut``'s value, failing the test (instead of hanging) after ``timeout``."""
    import pytest  # here: workers import this module too

    kind, value = call_with_timeout(fut._pd_result, timeout)
    if kind == "timeout":
        pytest.fail(f"no result within {timeout} s")
    if kind == "error":
        raise value
    return value


def call_with_timeout(fn, timeout):
    """``fn()`` on a helper thread: ("ok", value) or ("error", exc), or
    ("timeout", None) if it did not finish within ``timeout`` seconds."""
    box = []

    def run():
        try:
            box.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box.append(("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else ("timeout", None)


def subprocess_env(**extra):
    """Environment for a child Python: finds pydron and these helpers."""
    env = dict(os.environ)
    paths = [REPO, HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYDRON_CONF", None)
    env.update(extra)
    return env


def start_script(path, **env):
    """Start ``python path`` (this interpreter) with stdout/stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-u", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=subprocess_env(**env), cwd=HERE,
    )


def sleep_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def nap_then_pid(seconds):
    """As ``sleep_then_pid``: another function, new to the workers."""
    time.sleep(seconds)
    return os.getpid()
