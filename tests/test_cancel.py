"""A failure is raised as soon as the sequential run would raise it, and what the
sequential run never runs is stopped: cancelled calls, Ctrl-C, per-call timeouts.

Real popen workers (a pool of two of this module's own). Whether a cancelled
task went on running is read from the marker files the tasks write
(tests/chelpers.py), never from the pool's own bookkeeping.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import chelpers as C
import pydron
from pydron.remote import pool as pool_module

TASK_SECONDS = 3.0


@pytest.fixture(autouse=True)
def own_pool(monkeypatch):
    """A fresh process-wide pool of 2 popen workers for each test."""
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.delenv("PYDRON_TIMEOUT", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    warm()
    yield pool_module.get_pool()
    pydron.shutdown()


@pydron.schedule
def warm():
    return [C.inc(i) for i in range(4)]


def _files(directory, prefix):
    return sorted(name for name in os.listdir(directory) if name.startswith(prefix))


def _wait_for_files(directory, prefix, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(_files(directory, prefix)) < count:
        assert time.monotonic() < deadline, f"{count} {prefix}* files did not appear"
        time.sleep(0.02)


@pydron.schedule
def first_fails(directory):
    out = [C.fail_after(directory, 0.2, "the first call failed")]
    for k in range(7):
        out.append(C.sleep_marked(directory, k, TASK_SECONDS))
    return out


def test_failure_raised_when_earlier_calls_are_done_and_later_ones_stopped(tmp_path, caplog):
    caplog.set_level("INFO", logger="pydron")
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    with pytest.raises(ValueError) as plain:
        first_fails.__wrapped__(str(plain_dir))  # the plain run stops at the first call
    start = time.monotonic()
    with pytest.raises(ValueError, match="the first call failed") as caught:
        first_fails(str(tmp_path))
    took = time.monotonic() - start
    assert took < 1.0, f"the failure after 0.2 s was raised after {took:.2f} s"
    assert str(caught.value) == str(plain.value)
    # The traceback ends at the user's call, as in the plain run.
    assert [entry.name for entry in caught.traceback][-1:] == ["first_fails"]
    # The second worker had started a later call: it was interrupted, and no
    # queued call started afterwards.
    time.sleep(TASK_SECONDS + 0.5)
    assert _files(tmp_path, "finished-") == []
    # The failing one, and at most one more per worker: the one running on the
    # other worker, and one sent to the failing call's worker as it freed up.
    assert len(_files(tmp_path, "started-")) <= 3
    cancelled = [r.getMessage() for r in caplog.records if "cancelled" in r.getMessage()]
    assert any("dropped from the queue" in m for m in cancelled), cancelled
    assert any("interrupted on worker" in m for m in cancelled), cancelled
    # The next call starts on an idle pool, on both workers.
    start = time.monotonic()
    assert warm() == [1, 2, 3, 4]
    assert time.monotonic() - start < 1.0


@pydron.schedule
def caught_then_more(directory):
    try:
        xs = [C.fail_after(directory, 0.2, "early")]
        xs += [C.sleep_marked(directory, k, TASK_SECONDS) for k in range(3)]
        total = sum(xs)
    except ValueError as exc:
        total = str(exc)
    return total, [C.inc(i) for i in range(3)]


def test_handler_sees_the_failure_early_and_the_run_goes_on(tmp_path):
    start = time.monotonic()
    assert caught_then_more(str(tmp_path)) == ("early", [1, 2, 3])
    assert time.monotonic() - start < 1.5
    time.sleep(TASK_SECONDS)
    assert _files(tmp_path, "finished-") == []


@pydron.schedule
def long_calls(directory, n):
    return [C.sleep_marked(directory, k, TASK_SECONDS) for k in range(n)]


def test_keyboard_interrupt_stops_every_task_and_the_pool_is_idle_after(tmp_path):
    main = threading.main_thread().ident

    def interrupt():
        _wait_for_files(tmp_path, "started-", 2)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        long_calls(str(tmp_path), 6)
    assert time.monotonic() - start < 2.0
    start = time.monotonic()
    assert warm() == [1, 2, 3, 4]
    assert time.monotonic() - start < 1.0, "the next call waited for abandoned work"
    time.sleep(TASK_SECONDS)
    assert _files(tmp_path, "finished-") == []
    assert len(_files(tmp_path, "started-")) == 2


@pydron.schedule
def stubborn_after_failure(directory):
    out = [C.fail_after(directory, 0.3, "boom")]
    out.append(C.stubborn(directory, 0, 30))
    return out


def test_a_task_that_ignores_the_interrupt_has_its_worker_replaced(tmp_path, own_pool, monkeypatch):
    monkeypatch.setattr(pool_module, "CANCEL_GRACE", 0.5)
    before = {w.info["pid"] for w in own_pool.workers}
    with pytest.raises(ValueError, match="boom"):
        stubborn_after_failure(str(tmp_path))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [w for w in own_pool.workers if w.alive]
        if len(alive) == 2 and {w.info["pid"] for w in alive} != before:
            break
        time.sleep(0.05)
    alive = [w for w in own_pool.workers if w.alive]
    assert len(alive) == 2 and {w.info["pid"] for w in alive} != before, own_pool.workers
    assert warm() == [1, 2, 3, 4]
    assert _files(tmp_path, "finished-") == []


@pydron.schedule
def times_out():
    return C.too_slow(10)


def test_timeout_on_the_decorator_raises_timeout_error_naming_the_call():
    start = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        times_out()
    took = time.monotonic() - start
    assert took < 2.0, took
    message = str(caught.value)
    assert "too_slow()" in message and "timeout of 0.5 s" in message, message
    assert f"{__file__}, line" in message, message
    assert warm() == [1, 2, 3, 4]


@pydron.schedule
def plain_slow(seconds):
    return [C.plain_sleep(seconds), C.inc(1)]


def test_timeout_from_the_environment_applies_to_every_call(monkeypatch):
    pydron.shutdown()
    monkeypatch.setenv("PYDRON_TIMEOUT", "0.5")
    monkeypatch.setattr(pool_module, "_pool", None)
    assert plain_slow(0.05) == [0.05, 2]
    with pytest.raises(TimeoutError, match=r"plain_sleep\(\).*timeout of 0.5 s"):
        plain_slow(10)


def test_bad_timeouts_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="timeout=.*positive number.*-1"):
        pydron.functional(timeout=-1)
    monkeypatch.setenv("PYDRON_TIMEOUT", "soon")
    from pydron.config import timeout
    with pytest.raises(pydron.ConfigError, match="PYDRON_TIMEOUT.*'soon'"):
        timeout()
