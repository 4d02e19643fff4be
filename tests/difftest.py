"""Differential test harness for ``pydron.schedule``.

A differential test runs a plain function twice, once as it is and once as
``pydron.schedule(fn)``, and asserts that both runs are observably the same
(DESIGN.md section 1, "Equivalence"):

* the return value: ``==`` *and* ``type()``, recursively through lists, tuples,
  dicts, sets and plain objects (so a leaked future, or a tuple that became a
  list, fails);
* the exception: type, ``str(exc)`` and ``args``, the chain of ``__cause__`` /
  ``__context__`` exceptions, and the user's traceback lines (the line numbers
  of the traceback frames in the tested function's source file, consecutive
  repeats collapsed);
* the ordered side-effect log ``dhelpers.LOG`` (cleared before each run,
  copied after it), compared like values;
* the arguments after the run (each run gets its own ``copy.deepcopy`` of the
  arguments, so mutation of objects that came from outside is observable).

API
---
``outcome(fn, *args, **kwargs) -> Outcome``
    Run ``fn`` once and record what happened.
``assert_equivalent(fn, *args, **kwargs)``
    ``outcome(fn)`` vs ``outcome(pydron.schedule(fn))``; AssertionError with
    both outcomes on any difference.
``compare_outcomes(plain, sched) -> list[str]``
    The differences (empty if equivalent).
``CaseList``
    Registry of (function, args, kwargs) cases; ``@CASES(*args, **kwargs)``
    registers a function, ``CASES.params()`` gives ``pytest.param``\\ s with
    readable ids.

Switches (environment variables)
--------------------------------
``PYDRON_DIFFTEST_PLAIN=1``
    Replace ``pydron.schedule`` by the identity (``lambda f: f``).  Used to
    check that every case runs and that the harness itself compares correctly
    while ``pydron.schedule`` does not exist yet.  Every test then passes
    trivially: it proves nothing about pydron.
``PYDRON_DIFFTEST_NO_TRACEBACK=1``
    Do not compare the user's traceback lines (everything else still is).

``pydron.schedule`` is looked up lazily at test time (``import pydron;
pydron.schedule``), so this file imports fine before it exists.
"""
from __future__ import annotations

import copy
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import dhelpers

PLAIN = os.environ.get("PYDRON_DIFFTEST_PLAIN", "") not in ("", "0")
CHECK_TRACEBACK = os.environ.get("PYDRON_DIFFTEST_NO_TRACEBACK", "") in ("", "0")


def get_schedule() -> Callable[[Callable], Callable]:
    """``pydron.schedule``, or the identity under ``PYDRON_DIFFTEST_PLAIN=1``."""
    if PLAIN:
        return lambda f: f
    import pydron

    try:
        return pydron.schedule
    except (AttributeError, ModuleNotFoundError) as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name != "pydron.schedule":
            raise  # a real import error inside pydron: show it
        raise AssertionError(
            "pydron.schedule is not available yet; run with "
            "PYDRON_DIFFTEST_PLAIN=1 to check the cases against the identity"
        ) from None


# ---------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    value: Any = None
    exc_type: type | None = None
    exc_msg: str | None = None
    #: [(type, str)] of __cause__/__context__, innermost cause last
    exc_chain: list = field(default_factory=list)
    #: [(co_name, lineno)] of traceback frames in the tested function's file
    tb_lines: list = field(default_factory=list)
    log: list = field(default_factory=list)
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    exc: BaseException | None = None

    def describe(self) -> str:
        lines = []
        if self.exc_type is None:
            lines.append(f"  value:   {_safe_repr(self.value)}  ({type(self.value).__name__})")
        else:
            lines.append(f"  raised:  {self.exc_type.__name__}: {self.exc_msg}")
            if self.exc_chain:
                lines.append(f"  chain:   {[(t.__name__, m) for t, m in self.exc_chain]}")
            lines.append(f"  tb:      {self.tb_lines}")
        lines.append(f"  log:     {_safe_repr(self.log)}")
        if self.args or self.kwargs:
            lines.append(f"  args after run: {_safe_repr(self.args)} {_safe_repr(self.kwargs)}")
        return "\n".join(lines)


def _safe_repr(v) -> str:
    try:
        r = repr(v)
    except Exception as e:  # pragma: no cover - only for broken values
        r = f"<repr failed: {type(e).__name__}: {e}>"
    return r if len(r) < 2000 else r[:2000] + "..."


def _exc_chain(exc: BaseException) -> list:
    chain = []
    seen = {id(exc)}
    cur = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cur is not None and id(cur) not in seen and len(chain) < 10:
        seen.add(id(cur))
        chain.append((type(cur), str(cur)))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return chain


def _tb_lines(exc: BaseException, filename: str) -> list:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            out.append((code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _filename_of(fn) -> str | None:
    target = getattr(fn, "__wrapped__", fn)
    code = getattr(target, "__code__", None)
    return code.co_filename if code is not None else None


def outcome(fn, *args, **kwargs) -> Outcome:
    """Run ``fn(*args, **kwargs)`` once and record value/exception/log/args."""
    return _outcome(fn, args, kwargs, _filename_of(fn))


def _outcome(fn, args, kwargs, filename) -> Outcome:
    dhelpers.LOG.clear()
    out = Outcome(args=args, kwargs=kwargs)
    try:
        out.value = fn(*args, **kwargs)
    except Exception as exc:
        out.exc = exc
        out.exc_type = type(exc)
        out.exc_msg = str(exc)
        out.exc_chain = _exc_chain(exc)
        out.tb_lines = _tb_lines(exc, filename)
    out.log = list(dhelpers.LOG)
    dhelpers.LOG.clear()
    return out


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

_NO_DICT_RECURSION = (type, types.FunctionType, types.BuiltinFunctionType,
                      types.MethodType, types.ModuleType)


def deep_diff(a, b, path: str = "value", _seen=None) -> list[str]:
    """Differences between ``a`` (plain) and ``b`` (scheduled): type and ``==``,
    recursively through lists, tuples, dicts, sets, exceptions and the
    ``__dict__`` of plain objects."""
    if _seen is None:
        _seen = set()
    if type(a) is not type(b):
        return [f"{path}: type {type(a).__name__} != {type(b).__name__} "
                f"({_safe_repr(a)} vs {_safe_repr(b)})"]
    key = (id(a), id(b))
    if key in _seen:
        return []
    _seen.add(key)
    diffs: list[str] = []
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)} ({_safe_repr(a)} vs {_safe_repr(b)})"]
        for i, (x, y) in enumerate(zip(a, b)):
            diffs += deep_diff(x, y, f"{path}[{i}]", _seen)
    elif isinstance(a, dict):
        # key order is observable, so keys are compared pairwise in order
        if len(a) != len(b):
            return [f"{path}: keys {_safe_repr(list(a))} != {_safe_repr(list(b))}"]
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            diffs += deep_diff(ka, kb, f"{path}.key({ka!r})", _seen)
            diffs += deep_diff(va, vb, f"{path}[{ka!r}]", _seen)
    elif isinstance(a, (set, frozenset)):
        if len(a) != len(b):
            return [f"{path}: size {len(a)} != {len(b)} ({_safe_repr(a)} vs {_safe_repr(b)})"]
        b_by_value = {x: x for x in b}
        for x in a:
            if x not in b_by_value:
                diffs.append(f"{path}: element {x!r} missing ({_safe_repr(a)} vs {_safe_repr(b)})")
            else:
                diffs += deep_diff(x, b_by_value[x], f"{path}{{{x!r}}}", _seen)
    elif isinstance(a, BaseException):
        diffs += deep_diff(a.args, b.args, f"{path}.args", _seen)
    elif hasattr(a, "__dict__") and not isinstance(a, _NO_DICT_RECURSION):
        diffs += deep_diff(vars(a), vars(b), f"{path}.__dict__", _seen)
    if diffs:
        return diffs
    try:
        equal = a == b
        if not isinstance(equal, bool):
            equal = bool(equal)
    except Exception as e:
        return [f"{path}: == raised {type(e).__name__}: {e}"]
    if not equal:
        return [f"{path}: {_safe_repr(a)} != {_safe_repr(b)}"]
    return []


def compare_outcomes(plain: Outcome, sched: Outcome, check_traceback: bool | None = None) -> list[str]:
    """All observable differences between a plain and a scheduled outcome."""
    if check_traceback is None:
        check_traceback = CHECK_TRACEBACK
    diffs: list[str] = []
    if plain.exc_type is not sched.exc_type:
        diffs.append(f"exception type: {_name(plain.exc_type)} != {_name(sched.exc_type)}")
    elif plain.exc_type is not None:
        if plain.exc_msg != sched.exc_msg:
            diffs.append(f"exception message: {plain.exc_msg!r} != {sched.exc_msg!r}")
        pc = [(t.__name__, m) for t, m in plain.exc_chain]
        sc = [(t.__name__, m) for t, m in sched.exc_chain]
        if pc != sc:
            diffs.append(f"exception chain: {pc} != {sc}")
        diffs += deep_diff(plain.exc.args, sched.exc.args, "exception.args")
        if check_traceback and _tb_key(plain.tb_lines) != _tb_key(sched.tb_lines):
            diffs.append(f"traceback lines (function, line): {plain.tb_lines} != {sched.tb_lines}")
    if plain.exc_type is None and sched.exc_type is None:
        diffs += deep_diff(plain.value, sched.value, "value")
    if len(plain.log) != len(sched.log):
        diffs.append(f"log length {len(plain.log)} != {len(sched.log)}")
    diffs += deep_diff(plain.log, sched.log, "log")
    diffs += deep_diff(plain.args, sched.args, "args-after-run")
    diffs += deep_diff(plain.kwargs, sched.kwargs, "kwargs-after-run")
    return diffs


def _tb_key(tb_lines: list) -> list:
    """Line numbers of the user's frames, consecutive repeats collapsed: a
    comprehension or generator-expression frame on the same line as its caller
    does not count (pydron may run those differently), but every line does."""
    out: list = []
    for _name, line in tb_lines:
        if not out or out[-1] != line:
            out.append(line)
    return out


def _name(t) -> str:
    return "no exception" if t is None else t.__name__


def assert_equivalent(fn, *args, **kwargs) -> Outcome:
    """Assert ``fn`` and ``pydron.schedule(fn)`` behave the same on these arguments.

    Each run gets its own deep copy of the arguments.  Returns the plain outcome.
    """
    schedule = get_schedule()
    filename = _filename_of(fn)
    plain = _outcome(fn, copy.deepcopy(args), copy.deepcopy(kwargs), filename)
    scheduled_fn = schedule(fn)
    sched = _outcome(scheduled_fn, copy.deepcopy(args), copy.deepcopy(kwargs), filename)
    diffs = compare_outcomes(plain, sched)
    if diffs:
        name = getattr(fn, "__qualname__", repr(fn))
        msg = [f"{name}: scheduled run differs from the plain run"]
        msg += [f"  - {d}" for d in diffs]
        msg += ["plain:", plain.describe(), "scheduled:", sched.describe()]
        if sched.exc is not None and plain.exc_type is not sched.exc_type:
            import traceback
            msg.append("scheduled traceback:")
            msg.append("".join(traceback.format_exception(sched.exc)))
        raise AssertionError("\n".join(msg))
    return plain


# ---------------------------------------------------------------------------
# Case registry
# ---------------------------------------------------------------------------


@dataclass
class Case:
    fn: Callable
    args: tuple
    kwargs: dict

    @property
    def id(self) -> str:
        name = self.fn.__name__
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        if not parts:
            return name
        s = ",".join(parts).replace(", ", ",")
        if len(s) > 40:
            s = s[:37] + "..."
        return f"{name}({s})"


class CaseList(list):
    """``@CASES(*args, **kwargs)`` registers a plain function with those arguments
    (stack it for several argument sets).  The function is returned unchanged:
    the harness applies ``pydron.schedule`` itself."""

    def __call__(self, *args, **kwargs):
        def register(fn):
            self.append(Case(fn, args, kwargs))
            return fn

        return register

    def params(self):
        import pytest

        ids = [c.id for c in self]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate case ids: {sorted(dup)}")
        return [pytest.param(c.fn, c.args, c.kwargs, id=c.id) for c in self]

    def functions(self):
        return {c.fn for c in self}
