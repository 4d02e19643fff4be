"""Try and with blocks whose functional calls may overlap.

A failed call is noticed late, so the statements after it in the block have
already run when its exception reaches the handler. That is invisible when
those statements bind only local variables that the handler's paths never
read (they are not *live* at the handler), change local containers (the
handler undoes those changes, runtime/journal.py), and change nothing else
without a sync point. Such a block lets its calls overlap; a store to a
variable the handler may read waits for them first, each exit from the block
waits for them (a failure raised there is still inside the block), and its
handler first settles which call failed first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bytecode import Instr, Label

from pydron.tracer.stack import exception_handlers, first_instr
from pydron.tracer.versions import Spec311

_USES = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR"}
_DEFS = {"STORE_FAST", "DELETE_FAST", "LOAD_FAST_AND_CLEAR"}
# Anything here could change state the handler sees other than by a local
# variable, without a sync point first. Changes to local containers (method
# calls, item assignment, in-place operators) are journaled and undone by the
# handler instead (runtime/journal.py). A closure made in the block
# (spec.makes_closure) may change cells, or local containers from code that is
# not journaled (a 3.11 comprehension is called natively).
_UNSAFE = {"STORE_DEREF", "DELETE_DEREF", "YIELD_VALUE", "STORE_NAME",
           "DELETE_NAME", "IMPORT_NAME", "LOAD_SUPER_ATTR", "BEFORE_WITH"}


@dataclass
class Overlap:
    """Where the rewrite lets calls in try/with blocks overlap."""

    items: set[int] = field(default_factory=set)  # instructions whose calls run as tasks
    sync_before: set[int] = field(default_factory=set)  # exits by jump or return
    sync_after: set[int] = field(default_factory=set)  # exits by falling through
    # Labels where a conditional jump leaves the block (a loop's exit): the sync
    # goes there, under the block's handler, instead of before every iteration.
    # Label item -> the handler instruction.
    sync_landing: dict[int, int] = field(default_factory=dict)
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


def stored_names(instr: Instr) -> list[str]:
    """The local variables ``instr`` stores or deletes, sorted (empty for most)."""
    return sorted(_use_def(instr)[1])


def loaded_local(items: list[Any], producer: tuple) -> str | None:
    """The local variable whose load produced this stack value, if it was one."""
    if producer[0] == "handler":
        return None
    instr = items[producer[0]]
    if instr.name in ("LOAD_FAST", "LOAD_FAST_CHECK"):
        return str(instr.arg)
    if instr.name == "LOAD_FAST_LOAD_FAST":  # 3.13: two locals, one per output
        return str(instr.arg[producer[1]])
    if instr.name == "STORE_FAST_LOAD_FAST":  # 3.13: stores the first, loads the second
        return str(instr.arg[1])
    return None


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
    preds: dict[int, list[int]] = {}
    for index, targets in succ.items():
        for target in targets:
            preds.setdefault(target, []).append(index)

    def user_handler(index: int) -> int | None:
        """The handler of the try/with around ``index``, past the compiler's own
        handlers (3.12+ comprehensions restore their variable in one)."""
        handler = handlers.get(index)
        for _ in range(50):
            if handler is None or items[handler].name == "PUSH_EXC_INFO":
                return handler
            handler = handlers.get(handler)
        return None

    blocks: dict[int, list[int]] = {}  # handler instruction -> instructions it protects
    owner: dict[int, int] = {}
    for index in instrs:
        handler = user_handler(index) if index in protected else None
        if handler is not None:
            blocks.setdefault(handler, []).append(index)
            owner[index] = handler

    overlap = Overlap()
    for handler, members in blocks.items():
        region = set(members)
        span = range(min(region), max(region) + 1)
        if any(owner.get(j) not in (None, handler) for j in span):
            continue  # a nested try/with: keep it simple and one call at a time
        if any(items[index].name in _UNSAFE or spec.makes_closure(items[index]) for index in region):
            continue
        overlap.items |= region
        overlap.reconcile.add(handler)
        for index in region:
            # A variable the handler may read is stored only once every call
            # issued so far succeeded: a failure is raised before the store.
            if _use_def(items[index])[1] & live_in[handler]:
                overlap.sync_before.add(index)
        for index in region:
            instr = items[index]
            outside = [t for t in succ[index] if t not in region and t != handler]
            if not outside and not instr.name.startswith("RETURN"):
                continue
            if instr.has_jump() and not instr.is_final():
                label = labels[id(instr.arg)]
                target = first_instr(items, label)
                # The sync gets its own exception-table entry: only where no
                # other entry covers the target.
                if (outside == [target] and items[target].name != "END_FOR"
                        and target not in handlers
                        and all(p in region for p in preds.get(target, ()))):
                    overlap.sync_landing[label] = handler
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
