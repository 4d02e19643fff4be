"""``benchmarks/startup.py --quick`` and ``benchmarks/dataplane.py --quick`` run and
give correct results. Only correctness is asserted, never a timing."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, tmp_path):
    out = tmp_path / "figures.json"
    env = dict(os.environ)
    env.pop("PYDRON_TX", None)  # each benchmark sets its own
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout, json.loads(out.read_text())


def test_startup_quick(tmp_path):
    stdout, data = _run("startup.py", tmp_path)
    assert "| first call, functions in `__main__`, 2 workers |" in stdout
    for case in ("main", "module"):
        figures = data[case]
        # every step was measured, and none is longer than the call it is part of
        assert 0 < figures["process"] <= figures["pool"] <= figures["first"], figures
        assert 0 < figures["second"] < figures["first"], figures
    assert 0.6 <= data["burst"]["burst"], data["burst"]  # 8 x 0.3 s on 4 workers: two rounds at least
    assert set(data["peers"]) == {"fork", "forkserver", "spawn", "execnet"}


def test_dataplane_quick(tmp_path):
    stdout, data = _run("dataplane.py", tmp_path)
    assert data["wrong"] == []
    rows = {row["row"].split(",")[0]: row for row in data["rows"]}
    assert rows["3-stage pipeline"]["through_master_fraction"] < 0.01
    if "numpy" in rows:  # numpy installed
        assert rows["numpy"]["plain_kept_memory_s"] > 0
        assert "the plain run with the allocator setting" in stdout
