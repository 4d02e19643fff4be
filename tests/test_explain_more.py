"""``explain`` when a container built here is rebound, and ``explain file.py:fn`` on scripts that run."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import obshelpers as H
import pydron
from pydron.remote import pool as pool_module

REPO = Path(__file__).resolve().parent.parent


def rebound(xs):
    parts = []
    for x in xs:
        nxt = parts
        nxt.append(H.nap(0.3, x))
        parts = nxt
    return parts


def rebound_levels(xs):
    parts = []
    for x in xs:
        parts.append(H.nap(0.3, x))
    for _ in range(2):
        nxt = []
        for p in parts:
            nxt.append(H.double(p))
        parts = nxt
        parts.append(H.double(0))
    return parts


def _loop_lines(report):
    return [line.strip() for line in report.splitlines() if line.strip().startswith("loop of line")]


def test_rebound_container_is_still_built_here():
    report = pydron.explain(rebound)
    first = rebound.__code__.co_firstlineno
    assert f"line {first + 4}: `nxt.append` on a container built here: no sync point" in report, report
    assert _loop_lines(report) == [f"loop of line {first + 2} (`for`): its functional calls run in parallel"]


def test_rebound_in_an_outer_loop():
    report = pydron.explain(rebound_levels)
    first = rebound_levels.__code__.co_firstlineno
    assert f"line {first + 9}: `parts.append` on a container built here: no sync point" in report, report
    assert "sync point" not in report.replace("no sync point", ""), report
    assert all(line.endswith("its functional calls run in parallel") for line in _loop_lines(report))


@pytest.fixture
def own_pool(monkeypatch):
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield
    pydron.shutdown()


def test_what_explain_says_is_what_runs(own_pool):
    """The loop explain calls parallel does run in parallel: 4 naps of 0.3 s on 2 workers."""
    scheduled = pydron.schedule(rebound)
    assert scheduled([0, 1]) == [0, 1]  # workers up
    start = time.perf_counter()
    assert scheduled([0, 1, 2, 3]) == [0, 1, 2, 3]
    took = time.perf_counter() - start
    assert took < 1.0, f"{took:.2f} s: the loop ran one call at a time (1.2 s)"
    assert pydron.stats().speedup > 1.5
