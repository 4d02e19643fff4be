"""Tests for `python -m pydron`: the `run` subcommand and its error handling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pydron import config
from pydron.cli import main

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """\
import json, os, sys
print(json.dumps({"argv": sys.argv, "tx": os.environ.get("PYDRON_TX"), "name": __name__}))
"""


def pydron(*args, cwd):
    """Run `python -m pydron ARGS` in a subprocess with an empty home and this repo importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYDRON_TX", "PYDRON_CONF")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HOME"] = str(cwd)
    return subprocess.run(
        [sys.executable, "-m", "pydron", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


def test_run_script_with_tx(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    result = pydron("run", "--tx", "2*popen", "--tx", "popen", "script.py", "a", "-b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "argv": ["script.py", "a", "-b"], "tx": "2*popen;popen", "name": "__main__"}


def test_bad_spec_exits_2_naming_it(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    result = pydron("run", "--tx", "popen", "--tx", "x*popen", "script.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "'x*popen'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_no_arguments_prints_help(tmp_path):
    result = pydron(cwd=tmp_path)
    assert result.returncode == 2  # a usage error (issue 17), with the help on stdout
    assert "usage:" in result.stdout and "run" in result.stdout


# In-process: faster, and checks main() returns an exit code.


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    for name in ("PYDRON_TX", "PYDRON_CONF"):
        monkeypatch.setenv(name, "")  # recorded, so main()'s PYDRON_TX is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc-pydron.conf")
    return tmp_path


def test_main_runs_script_and_restores_argv(clean_env, capsys):
    (clean_env / "script.py").write_text(SCRIPT)
    argv = sys.argv[:]
    assert main(["run", "--tx", "3*popen", "script.py", "x"]) == 0
    assert json.loads(capsys.readouterr().out)["argv"] == ["script.py", "x"]
    assert os.environ["PYDRON_TX"] == "3*popen"
    assert sys.argv == argv


def test_main_reports_bad_config_file(clean_env, capsys):
    (clean_env / "script.py").write_text(SCRIPT)
    (clean_env / "pydron.conf").write_text('{"workers": [{"type": "multicore", "cores": 0}]}')
    (clean_env / "pydron.conf").chmod(0o644)  # whatever the umask: group-writable is refused
    assert main(["run", "script.py"]) == 2
    err = capsys.readouterr().err
    assert "pydron.conf" in err and "workers[0].cores" in err


def test_main_missing_script(clean_env, capsys):
    assert main(["run", "nope.py"]) == 2
    assert "nope.py" in capsys.readouterr().err


def test_script_exit_code_propagates(clean_env):
    (clean_env / "script.py").write_text("import sys; sys.exit(3)")
    with pytest.raises(SystemExit) as info:
        main(["run", "script.py"])
    assert info.value.code == 3


TIMEOUT_SCRIPT = """\
import time
import pydron

@pydron.functional
def nap(seconds):
    time.sleep(seconds)
    return seconds

@pydron.schedule
def main():
    return nap(30)

main()
"""


def test_run_timeout_stops_a_long_call_with_timeout_error(tmp_path):
    (tmp_path / "script.py").write_text(TIMEOUT_SCRIPT)
    result = pydron("run", "--tx", "popen", "--timeout", "0.5", "script.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "TimeoutError: nap() (called at" in result.stderr, result.stderr
    assert "timeout of 0.5 s" in result.stderr


def test_run_bad_timeout_exits_2_naming_the_option(tmp_path):
    (tmp_path / "script.py").write_text(TIMEOUT_SCRIPT)
    result = pydron("run", "--timeout", "-1", "script.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "--timeout: expected a positive number of seconds" in result.stderr


# socket= specs (plain TCP, no authentication) need PYDRON_INSECURE=1.


def test_socket_tx_is_refused_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv("PYDRON_INSECURE", raising=False)
    (tmp_path / "script.py").write_text(SCRIPT)
    result = pydron("run", "--tx", "popen", "--tx", "socket=127.0.0.1:8888", "script.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "--tx 'socket=127.0.0.1:8888': refused: " in result.stderr
    assert "without authentication" in result.stderr and "PYDRON_INSECURE=1" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_socket_tx_with_pydron_insecure_runs_and_warns_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDRON_INSECURE", "1")
    (tmp_path / "script.py").write_text(SCRIPT)  # starts no worker: nothing connects
    result = pydron("run", "--tx", "2*socket=127.0.0.1:8888", "script.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tx"] == "2*socket=127.0.0.1:8888"
    assert result.stderr.count("InsecureGatewayWarning: worker spec") == 1, result.stderr
    assert "'2*socket=127.0.0.1:8888'" in result.stderr and "without authentication" in result.stderr
