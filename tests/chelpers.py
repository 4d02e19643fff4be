"""Functional helpers for test_cancel.py (imported by the workers, so in a module).

Each task writes marker files in a directory: ``started-K`` when it begins and
``finished-K`` when it ends normally, so a test can tell from the files alone
whether a cancelled task went on running.
"""
import os
import time

import pydron


def _mark(directory, name):
    with open(os.path.join(directory, name), "w") as handle:
        handle.write(str(os.getpid()))


@pydron.functional
def fail_after(directory, seconds, message):
    _mark(directory, "started-fail")
    time.sleep(seconds)
    raise ValueError(message)


@pydron.functional
def sleep_marked(directory, k, seconds):
    _mark(directory, f"started-{k}")
    time.sleep(seconds)
    _mark(directory, f"finished-{k}")
    return k


@pydron.functional
def stubborn(directory, k, seconds):
    """Ignores the interrupt (as a C loop would): only killing its worker stops it."""
    _mark(directory, f"started-{k}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: BLE001 - on purpose
            pass
    _mark(directory, f"finished-{k}")
    return k


@pydron.functional(timeout=0.5)
def too_slow(seconds):
    time.sleep(seconds)
    return seconds


@pydron.functional
def plain_sleep(seconds):
    time.sleep(seconds)
    return seconds


@pydron.functional
def inc(x):
    return x + 1


@pydron.functional
def worker_pid():
    return os.getpid()
