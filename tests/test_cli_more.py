"""More of `python -m pydron`: verbosity, progress, report, --version, -m, tracebacks, help."""
from __future__ import annotations

import os
import re
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


def test_version_is_the_package_metadata(tmp_path):
    import importlib.metadata

    import pydron

    expected = importlib.metadata.version("pydron")
    assert pydron.__version__ == expected
    result = pydron_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == f"pydron {expected}\n", result


def pydron_cli(*args, cwd):
    return pydron(*args, cwd=cwd)


def test_bare_command_prints_help_and_exits_2(tmp_path):
    result = pydron(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: pydron" in result.stdout and "run" in result.stdout and "explain" in result.stdout


def test_run_without_a_target_names_both_forms(tmp_path):
    result = pydron("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "run SCRIPT [ARGS]" in result.stderr and "run -m MODULE [ARGS]" in result.stderr
    result = pydron("run", "-m", cwd=tmp_path)
    assert result.returncode == 2 and "expected a module name" in result.stderr
    result = pydron("run", "-m", "no_such_module_xyz", cwd=tmp_path)
    assert result.returncode == 2 and "no module named 'no_such_module_xyz'" in result.stderr


def test_run_m_module_with_arguments(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(
        "import sys, json\n" + PIPELINE.replace(
            "print(sum(pipeline(int(sys.argv[1]) if len(sys.argv) > 1 else 6)))",
            "print(json.dumps([__name__, sys.argv[1:], sum(pipeline(int(sys.argv[1])))]))"))
    result = pydron("run", "-m", "mypkg.job", "4", "--flag", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '["__main__", ["4", "--flag", "-v"], 14]\n'
    assert result.stderr == ""  # -v after the module belongs to the module


FAILING = """\
import pydron

@pydron.functional
def crunch(x):
    return 1 / x

@pydron.schedule
def pipeline(xs):
    return [crunch(x) for x in xs]

def main():
    print(pipeline([1, 0]))

main()
"""


def _frames(stderr, drop_pydron=False):
    """The frames of the traceback (not of the worker's, which is a note after it)."""
    text = stderr.split("Remote traceback")[0]
    frames = [line.strip() for line in text.splitlines() if line.strip().startswith("File ")]
    pydron_dir = str(REPO / "pydron")
    frames = [f for f in frames if not (drop_pydron and pydron_dir in f)]
    # the file's name as given on the command line (`python` itself makes it absolute)
    return [re.sub(r'File "[^"]*/([^/"]+)"', r'File "\1"', f) for f in frames]


def test_run_traceback_shows_only_the_script(tmp_path):
    (tmp_path / "fail.py").write_text(FAILING)
    plain = subprocess.run([sys.executable, "fail.py"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "PYDRON_TX": "2*popen"})
    for args in (("run", "fail.py"), ("run", "--report", "r.html", "fail.py")):
        result = pydron(*args, cwd=tmp_path)
        assert result.returncode == 1
        frames = _frames(result.stderr)
        assert frames and all("fail.py" in frame for frame in frames), result.stderr
        # what `python fail.py` shows, without pydron's own frames
        assert frames == _frames(plain.stderr, drop_pydron=True) and len(frames) >= 3, result.stderr
        assert "ZeroDivisionError: division by zero" in result.stderr
        assert "runpy" not in result.stderr and "cli.py" not in result.stderr


def test_run_m_traceback_shows_only_the_module(tmp_path):
    (tmp_path / "failmod.py").write_text(FAILING)
    result = pydron("run", "-m", "failmod", cwd=tmp_path)
    assert result.returncode == 1
    frames = _frames(result.stderr)
    assert frames and all("failmod.py" in frame for frame in frames), result.stderr
    assert "runpy" not in result.stderr and "<frozen" not in result.stderr
