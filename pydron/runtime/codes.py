"""The ids of rewritten code objects: one set that the graph, the sync-point helpers,
the scheduler and the event log all read (a module of its own, so that none of
them imports another just for it)."""
from __future__ import annotations

#: id() of every code object the tracer rewrote (see syncpoints.register_inline).
inline_codes: set[int] = set()
