"""Value-stack simulation: which instruction produced each stack slot, and who consumes it.

Works on the ``bytecode`` package's linear instruction list. Each slot is the
set of (item index, output index) pairs that may have produced it; the
simulation follows jumps and exception handlers to a fixed point, like
numba's byteflow does for its own purposes.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bytecode import Instr, Label, TryBegin, TryEnd

from pydron.tracer.versions import Spec311

Producer = tuple  # (item index, output index) or ("handler", item index, k)
Slot = frozenset
Stack = tuple


class StackError(Exception):
    """The simulation met a shape it cannot follow (the function stays unrewritten)."""


@dataclass
class Flow:
    """The result of a simulation."""

    before: dict[int, Stack]  # item index -> stack on entry (only reachable items)
    consumers: dict[Producer, set[tuple[int, int]]]  # producer -> {(item index, depth)}


def simulate(items: list[Any], spec: Spec311) -> Flow:
    """Simulate the stack over ``items`` (a Bytecode's list of instructions and pseudo-items)."""
    labels = {id(item): index for index, item in enumerate(items) if isinstance(item, Label)}
    entries: dict[int, Stack] = {}  # merge points: the stack where control flow joins
    before: dict[int, Stack] = {}
    consumers: dict[Producer, set[tuple[int, int]]] = defaultdict(set)
    work: list[tuple[int, Stack]] = []

    def arrive(index: int, stack: Stack) -> None:
        old = entries.get(index)
        if old is None:
            entries[index] = stack
            work.append((index, stack))
            return
        if len(old) != len(stack):
            raise StackError(f"stack depth {len(old)} vs {len(stack)} at item {index}")
        merged = tuple(a | b for a, b in zip(old, stack))
        if merged != old:
            entries[index] = merged
            work.append((index, merged))

    arrive(0, ())
    while work:
        index, stack = work.pop()
        if entries.get(index) != stack:
            continue  # superseded by a merged state
        while index < len(items):
            before[index] = stack
            item = items[index]
            if isinstance(item, TryBegin):
                depth = item.stack_depth
                if not isinstance(depth, int) or depth > len(stack):
                    raise StackError(f"exception handler depth {depth!r} at item {index}")
                extra = 2 if item.push_lasti else 1
                handler = stack[:depth] + tuple(
                    frozenset({("handler", index, k)}) for k in range(extra)
                )
                arrive(labels[id(item.target)], handler)
            if isinstance(item, Instr):
                if item.has_jump():
                    pops, pushes = spec.effect(item, True)
                    arrive(labels[id(item.arg)], _apply(stack, item, index, pops, pushes, consumers))
                if item.is_final():
                    break
                pops, pushes = spec.effect(item, False)
                stack = _apply(stack, item, index, pops, pushes, consumers)
            index += 1
            if index < len(items) and isinstance(items[index], Label):
                arrive(index, stack)
                break
    return Flow(before, dict(consumers))


def _apply(stack: Stack, instr: Instr, index: int, pops: int, pushes: int,
           consumers: dict[Producer, set[tuple[int, int]]]) -> Stack:
    if pops > len(stack):
        raise StackError(f"{instr.name} pops {pops} from a stack of {len(stack)} at item {index}")
    name = instr.name
    if name == "SWAP":
        items = list(stack)
        items[-1], items[-pops] = items[-pops], items[-1]
        return tuple(items)
    if name == "COPY":
        return stack + (frozenset({(index, 0)}),)
    for depth in range(1, pops + 1):
        for producer in stack[-depth]:
            consumers[producer].add((index, depth))
    kept = stack[: len(stack) - pops]
    return kept + tuple(frozenset({(index, k)}) for k in range(pushes))


def first_instr(items: list[Any], index: int) -> int | None:
    """The index of the first instruction at or after ``index``."""
    return next((j for j in range(index, len(items)) if isinstance(items[j], Instr)), None)


def exception_handlers(items: list[Any]) -> dict[int, int]:
    """Instruction index -> first instruction of the handler that covers it (if any)."""
    labels = {id(item): index for index, item in enumerate(items) if isinstance(item, Label)}
    handlers: dict[int, int] = {}
    current = None
    for index, item in enumerate(items):
        if isinstance(item, TryBegin):
            current = item
        elif isinstance(item, TryEnd):
            current = None
        elif isinstance(item, Instr) and current is not None:
            handler = first_instr(items, labels[id(current.target)])
            if handler is not None:
                handlers[index] = handler
    return handlers
