"""Try and with blocks whose functional calls may overlap.

A failed call is noticed late, so the statements after it in the block have
already run when its exception reaches the handler. That is invisible when
those statements only bind local variables that the handler's paths never
read (they are not *live* at the handler), and change nothing else. Such a
block lets its calls overlap; each exit from it waits for them (a failure
raised there is still inside the block), and its handler first settles which
call failed first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bytecode import Instr, Label

from pydron.tracer.stack import exception_handlers, first_instr
from pydron.tracer.versions import Spec311

_USES = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR"}
_DEFS = {"STORE_FAST", "DELETE_FAST", "LOAD_FAST_AND_CLEAR"}
# Anything here could change state the handler sees other than by a local variable.
_UNSAFE = {"STORE_SUBSCR", "DELETE_SUBSCR", "STORE_SLICE", "STORE_DEREF", "DELETE_DEREF",
           "YIELD_VALUE", "LOAD_METHOD", "STORE_NAME", "DELETE_NAME", "IMPORT_NAME",
           "LIST_APPEND", "SET_ADD", "MAP_ADD", "LOAD_SUPER_ATTR", "BEFORE_WITH"}


@dataclass
class Overlap:
    """Where the rewrite lets calls in try/with blocks overlap."""

    items: set[int] = field(default_factory=set)  # instructions whose calls run as tasks
    sync_before: set[int] = field(default_factory=set)  # exits by jump or return
    sync_after: set[int] = field(default_factory=set)  # exits by falling through
    reconcile: set[int] = field(default_factory=set)  # handler entries (PUSH_EXC_INFO)


def _names(instr: Instr) -> tuple[str, ...]:
    names = instr.arg if isinstance(instr.arg, tuple) else (instr.arg,)
    # 3.13 can name cells here: bytecode's CellVar objects, keyed by their name.
    return tuple(n if isinstance(n, str) else f"<cell {getattr(n, 'name', n)}>" for n in names)


def _use_def(instr: Instr) -> tuple[set[str], set[str]]:
    name = instr.name
    if name == "LOAD_FAST_LOAD_FAST":
        return set(_names(instr)), set()
    if name == "STORE_FAST_STORE_FAST":
        return set(), set(_names(instr))
    if name == "STORE_FAST_LOAD_FAST":
        stored, loaded = _names(instr)
        return {loaded}, {stored}
    uses = set(_names(instr)) if name in _USES else set()
    defs = set(_names(instr)) if name in _DEFS else set()
    return uses, defs


def find_overlap(items: list[Any], spec: Spec311, protected: set[int]) -> Overlap:
    """The protected instructions whose block may overlap its calls, and where to settle them."""
    labels = {id(item): index for index, item in enumerate(items) if isinstance(item, Label)}
    instrs = [i for i, item in enumerate(items) if isinstance(item, Instr)]
    handlers = exception_handlers(items)

    succ: dict[int, list[int]] = {}
    for position, index in enumerate(instrs):
        instr = items[index]
        targets = []
        if instr.has_jump():
            target = first_instr(items, labels[id(instr.arg)])
            if target is not None:
                targets.append(target)
        if not instr.is_final() and position + 1 < len(instrs):
            targets.append(instrs[position + 1])
        if index in handlers:
            targets.append(handlers[index])
        succ[index] = targets

    live_in = _liveness(items, instrs, succ)

    blocks: dict[int, list[int]] = {}  # handler instruction -> instructions it covers directly
    for index in instrs:
        handler = handlers.get(index)
        if handler is not None and index in protected and items[handler].name == "PUSH_EXC_INFO":
            blocks.setdefault(handler, []).append(index)

    overlap = Overlap()
    for handler, members in blocks.items():
        region = set(members)
        span = range(min(region), max(region) + 1)
        if any(j in handlers and j not in region and j in protected for j in span):
            continue  # a nested try/with: keep it simple and one call at a time
        defined: set[str] = set()
        unsafe = False
        for index in region:
            instr = items[index]
            _, defs = _use_def(instr)
            defined |= defs
            if instr.name in _UNSAFE or spec.is_method_load(instr) or spec.is_inplace(instr):
                unsafe = True
        if unsafe or defined & live_in[handler]:
            continue
        overlap.items |= region
        overlap.reconcile.add(handler)
        for index in region:
            instr = items[index]
            outside = [t for t in succ[index] if t not in region and t != handler]
            if not outside and not instr.name.startswith("RETURN"):
                continue
            if instr.has_jump() or instr.is_final():
                overlap.sync_before.add(index)
            else:
                overlap.sync_after.add(index)
    return overlap


def _liveness(items: list[Any], instrs: list[int], succ: dict[int, list[int]]) -> dict[int, set[str]]:
    live_in: dict[int, set[str]] = {index: set() for index in instrs}
    use_def = {index: _use_def(items[index]) for index in instrs}
    changed = True
    while changed:
        changed = False
        for index in reversed(instrs):
            out: set[str] = set()
            for target in succ[index]:
                out |= live_in[target]
            uses, defs = use_def[index]
            new = uses | (out - defs)
            if new != live_in[index]:
                live_in[index] = new
                changed = True
    return live_in
