"""Values kept on workers: where each one lives, and how to make it again.

A functional call's result larger than the inline limit stays on the worker
that computed it; the master's future holds a ``RemoteValue`` instead of the
bytes. The value travels only when it is needed, from that worker's data port
(dataplane.py) straight to whoever needs it. Its ``recipe`` (the function,
the pickled arguments and the sources of its inputs) is its lineage: if the
worker dies, the value is computed again from it, on another worker.
"""
from __future__ import annotations

import threading
from typing import Any


class RemoteValue:
    """A result kept by ``worker`` under ``key``; released when its future dies."""

    __slots__ = ("worker", "key", "size", "typename", "recipe", "lost", "released",
                 "waiters", "recomputing", "inline", "ready")

    def __init__(self, worker: Any, key: int, size: int, typename: str, recipe: "Recipe") -> None:
        self.worker = worker
        self.key = key
        self.size = size
        self.typename = typename
        self.recipe = recipe
        self.lost = False  # its worker died: compute it again before use
        self.released = False  # the master dropped it; the worker was told to
        self.waiters: list[tuple[Any, Any]] = []  # (task, graph) waiting for a recomputation
        self.recomputing = False
        self.inline: bytes | None = None  # recomputed into bytes small enough to travel inline
        self.ready = threading.Event()  # set whenever the value is available
        self.ready.set()

    def release(self) -> None:
        """The program dropped its last reference (any thread, often a ``__del__``)."""
        if not self.released:
            self.released = True
            self.worker.to_release.append(self.key)

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "kept"
        return f"<RemoteValue {self.typename} {self.size} bytes on {self.worker.label} ({state})>"


class Recipe:
    """How a kept value was made: enough to make it again after its worker died."""

    __slots__ = ("fn", "payload", "sources", "seq", "label")

    def __init__(self, fn: Any, payload: tuple | bytes, sources: list, seq: int, label: str) -> None:
        self.fn = fn
        self.payload = payload  # the call's ARGS (protocol.py): plain arguments, or their pickle
        self.sources = sources  # per input: the bytes sent, or the RemoteValue it came from
        self.seq = seq  # program order of the original call (its priority)
        self.label = label
