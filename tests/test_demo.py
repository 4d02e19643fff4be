"""``examples/demo.py``, the README's first command, runs and reports consistently."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_and_its_worker_lines_add_up_to_the_run():
    env = dict(os.environ)
    env.pop("PYDRON_TX", None)  # the demo's promise: local cores, no configuration
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "demo.py")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "result:         [120, 240, 360, 480, 600, 720, 840, 960]" in out, out
    total = int(re.search(r"^tasks:\s+(\d+),", out, re.M).group(1))
    per_worker = [int(n) for n in re.findall(r"^  \S+: .*, (\d+) tasks, busy", out, re.M)]
    assert total == 8 and per_worker and sum(per_worker) == total, out
