"""More of `python -m pydron`: verbosity, progress, report, --version, -m, tracebacks, help."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

PIPELINE = """\
import sys, time
import pydron

@pydron.functional
def work(x):
    time.sleep(0.01)
    return x * x

@pydron.schedule
def pipeline(n):
    return [work(i) for i in range(n)]

print(sum(pipeline(int(sys.argv[1]) if len(sys.argv) > 1 else 6)))
"""


def pydron(*args, cwd, env_extra=None, timeout=120):
    """Run `python -m pydron ARGS` in a subprocess with this repository importable, 2 local workers."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYDRON_TX", "PYDRON_CONF", "PYDRON_PROGRESS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HOME"] = str(cwd)
    env["PYDRON_TX"] = "2*popen"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pydron", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_run_is_quiet_by_default(tmp_path):
    (tmp_path / "p.py").write_text(PIPELINE)
    result = pydron("run", "p.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "55\n" and result.stderr == ""


def test_run_v_logs_workers_at_info(tmp_path):
    (tmp_path / "p.py").write_text(PIPELINE)
    result = pydron("run", "-v", "p.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "55\n"
    lines = result.stderr.splitlines()
    started = [line for line in lines if " started (popen, host " in line]
    assert len(started) == 2 and all(line.startswith("pydron INFO ") for line in started), lines
    assert sum(" stopped" in line for line in lines) == 2, lines
    assert not any("DEBUG" in line for line in lines)


def test_run_vv_logs_every_task_at_debug(tmp_path):
    (tmp_path / "p.py").write_text(PIPELINE)
    result = pydron("run", "-vv", "p.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum("work() sent to" in line for line in lines) == 6, lines
    assert sum(" done on " in line for line in lines) == 6, lines
