"""A future that dies while its own thread holds the count lock does not hang the
thread. CI hung once on 3.13 this way: the garbage collector ran inside
``CallSite.route``'s ``with COUNT_LOCK`` block and collected a future, whose
``__del__`` took the same lock."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc
    from pydron.runtime import future

    class Graph:
        closed = False
        live_futures = 0

    graph = Graph()
    before = future.FUTURES.live
    dying = future.Future(graph, 1, None, "f")
    cycle = [dying]
    cycle.append(cycle)  # only the collector frees it
    del dying, cycle
    with future.COUNT_LOCK:
        gc.collect()  # __del__ runs here, on the thread that holds the lock
        alive = future.Future(graph, 2, None, "g")
        del alive  # and here, by reference count
    assert future.FUTURES.live == before and graph.live_futures == 0, (future.FUTURES.live, graph.live_futures)
    print("ok")
""")


def test_a_future_dying_under_the_count_lock_does_not_hang():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
