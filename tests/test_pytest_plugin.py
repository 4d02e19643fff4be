"""The pytest plugin (pydron/pytest_plugin.py) in real pytest subprocesses, and `python -m pydron tx`.

Each inner suite writes the PIDs of the pydron workers its tests saw to files, so
that the outer test can count the worker processes of the whole run.
"""

import json
import os
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import execnet
import pytest

import pydron
from pydron import config, pytest_check, pytest_share, scheduling
from pydron.cli import main

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
INSTALLED = any(ep.name == "pydron" for ep in metadata.entry_points(group="pytest11"))
# Without the entry point (an install older than the plugin) the inner runs load it by name.
PLUGIN_ARGS = [] if INSTALLED else ["-p", "pydron.pytest_plugin"]

HELPERS = '''
import json, os
import pydron
from pydron.remote.pool import get_pool

@pydron.functional
def inc(x):
    return x + 1

@pydron.functional
def where(x):
    return os.getpid()

@pydron.schedule
def pipeline(xs):
    return [inc(x) for x in xs]

def record(name, pool=None):
    """Write this process's pid and its pydron workers' pids to PIDDIR/name."""
    pool = pool or get_pool()
    pids = sorted(w.info["pid"] for w in pool.workers if w.alive)
    path = os.path.join(os.environ["PIDDIR"], f"{name}-{os.getpid()}.json")
    with open(path, "w") as handle:
        json.dump({"pytest": os.getpid(), "workers": pids}, handle)
    return pids
'''


@pytest.fixture
def suite(pytester, monkeypatch, tmp_path):
    """The inner suite's directory, with helpers.py; no pydron configuration from outside."""
    for name in (config.TX_VAR, config.CONF_VAR, config.SHARE_VAR, "PYTEST_ADDOPTS",
                 "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(pytester.path))
    piddir = tmp_path / "pids"
    piddir.mkdir()
    monkeypatch.setenv("PIDDIR", str(piddir))
    pytester.makepyfile(helpers=HELPERS)
    pytester.piddir = piddir
    return pytester


def run(pytester, *args):
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args,
                                           timeout=60)
    return result


def records(pytester):
    return [json.loads(path.read_text()) for path in sorted(pytester.piddir.iterdir())]


def assert_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        time.sleep(0.05)
    assert not alive, f"pydron workers still running after the run: {sorted(alive)}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- xdist sharing


SHARED_SUITE = '''
import pytest
from helpers import pipeline, record

@pytest.mark.parametrize("k", range(6))
def test_pipeline(k):
    assert pipeline([k, k + 1]) == [k + 1, k + 2]
    record(f"t{k}")
'''


def test_xdist_shares_the_configured_workers(suite):
    suite.makepyfile(test_shared=SHARED_SUITE)
    result = run(suite, "-n", "2", "--pydron-tx", "2*popen")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "pydron: 2 worker(s) from --pydron-tx: 2 x popen (localhost)",
        "pydron: shared among 2 xdist workers: gw0: 1 x popen (localhost); gw1: 1 x popen (localhost)",
    ])
    seen = records(suite)
    assert len({r["pytest"] for r in seen}) == 2, seen  # both xdist workers ran tests
    workers = {pid for r in seen for pid in r["workers"]}
    assert len(workers) == 2, seen  # two pydron workers in the whole run, not 2 x 2
    for r in seen:
        assert len(r["workers"]) == 1, seen
    assert_gone(workers)


def test_fewer_workers_than_xdist_workers_each_gets_one(suite):
    suite.makepyfile(test_shared=SHARED_SUITE)
    result = run(suite, "-n", "2", "--pydron-tx", "popen")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "pydron: 1 worker(s) from --pydron-tx: 1 x popen (localhost)",
        "pydron: fewer workers (1) than xdist workers (2): each xdist worker gets one, "
        "2 pydron workers in total",
    ])
    seen = records(suite)
    assert {len(r["workers"]) for r in seen} == {1}
    assert len({pid for r in seen for pid in r["workers"]}) == len({r["pytest"] for r in seen})


def test_deaths_and_retries_reach_the_summary(suite):
    suite.makepyfile(test_death='''
        import os
        import pydron

        @pydron.functional
        def die_once(marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(3)
            return "survived"

        @pydron.schedule
        def run(marker):
            return die_once(marker)

        def test_dies(tmp_path):
            assert run(str(tmp_path / "died")) == "survived"

        def test_other():
            pass
    ''')
    result = run(suite, "-n", "2", "--pydron-tx", "2*popen")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*pydron workers*",
        "pydron: 1 worker death(s): gw?: *popen* #1",
        "pydron: 1 task(s) run again after a death (die_once)",
    ])


# ---------------------------------------------------------------- modes


def test_sequential_runs_schedule_functions_plainly(suite):
    suite.makepyfile(test_seq='''
        import os
        import pydron
        from pydron.remote import pool
        from helpers import where

        @pydron.schedule
        def places(n):
            return [where(i) for i in range(n)]

        def test_in_this_process():
            assert places(3) == [os.getpid()] * 3
            assert pool._pool is None  # no worker was started
    ''')
    result = run(suite, "--pydron=sequential", "--pydron-tx", "popen", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pydron: --pydron=sequential"])


CHECK_SUITE = '''
import pytest
import pydron
from helpers import inc

@pydron.functional
def grow(lst):
    lst.append(1)  # impure: mutates its argument
    return len(lst)

@pydron.schedule
def mutates_argument():
    data = []
    n = grow(data)
    return n, len(data)

SEEN = []

@pydron.functional
def remember(x):
    SEEN.append(x)  # impure: mutates a global
    return x

@pydron.schedule
def mutates_global(xs):
    out = [remember(x) for x in xs]
    return out, len(SEEN)

@pydron.schedule
def pure(xs):
    out = []
    for x in xs:
        out.append(inc(x))
        print("got", x)
    return out

@pydron.schedule
def fails(x):
    return 10 // (inc(x) - 1)

@pydron.schedule
def appends_to(target, xs):
    for x in xs:
        target.append(inc(x))
    return len(target)

def test_argument_mutation_is_caught():
    mutates_argument()

def test_global_mutation_is_caught():
    mutates_global([1, 2])

def test_pure_passes(capsys):
    assert pure([1, 2]) == [2, 3]
    assert capsys.readouterr().out == "got 1\\ngot 2\\n" * 2  # ran twice, same output

def test_same_exception_passes():
    with pytest.raises(ZeroDivisionError, match="by zero"):
        fails(0)

def test_argument_side_effect_passes():
    target = [0]
    assert appends_to(target, [1, 2]) == 3
    assert target == [0, 2, 3]  # the scheduled run's effect, once
'''


def test_check_catches_impure_functionals(suite):
    suite.makepyfile(test_check=CHECK_SUITE)
    result = run(suite, "--pydron=check", "--pydron-tx", "2*popen", "-p", "no:xdist")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["pydron: --pydron=check"])
    out = result.stdout.str()
    assert ("PydronCheckError: pydron check: test_check.mutates_argument() differs between the "
            "scheduled and the plain run:\nE             return value: scheduled (1, 0), "
            "plain (1, 1)\n") in out
    assert ("PydronCheckError: pydron check: test_check.mutates_global() differs between the "
            "scheduled and the plain run:\nE             return value: scheduled ([1, 2], 0), "
            "plain ([1, 2], 2)\n") in out
    result.stdout.fnmatch_lines(["pydron check: 5 schedule call(s) compared, 2 differed"])
    result.stdout.fnmatch_lines([
        "FAILED test_check.py::test_argument_mutation_is_caught - *",
        "FAILED test_check.py::test_global_mutation_is_caught - *",
    ])


def test_check_counts_come_back_from_xdist_workers(suite):
    suite.makepyfile(test_check=CHECK_SUITE)
    result = run(suite, "--pydron=check", "-n", "2", "--pydron-tx", "2*popen")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["pydron check: 5 schedule call(s) compared, 2 differed"])


# ---------------------------------------------------------------- fixtures, marker, header


def test_fixtures_and_marker(suite):
    suite.makepyfile(test_fixtures='''
        import os
        import pytest
        from pydron.remote.pool import get_pool
        from helpers import pipeline, record, where
        import pydron

        FIRST = {}

        @pydron.schedule
        def place():
            return where(0)

        def test_session_pool(pydron_pool):
            assert pydron_pool is get_pool()
            assert len(pydron_pool.workers) == 1
            FIRST["pool"] = pydron_pool
            assert pipeline([1]) == [2]
            record("session")

        def test_own_pool(pydron_tx):
            own = pydron_tx("2*popen")
            assert get_pool() is own and own is not FIRST["pool"]
            assert len(own.workers) == 2
            assert pipeline([1, 2, 3]) == [2, 3, 4]
            FIRST["own"] = record("own")

        def test_back_to_the_session_pool(pydron_pool):
            assert get_pool() is pydron_pool is FIRST["pool"]
            assert not pydron_pool._closed
            gone = [pid for pid in FIRST["own"] if os.path.exists(f"/proc/{pid}")
                    and open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"]
            assert gone == []  # the test's own workers were stopped

        @pytest.mark.pydron(tx="2*popen")
        def test_marker_tx():
            assert get_pool() is not FIRST["pool"]
            assert len(get_pool().workers) == 2
            record("marker")

        @pytest.mark.pydron(mode="sequential")
        def test_marker_mode():
            assert place() == os.getpid()

        def test_after_marker_mode():
            assert place() != os.getpid()
            assert get_pool() is FIRST["pool"]

        @pytest.mark.pydron(workers=3)
        def test_bad_marker():
            pass
    ''')
    result = run(suite, "--pydron-tx", "popen", "-p", "no:xdist", "--strict-markers")
    result.assert_outcomes(passed=6, errors=1)
    result.stdout.fnmatch_lines([
        "*@pytest.mark.pydron on test_fixtures.py::test_bad_marker: unknown argument 'workers' "
        "(known: tx, mode)"])


def test_conf_shared_among_xdist_workers_and_ini_tx(suite):
    conf = suite.path / "team.conf"
    conf.write_text(json.dumps({"workers": [{"type": "multicore", "cores": 2}]}))
    suite.makepyfile(test_shared=SHARED_SUITE)
    result = run(suite, "--pydron-conf", "team.conf", "-n", "2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        f"pydron: 2 worker(s) from --pydron-conf {conf}: 2 x popen (localhost)",
        "pydron: shared among 2 xdist workers: gw0: 1 x popen (localhost); gw1: 1 x popen (localhost)",
    ])
    seen = records(suite)
    assert {len(r["workers"]) for r in seen} == {1}, seen
    assert len({pid for r in seen for pid in r["workers"]}) == 2, seen

    suite.makeini("[pytest]\npydron_tx =\n    popen\n    ssh=me@node1//python=python3\n")
    result = run(suite, "--collect-only", "-p", "no:xdist")
    result.stdout.fnmatch_lines([
        "pydron: 2 worker(s) from ini pydron_tx: 1 x popen (localhost), 1 x ssh (me@node1)"])


def test_bad_spec_is_a_usage_error_naming_it(suite):
    suite.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = run(suite, "--pydron-tx", "popen", "--pydron-tx", "x*popen")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pydron: invalid worker spec 'x*popen': multiplier 'x'*"])
    result = run(suite, "--pydron-conf", "missing.conf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pydron: --pydron-conf missing.conf: no such file*"])
    suite.makeini("[pytest]\npydron_tx = 1000*popen\n")
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pydron: ini pydron_tx: 1000 local worker processes on *"
                                 "set PYDRON_OVERSUBSCRIBE=1 if you mean it"])


# ---------------------------------------------------------------- sharing out (no pytest run)


def _gateways(tmp_path, workers):
    path = tmp_path / "pydron.conf"
    path.write_text(json.dumps({"workers": workers}))
    path.chmod(0o600)
    return config.load_config(path)


def test_share_out_balances_and_keeps_cloud_entries_whole(tmp_path):
    gateways = _gateways(tmp_path, [
        {"type": "cloud", "provider": "dummy", "imageid": "1", "sizeid": "1", "count": 3},
        {"type": "multicore", "cores": 2},
    ])
    assert pytest_share.share_out(gateways, 2) == [[0, 1, 2], [3, 4]]
    assert pytest_share.share_out(gateways, 3) == [[0, 1, 2], [3], [4]]
    assert pytest_share.share_out(gateways, 4) == [[0, 1, 2], [3], [4], [3]]
    shares = pytest_share.share_out(gateways[3:] * 3, 2)
    assert sorted(sum(shares, [])) == list(range(6)) and [len(s) for s in shares] == [3, 3]
    with pytest.raises(ValueError, match="1 cloud entry for 2 xdist workers"):
        pytest_share.share_out(gateways[:3], 2)


def test_conf_share_selects_its_part_only_for_its_own_file(tmp_path):
    gateways = _gateways(tmp_path, [{"type": "multicore", "cores": 3}])
    source = pytest_share.Source("x", conf=str(tmp_path / "pydron.conf"))
    env = pytest_share.share_environ(source, gateways, [0, 2], {})
    assert [g.label for g in config.worker_specs(env)] == [gateways[0].label, gateways[2].label]
    other = tmp_path / "other"
    other.mkdir()
    (other / "pydron.conf").write_text(json.dumps({"workers": [{"type": "multicore", "cores": 2}]}))
    assert len(config.worker_specs({**env, config.CONF_VAR: str(other)})) == 2


# ---------------------------------------------------------------- python -m pydron tx


def test_tx_prints_xdist_options(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(config.TX_VAR, raising=False)
    monkeypatch.setenv(config.CONF_VAR, str(tmp_path / "pydron.conf"))
    _gateways(tmp_path, [{"type": "multicore", "cores": 2},
                         {"type": "execnet", "spec": "ssh=me@node1//python=python3"},
                         {"type": "cloud", "provider": "dummy", "imageid": "1", "sizeid": "1"}])
    assert main(["tx"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"--tx 2*popen//python={sys.executable}",
                                "--tx ssh=me@node1//python=python3"]
    assert "workers[2] (cloud dummy): skipped" in err
    assert main(["tx", "--tx", "3*popen", "--tx", "ssh=-p 2222 me@h"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"--tx 3*popen//python={sys.executable}", "--tx 'ssh=-p 2222 me@h'"]


def test_tx_refuses_password_entries_and_cloud_only(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(config.TX_VAR, raising=False)
    monkeypatch.setenv(config.CONF_VAR, str(tmp_path / "pydron.conf"))
    _gateways(tmp_path, [{"type": "multicore", "cores": 1},
                         {"type": "ssh", "hostname": "node1", "password": "secret"}])
    assert main(["tx"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "workers[1] (ssh node1) #1: uses a password" in err and "secret" not in err
    _gateways(tmp_path, [{"type": "cloud", "provider": "dummy", "imageid": "1", "sizeid": "1"}])
    assert main(["tx"]) == 2
    assert "no popen or ssh workers configured" in capsys.readouterr().err


def test_tx_ssh_line_works_with_execnet(sshd, tmp_path):
    """The printed line, given to execnet as pytest-xdist gives it, reaches the real sshd."""
    options = {k: v for k, v in sshd.ssh_options.items()
               if k in ("UserKnownHostsFile", "GlobalKnownHostsFile", "StrictHostKeyChecking",
                        "IdentitiesOnly", "LogLevel")}
    conf = tmp_path / "pydron.conf"
    conf.write_text(json.dumps({"workers": [{
        "type": "ssh", "hostname": sshd.host, "port": sshd.port, "username": sshd.user,
        "identity_file": sshd.identity_file, "python": sshd.python or "python3",
        "ssh_options": options, "cores": 2}]}))
    env = {k: v for k, v in os.environ.items() if k != config.TX_VAR}
    env.update({config.CONF_VAR: str(conf), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")]))})
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-m", "pydron", "tx", "--ssh-config-dir", str(cache)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith(f"--tx 2*ssh_config={cache}/")
    assert oct((cache / line.split("=", 1)[1].split("//")[0].rsplit("/", 1)[1]).stat().st_mode
               & 0o777) == oct(0o600)
    spec = line.split(" ", 1)[1].split("*", 1)[1]
    gateway = execnet.makegateway(spec)
    try:
        channel = gateway.remote_exec("import getpass; channel.send(getpass.getuser())")
        assert channel.receive(timeout=30) == sshd.user
    finally:
        gateway.exit()


# ---------------------------------------------------------------- check mode in this process


@pydron.functional
def noisy(x):
    print("working on", x)  # impure: output is a side effect
    return x * 2


@pydron.functional
def double(x):
    return x * 2


@pydron.schedule
def noisy_pipeline(xs):
    return [noisy(x) for x in xs]


@pydron.schedule
def with_lock(lock, xs):
    with lock:
        return [double(x) for x in xs]


@pydron.schedule
def fails_differently(x):
    y = double(x)
    if y > 3:
        raise ValueError(f"bad {y}")
    return y


def test_check_compares_output_and_warns_when_it_cannot_copy(monkeypatch):
    monkeypatch.setattr(scheduling, "top_level_runner", pytest_check.run_check)
    with pytest.raises(pytest_check.PydronCheckError) as failure:
        noisy_pipeline([1])
    text = str(failure.value)
    assert "test_pytest_plugin.noisy_pipeline() differs" in text
    assert "printed to stdout: scheduled '[" in text and "plain 'working on 1\\n'" in text
    with pytest.warns(pytest_check.PydronCheckWarning, match=r"with_lock\(\) not checked, its "
                      r"arguments cannot be copied"):
        assert with_lock(threading.Lock(), [1, 2]) == [2, 4]
    with pytest.raises(ValueError, match="bad 4"):  # same exception both ways: raised as is
        fails_differently(2)
