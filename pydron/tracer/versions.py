"""Everything that differs between CPython 3.11, 3.12 and 3.13 bytecode.

One ``Spec`` per version: stack effects that the ``bytecode`` package models
in its own way, where each call instruction keeps its callable and NULL
slots, and how to emit a helper call. Nothing version-specific lives
anywhere else in the tracer.
"""
from __future__ import annotations

import sys
from typing import Any

from bytecode import Instr, Label

_NEGATED = {"TRUE": "FALSE", "FALSE": "TRUE", "NONE": "NOT_NONE", "NOT_NONE": "NONE"}

# Depths count from the top of the stack: 1 is the top.


class Spec311:
    """CPython 3.11: PRECALL before CALL, LOAD_METHOD, layout [NULL|meth, callable|self, args]."""

    method_loads = ("LOAD_METHOD",)
    call_names = ("CALL", "CALL_FUNCTION_EX")
    null_first = True  # NULL below the callable
    jump_if_true = "POP_JUMP_FORWARD_IF_TRUE"
    jump_if_false = "POP_JUMP_FORWARD_IF_FALSE"

    # -- stack effects ----------------------------------------------------
    def effect(self, instr: Instr, jump: bool | None) -> tuple[int, int]:
        """(values popped, values pushed) by ``instr``."""
        name = instr.name
        if name == "PRECALL":
            return 0, 0
        if name == "CALL":
            return instr.arg + 2, 1
        special = self._special(instr)
        if special is not None:
            return special
        pre, post = instr.pre_and_post_stack_effect(jump)
        if name == "SEND":
            # It replaces the value to send with what the iterator yields (or
            # returns): a new value, not the one sent (``bytecode`` says (0, 0)).
            return 1 - (pre + post), 1
        if pre <= 0:
            return -pre, post
        return 0, pre + post

    def _special(self, instr: Instr) -> tuple[int, int] | None:
        name = instr.name
        if name in self.method_loads:
            return 1, 2
        if name == "LOAD_GLOBAL":
            return 0, 2 if instr.arg[0] else 1
        if name in ("BEFORE_WITH", "BEFORE_ASYNC_WITH", "PUSH_EXC_INFO"):
            return 1, 2
        if name == "CHECK_EXC_MATCH":
            return 2, 2
        if name == "RETURN_GENERATOR":
            return 0, 1  # the value sent on the first resume, popped at once
        if name == "COPY":
            return instr.arg, instr.arg + 1
        if name == "SWAP":
            return instr.arg, instr.arg
        return None

    # -- calls --------------------------------------------------------------
    def call_slots(self, instr: Instr) -> tuple[int, int] | None:
        """(depth of the NULL slot, depth of the callable slot) before a call."""
        if instr.name == "CALL":
            return instr.arg + 2, instr.arg + 1
        if instr.name == "CALL_FUNCTION_EX":
            extra = instr.arg & 1
            return 3 + extra, 2 + extra
        return None

    def null_outputs(self, instr: Instr) -> tuple[int, ...]:
        """Indexes of ``instr``'s outputs that are always NULL."""
        if instr.name == "PUSH_NULL":
            return (0,)
        if instr.name == "LOAD_GLOBAL" and instr.arg[0]:
            return (0,)
        return ()

    def is_method_load(self, instr: Instr) -> bool:
        return instr.name in self.method_loads

    def method_null_output(self) -> int:
        """Which output of a method load is the NULL once it is made plain."""
        return 0

    def callable_output_of_global(self) -> int:
        return 1

    # -- emitting -------------------------------------------------------------
    def call(self, nargs: int, location: Any) -> list[Instr]:
        """Call in method form: the stack holds [helper, first, *rest] (nargs = 1 + rest)."""
        return [Instr("PRECALL", nargs - 1, location=location),
                Instr("CALL", nargs - 1, location=location)]

    def type_of(self, depth: int, location: Any) -> list[Instr]:
        """Push ``type(value)`` of the value at ``depth`` (1: the top), which stays.

        The call has the layout the compiler gives ``type(x)`` (NULL slot
        included), which the interpreter specializes; the method form does not.
        """
        return [Instr("PUSH_NULL", location=location), Instr("LOAD_CONST", type, location=location),
                Instr("COPY", depth + 2, location=location), Instr("PRECALL", 1, location=location),
                Instr("CALL", 1, location=location)]

    def plain_attr(self, instr: Instr) -> Instr:
        return Instr("LOAD_ATTR", instr.arg, location=instr.location)

    def load_attr(self, name: str, location: Any) -> Instr:
        """A plain attribute load of ``name`` from the value on top."""
        return Instr("LOAD_ATTR", name, location=location)

    def to_bool(self, location: Any) -> list[Instr]:
        """What a conditional jump needs before it to test any value (3.13: an exact bool)."""
        return []

    def pack_with_callable(self, location: Any) -> list[Instr]:
        """At a call, the arguments packed on top: pack them with the callable below them.

        [NULL, callable, packed] -> [NULL, (callable, packed)]
        """
        return [Instr("BUILD_TUPLE", 2, location=location)]

    def call_unpacked(self, location: Any) -> list[Instr]:
        """[NULL, callable, args, kwargs] (after ``pack_with_callable``): the call."""
        return [Instr("CALL_FUNCTION_EX", 1, location=location)]

    def call_unpacked_no_null(self, location: Any) -> list[Instr]:
        """[callable, args, kwargs] -> the call (a NULL goes below the callable)."""
        return [Instr("PUSH_NULL", location=location), Instr("SWAP", 4, location=location),
                Instr("SWAP", 3, location=location), Instr("SWAP", 2, location=location),
                Instr("CALL_FUNCTION_EX", 1, location=location)]

    def plain_global(self, instr: Instr) -> Instr:
        return Instr("LOAD_GLOBAL", (False, instr.arg[1]), location=instr.location)

    def load_callable_then_null(self, load: Instr, wrap: list[Instr]) -> list[Instr]:
        """Replace a NULL-pushing ``LOAD_GLOBAL`` of a callable by: NULL, wrapped callable.

        The NULL goes below the callable: the load itself stays, and the wrap
        works on the callable on top.
        """
        return [load, *wrap]

    def method_to_plain(self, load: Instr, wrap: list[Instr]) -> list[Instr]:
        """Replace a method load by a bound-attribute load, wrapped, in call layout."""
        location = load.location
        return [load, *wrap, Instr("PUSH_NULL", location=location), Instr("SWAP", 2, location=location)]

    def makes_closure(self, instr: Instr) -> bool:
        """True if ``instr`` gives a new function its closure cells."""
        return instr.name == "LOAD_CLOSURE" or (instr.name == "MAKE_FUNCTION" and int(instr.arg) & 8 != 0)

    def is_inplace(self, instr: Instr) -> bool:
        return instr.name == "BINARY_OP" and int(instr.arg) >= 13

    def warm_loops(self, items: list[Any]) -> list[Any]:
        """3.11 specializes a code object's instructions only after 8 calls or
        unconditional backward jumps (RESUME, JUMP_BACKWARD), so a function whose
        loops are ``while`` loops (conditional backward jumps) runs unspecialized
        for its first 8 calls, which the rewritten code's many attribute loads
        and calls feel more than the plain code. Each conditional backward jump
        becomes a forward jump over an unconditional one: one instruction more
        per iteration, specialized after 8 iterations. 3.12 specializes at once.
        """
        warmed: list[Any] = []
        for item in items:
            if isinstance(item, Instr) and item.name.startswith("POP_JUMP_BACKWARD_IF_"):
                condition = item.name[len("POP_JUMP_BACKWARD_IF_"):]
                skip = Label()
                warmed += [Instr("POP_JUMP_FORWARD_IF_" + _NEGATED[condition], skip, location=item.location),
                           Instr("JUMP_BACKWARD", item.arg, location=item.location), skip]
            else:
                warmed.append(item)
        return warmed

    def send_lookback(self, send: Instr) -> list[Instr]:
        """Unreachable code to put right before a ``yield from`` loop's YIELD_VALUE
        when code was inserted between it and its SEND.

        3.11's ``generator.throw()`` finds the end of the loop from the SEND just
        before the YIELD_VALUE it is suspended at (its argument is the distance);
        3.12 and later use the exception table instead.
        """
        return [Instr("SEND", send.arg, location=send.location)]


class Spec312(Spec311):
    """CPython 3.12: LOAD_ATTR carries the method bit, no PRECALL, LOAD_SUPER_ATTR."""

    method_loads = ()
    jump_if_true = "POP_JUMP_IF_TRUE"
    jump_if_false = "POP_JUMP_IF_FALSE"

    def effect(self, instr: Instr, jump: bool | None) -> tuple[int, int]:
        if instr.name == "CALL":
            return instr.arg + 2, 1
        if instr.name == "LOAD_ATTR":
            return (1, 2) if instr.arg[0] else (1, 1)
        if instr.name == "LOAD_SUPER_ATTR":
            return (3, 2) if instr.arg[0] else (3, 1)
        return Spec311.effect(self, instr, jump)

    def is_method_load(self, instr: Instr) -> bool:
        return instr.name == "LOAD_ATTR" and bool(instr.arg[0])

    def plain_attr(self, instr: Instr) -> Instr:
        return Instr("LOAD_ATTR", (False, instr.arg[1]), location=instr.location)

    def load_attr(self, name: str, location: Any) -> Instr:
        return Instr("LOAD_ATTR", (False, name), location=location)

    def call(self, nargs: int, location: Any) -> list[Instr]:
        return [Instr("CALL", nargs - 1, location=location)]

    def type_of(self, depth: int, location: Any) -> list[Instr]:
        return [Instr("PUSH_NULL", location=location), Instr("LOAD_CONST", type, location=location),
                Instr("COPY", depth + 2, location=location), Instr("CALL", 1, location=location)]

    def send_lookback(self, send: Instr) -> list[Instr]:
        return []

    def warm_loops(self, items: list[Any]) -> list[Any]:
        return items


class Spec313(Spec312):
    """CPython 3.13: layout [callable, self|NULL, args], CALL_KW, superinstructions."""

    call_names = ("CALL", "CALL_KW", "CALL_FUNCTION_EX")
    null_first = False

    def makes_closure(self, instr: Instr) -> bool:
        # LOAD_CLOSURE became a plain LOAD_FAST; the closure is a function attribute.
        return instr.name == "SET_FUNCTION_ATTRIBUTE" and int(instr.arg) & 8 != 0

    def effect(self, instr: Instr, jump: bool | None) -> tuple[int, int]:
        name = instr.name
        if name == "CALL_KW":
            return instr.arg + 3, 1
        if name == "LOAD_FAST_LOAD_FAST":
            return 0, 2
        if name == "STORE_FAST_STORE_FAST":
            return 2, 0
        if name == "STORE_FAST_LOAD_FAST":
            return 1, 1
        return Spec312.effect(self, instr, jump)

    def call_slots(self, instr: Instr) -> tuple[int, int] | None:
        if instr.name == "CALL":
            return instr.arg + 1, instr.arg + 2
        if instr.name == "CALL_KW":
            return instr.arg + 2, instr.arg + 3
        if instr.name == "CALL_FUNCTION_EX":
            extra = instr.arg & 1
            return 2 + extra, 3 + extra
        return None

    def null_outputs(self, instr: Instr) -> tuple[int, ...]:
        if instr.name == "PUSH_NULL":
            return (0,)
        if instr.name == "LOAD_GLOBAL" and instr.arg[0]:
            return (1,)
        return ()

    def method_null_output(self) -> int:
        return 1

    def type_of(self, depth: int, location: Any) -> list[Instr]:
        return [Instr("LOAD_CONST", type, location=location), Instr("PUSH_NULL", location=location),
                Instr("COPY", depth + 2, location=location), Instr("CALL", 1, location=location)]

    def callable_output_of_global(self) -> int:
        return 0

    def load_callable_then_null(self, load: Instr, wrap: list[Instr]) -> list[Instr]:
        return [self.plain_global(load), *wrap, Instr("PUSH_NULL", location=load.location)]

    def method_to_plain(self, load: Instr, wrap: list[Instr]) -> list[Instr]:
        return [load, *wrap, Instr("PUSH_NULL", location=load.location)]

    def to_bool(self, location: Any) -> list[Instr]:
        return [Instr("TO_BOOL", location=location)]

    def pack_with_callable(self, location: Any) -> list[Instr]:
        # [callable, NULL, packed]: a NULL cannot be packed or popped, so a
        # call of ``tuple()`` consumes it.
        return [Instr("SWAP", 2, location=location), Instr("LOAD_CONST", tuple, location=location),
                Instr("SWAP", 2, location=location), Instr("CALL", 0, location=location),
                Instr("POP_TOP", location=location), Instr("BUILD_TUPLE", 2, location=location)]

    def call_unpacked_no_null(self, location: Any) -> list[Instr]:
        return self.call_unpacked(location)

    def call_unpacked(self, location: Any) -> list[Instr]:
        # [callable, args, kwargs] -> [callable, NULL, args, kwargs]
        return [Instr("PUSH_NULL", location=location), Instr("SWAP", 3, location=location),
                Instr("SWAP", 2, location=location), Instr("CALL_FUNCTION_EX", 1, location=location)]


def current_spec() -> Spec311:
    """The spec of the running interpreter."""
    version = sys.version_info[:2]
    if version == (3, 11):
        return Spec311()
    if version == (3, 12):
        return Spec312()
    if version == (3, 13):
        return Spec313()
    raise RuntimeError(f"pydron supports CPython 3.11 to 3.13, not {sys.version.split()[0]}")
