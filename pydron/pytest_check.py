"""`pytest --pydron=sequential|check`: how a top-level schedule call runs inside a test.

``sequential`` runs the plain function. ``check`` runs it scheduled, then plainly on deep
copies of the arguments, and fails the test (``PydronCheckError``) when the two differ in
value, exception (type and message), what they printed, or the arguments afterwards.
Either is installed as ``pydron.scheduling.top_level_runner`` by the plugin.
"""
from __future__ import annotations

import copy
import inspect
import reprlib
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MODES = ("parallel", "sequential", "check")


class PydronCheckError(AssertionError):
    """A schedule call gave a different outcome scheduled than plainly (``--pydron=check``)."""


class PydronCheckWarning(UserWarning):
    """A schedule call could not be checked (its arguments cannot be copied)."""


class Counts:
    """Schedule calls compared, and those that differed, in this process."""

    checked = 0
    differed = 0


_plain = threading.local()  # .depth > 0 while a check runs the plain function on this thread


def run_sequential(fn: Callable[..., Any], run_scheduled: Callable[..., Any],
                   args: tuple, kwargs: dict) -> Any:
    """The plain function, as if it had no ``@schedule``."""
    __tracebackhide__ = True
    return fn(*args, **kwargs)


def run_check(fn: Callable[..., Any], run_scheduled: Callable[..., Any],
              args: tuple, kwargs: dict) -> Any:
    """Scheduled, then plainly; the scheduled outcome if both agree, else PydronCheckError.

    Calls made while the plain run is going on run plainly, once; schedule generators
    run scheduled, once (their consumer drives them, so they cannot be run twice).
    """
    __tracebackhide__ = True
    if getattr(_plain, "depth", 0):
        return fn(*args, **kwargs)
    if inspect.isgeneratorfunction(fn):
        return run_scheduled(args, kwargs)
    try:
        plain_args, plain_kwargs = copy.deepcopy((args, kwargs))
    except Exception as exc:  # noqa: BLE001 - e.g. a lock or an open file among the arguments
        warnings.warn(PydronCheckWarning(
            f"pydron check: {_name(fn)}() not checked, its arguments cannot be copied: {exc!r}"),
            stacklevel=3)
        return run_scheduled(args, kwargs)
    with _recording() as scheduled_out:
        scheduled = _outcome(lambda: run_scheduled(args, kwargs))
    _plain.depth = getattr(_plain, "depth", 0) + 1
    try:
        with _recording() as plain_out:
            plain = _outcome(lambda: fn(*plain_args, **plain_kwargs))
    finally:
        _plain.depth -= 1
    Counts.checked += 1
    differences = _differences(scheduled, plain)
    differences += _compare("printed to stdout", scheduled_out[0], plain_out[0])
    differences += _compare("printed to stderr", scheduled_out[1], plain_out[1])
    differences += _compare("arguments afterwards", (args, kwargs), (plain_args, plain_kwargs))
    value, exception = scheduled
    if differences:
        Counts.differed += 1
        raise PydronCheckError(
            f"pydron check: {_name(fn)}() differs between the scheduled and the plain run:\n"
            + "\n".join(f"  {line}" for line in differences)) from exception
    if exception is not None:
        raise exception
    return value


def _outcome(call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return call(), None
    except Exception as exc:  # noqa: BLE001 - compared, then raised again
        return None, exc


def _differences(scheduled: tuple[Any, BaseException | None],
                 plain: tuple[Any, BaseException | None]) -> list[str]:
    (s_value, s_exc), (p_value, p_exc) = scheduled, plain
    if s_exc is None and p_exc is None:
        return _compare("return value", s_value, p_value)
    if s_exc is not None and p_exc is not None:
        if type(s_exc) is not type(p_exc) or str(s_exc) != str(p_exc):
            return [f"exception: scheduled {_show_exc(s_exc)}, plain {_show_exc(p_exc)}"]
        return []
    if s_exc is not None:
        return [f"outcome: scheduled raised {_show_exc(s_exc)}, plain returned {_show(p_value)}"]
    return [f"outcome: scheduled returned {_show(s_value)}, plain raised {_show_exc(p_exc)}"]


def _compare(what: str, scheduled: Any, plain: Any) -> list[str]:
    """One line if the two differ (by ==; by repr where == fails or is not a truth value)."""
    try:
        same = bool(scheduled == plain)
    except Exception:  # noqa: BLE001 - e.g. arrays, whose == is elementwise
        same = repr(scheduled) == repr(plain)
    if same:
        return []
    return [f"{what}: scheduled {_show(scheduled)}, plain {_show(plain)}"]


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 12


def _show(value: Any) -> str:
    return _repr.repr(value)


def _show_exc(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}({_show(str(exc))})"


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


class _Tee:
    """A text stream that records what is written and passes it on to the stream it replaces."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.target.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


@contextmanager
def _recording() -> Iterator[list[str]]:
    """Record sys.stdout and sys.stderr (including what workers print, which the pool
    writes there) while the block runs; yields [stdout, stderr], filled at the end."""
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    result = ["", ""]
    try:
        yield result
    finally:
        sys.stdout, sys.stderr = saved
        result[0], result[1] = "".join(out.parts), "".join(err.parts)
