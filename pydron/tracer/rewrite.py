"""The rewrite of a schedule function's bytecode.

Where a call's callable is produced, a per-site check skips the routing of a
callable the site already found plain, else ``CallSite.route`` decides
(method calls on built-in types keep the interpreter's method call); at the
call, while futures exist (or, where escapes.py says a local container may be
handed over, while one exists), ``gate`` gets the callable and arguments and
the call is made with ``CALL_FUNCTION_EX``. Attribute and item stores,
in-place operators, ``is``, f-strings, yields and stores that publish a value
go through the helpers of ``pydron.runtime.syncpoints`` only while futures
exist, except in-place operators on values that ``natives`` proves to be
immutable builtins. Nested functions keep their plain code and get a rewritten
twin. Inside try and with blocks that run one call at a time, calls use
``route_protected``, and entering such a block is a sync point. Everything
that depends on the CPython version is in ``versions``.

Glue fast paths (issue 12): a call whose arguments are plain loads tests one
cache, ``CallSite.native`` (valid only while no future exists), and then runs
the plain arguments and call, its routed way put out of line; method calls on
a list, dict or set the code built need no receiver test; a generator hands
the values of a rewritten generator through ``yield from`` unchecked; while
no future exists a yield of a plain call's result, in-place operators and
constants are not checked; 3.11 while loops get specialized early.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import operator
import types
from dataclasses import dataclass, field
from typing import Any

from bytecode import Bytecode, Instr, Label, TryBegin, TryEnd

from pydron.runtime import purity
from pydron.runtime.future import FUTURES, LIVE, Future
from pydron.runtime import syncpoints as sp
from pydron.tracer import linetable
from pydron.tracer.escapes import escaping_calls, escaping_stores, maybe_local
from pydron.tracer.natives import find_natives, native_constant, typed_locals, typed_receiver
from pydron.tracer.regions import Overlap, find_overlap, loaded_local, stored_names
from pydron.tracer.stack import Flow, StackError, exception_handlers, simulate
from pydron.tracer.versions import Spec311, current_spec

COMPREHENSIONS = ("<listcomp>", "<setcomp>", "<dictcomp>")
NAMED_LOADS = ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_FAST", "LOAD_ATTR",
               "LOAD_METHOD", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_DEREF",
               "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FAST_CHECK")


class RewriteError(Exception):
    """The tracer could not rewrite a function; the message names file and line."""


@dataclass
class Plan:
    """What the analysis decided for one code object (also what ``explain`` reports)."""

    routed_calls: dict[int, bool] = field(default_factory=dict)  # call item -> protected
    native_calls: list[int] = field(default_factory=list)
    protected: set[int] = field(default_factory=set)
    wraps: dict[tuple, bool] = field(default_factory=dict)  # producer -> protected
    syncs_before: set[int] = field(default_factory=set)
    local_builds: set[int] = field(default_factory=set)  # containers that become local variables
    # ``name = name + [...]``: additions that may extend the list in place
    # (syncpoints.concat_local), so that such a loop is linear, not quadratic.
    concats: set[int] = field(default_factory=set)
    overlap: Overlap = field(default_factory=Overlap)  # try/with blocks whose calls overlap
    settle_after: set[int] = field(default_factory=set)
    # In-place operators on values known to be immutable builtins: emitted as they are.
    native_inplace: set[int] = field(default_factory=set)
    # ``range`` loads whose loops were typed -> the helper that raises if it was rebound.
    range_guards: dict[int, Any] = field(default_factory=dict)
    # Routed calls whose arguments may be lazy (a generator expression, a
    # function made there): their callable is routed every time.
    lazy_args: set[int] = field(default_factory=set)
    flow_consumers: dict = field(default_factory=dict)
    flow_before: dict = field(default_factory=dict)  # stack.Flow.before: item -> its input slots
    call_producers: dict[int, frozenset] = field(default_factory=dict)  # call -> its callable's producers
    # Where a local container may be handed over (escapes.py): these calls and
    # stores go through the runtime whenever a local container exists.
    escaping_calls: set[int] = field(default_factory=set)
    escaping_stores: set[int] = field(default_factory=set)
    holder_builds: set[int] = field(default_factory=set)  # temporary containers holding one
    # Method loads whose receiver is always a list, dict or set the code built
    # itself (natives.typed_locals) -> its type: outside journaled code their
    # site would only ever find that type plain, so no test is emitted.
    typed_receivers: dict[int, type] = field(default_factory=dict)


def code_kind(code: types.CodeType) -> str | None:
    """How to treat a code object: schedule body, function, comprehension, generator, or not at all."""
    if code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE):
        return None
    if not code.co_flags & inspect.CO_OPTIMIZED:
        return None  # class bodies and module code
    if code.co_name in COMPREHENSIONS:
        return "comprehension"
    if code.co_flags & inspect.CO_GENERATOR:
        return "generator"
    return "function"


def rewrite_code(code: types.CodeType, namespace: dict | None = None,
                 journal_all: bool = False) -> types.CodeType:
    """The rewritten copy of ``code`` (and of the functions defined inside it).

    ``namespace``: the function's globals, if known; only then can a loop over
    ``range`` be known to yield ints (``natives``). ``journal_all``: the copy
    that a try/with block whose calls overlap calls, where every change to a
    local container can be undone.
    """
    spec = current_spec()
    try:
        bc = Bytecode.from_code(code, conserve_exception_block_stackdepth=True)
        items = list(bc)
        flow = simulate(items, spec)
    except StackError as exc:
        raise RewriteError(
            f"{code.co_filename}, line {code.co_firstlineno}: cannot analyse "
            f"{code.co_qualname}: {exc}") from None
    plan = analyse(items, flow, spec, code_kind(code))
    _plan_natives(code, items, flow, spec, plan, namespace)
    _plan_typed_receivers(code, items, flow, spec, plan)
    new_items = _emit(items, plan, spec, code_kind(code) == "generator", namespace, journal_all)
    if code_kind(code) == "generator":
        new_items = _unchecked_yield_from(new_items, _yield_from_loops(items), spec)
    new_items = spec.warm_loops(new_items)
    bc.clear()
    bc.extend(new_items)
    try:
        # The handlers' stack depths are the original ones (conserved at
        # decoding; the inserted code leaves them alone): bytecode's own
        # recomputation gets some wrong (a finally after an except in a with).
        new_code = linetable.readable(bc.to_code(compute_exception_stack_depths=False))
    except Exception as exc:  # noqa: BLE001 - reported with the function's location
        raise RewriteError(
            f"{code.co_filename}, line {code.co_firstlineno}: cannot rewrite "
            f"{code.co_qualname}: {type(exc).__name__}: {exc}") from None
    sp.register_inline(new_code, None if journal_all else functools.partial(
        rewrite_code, code, namespace, journal_all=True), journal_all)
    return new_code


# -- analysis --------------------------------------------------------------------
def protected_items(items: list[Any]) -> set[int]:
    """Indexes of instructions inside a try or with block (directly or via cleanup handlers)."""
    handlers = exception_handlers(items)
    memo: dict[int, bool] = {}

    def protected(index: int, depth: int = 0) -> bool:
        if index in memo:
            return memo[index]
        handler = handlers.get(index)
        result = False
        if handler is not None and depth < 50:
            result = _user_handler(items, handler) or protected(handler, depth + 1)
        memo[index] = result
        return result

    return {index for index in handlers if protected(index)}


def _user_handler(items: list[Any], start: int) -> bool:
    """A handler of the user's try/except/finally/with, or the cleanup of an except body.

    The compiler's own handlers (restoring a comprehension's variable, turning
    StopIteration into RuntimeError) only re-raise: they protect nothing.
    """
    for item in items[start:]:
        if not isinstance(item, Instr):
            continue
        if item.name in ("PUSH_EXC_INFO", "POP_EXCEPT", "DELETE_FAST"):
            return True
        if item.name == "RERAISE":
            return False
    return False


BUILDS = ("BUILD_LIST", "BUILD_MAP", "BUILD_SET", "BUILD_CONST_KEY_MAP")
STORES = ("STORE_FAST", "STORE_FAST_STORE_FAST", "STORE_FAST_LOAD_FAST", "STORE_FAST_MAYBE_NULL")


def analyse(items: list[Any], flow: Flow, spec: Spec311, kind: str | None = "function") -> Plan:
    """Decide which calls to route and where their callables are produced."""
    plan = Plan(protected=protected_items(items))
    plan.flow_consumers = flow.consumers
    plan.flow_before = flow.before
    plan.overlap = find_overlap(items, spec, plan.protected)
    # Even a block that runs its calls one at a time can hold calls issued
    # together (sum over a generator expression): every handler settles which
    # failed first and drops the failures of calls the plain run never made.
    handlers = exception_handlers(items)
    plan.overlap.reconcile |= {handlers[index] for index in plan.protected
                               if items[handlers[index]].name == "PUSH_EXC_INFO"}
    one_at_a_time = plan.protected - plan.overlap.items
    ends = STORES + (("RETURN_VALUE",) if kind == "comprehension" else ())
    def stored(index: int) -> bool:
        consumers = flow.consumers.get((index, 0), ())
        return bool(consumers) and all(items[ci].name in ends for ci, _ in consumers)

    def built(producers: frozenset) -> bool:
        return all(p[0] != "handler" and items[p[0]].name in BUILDS for p in producers)

    for index, item in enumerate(items):
        if not isinstance(item, Instr) or index not in flow.before:
            continue
        if item.name in BUILDS and stored(index):
            plan.local_builds.add(index)
        elif (item.name == "BINARY_OP" and int(item.arg) in (0, 5) and stored(index)
              and (built(flow.before[index][-1]) or built(flow.before[index][-2]))):
            plan.local_builds.add(index)  # ``[None] * n``, ``[] + other``: a fresh container
            if _rebinds_own_concat(items, flow, index):
                plan.concats.add(index)

    def is_null(producer: tuple) -> bool:
        if producer[0] == "handler":
            return False
        instr = items[producer[0]]
        if producer[1] in spec.null_outputs(instr):
            return True
        return spec.is_method_load(instr) and producer[1] == spec.method_null_output()

    calls: dict[int, tuple] = {}
    for index, item in enumerate(items):
        if not isinstance(item, Instr) or item.name not in spec.call_names or index not in flow.before:
            continue
        null_depth, callable_depth = spec.call_slots(item)
        stack = flow.before[index]
        if len(stack) < max(null_depth, callable_depth):
            continue
        null_slot = stack[-null_depth]
        if null_slot and all(is_null(p) for p in null_slot):
            calls[index] = stack[-callable_depth]
        else:
            plan.native_calls.append(index)

    def callable_depth(index: int) -> int:
        return spec.call_slots(items[index])[1]

    while True:
        wraps: dict[tuple, bool] = {}
        for index, slot in calls.items():
            for producer in slot:
                wraps[producer] = wraps.get(producer, False) or index in one_at_a_time
        bad: set[int] = set()
        for producer in wraps:
            fed = {ci for ci, depth in flow.consumers.get(producer, ())}
            ok = _producer_ok(items, producer, spec, plan) and all(
                ci in calls and depth == callable_depth(ci)
                for ci, depth in flow.consumers.get(producer, ())
            )
            if not ok:
                bad |= fed & set(calls)
        if not bad:
            break
        for index in bad:
            del calls[index]
            plan.native_calls.append(index)
    plan.wraps = wraps
    plan.routed_calls = {index: index in one_at_a_time for index in calls}
    plan.call_producers = dict(calls)
    found = maybe_local(items, flow, spec, plan.local_builds)
    plan.escaping_calls = escaping_calls(items, flow, spec, calls, found)
    plan.escaping_stores = escaping_stores(items, flow, found, spec)
    plan.holder_builds = {index for index, output in found
                          if isinstance(items[index], Instr) and items[index].name in BUILDS
                          and index not in plan.local_builds}
    native = set(plan.native_calls)
    for index in calls:
        depth = min(spec.call_slots(items[index]))
        for slot in flow.before[index][len(flow.before[index]) - depth + 1:]:
            if any(p[0] == "handler" or p[0] in native
                   or items[p[0]].name in ("MAKE_FUNCTION", "SET_FUNCTION_ATTRIBUTE") for p in slot):
                plan.lazy_args.add(index)
    # Calls the interpreter makes itself (3.11 comprehensions, for one) may issue
    # tasks too: inside try/with they settle before the next statement.
    plan.settle_after = {index for index in plan.native_calls if index in one_at_a_time}
    return plan


def _rebinds_own_concat(items: list[Any], flow: Flow, index: int) -> bool:
    """``name = name + [...]`` at BINARY_OP ``index``: the left operand is a load of
    ``name``, the right one a list just built, the sum is stored to ``name``
    and nothing stores ``name`` in between. Then the old list is dropped right
    after, and if nothing else holds it, extending it is the same as the sum."""
    if int(items[index].arg) != 0:
        return False
    *_, left, right = flow.before[index]
    if len(left) != 1 or not right or any(p[0] == "handler" or items[p[0]].name != "BUILD_LIST"
                                          for p in right):
        return False
    load = next(iter(left))
    name = loaded_local(items, load)
    consumers = flow.consumers.get((index, 0), ())
    if name is None or load[0] >= index or len(consumers) != 1:
        return False
    store = items[next(iter(consumers))[0]]
    if store.name not in ("STORE_FAST", "STORE_FAST_LOAD_FAST") or stored_names(store)[:1] != [name]:
        return False
    return not any(isinstance(item, Instr) and name in stored_names(item)
                   for item in items[load[0] + 1:index])


def _plan_natives(code: types.CodeType, items: list[Any], flow: Flow, spec: Spec311, plan: Plan,
                  namespace: dict | None) -> None:
    """Find the in-place operators whose target and operand are immutable builtins.

    Those run as the plain instruction. The ``range`` loads their proof relies
    on get a run-time guard.
    """
    natives = find_natives(items, flow, spec, code, namespace, set(plan.wraps))
    if any(_native_builtin(items[index]) is not builtins.range for index in natives.guards):
        return  # no identity test to guard with: type nothing
    plan.native_inplace = natives.inplace
    for index in natives.guards:
        where = f"{code.co_qualname} ({code.co_filename}, line {items[index].location.lineno})"
        plan.range_guards[index] = sp.rebound_builtin("range", where)


def _plan_typed_receivers(code: types.CodeType, items: list[Any], flow: Flow, spec: Spec311,
                          plan: Plan) -> None:
    """Method calls on a local list, dict or set (``out.append(x)``) that need no
    receiver test: the method is one that ``route`` hands back as it is for a
    local container, and a plain one for any other container of that type."""
    typed = None
    for (index, _), protected in plan.wraps.items():
        item = items[index]
        if protected or not spec.is_method_load(item):
            continue
        if typed is None:
            typed = typed_locals(items, flow, code)
            if not typed:
                return
        kind = typed_receiver(items, flow, index, typed)
        name = item.arg if isinstance(item.arg, str) else item.arg[1]
        if (kind is not None and name in sp._NATIVE_LOCAL_METHODS
                and sp._method_descriptor(getattr(kind, name, None))):
            plan.typed_receivers[index] = kind


def _producer_ok(items: list[Any], producer: tuple, spec: Spec311, plan: Plan) -> bool:
    if producer[0] == "handler":
        return False
    index, output = producer
    instr = items[index]
    if instr.name in NAMED_LOADS:
        name = instr.arg[-1] if isinstance(instr.arg, tuple) else instr.arg
        if isinstance(name, str) and name in sp.FRAME_SENSITIVE:
            plan.syncs_before.add(index)
            return False
    if instr.name == "LOAD_SUPER_ATTR":
        return False
    if spec.is_method_load(instr):
        return output != spec.method_null_output()
    if instr.name == "LOAD_GLOBAL" and instr.arg[0]:
        return output == spec.callable_output_of_global()
    if instr.name == "LOAD_FAST_LOAD_FAST":
        return True
    pops, pushes = spec.effect(instr, False)
    return output == pushes - 1


# -- emitting --------------------------------------------------------------------
def _helper_on_top(helper: Any, spec: Spec311, location: Any) -> list[Instr]:
    """Replace the value on top of the stack by ``helper(value)``."""
    return [Instr("LOAD_CONST", helper, location=location),
            Instr("SWAP", 2, location=location), *spec.call(1, location)]


# Instructions whose helpers do nothing while no future exists (no task in
# flight, no value to resolve): then the plain instruction runs.
PLAIN_WITHOUT_FUTURES = frozenset({
    "STORE_ATTR", "STORE_SUBSCR", "STORE_SLICE", "DELETE_ATTR", "DELETE_SUBSCR", "IS_OP",
    "STORE_GLOBAL", "STORE_DEREF", "YIELD_VALUE", "FORMAT_VALUE", "CONVERT_VALUE",
    "FORMAT_SIMPLE", "FORMAT_WITH_SPEC", "BUILD_STRING", "RAISE_VARARGS",
    "MATCH_SEQUENCE", "MATCH_MAPPING", "MATCH_CLASS",
})


def _if_futures(with_futures: list[Any], without: list[Any], spec: Spec311, location: Any,
                escaping: bool = False) -> list[Any]:
    """``with_futures`` while any future exists, else ``without`` (same stack effect).

    ``escaping``: a local container may be handed over here, so
    ``with_futures`` runs while one exists, too.
    """
    plain, end = Label(), Label()
    return [*_unless_runtime_needed(plain, spec, location, escaping),
            *with_futures, Instr("JUMP_FORWARD", end, location=location), plain, *without, end]


def _unless_runtime_needed(plain: Label, spec: Spec311, location: Any, escaping: bool,
                           exempt: Any = None, callable_depth: int = 0,
                           receiver_depth: int = 0) -> list[Instr]:
    """Jump to ``plain`` unless a future exists (or, ``escaping``, a local container).

    ``exempt``: a builtin that keeps nothing of its arguments; a call of it
    (the callable at ``callable_depth``) hands no local container over; nor
    does a method of an immutable built-in receiver (at ``receiver_depth``).
    """
    if escaping:
        runtime = Label()
        seq = [Instr("LOAD_CONST", LIVE, location=location),
               *spec.to_bool(location), Instr(spec.jump_if_true, runtime, location=location)]
        if exempt is not None:
            seq += [Instr("COPY", callable_depth, location=location),
                    Instr("LOAD_CONST", exempt, location=location), Instr("IS_OP", 0, location=location),
                    Instr(spec.jump_if_true, plain, location=location)]
        if receiver_depth:
            seq += [*spec.type_of(receiver_depth, location),
                    Instr("LOAD_CONST", purity.IMMUTABLE_RECEIVERS, location=location),
                    Instr("CONTAINS_OP", 0, location=location),
                    Instr(spec.jump_if_true, plain, location=location)]
        seq += [Instr("LOAD_CONST", FUTURES, location=location), spec.load_attr("locals", location),
                *spec.to_bool(location), Instr(spec.jump_if_false, plain, location=location), runtime]
        return seq
    return [Instr("LOAD_CONST", LIVE, location=location),
            *spec.to_bool(location), Instr(spec.jump_if_false, plain, location=location)]


def _site_route(site: Any, spec: Spec311, location: Any) -> list[Instr]:
    """Route the callable on top of the stack, unless it is the one ``site`` last found plain."""
    skip, route = Label(), Label()
    return [Instr("COPY", 1, location=location), Instr("LOAD_CONST", site, location=location),
            spec.load_attr("fast", location), Instr("IS_OP", 0, location=location),
            Instr(spec.jump_if_true, skip, location=location),
            # the nested function last called here: its twin, without a call
            Instr("COPY", 1, location=location), Instr("LOAD_CONST", site, location=location),
            spec.load_attr("plain", location), Instr("IS_OP", 0, location=location),
            Instr(spec.jump_if_false, route, location=location),
            Instr("POP_TOP", location=location), Instr("LOAD_CONST", site, location=location),
            spec.load_attr("twin", location), Instr("JUMP_FORWARD", skip, location=location),
            route, *_helper_on_top(site.route, spec, location), skip]


def _site_route_native(site: Any, spec: Spec311, location: Any, fast: Label | None,
                       defaults: bool) -> list[Instr]:
    """``_site_route`` for a gate-free call: first the callable the site calls
    the plain way (to ``fast``), then its twin caches, then the cache that still
    needs the gate: with no future around, the first is all that ever hits,
    but for a nested function, whose twin comes next (``defaults``: also the
    twin of one with defaults, tested here rather than in ``route``)."""
    skip, not_plain, route = Label(), Label(), Label()

    def cached(attr: str, jump: str, target: Label) -> list[Instr]:
        return [Instr("COPY", 1, location=location), Instr("LOAD_CONST", site, location=location),
                spec.load_attr(attr, location), Instr("IS_OP", 0, location=location),
                Instr(jump, target, location=location)]

    def twin(attr: str) -> list[Instr]:
        return [Instr("POP_TOP", location=location), Instr("LOAD_CONST", site, location=location),
                spec.load_attr(attr, location), Instr("JUMP_FORWARD", skip, location=location)]

    seq = [*(cached("native", spec.jump_if_true, fast) if fast is not None else []),
           *cached("plain", spec.jump_if_false, not_plain), *twin("twin"), not_plain]
    if defaults:
        stale = Label()
        seq += cached("dplain", spec.jump_if_false, stale)
        for attr in ("__defaults__", "__kwdefaults__"):
            seq += [Instr("COPY", 1, location=location), spec.load_attr(attr, location),
                    Instr("LOAD_CONST", site, location=location), spec.load_attr("dtwin", location),
                    spec.load_attr(attr, location), Instr("IS_OP", 0, location=location),
                    Instr(spec.jump_if_false, stale, location=location)]
        seq += [*twin("dtwin"), stale]
    return [*seq, *cached("fast", spec.jump_if_true, skip),
            route, *_helper_on_top(site.route, spec, location), skip]


def _method_layout(items: list[Any], plan: Plan, spec: Spec311) -> tuple[set[int], set[int]]:
    """The routed calls whose callable comes only from method loads outside
    one-at-a-time try/with blocks (and those loads): they keep the
    interpreter's method layout."""
    loads = {index for (index, _), protected in plan.wraps.items()
             if not protected and spec.is_method_load(items[index])}
    while True:
        calls: set[int] = set()
        mixed: set[int] = set()
        for call, producers in plan.call_producers.items():
            indexes = {p[0] for p in producers}
            if indexes <= loads:
                calls.add(call)
            elif indexes & loads:
                mixed |= indexes & loads
        if not mixed:
            return calls, loads
        loads -= mixed


def _method_site(load: Instr, spec: Spec311, location: Any, cacheable: bool,
                 journaled: bool = False) -> list[Instr]:
    """``receiver.name``, to be called: the interpreter's own method load when the
    receiver's type is one the site found plain, else the routed bound attribute
    under ``operator.call`` (the same two stack slots either way)."""
    name = load.arg if isinstance(load.arg, str) else load.arg[1]
    site = sp.MethodSite(cacheable, name, journaled)
    fast, join = Label(), Label()
    # the fast way last, so that it needs no jump after the method load
    return [*spec.type_of(1, location),
            Instr("LOAD_CONST", site, location=location), spec.load_attr("rtype", location),
            Instr("IS_OP", 0, location=location), Instr(spec.jump_if_true, fast, location=location),
            spec.plain_attr(load), *_helper_on_top(site.route, spec, location),
            Instr("LOAD_CONST", operator.call, location=location), Instr("SWAP", 2, location=location),
            Instr("JUMP_FORWARD", join, location=location), fast, load, join]


def _non_retaining_builtin(items: list[Any], producers: frozenset) -> Any:
    """The builtin a call's callable is loaded as, if it keeps nothing of its arguments."""
    if len(producers) != 1:
        return None
    (producer,) = producers
    if producer[0] == "handler" or items[producer[0]].name != "LOAD_GLOBAL":
        return None
    value = getattr(builtins, items[producer[0]].arg[1], None)
    return value if value is not None and id(value) in purity.NON_RETAINING else None


def _gate(call: Instr, spec: Spec311, location: Any, kw_names: tuple | None, join: Label,
          method_layout: bool = False, escaping: bool = False, exempt: Any = None) -> list[Instr]:
    """Before a routed call: while futures exist, call through ``sp.gate`` instead.

    The gate gets the callable and the arguments packed in a tuple and gives
    back what to call with them, which is called with ``CALL_FUNCTION_EX``;
    without futures the original instructions run and nothing is packed.
    """
    native = Label()
    receiver_depth = 0
    if method_layout and escaping:  # [method, self, args (, names)]
        receiver_depth = int(call.arg) + 1 + (call.name == "CALL_KW")
    seq = _unless_runtime_needed(native, spec, location, escaping, exempt,
                                 spec.call_slots(call)[1] if exempt is not None else 0, receiver_depth)
    if method_layout:  # [method, self, args (, names)]: no NULL, so everything is packed
        kw_call = call.name == "CALL_KW"
        seq += [Instr("BUILD_TUPLE", int(call.arg) + 2 + kw_call, location=location),
                Instr("LOAD_CONST", None, location=location),
                Instr("LOAD_CONST", True if kw_call else kw_names, location=location),
                Instr("BUILD_TUPLE", 3, location=location),
                *_helper_on_top(sp.gate_method, spec, location),
                Instr("UNPACK_SEQUENCE", 3, location=location),
                *spec.call_unpacked_no_null(location),
                Instr("JUMP_FORWARD", join, location=location), native]
        return seq
    if call.name == "CALL_FUNCTION_EX":
        if not int(call.arg) & 1:
            seq.append(Instr("LOAD_CONST", None, location=location))
        seq += [Instr("LOAD_CONST", None, location=location)]
    elif call.name == "CALL_KW":
        seq += [Instr("BUILD_TUPLE", int(call.arg) + 1, location=location),
                Instr("LOAD_CONST", None, location=location), Instr("LOAD_CONST", True, location=location)]
    else:
        seq += [Instr("BUILD_TUPLE", int(call.arg), location=location),
                Instr("LOAD_CONST", None, location=location),
                Instr("LOAD_CONST", kw_names, location=location)]
    seq.append(Instr("BUILD_TUPLE", 3, location=location))
    seq += spec.pack_with_callable(location)
    seq += _helper_on_top(sp.gate, spec, location)
    seq.append(Instr("UNPACK_SEQUENCE", 3, location=location))
    seq += spec.call_unpacked(location)
    seq += [Instr("JUMP_FORWARD", join, location=location), native]
    return seq


# Arguments that cannot make a future, nor run code that could.
_PURE_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "LOAD_CONST",
                         "LOAD_DEREF", "PUSH_NULL", "NOP"})


def _gate_free_calls(items: list[Any], plan: Plan, spec: Spec311, call_starts: dict[int, int],
                     method_calls: set[int], method_loads: set[int]) -> dict[int, int]:
    """callable's producer -> call, for the calls whose arguments are plain loads.

    Between the callable and the call nothing runs that could make a future,
    so if none exists when the callable is found plain to call
    (``CallSite.native``), none exists at the call, which then needs no gate.
    Left out: calls that may hand a local container over (they go through the
    runtime while one exists), lazy arguments, ``*args``, try/with blocks and
    anything else that inserts code between the callable and the call.
    """
    starts = {call: start for start, call in call_starts.items()}
    busy = (plan.syncs_before | plan.overlap.sync_before | plan.overlap.reconcile | plan.overlap.sync_after
            | plan.settle_after | plan.overlap.items | plan.protected | plan.local_builds
            | plan.holder_builds | set(plan.range_guards))
    found: dict[int, int] = {}
    for call, protected in plan.routed_calls.items():
        if (protected or call in method_calls or call in plan.escaping_calls
                or call in plan.lazy_args or items[call].name not in ("CALL", "CALL_KW")):
            continue
        producers = plan.call_producers.get(call, frozenset())
        if len(producers) != 1:
            continue
        (producer,) = producers
        if producer[0] == "handler":
            continue
        load_index = producer[0]
        load = items[load_index]
        if (load.name in spec.call_names or call in {key[0] for key in plan.wraps}
                or load_index in method_loads or spec.is_method_load(load) or load.name == "LOAD_FAST_LOAD_FAST"
                or plan.wraps.get(producer) is not False
                or [key for key in plan.wraps if key[0] == load_index] != [producer]
                or {ci for ci, _ in plan.flow_consumers.get(producer, ())} != {call}):
            continue
        between = items[load_index + 1:starts.get(call, call)]
        calling = items[starts.get(call, call):call + 1]
        if (all(isinstance(i, Instr) and i.name in _PURE_LOADS for i in between)
                and all(isinstance(i, Instr) and i.name in ("KW_NAMES", "PRECALL", "CALL", "CALL_KW")
                        for i in calling)
                and not busy & set(range(load_index, call + 1))):
            found[load_index] = call
    return found


def _sync_statement(spec: Spec311, location: Any) -> list[Instr]:
    return _if_futures([Instr("LOAD_CONST", None, location=location),
                        *_helper_on_top(sp.sync, spec, location),
                        Instr("POP_TOP", location=location)], [], spec, location)


def _emit(items: list[Any], plan: Plan, spec: Spec311, generator: bool,
          namespace: dict | None = None, journal_all: bool = False) -> list[Any]:
    out: list[Any] = []
    wrapped_outputs: dict[int, dict[int, bool]] = {}
    for (index, output), protected in plan.wraps.items():
        wrapped_outputs.setdefault(index, {})[output] = protected
    last_protected = False
    last_falls_through = True
    last_name = ""
    labels_since_instr: list[Label] = []
    jump_sources: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        if isinstance(item, Instr) and item.has_jump():
            jump_sources.setdefault(id(item.arg), []).append(index)
    # Handlers are entered by an exception, never by falling into them.
    labels = {id(item): i for i, item in enumerate(items) if isinstance(item, Label)}
    try_of_handler = {_first_instr_after(items, labels[id(item.target)]): item
                      for item in items if isinstance(item, TryBegin)}
    handler_starts = set(try_of_handler)
    # Routed calls get a gate before their first instruction (KW_NAMES, PRECALL
    # or the call itself); both ways join after the call.
    call_starts: dict[int, int] = {}
    call_names: dict[int, tuple] = {}
    joins: dict[int, Label] = {}
    for call in plan.routed_calls:
        start = call
        while start > 0 and isinstance(items[start - 1], Instr) and items[start - 1].name in ("PRECALL", "KW_NAMES"):
            start -= 1
            if items[start].name == "KW_NAMES":
                call_names[call] = items[start].arg
        call_starts[start] = call
        joins[call] = Label()
    flow_consumers = plan.flow_consumers
    method_calls, method_loads = _method_layout(items, plan, spec)
    gate_free = _gate_free_calls(items, plan, spec, call_starts, method_calls, method_loads)
    # A gate-free call's checked way is put out of line, after the code (so that
    # the plain way is short, and the jumps across it need no EXTENDED_ARG):
    # while its items are emitted, ``out`` is that block; ``slow_end`` holds the
    # last item of it -> (where the plain way goes on, the block's try entry).
    main: list[Any] = []
    out = main
    deferred: dict[int, list[Any]] = {}  # id(label where the plain way goes on) -> block
    slow_end: dict[int, tuple[Label, TryBegin | None]] = {}
    open_entries: list[TryBegin] = []

    def join_of(call: int, location: Any) -> list[Any]:
        """Where both ways of a routed call meet."""
        return [joins[call]]
    for index, item in enumerate(items):
        if isinstance(item, TryBegin):
            open_entries.append(item)
        elif isinstance(item, TryEnd) and item.entry in open_entries:
            open_entries.remove(item.entry)
        if isinstance(item, TryBegin):
            covered = _first_instr_after(items, index)

            # FOR_ITER's exit jumps a fixed distance past its target (END_FOR, and
            # POP_TOP on 3.13): nothing may be put between them.
            for_exit = covered is not None and (items[covered].name == "END_FOR" or last_name == "END_FOR")
            # Entered from unprotected code: settle its calls before the block.
            # A block that 3.11 splits around a return in a loop is re-entered
            # by jumps from inside itself, which need no settling.
            entered_from_outside = (not last_protected and last_falls_through) or any(
                source not in plan.protected
                for label in labels_since_instr for source in jump_sources.get(id(label), ()))
            if (covered in plan.protected and entered_from_outside
                    and covered not in handler_starts and not for_exit):
                location = items[covered].location
                out.extend(_sync_statement(spec, location))
            out.append(item)
            continue
        if not isinstance(item, Instr):
            if isinstance(item, Label):
                labels_since_instr.append(item)
            out.append(item)
            if index in plan.overlap.sync_landing:
                # A loop left its try/with block: wait for the block's calls,
                # still under the block's handler.
                entry = try_of_handler[plan.overlap.sync_landing[index]]
                begin = _copy_entry(entry)
                out.extend([begin, *_sync_statement(spec, items[_first_instr_after(items, index)].location),
                            TryEnd(begin)])
            continue
        labels_since_instr = []
        last_protected = index in plan.protected
        last_falls_through = not item.is_final()
        last_name = item.name
        location = item.location
        # Changes to local containers can be undone: inside a try/with block whose
        # calls overlap, and in generators (such a block may be iterating one).
        journaled = journal_all or generator or index in plan.overlap.items
        if index in plan.syncs_before or item.name == "BEFORE_WITH" or index in plan.overlap.sync_before:
            out.extend(_sync_statement(spec, location))
        if index in plan.overlap.reconcile and item.name != "PUSH_EXC_INFO":
            out.extend(_helper_on_top(sp.reconcile, spec, location))
        if index in call_starts:
            gated = call_starts[index]
            out.extend(_gate(items[gated], spec, location, call_names.get(gated), joins[gated],
                             gated in method_calls, gated in plan.escaping_calls,
                             _non_retaining_builtin(items, plan.call_producers[gated])))
        outputs = wrapped_outputs.get(index)
        if outputs:
            protected = any(outputs.values())
            native = _native_builtin(item)
            if protected:
                wrap = _helper_on_top(sp.route_protected, spec, location)
            else:
                fed = {ci for output in outputs for ci, _ in flow_consumers.get((index, output), ())}
                site = sp.CallSite(cacheable=not (fed & plan.lazy_args), journaled=journaled,
                                   gate_free=index in gate_free)
                wrap = _site_route(site, spec, location)
                native = None
                if index in gate_free and out is main and len(open_entries) <= 1:
                    # While no future exists, the callable this site calls as it is
                    # runs the plain code, arguments and call, with no gate; the
                    # routed way is emitted out of line (see ``deferred``).
                    call = gate_free[index]
                    end = call + 2 if generator and _yields_call_result(items, plan, call) else call
                    slow, back = Label(), Label()
                    loaded = (spec.load_callable_then_null(item, []) if item.name == "LOAD_GLOBAL"
                              else [_nested(item, namespace, journal_all)])
                    head, tail = loaded[:1], loaded[1:]
                    plain = [Instr(i.name, i.arg, location=i.location) for i in items[index + 1:end + 1]]
                    main += [*head, Instr("COPY", 1, location=location), Instr("LOAD_CONST", site, location=location),
                             spec.load_attr("native", location), Instr("IS_OP", 0, location=location),
                             Instr(spec.jump_if_false, slow, location=location), *tail, *plain, back]
                    entry = None
                    out = []
                    if open_entries:
                        entry = _copy_entry(open_entries[0])
                        out.append(entry)
                    out += [slow, *_site_route_native(site, spec, location, None, item.name in (
                        "LOAD_DEREF", "LOAD_FAST", "LOAD_FAST_CHECK")), *tail]
                    slow_end[end] = (back, entry)
                    continue
            if index in plan.range_guards:
                # Loops over this call were typed: anything but the builtin is an error.
                wrap = _helper_on_top(plan.range_guards[index], spec, location)
                native = _native_builtin(item)
            if native is not None:
                # The builtin itself needs no routing: test for it without a call.
                skip = Label()
                wrap = [Instr("COPY", 1, location=location), Instr("LOAD_CONST", native, location=location),
                        Instr("IS_OP", 0, location=location), Instr(spec.jump_if_true, skip, location=location),
                        *wrap, skip]
            if index in method_loads and index in plan.typed_receivers and not journaled:
                out.append(item)  # the interpreter's own method load (see Plan.typed_receivers)
            elif index in method_loads:
                out.extend(_method_site(item, spec, location, site.cacheable, journaled))
            elif spec.is_method_load(item):
                out.extend(spec.method_to_plain(spec.plain_attr(item), wrap))
            elif item.name == "LOAD_GLOBAL" and item.arg[0]:
                out.extend(spec.load_callable_then_null(item, wrap))
            elif item.name == "LOAD_FAST_LOAD_FAST":
                first, second = item.arg
                out.append(Instr("LOAD_FAST", first, location=location))
                if 0 in outputs:
                    out.extend(wrap)
                out.append(Instr("LOAD_FAST", second, location=location))
                if 1 in outputs:
                    out.extend(wrap)
            else:
                out.append(_nested(item, namespace, journal_all))
                if index in joins:  # ``f(x)(y)``: this call's result is the next callable
                    out.extend(join_of(index, location))
                out.extend(wrap)
            continue
        if index in plan.concats and not journaled:
            # [left, right] -> [helper, left, right, a new empty list], then the call
            out.extend([Instr("LOAD_CONST", sp.concat_local, location=location),
                        Instr("SWAP", 3, location=location), Instr("SWAP", 2, location=location),
                        Instr("BUILD_LIST", 0, location=location), *spec.call(3, location)])
        elif index in plan.native_inplace:
            out.append(item)  # immutable builtins: rebound, never shared, never futures
        elif index in joins:
            out.append(item)
            out.extend(join_of(index, location))
        else:
            rewritten = _statement(item, spec, generator, namespace=namespace, journaled=journaled,
                                   journal_all=journal_all)
            if spec.is_inplace(item) and not journaled:
                # Without futures (and, where the operand may be a local
                # container, without one) the helper does what the operator does.
                plain = Instr(item.name, item.arg, location=location)
                out.extend(_if_futures(rewritten, [plain], spec, location, index in plan.escaping_stores))
            elif _constant_operands(items, plan, index, item):
                out.append(item)  # ``yield "null"``: immutable constants are never futures
            elif (item.name in PLAIN_WITHOUT_FUTURES or item.name.endswith(("_IF_NONE", "_IF_NOT_NONE"))) \
                    and rewritten != [item]:
                escaping = index in plan.escaping_stores
                send = items[index - 1] if item.name == "YIELD_VALUE" and index else None
                if isinstance(send, Instr) and send.name == "SEND" and spec.send_lookback(send):
                    # ``yield from``: 3.11 wants a SEND right before the YIELD_VALUE
                    plain = Label()
                    out.extend([*_unless_runtime_needed(plain, spec, location, escaping), *rewritten[:-1],
                                Instr("JUMP_FORWARD", plain, location=location),
                                *spec.send_lookback(send), plain, item])
                elif rewritten[-1] is item:  # a helper on the value, then the instruction itself
                    out.extend(_if_futures(rewritten[:-1], [], spec, location, escaping))
                    out.append(item)
                else:
                    out.extend(_if_futures(rewritten, [item], spec, location, escaping))
            else:
                out.extend(rewritten)
        if index in plan.local_builds or index in plan.holder_builds:
            out.extend(_helper_on_top(sp.local, spec, location))
        if index in plan.overlap.reconcile and item.name == "PUSH_EXC_INFO":
            # After PUSH_EXC_INFO, inside the handler's cleanup range, so that a
            # failure of the helper itself (a RecursionError) unwinds cleanly;
            # then the exception being handled becomes the reconciled one.
            out.extend(_helper_on_top(sp.reconcile, spec, location))
            out.extend([Instr("SWAP", 2, location=location), Instr("POP_EXCEPT", location=location),
                        Instr("PUSH_EXC_INFO", location=location)])
        if index in plan.overlap.sync_after or index in plan.settle_after:
            out.extend(_sync_statement(spec, location))
        if index in slow_end:
            back, entry = slow_end.pop(index)
            out.append(Instr("JUMP_BACKWARD", back, location=location))
            if entry is not None:
                out.append(TryEnd(entry))
            deferred[id(back)] = out
            out = main
    return _place_blocks(main, deferred)


def _newest_entry(replaced: dict[int, TryBegin], entry: TryBegin) -> TryBegin:
    """The exception-table entry that stands for ``entry`` now: an entry ended
    and reopened around out-of-line code is replaced by its copy."""
    while id(entry) in replaced:
        entry = replaced[id(entry)]
    return entry


def _copy_entry(entry: TryBegin) -> TryBegin:
    """A new exception-table entry covering as ``entry`` does (it is reopened after
    out-of-line code, or covers a copy of its instructions)."""
    return TryBegin(entry.target, entry.push_lasti, stack_depth=entry.stack_depth)


def _close_entry(end: TryEnd, open_entries: list[TryBegin], replaced: dict[int, TryBegin]) -> TryEnd:
    """``end``, or the end of the entry that replaced its own; that entry is no longer open."""
    entry = _newest_entry(replaced, end.entry)
    if entry in open_entries:
        open_entries.remove(entry)
    return end if entry is end.entry else TryEnd(entry)


def _place_blocks(main: list[Any], blocks: dict[int, list[Any]]) -> list[Any]:
    """Put each out-of-line block after the first instruction that does not fall
    through (a jump, return or raise) following its call, so that the jump to
    it stays short; an exception-table entry open there is ended before the
    blocks (which carry their own) and opened again after them."""
    result: list[Any] = []
    pending: list[list[Any]] = []
    open_entries: list[TryBegin] = []
    replaced: dict[int, TryBegin] = {}

    for item in main:
        if isinstance(item, TryBegin):
            open_entries.append(item)
        elif isinstance(item, TryEnd):
            item = _close_entry(item, open_entries, replaced)
            if result and result[-1] is item.entry:
                result.pop()  # opened again just before: nothing left to cover
                continue
        result.append(item)
        if isinstance(item, Label) and id(item) in blocks:
            pending.append(blocks.pop(id(item)))
        elif pending and isinstance(item, Instr) and item.is_final() and len(open_entries) <= 1:
            outer = open_entries[0] if open_entries else None
            if outer is not None:
                result.append(TryEnd(outer))
            for block in pending:
                result.extend(block)
            pending = []
            if outer is not None:
                again = _copy_entry(outer)
                replaced[id(outer)] = again
                open_entries[0] = again
                result.append(again)
    for block in [*pending, *blocks.values()]:
        result.extend(block)
    return result


def _constant_operands(items: list[Any], plan: Plan, index: int, item: Instr) -> bool:
    """True for a yield, ``is`` or ``is None`` test whose operands are immutable
    builtin constants: the plain instruction does what the helper would."""
    if item.name == "YIELD_VALUE" or item.name.endswith(("_IF_NONE", "_IF_NOT_NONE")):
        depth = 1
    elif item.name == "IS_OP":
        depth = 2
    else:
        return False
    if index in plan.escaping_stores or index not in plan.flow_before:
        return False
    stack = plan.flow_before[index]
    return len(stack) >= depth and all(
        slot and all(p[0] != "handler" and items[p[0]].name == "LOAD_CONST" and native_constant(items[p[0]].arg)
                     for p in slot)
        for slot in stack[len(stack) - depth:])


def _yields_call_result(items: list[Any], plan: Plan, call: int) -> bool:
    """True if ``items[call]`` is directly followed by ``YIELD_VALUE`` and ``RESUME``.

    Called the plain way (no future exists, the callable is one the site found
    plain to call, its arguments are plain loads), a call returns no future
    and no container holding one (code outside the schedule function never
    sees them), nor a local container (only handed over where the call would
    not be plain): the check before the yield would change nothing.
    """
    if call + 2 >= len(items):
        return False
    yielded, resume = items[call + 1], items[call + 2]
    return (isinstance(yielded, Instr) and yielded.name == "YIELD_VALUE"
            and isinstance(resume, Instr) and resume.name == "RESUME"
            and call + 1 not in plan.escaping_stores
            and not {call + 1, call + 2} & (plan.overlap.items | plan.overlap.reconcile
                                             | plan.overlap.sync_after | plan.settle_after
                                             | plan.syncs_before | plan.overlap.sync_before))


# -- ``yield from`` a rewritten generator ---------------------------------------------
_YIELD_FROM_LOOP = ("SEND", "YIELD_VALUE", "RESUME", "JUMP_BACKWARD_NO_INTERRUPT")


def _yield_from_loops(items: list[Any]) -> dict[int, list[Any]]:
    """id(loop label) -> the original items of each ``yield from`` loop, from its
    label to its ``JUMP_BACKWARD_NO_INTERRUPT``: ``SEND``, ``YIELD_VALUE``,
    ``RESUME`` and exception-table boundaries only."""
    loops: dict[int, list[Any]] = {}
    for index, item in enumerate(items):
        if not (isinstance(item, Instr) and item.name == "SEND" and index > 0
                and isinstance(items[index - 1], Label)):
            continue
        label = items[index - 1]
        for end in range(index + 1, min(index + 12, len(items))):
            other = items[end]
            if isinstance(other, (TryBegin, TryEnd)):
                continue
            if not isinstance(other, Instr) or other.name not in _YIELD_FROM_LOOP:
                break
            if other.name == "JUMP_BACKWARD_NO_INTERRUPT":
                region = items[index - 1:end + 1]
                names = [i.name for i in region if isinstance(i, Instr)]
                if other.arg is label and names == list(_YIELD_FROM_LOOP):
                    loops[id(label)] = region
                break
    return loops


def _unchecked_yield_from(out: list[Any], loops: dict[int, list[Any]], spec: Spec311) -> list[Any]:
    """Give each ``yield from`` loop a copy without the check of the yielded value.

    A generator whose code the tracer rewrote resolves what it yields itself
    (``resolve_yield``), so the values it hands through ``yield from`` need no
    second look: ``sp.forwards_resolved`` picks the copy for such a generator
    once per ``yield from``; any other iterable (a local list holding futures,
    say) runs the original loop, which checks each value. The copy's
    exception-table entries are copies of the original's; the entry open
    where the copy is put is ended before it and reopened after it.
    """
    if not loops:
        return out
    result: list[Any] = []
    open_entries: list[TryBegin] = []
    replaced: dict[int, TryBegin] = {}

    for item in out:
        if isinstance(item, TryBegin):
            open_entries.append(item)
        elif isinstance(item, TryEnd):
            item = _close_entry(item, open_entries, replaced)
        elif isinstance(item, Label) and id(item) in loops and len(open_entries) <= 1:
            region = loops[id(item)]
            send = region[1]
            location = send.location
            # [iterator, value to send]: the copy for a rewritten generator,
            # tested without a call when it has the code this site saw last.
            site, other, learn, start = sp.YieldFromSite(), Label(), Label(), Label()
            result += [Instr("COPY", 2, location=location), *spec.type_of(1, location),
                       Instr("LOAD_CONST", types.GeneratorType, location=location),
                       Instr("IS_OP", 0, location=location), Instr(spec.jump_if_false, other, location=location),
                       spec.load_attr("gi_code", location), Instr("LOAD_CONST", site, location=location),
                       spec.load_attr("code", location), Instr("IS_OP", 0, location=location),
                       Instr(spec.jump_if_false, learn, location=location),
                       Instr("JUMP_FORWARD", start, location=location),
                       other, Instr("POP_TOP", location=location), learn,
                       Instr("COPY", 2, location=location), *_helper_on_top(site.learn, spec, location),
                       Instr(spec.jump_if_false, item, location=location)]
            outer = open_entries[0] if open_entries else None
            active = None
            if outer is not None:
                result.append(TryEnd(outer))
                active = _copy_entry(outer)
                result.append(active)
            result.append(start)
            for piece in region[1:]:
                if isinstance(piece, TryBegin):
                    active = _copy_entry(piece)
                    result.append(active)
                elif isinstance(piece, TryEnd):
                    if active is not None:
                        result.append(TryEnd(active))
                    active = None
                elif piece.name == "JUMP_BACKWARD_NO_INTERRUPT":
                    result.append(Instr(piece.name, start, location=piece.location))
                else:
                    result.append(Instr(piece.name, piece.arg, location=piece.location))
            if active is not None:
                result.append(TryEnd(active))
            if outer is not None:
                again = _copy_entry(outer)
                replaced[id(outer)] = again
                open_entries[0] = again
                result.append(again)
        result.append(item)
    return result


def _native_builtin(item: Instr) -> Any:
    """The builtin a global load names, if calling it natively is always right."""
    if item.name != "LOAD_GLOBAL":
        return None
    value = getattr(builtins, item.arg[1], None)
    return value if value is not None and id(value) in purity.NATIVE else None


def _first_instr_after(items: list[Any], index: int) -> int | None:
    for j in range(index + 1, len(items)):
        if isinstance(items[j], Instr):
            return j
    return None


def _nested(item: Instr, namespace: dict | None, journal_all: bool = False) -> Instr:
    """Functions, lambdas and comprehensions defined inside are rewritten too (same globals).

    Comprehensions and generator expressions are made and called on the spot,
    so they run the rewritten code itself. Functions and lambdas keep their
    plain code: called from code outside the schedule function (a callback,
    ``sorted(key=...)``) they run plainly and never see a future; called from
    rewritten code, ``route`` calls their rewritten twin.
    """
    if item.name == "LOAD_CONST" and isinstance(item.arg, types.CodeType) and code_kind(item.arg):
        if item.arg.co_name in COMPREHENSIONS or item.arg.co_name == "<genexpr>":
            rewritten = rewrite_code(item.arg, namespace, journal_all)
            return Instr("LOAD_CONST", rewritten, location=item.location)
        sp.register_twin(item.arg, rewrite_code(item.arg, namespace))
    return item


def _statement(item: Instr, spec: Spec311, generator: bool, journaled: bool = False,
               namespace: dict | None = None, journal_all: bool = False) -> list[Instr]:
    """The rewritten form of one instruction; ``journaled``: inside a try/with
    block whose calls overlap, changes to local containers can be undone."""
    name, location = item.name, item.location

    def call_helper(helper: Any, arrange: list[Instr], nargs: int, keep: bool) -> list[Instr]:
        seq = [Instr("LOAD_CONST", helper, location=location), *arrange, *spec.call(nargs, location)]
        if not keep:
            seq.append(Instr("POP_TOP", location=location))
        return seq

    def swaps(*ns: int) -> list[Instr]:
        return [Instr("SWAP", n, location=location) for n in ns]

    if name == "STORE_ATTR":
        return [Instr("LOAD_CONST", item.arg, location=location),
                *call_helper(sp.store_attr, swaps(4), 3, keep=False)]
    if name == "STORE_SUBSCR":
        helper = sp.store_subscr_journaled if journaled else sp.store_subscr
        return call_helper(helper, swaps(4), 3, keep=False)
    if name == "STORE_SLICE":
        helper = sp.store_slice_journaled if journaled else sp.store_slice
        return call_helper(helper, swaps(5), 4, keep=False)
    if name == "DELETE_ATTR":
        return [Instr("LOAD_CONST", item.arg, location=location),
                *call_helper(sp.delete_attr, swaps(3, 2), 2, keep=False)]
    if name == "DELETE_SUBSCR":
        helper = sp.delete_subscr_journaled if journaled else sp.delete_subscr
        return call_helper(helper, swaps(3, 2), 2, keep=False)
    if spec.is_inplace(item):
        # Numbers, strings and futures take the interpreter's own path; other
        # targets (maybe shared, mutable) go through the helper.
        slow, end = Label(), Label()
        return [*spec.type_of(1, location),
                Instr("LOAD_CONST", Future, location=location),
                Instr("IS_OP", 0, location=location),
                Instr(spec.jump_if_true, slow, location=location),
                *spec.type_of(2, location),
                Instr("LOAD_CONST", sp.NATIVE_INPLACE_TYPES, location=location),
                Instr("CONTAINS_OP", 0, location=location),
                Instr(spec.jump_if_false, slow, location=location),
                item,
                Instr("JUMP_FORWARD", end, location=location),
                slow,
                *call_helper((sp.INPLACE_JOURNALED if journaled else sp.INPLACE)[int(item.arg)],
                             swaps(3, 2), 2, keep=True),
                end]
    if name == "FORMAT_VALUE":
        flags = int(item.arg)
        nargs = 2 if flags & 4 else 1
        return call_helper(sp.FORMAT_VALUE[flags], swaps(*range(nargs + 1, 1, -1)), nargs, keep=True)
    if name == "CONVERT_VALUE":
        return [Instr("LOAD_CONST", int(item.arg), location=location),
                *call_helper(sp.convert, swaps(3, 2), 2, keep=True)]
    if name == "FORMAT_SIMPLE":
        return _helper_on_top(sp.format_simple, spec, location)
    if name == "FORMAT_WITH_SPEC":
        return call_helper(sp.format_with_spec, swaps(3, 2), 2, keep=True)
    if name == "BUILD_STRING":
        return [Instr("BUILD_TUPLE", item.arg, location=location),
                *_helper_on_top(sp.build_string, spec, location)]
    if name == "IS_OP":
        return call_helper(sp.is_not if item.arg else sp.is_, swaps(3, 2), 2, keep=True)
    if name == "STORE_GLOBAL":
        return [*_helper_on_top(sp.publish, spec, location), item]
    if name == "STORE_DEREF":
        return [*_helper_on_top(sp.resolve, spec, location), item]
    if name.endswith(("_IF_NONE", "_IF_NOT_NONE")) or name in ("MATCH_SEQUENCE", "MATCH_MAPPING"):
        return [*_helper_on_top(sp.resolve_top, spec, location), item]  # identity and type tests
    if name == "MATCH_CLASS":
        return [*swaps(3), *_helper_on_top(sp.resolve_top, spec, location), *swaps(3), item]
    if name == "RAISE_VARARGS" and int(item.arg) >= 1:
        # ``raise make_error(...)``: a functional call may have made the exception
        if int(item.arg) == 2:
            return [*swaps(2), *_helper_on_top(sp.resolve_top, spec, location), *swaps(2),
                    *_helper_on_top(sp.resolve_top, spec, location), item]
        return [*_helper_on_top(sp.resolve_top, spec, location), item]
    if name == "YIELD_VALUE" and generator:
        return [*_helper_on_top(sp.resolve_yield, spec, location), item]

    return [_nested(item, namespace, journal_all)]
