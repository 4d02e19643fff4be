"""Task bodies for tests/test_observe.py and tests/test_report.py (importable by workers)."""
from __future__ import annotations

import os
import time

import pydron


@pydron.functional
def nap(seconds, value):
    time.sleep(seconds)
    return value


@pydron.functional
def double(x):
    return 2 * x


@pydron.functional
def boom(x):
    raise ValueError(f"boom {x}")


@pydron.functional
def die_once(marker, value):
    """Kills its worker the first time (``marker`` does not exist yet), then returns ``value``."""
    if not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write("x")
        os._exit(9)
    return value


@pydron.functional
def blob(size):
    return b"x" * size


@pydron.schedule
def naps(n, seconds):
    return [nap(seconds, i) for i in range(n)]


@pydron.schedule
def chain_and_fan(n):
    firsts = [double(i) for i in range(n)]
    seconds = [nap(0.02, a) for a in firsts]
    return sum(seconds)


@pydron.schedule
def with_failure():
    ok = double(1)
    try:
        bad = boom(2)
        return ok + bad
    except ValueError:
        return -1


@pydron.schedule
def survive(marker):
    return [die_once(marker, 5), double(2)]


@pydron.schedule
def big(size):
    return len(blob(size))


@pydron.schedule
def small_big(size):
    return len(blob(size))
