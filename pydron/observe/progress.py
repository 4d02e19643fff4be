"""The progress line: one line on stderr, redrawn in place while a schedule call runs.

It appears once a top-level call has run for ``SHOW_AFTER`` seconds and gives
way to one summary line when the call returns. A small daemon thread draws it
about seven times a second from the recorder's counters, so it costs the
tasks nothing. It is on when stderr is a terminal, unless ``PYDRON_PROGRESS=0``;
``PYDRON_PROGRESS=1``, ``python -m pydron run --progress`` and
``with pydron.progress():`` turn it on anywhere (where stderr is not a
terminal, a plain line is written every ``PLAIN_EVERY`` seconds instead).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from pydron.observe.events import EVENTS, RunStats

ENV_VAR = "PYDRON_PROGRESS"
SHOW_AFTER = 1.0  # seconds a call runs before the line appears
EVERY = 0.15  # seconds between redraws on a terminal
PLAIN_EVERY = 5.0  # seconds between lines where stderr is not a terminal

_forced: list[tuple[bool, TextIO | None]] = []  # pydron.progress() blocks, innermost last
_cli: bool | None = None  # python -m pydron run --progress


def set_default(enabled: bool | None) -> None:
    """On (True), off (False) or decided by PYDRON_PROGRESS and the terminal (None)."""
    global _cli
    _cli = enabled


@contextlib.contextmanager
def progress(enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """Show (or, with ``enabled=False``, hide) the progress line of schedule calls made inside.

    ``stream`` is where it goes (default: ``sys.stderr`` at the time of each call).
    """
    _forced.append((enabled, stream))
    try:
        yield
    finally:
        _forced.remove((enabled, stream))


def _stream() -> TextIO | None:
    """Where the line goes for a call starting now, or None when it is off."""
    if _forced:
        enabled, stream = _forced[-1]
        return (stream or sys.stderr) if enabled else None
    if _cli is not None:
        return sys.stderr if _cli else None
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting in ("0", "1"):
        return sys.stderr if setting == "1" else None
    return sys.stderr if _isatty(sys.stderr) else None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def line(run: RunStats, now: float, width: int = 200) -> str:
    """The progress text of ``run`` at ``now`` (fits in ``width`` columns)."""
    from pydron.observe.status import workers

    running = [w.running for w in workers() if w.alive]
    parts = [f"pydron {run.done}/{run.issued} tasks done"]
    if running:
        parts.append("running " + " ".join(map(str, running)) + " (per worker)")
    else:
        parts.append("starting workers")
    if run.failures:
        parts.append(f"{run.failures} failed")
    if run.retries:
        parts.append(f"{run.retries} retried")
    parts.append(f"{now - run.started:.1f} s")
    text = ", ".join(parts)
    if len(text) > width and running:
        parts[1] = f"{sum(running)} running on {len(running)} workers"
        text = ", ".join(parts)
    return text[:width]


def summary(run: RunStats) -> str:
    """The line left behind when a call that showed progress returns."""
    elapsed = (run.ended or time.perf_counter()) - run.started
    extra = [f"{run.failures} failed"] if run.failures else []
    extra += [f"{run.retries} retried"] if run.retries else []
    busy = sum(run.busy.values())
    text = (f"pydron: {run.done} tasks done in {elapsed:.1f} s on {len(run.busy)} workers "
            f"({busy:.1f} s of task time)")
    return text + (", " + ", ".join(extra) if extra else "")


class Display:
    """Draws the line of the current top-level call from a daemon thread (one per process)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._run: RunStats | None = None
        self._stream: TextIO | None = None
        self._tty = False
        self._shown = False
        self._last = 0.0
        self._thread: threading.Thread | None = None

    def run_began(self, run: RunStats) -> None:
        stream = _stream()
        if stream is None:
            return
        with self._cond:
            self._run, self._stream, self._shown = run, stream, False
            self._tty = _isatty(stream)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pydron-progress", daemon=True)
                self._thread.start()
            self._cond.notify()

    def run_ended(self, run: RunStats) -> None:
        with self._cond:
            if self._run is not run:
                return
            stream, shown, tty = self._stream, self._shown, self._tty
            self._run = self._stream = None
            if shown and stream is not None:
                self._write(stream, ("\r\x1b[K" if tty else "") + summary(run) + "\n")

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._run is None:
                    self._cond.wait()
                self._cond.wait(EVERY)
                run, stream = self._run, self._stream
                if run is None or stream is None:
                    continue
                now = time.perf_counter()
                if now - run.started < SHOW_AFTER:
                    continue
                if self._tty:
                    width = shutil.get_terminal_size((100, 24)).columns - 1
                    self._write(stream, "\r" + line(run, now, width) + "\x1b[K")
                elif not self._shown or now - self._last >= PLAIN_EVERY:
                    self._write(stream, line(run, now) + "\n")
                else:
                    continue
                self._shown, self._last = True, now

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # the stream was closed under us
            pass


DISPLAY = Display()
EVENTS.listeners.append(DISPLAY)
