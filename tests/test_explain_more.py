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


SCRIPT = """\
import sys
import pydron

@pydron.functional
def f(x):
    return x + 1

@pydron.schedule
def pipeline(xs):
    print("the pipeline ran")
    out = []
    for x in xs:
        out.append(f(x))
    return out

result = pipeline([1, 2, 3])
count = int(sys.argv[1])

def later(xs):
    return [f(x) for x in xs]

if __name__ == "__main__":
    print("main block ran")
"""


def _explain(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYDRON_TX", "PYDRON_CONF")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYDRON_TX"] = "2*popen"
    return subprocess.run([sys.executable, "-m", "pydron", "explain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_explain_a_script_whose_top_level_calls_a_schedule_function(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    result = _explain("script.py:pipeline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "pipeline (script.py, line 8)",
        "  line 10: call to `print` (not functional): a sync point",
        "  line 13: `f` is functional: a task",
        "  line 13: `out.append` on a container built here: no sync point",
        "  loop of line 12 (`for`): its functional calls run in parallel",
    ]
    assert result.stderr.splitlines() == [
        "pydron: note: script.py, line 16: not run, it calls the schedule function pipeline()",
        "pydron: note: script.py, line 17: not run, it raised IndexError: list index out of range",
    ]
    # definitions after the statements left out are there too
    later = _explain("script.py:later", cwd=tmp_path)
    assert later.returncode == 0 and "`f` is functional: a task" in later.stdout, later.stderr


def test_explain_a_script_with_a_syntax_error_names_it(tmp_path):
    (tmp_path / "bad.py").write_text("def f(:\n    pass\n")
    result = _explain("bad.py:f", cwd=tmp_path)
    assert result.returncode == 2 and "cannot load bad.py" in result.stderr and "line 1" in result.stderr
