"""The run report: its model, its page in a real headless Chromium, and ``run --report``."""
from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import obshelpers as H
import pydron
from pydron.observe import graphdraw, timeline
from pydron.observe.events import EVENTS
from pydron.remote import pool as pool_module

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def own_pool(monkeypatch):
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    H.naps(2, 0.0)  # workers up
    yield
    pydron.shutdown()


@pytest.fixture
def chromium():
    """Debian's chromium (``.ci/run`` installs it): skipped where missing, a failure under CI."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is needed under CI (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return CHROMIUM


def _chromium(binary, tmp_path, *args, timeout=120):
    """Run headless chromium in its own session; nothing of it survives a timeout."""
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any helper process left in its session
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def _record(path):
    with pydron.report(path):
        assert H.chain_and_fan(4) == sum(2 * i for i in range(4))
        assert H.with_failure() == -1


def test_report_in_headless_chromium(own_pool, chromium, tmp_path):
    page = tmp_path / "run.html"
    _record(page)
    text = page.read_text()
    # Self-contained: nothing to fetch (the only URL is SVG's namespace name).
    assert not re.search(r"(src|href)\s*=", text)
    assert set(re.findall(r"https?://[^\"' ]+", text)) <= {"http://www.w3.org/2000/svg"}

    dom = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    bars = re.findall(r'<rect class="task (ok|failed|lost)"[^>]*data-name="([^"]+)"', dom)
    assert sorted(name for _, name in bars) == sorted(["double"] * 5 + ["nap"] * 4 + ["boom"])
    assert [status for status, name in bars if name == "boom"] == ["failed"]
    lanes = re.findall(r'<g class="lane worker-lane" data-worker="([^"]*)"', dom)
    assert lanes == [w.label for w in pydron.workers()]
    assert "<title>pydron run report</title>" in dom and 'id="graph-svg"' in dom

    ARTIFACTS.mkdir(exist_ok=True)
    version = "%d.%d" % sys.version_info[:2]
    shot = ARTIFACTS / f"report-py{version}.png"
    shot.unlink(missing_ok=True)
    _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1400,900", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 900)
    shutil.copy(page, ARTIFACTS / f"report-py{version}.html")
    print(f"report screenshot kept in {shot}")


def test_the_model_of_a_run(own_pool, tmp_path):
    records = EVENTS.watch()
    try:
        H.naps(6, 0.05)
        H.chain_and_fan(3)
    finally:
        EVENTS.unwatch()
    tl = timeline.build(list(records), records[-1][2])
    assert {lane.label for lane in tl.lanes} <= {w.label for w in pydron.workers()}
    naps = [b for b in tl.bars if b.name == "nap"]
    assert len(naps) == 9 and all(b.status == "ok" for b in tl.bars)
    # bars measure the time on the worker: 50 ms naps of naps(), 20 ms ones of chain_and_fan()
    assert all(0.045 < b.seconds < 0.5 for b in naps if b.line == 43), naps
    assert all(0.018 < b.seconds < 0.5 for b in naps if b.line == 49), naps
    assert {b.site for b in tl.bars} == {"obshelpers.py:43", "obshelpers.py:48", "obshelpers.py:49"}
    for lane in tl.lanes:  # one worker runs one task at a time
        mine = sorted((b for b in tl.bars if b.worker == lane.label), key=lambda b: b.start)
        assert all(a.end <= b.start + 1e-6 for a, b in zip(mine, mine[1:]))
    assert [r[0] for r in tl.runs] == [tl.runs[0][0], tl.runs[0][0] + 1]  # two top-level calls
    # chain_and_fan: each nap needed one double, done on some worker
    fed = [b for b in tl.bars if b.name == "nap" and b.inputs_from]
    labels = {w.label for w in pydron.workers()}
    assert len(fed) == 3, fed
    for bar in fed:  # small results travel back to the master and out again
        assert len(bar.inputs_from) == 1 and bar.inputs_from[0].endswith(" (via the master)"), bar
        assert bar.inputs_from[0].rsplit(" (", 1)[0] in labels
    nodes = [n for n in tl.nodes if n.run == tl.runs[1][0]]
    assert [len(n.inputs) for n in nodes] == [0, 0, 0, 1, 1, 1]
    assert graphdraw.layers(tl.nodes)[-3:] == [1, 1, 1]
    assert 1.0 < tl.speedup <= 2.05
    waits = [w for w in tl.waits if not w.at_return]
    assert waits == [] or all(w.file == H.__file__ for w in waits)


def test_report_is_written_when_the_block_raises(own_pool, tmp_path):
    page = tmp_path / "failed.html"
    with pytest.raises(ZeroDivisionError):
        with pydron.report(page):
            H.naps(2, 0.0)
            1 / 0
    assert page.exists() and (tmp_path / "failed.dot").exists()
    assert len(re.findall(r'<rect class="task ok"', page.read_text())) == 2


def test_bad_report_path_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"pydron.report: the report is an HTML file, got '.*run.txt'"):
        with pydron.report(tmp_path / "run.txt"):
            pass
    with pytest.raises(ValueError, match="no such directory"):
        with pydron.report(tmp_path / "nope" / "run.html"):
            pass


def test_dot_text_and_drawing(own_pool, tmp_path):
    page = tmp_path / "g.html"
    with pydron.report(page):
        H.chain_and_fan(3)
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph pydron {") and dot.count(" -> ") == 3
    assert len(re.findall(r"^  t\d+ \[label=", dot, re.M)) == 6
    text = page.read_text()
    drawn_by = re.search(r'<div id="graph" data-drawn-by="(\w+)">', text).group(1)
    assert drawn_by == ("graphviz" if shutil.which("dot") else "pydron")
    if drawn_by == "pydron":
        assert len(re.findall(r'<g class="node"', text)) == 6
        assert len(re.findall(r'<line class="edge"', text)) == 3


PIPELINE = """\
import pydron, time

@pydron.functional
def work(x):
    time.sleep(0.02)
    return x + 1

@pydron.schedule
def pipeline(n):
    out = [work(i) for i in range(n)]
    return sum(out)

print(pipeline(5))
"""


def test_cli_report(tmp_path):
    (tmp_path / "p.py").write_text(PIPELINE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYDRON_CONF", "PYDRON_PROGRESS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYDRON_TX"] = "2*popen"
    result = subprocess.run([sys.executable, "-m", "pydron", "run", "--report", "out.html", "p.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and result.stdout == "15\n", result.stderr
    text = (tmp_path / "out.html").read_text()
    assert len(re.findall(r'<rect class="task ok"[^>]*data-name="work" data-line="10"', text)) == 5
    assert len(re.findall(r'<g class="lane worker-lane"', text)) == 2
    bad = subprocess.run([sys.executable, "-m", "pydron", "run", "--report", "out.txt", "p.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--report 'out.txt'" in bad.stderr


def test_tasks_of_another_pool_finishing_meanwhile_do_not_mix_with_this_runs(own_pool):
    """An older pool (set aside, as tests and notebooks do) may still finish tasks while a
    report records; its tasks must not take the place of this run's (task ids collided)."""
    from pydron.config import GatewaySpec, local_python_spec
    from pydron.remote.pool import Pool
    from pydron.runtime.graph import Graph

    other = Pool([GatewaySpec("older", local_python_spec())])
    try:
        graph = Graph(lambda: other)
        # Task ids 1-4 of the older pool, finishing while this run records.
        late = [graph.submit(H.nap, (0.1 * k, k), {}) for k in range(1, 5)]
        records = EVENTS.watch()
        try:
            H.naps(6, 0.05)
            assert [f._pd_result() for f in late] == [1, 2, 3, 4]
        finally:
            EVENTS.unwatch()
        tl = timeline.build(list(records), records[-1][2])
        mine = [b for b in tl.bars if b.worker != "older"]
        assert len([b for b in mine if b.name == "nap"]) == 6, tl.bars
        assert all(b.status == "ok" and 0.045 < b.seconds < 0.5 for b in mine), mine
    finally:
        other.shutdown()


def test_records_name_graphs_by_a_number_no_later_graph_reuses():
    """Records named a run's graph by id(), which the next graph may get once the first
    is freed (seen on 3.13): two runs' calls then merged in the report."""
    from pydron.runtime.graph import Graph

    seen = set()
    for _ in range(50):
        graph = Graph(lambda: None)
        assert graph.number not in seen
        seen.add(graph.number)
        graph.close()
        del graph
