"""Functional helpers for the data plane tests (test_dataplane.py, test_ssh.py).

Values are ``bytes`` of a given size, so they exceed the inline limit and stay
on the worker that made them. ``make`` can leave a marker file per run, so a
test can count how often a value was computed (lineage recomputes it).
"""
import hashlib
import os

import pydron

MB = 1024 * 1024


@pydron.functional
def make(i, size, marker_dir=None):
    if marker_dir is not None:
        with open(os.path.join(marker_dir, f"make-{i}-{os.getpid()}-{len(os.listdir(marker_dir))}"), "w"):
            pass
    return bytes([i % 251]) * size


@pydron.functional
def transform(data):
    return bytes((b + 1) % 256 for b in data[:16]) + data[16:]


@pydron.functional
def combine(a, b):
    return a[: len(a) // 2] + b[len(b) // 2:]


@pydron.functional
def digest(data):
    return hashlib.sha256(data).hexdigest()


@pydron.functional
def size(data):
    return len(data)


@pydron.functional
def pid_of(data):
    """The worker this runs on; with locality, the one keeping ``data``."""
    return os.getpid()


@pydron.functional
def worker_pid():
    return os.getpid()
