"""The progress line: when it appears, what it says, where it goes, and that it costs nothing."""
from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import obshelpers as H
import pydron
from pydron.observe import progress as P
from pydron.remote import pool as pool_module

REPO = Path(__file__).resolve().parent.parent

LONG = """\
import time, pydron

@pydron.functional
def work(x):
    time.sleep(0.4)
    return x

@pydron.schedule
def pipeline(n):
    return [work(i) for i in range(n)]

print(sum(pipeline(8)))
"""


@pytest.fixture
def own_pool(monkeypatch):
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.delenv("PYDRON_PROGRESS", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield
    pydron.shutdown()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_call_shows_the_line_then_one_summary(own_pool, monkeypatch):
    monkeypatch.setattr(P, "SHOW_AFTER", 0.2)
    H.naps(2, 0.0)  # workers up (while they start, the line says so instead)
    out = FakeTerminal()
    with pydron.progress(stream=out):
        assert H.naps(6, 0.25) == list(range(6))
    text = out.getvalue()
    frames = text.split("\r")
    drawn = [f for f in frames if f.startswith("pydron ") and f.endswith("\x1b[K")]
    assert drawn, repr(text)
    first = drawn[0]
    assert "/6 tasks done, running " in first and "(per worker)" in first and first.count(" s") >= 1
    # running per worker: two workers, each running at most its window of tasks
    counts = first.split("running ")[1].split(" (per worker)")[0].split()
    assert len(counts) == 2 and all(c.isdigit() for c in counts)
    assert text.endswith("\n") and text.count("\n") == 1
    last = frames[-1]
    assert last.startswith("\x1b[Kpydron: 6 tasks done in ") and " on 2 workers " in last, repr(last)


def test_a_short_call_shows_nothing(own_pool):
    out = FakeTerminal()
    with pydron.progress(stream=out):
        assert H.naps(2, 0.01) == [0, 1]
    assert out.getvalue() == ""


def test_progress_false_hides_it_inside(own_pool, monkeypatch):
    monkeypatch.setattr(P, "SHOW_AFTER", 0.05)
    out = FakeTerminal()
    with pydron.progress(stream=out), pydron.progress(False):
        H.naps(2, 0.3)
    assert out.getvalue() == ""


def test_not_a_terminal_gets_plain_lines(own_pool, monkeypatch):
    monkeypatch.setattr(P, "SHOW_AFTER", 0.1)
    out = io.StringIO()
    H.naps(2, 0.0)  # workers up
    with pydron.progress(stream=out):
        H.with_failure()  # short: no line
        H.naps(4, 0.3)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0].startswith("pydron ") and "/4 tasks done" in lines[0], lines
    assert lines[-1].startswith("pydron: 4 tasks done in "), lines
    assert len(lines) == 2  # one line in 5 s, then the summary


def test_while_the_pool_starts(monkeypatch):
    monkeypatch.setattr(pool_module, "_pool", None)
    run = P.RunStats(1, time.perf_counter() - 1.2, issued=3)
    assert P.line(run, run.started + 1.25) == "pydron 0/3 tasks done, starting workers, 1.2 s"


def test_failures_and_retries_are_shown(own_pool):
    H.naps(2, 0.0)  # workers up
    run = P.RunStats(1, time.perf_counter() - 2.5, issued=10, done=4, failures=2, retries=1)
    text = P.line(run, time.perf_counter())
    assert text.startswith("pydron 4/10 tasks done, running ") and "2 failed, 1 retried, 2.5 s" in text
    narrow = P.line(run, time.perf_counter(), width=60)
    assert len(narrow) <= 60 and narrow.startswith("pydron 4/10 tasks done, ")
    run.ended = run.started + 3.0
    run.busy = {"a": 2.0, "b": 3.5}
    run.done = 10
    assert P.summary(run) == ("pydron: 10 tasks done in 3.0 s on 2 workers (5.5 s of task time), "
                              "2 failed, 1 retried")


def _run_in_terminal(args, env, timeout=60.0):
    """Run ``args`` with stdout and stderr on a new pseudo-terminal; return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYDRON_PROGRESS", "PYDRON_CONF")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYDRON_TX"] = "2*popen"
    env.update(extra)
    return env


def test_on_a_real_terminal_by_default(tmp_path):
    (tmp_path / "long.py").write_text(LONG)
    code, text = _run_in_terminal([sys.executable, str(tmp_path / "long.py")], _env())
    assert code == 0, text
    assert "\rpydron " in text and "tasks done, running " in text, repr(text)
    assert "pydron: 8 tasks done in " in text, repr(text)


def test_pydron_progress_0_turns_it_off_on_a_terminal(tmp_path):
    (tmp_path / "long.py").write_text(LONG)
    code, text = _run_in_terminal([sys.executable, str(tmp_path / "long.py")], _env(PYDRON_PROGRESS="0"))
    assert code == 0, text
    assert "pydron" not in text and text.strip() == "28", repr(text)


def test_pydron_progress_1_and_cli_flag_turn_it_on_anywhere(tmp_path):
    (tmp_path / "long.py").write_text(LONG)
    for args, extra in (([str(tmp_path / "long.py")], {"PYDRON_PROGRESS": "1"}),
                        (["-m", "pydron", "run", "--progress", str(tmp_path / "long.py")], {})):
        result = subprocess.run([sys.executable, *args], env=_env(**extra), capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0 and result.stdout == "28\n", result.stderr
        lines = result.stderr.splitlines()
        assert lines and lines[0].startswith("pydron ") and "tasks done, running" in lines[0], lines
        assert lines[-1].startswith("pydron: 8 tasks done in "), lines
