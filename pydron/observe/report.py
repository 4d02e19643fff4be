"""``with pydron.report("run.html"):``: record every task run inside, then write the run report.

The page (see render.py) needs no network to be viewed; the task graph's
DOT text is written next to it (``run.dot``) for graphviz.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from pydron.observe import render, timeline
from pydron.observe.events import EVENTS


@contextlib.contextmanager
def report(path: str | os.PathLike[str], title: str = "pydron run report") -> Iterator[None]:
    """Record the tasks of the schedule calls made inside; write the HTML report to ``path`` at the end.

    The report is written even when the block raises (a failed run is worth a look too).
    """
    target = os.fspath(path)
    if not target.endswith((".html", ".htm")):
        raise ValueError(f"pydron.report: the report is an HTML file, got {target!r} "
                         f"(name it e.g. run.html)")
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise ValueError(f"pydron.report: no such directory for {target!r}: {directory}")
    records = EVENTS.watch()
    start = len(records)  # another report may be recording already: keep to ours
    try:
        yield
    finally:
        mine = records[start:]
        EVENTS.unwatch()
        write(mine, target, title)


def write(records: list[tuple], path: str, title: str = "pydron run report") -> str:
    """Write the report of ``records`` to ``path`` (and its DOT text beside it); return the DOT path."""
    first = _first_time(records)
    already_up = [("start", label, first) for label, stats in list(EVENTS.workers.items())
                  if stats.started <= first and (stats.stopped is None or stats.stopped > first)]
    page, dot = render.page(timeline.build(already_up + records, time.perf_counter()), title)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    dot_path = os.path.splitext(path)[0] + ".dot"
    with open(dot_path, "w", encoding="utf-8") as handle:
        handle.write(dot)
    return dot_path


def _first_time(records: list[tuple]) -> float:
    stamps = {"run": 2, "start": 2, "issue": 7, "send": 5}
    return min((r[stamps[r[0]]] for r in records if r[0] in stamps), default=time.perf_counter())
