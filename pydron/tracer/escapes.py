"""Which values may be a container local to the schedule function, and where they may escape.

A list, dict or set the function builds is *local* (``syncpoints.local``):
filling it with futures needs no sync point until it escapes. The runtime
notices an escape where the value is resolved: the gate of a call, the
helpers of stores, yields and cells. Those are skipped while no future exists
(so that glue code runs as plain code), except where this analysis says that
a local container may be handed over: there they run whenever a local
container exists, and the container is no longer local afterwards.

The analysis over-approximates (a least fixed point over the producers that
``stack.simulate`` records): a value is *maybe-local* if it is a local build,
a load of a variable that was ever assigned a maybe-local value, a copy of
one, a container built from one (a tuple holding it hands it over too), or
the result of ``list``/``dict``/``set``/``sorted`` or ``.copy()``, whose
results the runtime makes local.
"""
from __future__ import annotations

from typing import Any

from bytecode import Instr

from pydron.tracer.natives import _arg_names, _stores
from pydron.tracer.stack import Flow, Producer
from pydron.tracer.versions import Spec311

_LOADS = ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_FAST_LOAD_FAST",
          "STORE_FAST_LOAD_FAST")
# Build a new value from their operands (it may be, or hold, what they are or hold).
_HOLDERS = ("BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP",
            "BUILD_SLICE", "LIST_APPEND", "SET_ADD", "MAP_ADD", "LIST_EXTEND", "SET_UPDATE",
            "DICT_UPDATE", "DICT_MERGE", "LIST_TO_TUPLE", "BINARY_OP")
# Take a value out of a container (it may be a local container if the container holds one).
_ELEMENTS = ("BINARY_SUBSCR", "BINARY_SLICE", "UNPACK_SEQUENCE", "UNPACK_EX")
_FRESH_NAMES = frozenset({"list", "dict", "set", "sorted"})


def maybe_local(items: list[Any], flow: Flow, spec: Spec311, builds: set[int]) -> set[Producer]:
    """The producers whose value may be, or may hold, a container local to the function.

    Two facts per value, so that iterating a fresh container (``sorted(d.items())``)
    does not make every item suspect: *is* (it may be a local container) and
    *holds* (one may be inside it); an item taken out of a container is
    suspect only if the container may hold one.
    """
    stores = _stores(items, flow)
    is_: set[Producer] = {(index, 0) for index in builds}
    holds: set[Producer] = set()
    is_names: set[str] = set()
    holds_names: set[str] = set()

    def any_of(found: set[Producer], slots: Any) -> bool:
        return any(p in found for slot in slots for p in slot)

    changed = True
    while changed:
        changed = False
        for name, slots in stores.items():
            if name not in is_names and any_of(is_, slots):
                is_names.add(name)
                changed = True
            if name not in holds_names and any_of(holds, slots):
                holds_names.add(name)
                changed = True
        for index, item in enumerate(items):
            if not isinstance(item, Instr) or index not in flow.before:
                continue
            stack = flow.before[index]
            name = item.name
            new_is: list[int] = []
            new_holds: list[int] = []
            if name in _LOADS:
                # (3.13 names cells by bytecode's CellVar objects: never local here)
                arg_names = _arg_names(item)
                if name == "STORE_FAST_LOAD_FAST":
                    arg_names = arg_names[-1:]
                for k, n in enumerate(arg_names):
                    if isinstance(n, str):
                        if n in is_names:
                            new_is.append(k)
                        if n in holds_names:
                            new_holds.append(k)
            elif name == "COPY":
                source = [stack[-int(item.arg)]]
                new_is = [0] if any_of(is_, source) else []
                new_holds = [0] if any_of(holds, source) else []
            elif name in _HOLDERS:
                pops, pushes = spec.effect(item, False)
                operands = stack[len(stack) - pops:]
                if any_of(is_, operands) or any_of(holds, operands):
                    new_is = new_holds = list(range(pushes))
            elif name in _ELEMENTS:
                pops, pushes = spec.effect(item, False)
                if any_of(holds, stack[len(stack) - pops:]):
                    new_is = new_holds = list(range(pushes))
            elif name == "GET_ITER":  # an iterator hands its container over, not more
                new_is = [0] if any_of(is_, stack[-1:]) or any_of(holds, stack[-1:]) else []
                new_holds = [0] if any_of(holds, stack[-1:]) else []
            elif name == "FOR_ITER":
                if any_of(holds, stack[-1:]):
                    new_is = new_holds = [1]
            elif name in spec.call_names and _fresh_call(items, flow, spec, index):
                new_is = [0]
                depth = min(spec.call_slots(item))
                if any_of(is_, stack[len(stack) - depth + 1:]) or any_of(holds, stack[len(stack) - depth + 1:]):
                    new_holds = [0]
            for output in new_is:
                if (index, output) not in is_:
                    is_.add((index, output))
                    changed = True
            for output in new_holds:
                if (index, output) not in holds:
                    holds.add((index, output))
                    changed = True
    return is_ | holds


def _fresh_call(items: list[Any], flow: Flow, spec: Spec311, index: int) -> bool:
    """A call of ``list``/``dict``/``set``/``sorted`` or of a ``.copy`` method."""
    slots = spec.call_slots(items[index])
    if slots is None:
        return False
    stack = flow.before[index]
    for producer in stack[-slots[1]] | stack[-slots[0]]:
        if producer[0] == "handler":
            continue
        load = items[producer[0]]
        arg = load.arg[-1] if isinstance(load.arg, tuple) else load.arg
        if load.name in ("LOAD_GLOBAL", "LOAD_NAME") and arg in _FRESH_NAMES:
            return True
        if (spec.is_method_load(load) or load.name == "LOAD_ATTR") and arg == "copy":
            return True
    return False


def escaping_calls(items: list[Any], flow: Flow, spec: Spec311, calls: dict[int, Any],
                   found: set[Producer]) -> set[int]:
    """The routed calls that may receive a maybe-local value as an argument (not as receiver)."""
    result = set()
    for index in calls:
        stack = flow.before[index]
        depth = min(spec.call_slots(items[index]))
        for slot in stack[len(stack) - depth + 1:]:
            if any(p in found for p in slot):
                result.add(index)
                break
    return result


# Instructions that hand over the value on top of the stack (the stored value).
HAND_OVER = frozenset({"STORE_ATTR", "STORE_SUBSCR", "STORE_SLICE", "STORE_GLOBAL", "STORE_DEREF",
                       "YIELD_VALUE"})


def escaping_stores(items: list[Any], flow: Flow, found: set[Producer],
                    spec: Spec311 | None = None) -> set[int]:
    """Stores, yields and cell writes whose stored value may be maybe-local; and
    in-place operators whose operand may be (``obj += local_list`` hands it to
    ``obj``)."""
    result = set()
    for index, item in enumerate(items):
        if not isinstance(item, Instr) or index not in flow.before:
            continue
        stack = flow.before[index]
        if item.name in HAND_OVER:
            # STORE_SUBSCR: [value, container, key]; STORE_SLICE: [value, container, start, stop]
            depth = {"STORE_ATTR": 2, "STORE_SUBSCR": 3, "STORE_SLICE": 4}.get(item.name, 1)
            if len(stack) >= depth and any(p in found for p in stack[-depth]):
                result.add(index)
        elif spec is not None and spec.is_inplace(item) and stack and any(p in found for p in stack[-1]):
            result.add(index)
    return result
