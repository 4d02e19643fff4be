"""The ids of rewritten code objects: one set that the graph, the sync-point helpers,
the scheduler and the event log all read (a module of its own, so that none of
them imports another just for it); and the line of a recorded call site."""
from __future__ import annotations

import types

#: id() of every code object the tracer rewrote (see syncpoints.register_inline).
inline_codes: set[int] = set()


def site_line(frame: types.FrameType, lasti: int) -> int | None:
    """The line of ``frame``'s code at instruction offset ``lasti`` (its
    ``f_lineno`` when it was there), worked out only when a call site is shown."""
    for start, end, line in frame.f_code.co_lines():
        if start <= lasti < end:
            return line
    return None
