"""``pydron explain``: where a schedule function still serialises, and why.

Uses the rewrite's own analysis (``rewrite.analyse``): the same call sites,
protected regions and local containers. Callables are named statically from
the function's globals and builtins, as they are at the time of the report.
"""
from __future__ import annotations

import builtins
import types
from dataclasses import dataclass
from typing import Any, Callable

from bytecode import Bytecode, Instr, Label, TryBegin

from pydron.functional import is_functional
from pydron.runtime import purity
from pydron.runtime.syncpoints import SCHEDULE_MARK
from pydron.tracer.regions import loaded_local, stored_names
from pydron.tracer.rewrite import analyse, code_kind
from pydron.tracer.stack import simulate
from pydron.tracer.versions import current_spec

STATEMENTS = {
    "STORE_ATTR": "`{}` attribute assignment: a sync point",
    "DELETE_ATTR": "`del` of attribute `{}`: a sync point",
    "STORE_GLOBAL": "assignment to global `{}`: a sync point",
    "STORE_SUBSCR": "item assignment: a sync point unless the container was built in this function",
    "DELETE_SUBSCR": "`del` of an item: a sync point unless the container was built in this function",
}


@dataclass
class Finding:
    """One line of the report."""

    line: int
    text: str
    sync: bool


def explain(fn: Callable[..., Any]) -> str:
    """A line-by-line report of ``fn``'s sync points and parallel loops."""
    fn = getattr(fn, SCHEDULE_MARK, None) and getattr(fn, "__wrapped__", fn) or fn
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"pydron.explain needs a function, got {type(fn).__name__}")
    findings: list[Finding] = []
    loops: list[tuple[int, int, str]] = []
    _explain_code(fn.__code__, fn.__globals__, findings, loops)
    return _render(fn, findings, loops)


def _explain_code(code: types.CodeType, namespace: dict, findings: list[Finding],
                  loops: list[tuple[int, int, str]]) -> None:
    spec = current_spec()
    items = list(Bytecode.from_code(code, conserve_exception_block_stackdepth=True))
    flow = simulate(items, spec)
    plan = analyse(items, flow, spec, code_kind(code))
    loops.extend(_loops(items))
    containers = _local_container_names(items, flow, plan)
    for index, protected in plan.routed_calls.items():
        producers = flow.before[index][-spec.call_slots(items[index])[1]]
        name, target = _callable(items, producers, namespace)
        line = _line(items, index)
        owner = name.rpartition(".")[0]
        waited = (_functional_result(items, flow, plan, spec, namespace, flow.before[index][-1])
                  if items[index].name == "CALL" and items[index].arg == 1 else None)
        if target is None and owner in containers and name.endswith(".add") and waited:
            text, sync = (f"`{name}` of `{waited}`'s result on a container built here: waits for that "
                          f"call (a set needs the value's hash)"), True
        elif target is None and owner in containers:
            text, sync = f"`{name}` on a container built here: no sync point", False
        elif target is not None and is_functional(target):
            text, sync = f"`{name}` is functional: a task", False
            if protected:
                text, sync = f"`{name}` is functional, inside try/with: it runs before the next statement", True
        elif target is not None and getattr(target, SCHEDULE_MARK, None) is not None:
            text, sync = f"`{name}` is a schedule function: runs inline, in the same graph", False
        elif target is map and (mapped := _mapped_functional(items, flow, index, namespace)):
            text, sync = f"`{mapped}` is functional, mapped with `map`: one task per item", False
        elif target is not None and purity.is_pure(target):
            text, sync = f"`{name}` is pure: no sync point", False
        elif target is None:
            text, sync = (f"call of `{name}` (known only at run time): a sync point unless it is "
                          f"functional, pure, or a method of a list/dict/set built here"), True
        else:
            text, sync = f"call to `{name}` (not functional): a sync point", True
        findings.append(Finding(line, text, sync))
    seen_protected_lines = set()
    labels = {id(item): i for i, item in enumerate(items) if isinstance(item, Label)}
    loop_spans = [(labels[id(item.arg)], i) for i, item in enumerate(items)
                  if isinstance(item, Instr) and "BACKWARD" in item.name and isinstance(item.arg, Label)]
    for index, item in enumerate(items):
        if not isinstance(item, Instr):
            continue
        line = _line(items, index)
        if item.name in ("STORE_SUBSCR", "DELETE_SUBSCR") and _target_name(items, flow, index) in containers:
            what = "item assignment" if item.name == "STORE_SUBSCR" else "`del` of an item"
            key = _functional_result(items, flow, plan, spec, namespace, flow.before[index][-1])
            if key:
                findings.append(Finding(line, f"{what} with `{key}`'s result as the key, on a container "
                                              f"built here: waits for that call (the key must be known)", True))
            else:
                findings.append(Finding(line, f"{what} on a container built here: no sync point", False))
        elif item.name in STATEMENTS:
            arg = item.arg if isinstance(item.arg, str) else ""
            findings.append(Finding(line, STATEMENTS[item.name].format(arg), True))
        elif item.name == "BEFORE_WITH":
            findings.append(Finding(line, f"entering a `with` block: a sync point; {_block_calls(items, plan, index)}", True))
        elif (item.name == "NOP" and line not in seen_protected_lines
              and _starts_try(items, plan, index)):
            seen_protected_lines.add(line)
            findings.append(Finding(line, f"entering a `try` block: a sync point; {_block_calls(items, plan, index)}", True))
        elif index in plan.overlap.sync_before and (stored := stored_names(item)):
            # A store the handler may read (regions.py). Once per iteration
            # inside a loop; after a comprehension's loop, once.
            in_loop = any(start < index < end for start, end in loop_spans)
            findings.append(Finding(line, f"storing `{'`, `'.join(stored)}`, which the handler may "
                                          f"read: waits for the block's calls first", in_loop))
        elif item.name == "LOAD_CONST" and isinstance(item.arg, types.CodeType) and code_kind(item.arg):
            _explain_code(item.arg, namespace, findings, loops)


def _starts_try(items: list[Any], plan: Any, index: int) -> bool:
    """The ``NOP`` of a ``try:`` statement, right before its block."""
    for j in range(index + 1, len(items)):
        item = items[j]
        if isinstance(item, TryBegin):
            first = next((k for k in range(j + 1, len(items)) if isinstance(items[k], Instr)), None)
            return first in plan.protected and items[first].name != "PUSH_EXC_INFO"
        if isinstance(item, Instr):
            return False
    return False


def _block_calls(items: list[Any], plan: Any, start: int) -> str:
    """How the calls of the try/with block that starts at ``start`` run."""
    first = next((j for j in range(start, len(items))
                  if isinstance(items[j], Instr) and j in plan.protected), None)
    if first is not None and first in plan.overlap.items:
        return "calls inside overlap, and the block waits for them where it ends"
    return "calls inside run one at a time"


def _functional_result(items: list[Any], flow: Any, plan: Any, spec: Any, namespace: dict,
                       producers: frozenset) -> str | None:
    """The functional function whose call made this stack value, if a routed call did."""
    if len(producers) != 1:
        return None
    index = next(iter(producers))[0]
    if index == "handler" or index not in plan.routed_calls:
        return None
    name, target = _callable(items, flow.before[index][-spec.call_slots(items[index])[1]], namespace)
    return name if target is not None and is_functional(target) else None


def _target_name(items: list[Any], flow: Any, index: int) -> str | None:
    """The local variable that holds the container an item store or delete acts on."""
    depth = 2  # [value, container, key] and [container, key]: the container is second from the top
    producers = flow.before.get(index, ())[-depth] if len(flow.before.get(index, ())) >= depth else ()
    names = {loaded_local(items, producer) for producer in producers}
    return names.pop() if len(names) == 1 and None not in names else None


def _local_container_names(items: list[Any], flow: Any, plan: Any) -> set[str]:
    """Local variables that only ever hold containers this function built.

    A store may copy another such variable (``parts = nxt``): the names are
    found together, starting from every stored name and dropping, until none
    changes, those with a store of anything else.
    """
    stores: dict[str, list[list[str] | None]] = {}  # name -> per store: the names it copies
    for index, item in enumerate(items):
        if isinstance(item, Instr) and item.name == "STORE_FAST" and index in flow.before:
            copied: list[str] | None = []
            for producer in flow.before[index][-1]:
                if producer[0] in plan.local_builds:
                    continue
                name = loaded_local(items, producer)
                if name is None:
                    copied = None
                    break
                copied.append(name)  # type: ignore[union-attr]
            stores.setdefault(item.arg, []).append(copied)
    names = set(stores)
    changed = True
    while changed:
        changed = False
        for name in list(names):
            if any(copied is None or not set(copied) <= names for copied in stores[name]):
                names.discard(name)
                changed = True
    return names


def _loops(items: list[Any]) -> list[tuple[int, int, str]]:
    """(first line, last line, kind) of each loop, from its backward jump."""
    labels = {id(item): index for index, item in enumerate(items) if isinstance(item, Label)}
    found = []
    for index, item in enumerate(items):
        if isinstance(item, Instr) and "BACKWARD" in item.name and isinstance(item.arg, Label):
            start = labels[id(item.arg)]
            header = next((items[j] for j in range(start, index) if isinstance(items[j], Instr)), None)
            kind = "for" if header is not None and header.name == "FOR_ITER" else "while"
            lines = [_line(items, j) for j in range(start, index + 1) if isinstance(items[j], Instr)]
            lines = [n for n in lines if n]
            if lines:
                # The loop's own line: a `while` condition sits at its top, the lowest line.
                found.append((min(lines), max(lines), kind))
    return found


def _line(items: list[Any], index: int) -> int | None:
    for item in items[index:]:
        if isinstance(item, Instr):
            return item.lineno
    return None


def _mapped_functional(items: list[Any], flow: Any, index: int, namespace: dict) -> str | None:
    """The name of the functional function that ``map(f, ...)`` at call ``index`` maps, if so."""
    call = items[index]
    if call.name != "CALL" or not isinstance(call.arg, int) or call.arg < 2:
        return None
    stack = flow.before[index]
    if len(stack) < call.arg:
        return None
    name, target = _callable(items, stack[-call.arg], namespace)
    return name if target is not None and is_functional(target) else None


def _callable(items: list[Any], producers: frozenset, namespace: dict) -> tuple[str, Any]:
    """A readable name for the callable, and the object it names now (or None)."""
    if len(producers) != 1:
        return "<expression>", None
    index, output = next(iter(producers))[:2]
    if index == "handler":
        return "<expression>", None
    instr = items[index]
    if instr.name == "LOAD_FAST_LOAD_FAST":  # 3.13: two locals, one per output
        return str(instr.arg[output]), None
    if instr.name == "STORE_FAST_LOAD_FAST":  # 3.13: stores the first, loads the second
        return str(instr.arg[1]), None
    name = instr.arg[-1] if isinstance(instr.arg, tuple) else instr.arg
    if instr.name in ("LOAD_GLOBAL", "LOAD_NAME"):
        if name in namespace:
            return name, namespace[name]
        return name, getattr(builtins, name, None)
    if instr.name in ("LOAD_ATTR", "LOAD_METHOD") and index > 0:
        base_name, base = _callable(items, frozenset({(index - 1, 0)}), namespace)
        if base is not None and isinstance(base, types.ModuleType):
            return f"{base_name}.{name}", getattr(base, name, None)
        return f"{base_name}.{name}", None
    if instr.name in ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF"):
        return str(name), None
    return "<expression>", None


def _render(fn: types.FunctionType, findings: list[Finding], loops: list[tuple[int, int, str]]) -> str:
    code = fn.__code__
    out = [f"{fn.__qualname__} ({code.co_filename}, line {code.co_firstlineno})"]
    findings = sorted({(f.line, f.text): f for f in findings if f.line}.values(), key=lambda f: f.line)
    loops = sorted(set(loops))

    def enclosing(line: int) -> tuple[int, int, str] | None:
        inside = [loop for loop in loops if loop[0] <= line <= loop[1]]
        return max(inside, key=lambda loop: loop[0]) if inside else None

    for finding in findings:
        text = f"  line {finding.line}: {finding.text}"
        loop = enclosing(finding.line) if finding.sync else None
        if loop is not None:
            text += (f", inside the `{loop[2]}` loop of line {loop[0]}, so its iterations "
                     f"run one after another")
        out.append(text)
    for first, last, kind in loops:
        inside = [f for f in findings if first <= f.line <= last]
        tasks = [f for f in inside if "is functional: a task" in f.text]
        syncs = [f for f in inside if f.sync]
        if tasks and not syncs:
            out.append(f"  loop of line {first} (`{kind}`): its functional calls run in parallel")
        elif tasks:
            where = ", ".join(str(f.line) for f in syncs)
            out.append(f"  loop of line {first} (`{kind}`): serialised by the sync point(s) on line {where}")
    if len(out) == 1:
        out.append("  no calls and no sync points")
    return "\n".join(out)
