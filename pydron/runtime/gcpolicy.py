"""How often full garbage collections run while schedule calls run.

Each functional call leaves a future (and, while it runs, a task) alive until
the program drops it: 100,000 calls keep 100,000 futures alive. CPython runs a
full collection, which scans every live object, after every 10 collections of
the middle generation once a quarter more objects have survived since the
last one: 7 full collections took 0.7 s of a 2.8 s run of 100,000 trivial
calls, and their cost grew faster than the calls. While any schedule call
runs, a full collection waits for 100 middle ones instead (the other two
thresholds, the young generations that catch most cyclic garbage, are left
as they are); the setting is restored when the last one ends, unless the
program changed it meanwhile.
"""
from __future__ import annotations

import gc
import threading

FULL_COLLECTION_AFTER = 100  # collections of the middle generation (CPython: 10)

_lock = threading.Lock()
_running = 0
_saved: tuple[int, ...] | None = None  # the program's thresholds
_ours: tuple[int, ...] | None = None  # what we set


def run_began() -> None:
    """A top-level schedule call began (on any thread)."""
    global _running, _saved, _ours
    with _lock:
        _running += 1
        if _running == 1:
            saved = gc.get_threshold()
            if saved[0] and len(saved) == 3 and saved[2] < FULL_COLLECTION_AFTER:
                _saved, _ours = saved, (saved[0], saved[1], FULL_COLLECTION_AFTER)
                gc.set_threshold(*_ours)


def run_ended() -> None:
    """A top-level schedule call ended."""
    global _running, _saved, _ours
    with _lock:
        _running -= 1
        if _running == 0 and _saved is not None:
            if gc.get_threshold() == _ours:
                gc.set_threshold(*_saved)
            _saved = _ours = None
