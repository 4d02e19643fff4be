"""Load a script's definitions for ``python -m pydron explain script.py:fn`` without running its pipeline.

The file's top level runs as a module named ``__pydron_explain__`` (so an
``if __name__ == "__main__":`` block stays out), one top-level statement at a
time, with ``sys.argv == [path]``. A statement that calls a schedule function is stopped at that call, and
one that fails (or exits) is left out; either way the next statement runs, and
each one left out is named in the returned notes. The definitions explain
needs are ordinary statements and run as usual.
"""
from __future__ import annotations

import ast
import contextlib
import sys
import types
from collections.abc import Iterator

from pydron import scheduling

MODULE_NAME = "__pydron_explain__"


class _ScheduleCalled(BaseException):
    """Raised by a schedule call while a script is being loaded (BaseException: user code's
    ``except Exception`` must not swallow it)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@contextlib.contextmanager
def _schedule_calls_stopped() -> Iterator[None]:
    def stopped_run(rewritten, args, kwargs):  # type: ignore[no-untyped-def]
        raise _ScheduleCalled(rewritten.__qualname__)

    def stopped_generator(rewritten, args, kwargs):  # type: ignore[no-untyped-def]
        raise _ScheduleCalled(rewritten.__qualname__)
        yield  # never reached: makes this a generator function, as the one it replaces

    saved = scheduling._run, scheduling._run_generator
    scheduling._run, scheduling._run_generator = stopped_run, stopped_generator  # type: ignore[assignment]
    try:
        yield
    finally:
        scheduling._run, scheduling._run_generator = saved  # type: ignore[assignment]


def load(path: str) -> tuple[dict, list[str]]:
    """The namespace the script's top level builds, and a note per statement left out."""
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    tree = ast.parse(source, filename=path)  # a SyntaxError names the file and line
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = path
    namespace = module.__dict__
    notes: list[str] = []
    saved = sys.modules.get(MODULE_NAME)
    sys.modules[MODULE_NAME] = module  # for dataclasses, pickling by reference, ...
    saved_argv, sys.argv = sys.argv, [path]  # as if run with no arguments
    try:
        with _schedule_calls_stopped():
            for statement in tree.body:
                code = compile(ast.Module(body=[statement], type_ignores=[]), path, "exec")
                try:
                    exec(code, namespace)
                except _ScheduleCalled as call:
                    notes.append(f"{path}, line {statement.lineno}: not run, it calls the schedule "
                                 f"function {call.name}()")
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, then the next one
                    notes.append(f"{path}, line {statement.lineno}: not run, it raised "
                                 f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
        if saved is None:
            sys.modules.pop(MODULE_NAME, None)
        else:
            sys.modules[MODULE_NAME] = saved
    return namespace, notes
