"""Which stack values are statically known to be immutable builtin values.

A value is *native* when every run produces an ``int``, ``float``,
``complex``, ``str``, ``bytes``, ``bool``, ``None``, ``tuple``, ``frozenset``
or ``range`` that is never a future. An in-place operator whose target and
operand are both native can run as the interpreter's own instruction: nobody
else can see the target change (it is rebound, not mutated) and there is no
future to defer. The rewrite then leaves plain arithmetic loops untouched.

The analysis works on the producers that ``stack.simulate`` records and is a
greatest fixed point: every candidate starts native and loses that status
until nothing changes. Each rule only derives a native value from native
values (or from an instruction that always yields one), so every value that
actually exists was built from native values step by step. What is not
covered by a rule is not native.

A ``for`` loop over ``range(...)`` yields ints only if the callable is the
builtin: the name must not be a global of the function when it is rewritten,
and the rewrite guards the load at run time (``guards``): a ``range``
rebound after the rewrite raises instead of running typed code.

Local variables are assumed to change only by the code's own stores: a
function that names ``locals``, ``vars``, ``sys._getframe`` and the like
(3.13's ``frame.f_locals`` writes through) gets no native variables. Code
elsewhere that rebinds them (a debugger, or on 3.13 ``gi_frame.f_locals`` of
a generator) is not accounted for.
"""
from __future__ import annotations

import builtins
import types
from dataclasses import dataclass, field
from typing import Any

from bytecode import Instr

from pydron.tracer.stack import Flow, Producer
from pydron.tracer.versions import Spec311

NATIVE_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range)

# Pure operators: on native operands, the result is native too.
_OPERATORS = ("BINARY_OP", "COMPARE_OP", "UNARY_NEGATIVE", "UNARY_POSITIVE", "UNARY_INVERT")
# Always a bool, whatever the operands (``is`` goes through a helper that returns one).
_BOOLS = ("CONTAINS_OP", "IS_OP", "UNARY_NOT", "TO_BOOL")
# Reads of a local variable (each of their outputs is one of the named variables).
_LOCAL_LOADS = ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_FAST_LOAD_FAST",
                "STORE_FAST_LOAD_FAST")
# Names that can reach the frame's locals (3.13's ``f_locals`` writes through).
_FRAME_ACCESS = frozenset({"locals", "vars", "_getframe", "currentframe", "stack", "f_locals",
                           "settrace", "breakpoint", "eval", "exec"})


@dataclass
class Natives:
    """The analysis' answer for one code object."""

    values: set[Producer] = field(default_factory=set)  # stack values known native
    names: set[str] = field(default_factory=set)  # local variables that only hold native values
    inplace: set[int] = field(default_factory=set)  # in-place operators on two native values
    guards: set[int] = field(default_factory=set)  # the LOAD_GLOBAL range items they rely on


def find_natives(items: list[Any], flow: Flow, spec: Spec311, code: types.CodeType,
                 namespace: dict | None, routed: set[Producer]) -> Natives:
    """The native values, variables and in-place operators of ``code`` (its ``items``).

    ``namespace`` is the function's globals at rewrite time (``None``: unknown,
    so no loop over ``range`` is typed); ``routed`` holds the call-producing
    loads whose call site the rewrite wraps (only those get a run-time guard).
    """
    ranges = _range_loops(items, flow, spec, namespace, routed)
    names = _candidate_names(items, code)
    stores = _stores(items, flow)
    producers = {p for stack in flow.before.values() for slot in stack for p in slot}
    values = {p for p in producers if p[0] != "handler"}

    def native(slot: frozenset) -> bool:
        return bool(slot) and slot <= values

    def holds(producer: Producer) -> bool:
        index, output = producer
        instr = items[index]
        name = instr.name
        stack = flow.before[index]
        if name == "LOAD_CONST":
            return native_constant(instr.arg)
        if name == "UNPACK_SEQUENCE":  # ``a, b = 1, 2.5`` (folded into one constant)
            return all(p[0] != "handler" and items[p[0]].name == "LOAD_CONST"
                       and native_constant(items[p[0]].arg) for p in stack[-1])
        if name in _BOOLS:
            return True
        if name in _OPERATORS:
            pops = 1 if name.startswith("UNARY") else 2
            return all(native(stack[-depth]) for depth in range(1, pops + 1))
        if name in _LOCAL_LOADS:
            return all(isinstance(n, str) and n in names for n in _arg_names(instr))
        if name == "COPY":
            return native(stack[-int(instr.arg)])
        if name == "FOR_ITER":
            return output == 1 and index in ranges
        return False

    changed = True
    while changed:
        changed = False
        for producer in list(values):
            if not holds(producer):
                values.discard(producer)
                changed = True
        for name in list(names):
            if not all(native(slot) for slot in stores.get(name, ())):
                names.discard(name)
                changed = True
    inplace = {index for index, item in enumerate(items)
               if isinstance(item, Instr) and spec.is_inplace(item) and index in flow.before
               and native(flow.before[index][-1]) and native(flow.before[index][-2])}

    # The loops over range that those operators' operands come from.
    guards: set[int] = set()
    seen: set[Any] = set()
    work = [p for index in inplace for slot in flow.before[index][-2:] for p in slot]
    while work:
        producer = work.pop()
        if producer in seen:
            continue
        seen.add(producer)
        index, output = producer
        instr = items[index]
        stack = flow.before[index]
        if instr.name in _OPERATORS:
            work.extend(p for slot in stack[-(1 if instr.name.startswith("UNARY") else 2):] for p in slot)
        elif instr.name == "COPY":
            work.extend(stack[-int(instr.arg)])
        elif instr.name in _LOCAL_LOADS:
            work.extend(p for n in _arg_names(instr) for slot in stores.get(n, ()) for p in slot)
        elif instr.name == "FOR_ITER":
            guards |= ranges[index]
    return Natives(values, names, inplace, guards)


def native_constant(value: Any) -> bool:
    """True for an immutable builtin value, its items too (a tuple may hold ``...``)."""
    if type(value) in (tuple, frozenset):
        return all(native_constant(item) for item in value)
    return type(value) in NATIVE_TYPES


def _arg_names(instr: Instr) -> tuple[Any, ...]:
    return instr.arg if isinstance(instr.arg, tuple) else (instr.arg,)


def _candidate_names(items: list[Any], code: types.CodeType) -> set[str]:
    """Plain local variables: not parameters, not cells, and the frame is not inspected."""
    names: set[str] = set()
    for item in items:
        if not isinstance(item, Instr):
            continue
        arg = item.arg[-1] if isinstance(item.arg, tuple) and item.name in (
            "LOAD_GLOBAL", "LOAD_ATTR") else item.arg
        if isinstance(arg, str) and arg in _FRAME_ACCESS:
            return set()  # the locals may change behind the code's back
        if "FAST" in item.name:
            names.update(n for n in _arg_names(item) if isinstance(n, str))
    nparams = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x04) + bool(
        code.co_flags & 0x08)
    return names - set(code.co_varnames[:nparams]) - set(code.co_cellvars) - set(code.co_freevars)


def _stores(items: list[Any], flow: Flow) -> dict[str, list[frozenset]]:
    """Local variable -> the stack slots stored into it (superinstructions: all of them)."""
    stores: dict[str, list[frozenset]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Instr) or "STORE_FAST" not in item.name or index not in flow.before:
            continue
        stack = flow.before[index]
        popped = 2 if item.name == "STORE_FAST_STORE_FAST" else 1
        slot = frozenset().union(*stack[len(stack) - popped:])
        for name in _arg_names(item):
            if isinstance(name, str):  # 3.13 names cells by bytecode's CellVar objects
                stores.setdefault(name, []).append(slot)
    return stores


def _range_loops(items: list[Any], flow: Flow, spec: Spec311, namespace: dict | None,
                 routed: set[Producer]) -> dict[int, set[int]]:
    """FOR_ITER item -> the ``range`` loads it iterates, for loops over builtin ``range(...)`` only."""
    if namespace is None or "range" in namespace:
        return {}
    inner = namespace.get("__builtins__", builtins)
    found = inner.get("range") if isinstance(inner, dict) else getattr(inner, "range", None)
    if found is not builtins.range:
        return {}  # exec'd with builtins of its own
    loops: dict[int, set[int]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Instr) or item.name != "FOR_ITER" or index not in flow.before:
            continue
        loads: set[int] = set()
        for producer in flow.before[index][-1]:
            if producer == (index, 0):
                continue  # the iterator, pushed back by the previous iteration
            found = _range_iterator(items, flow, spec, producer, routed)
            if found is None:
                break
            loads.add(found)
        else:
            if loads:
                loops[index] = loads
    return loops


def _range_iterator(items: list[Any], flow: Flow, spec: Spec311, producer: Producer,
                    routed: set[Producer]) -> int | None:
    """The guarded ``range`` load behind ``iter(range(...))``, if ``producer`` is one."""
    if producer[0] == "handler" or items[producer[0]].name != "GET_ITER":
        return None
    iterated = flow.before[producer[0]][-1]
    if len(iterated) != 1:
        return None
    (call,) = iterated
    if call[0] == "handler" or call[1] != 0:
        return None
    instr = items[call[0]]
    slots = spec.call_slots(instr) if instr.name in spec.call_names else None
    if slots is None:
        return None
    callables = flow.before[call[0]][-slots[1]]
    if len(callables) != 1:
        return None
    (load,) = callables
    if load[0] == "handler" or load not in routed:
        return None
    instr = items[load[0]]
    if instr.name != "LOAD_GLOBAL" or instr.arg[1] != "range":
        return None
    return load[0]


# Builds whose value is always a new container of one exact type.
_BUILD_TYPES = {"BUILD_LIST": list, "BUILD_MAP": dict, "BUILD_CONST_KEY_MAP": dict, "BUILD_SET": set}


def typed_locals(items: list[Any], flow: Flow, code: types.CodeType) -> dict[str, type]:
    """Local variables that only ever hold a list (or only a dict, or only a set)
    that the code built itself: every store into them is of a ``BUILD_*``.

    Parameters, cells, and the variables of code that can reach its frame's
    locals are left out (as for ``find_natives``).
    """
    names = _candidate_names(items, code)
    found: dict[str, type] = {}
    for name, slots in _stores(items, flow).items():
        if name not in names:
            continue
        kinds = set()
        for slot in slots:
            for producer in slot:
                instr = items[producer[0]] if producer[0] != "handler" else None
                kinds.add(_BUILD_TYPES.get(instr.name) if isinstance(instr, Instr) else None)
        if len(kinds) == 1 and None not in kinds:
            found[name] = kinds.pop()
    return found


def typed_receiver(items: list[Any], flow: Flow, index: int, typed: dict[str, type]) -> type | None:
    """The exact type of the value on top of the stack before ``items[index]``, if
    it is always a load of one of the ``typed`` variables."""
    stack = flow.before.get(index)
    if not stack or not stack[-1]:
        return None
    kinds = set()
    for producer in stack[-1]:
        if producer[0] == "handler":
            return None
        load = items[producer[0]]
        if load.name not in _LOCAL_LOADS or load.name == "LOAD_FAST_AND_CLEAR":
            return None
        names = _arg_names(load)
        if load.name == "STORE_FAST_LOAD_FAST":
            names = names[-1:]
            if producer[1] != 0:
                return None
        elif producer[1] >= len(names):
            return None
        else:
            names = names[producer[1]:producer[1] + 1]
        name = names[0]
        if not isinstance(name, str) or name not in typed:
            return None
        kinds.add(typed[name])
    return kinds.pop() if len(kinds) == 1 else None
