"""A user's pipeline module for benchmarks/startup.py: it imports a heavy library
(numpy, when installed) and pydron, as real pipeline modules do."""
import time

try:
    import numpy  # noqa: F401 - the heavy import a worker must also make
except ImportError:
    numpy = None

import pydron


@pydron.functional
def inc(x):
    return x + 1


@pydron.functional
def nap(x):
    time.sleep(0.3)
    return x


def first(x):
    return inc(x)


def burst(n):
    return [nap(i) for i in range(n)]
