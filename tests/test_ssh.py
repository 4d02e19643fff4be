"""``ssh`` worker entries, against a real OpenSSH server on 127.0.0.1 (``sshd`` fixture).

The remote account's Python has no cloudpickle and cannot import this test
module: cloudpickle is shipped by the pool, and the functional helpers below
are pickled by value (``cloudpickle.register_pickle_by_value``).  Only
127.0.0.1 is ever contacted.
"""
from __future__ import annotations

import json
import os
import pwd
import stat
import sys
import time
import warnings

import cloudpickle
import pytest

import pydron
import sshd as S
from realparts import unavailable
from pydron.config import load_config
from pydron.errors import ConfigError, PydronError
from pydron.remote import pool as pool_module
from pydron.remote import ssh
from pydron.remote.pool import Pool
from pydron.runtime.graph import Graph

THIS = sys.modules[__name__]


# ------------------------------------------------------------------ helpers run remotely


@pydron.functional
def square(x):
    return x * x


@pydron.functional
def add(a, b):
    return a + b


@pydron.functional
def where(tag):
    return tag, os.getuid(), os.getpid(), "cloudpickle" in sys.modules


@pydron.functional
def shipped_dir():
    import cloudpickle as remote_cloudpickle

    return os.path.dirname(os.path.dirname(remote_cloudpickle.__file__))


def pipeline(n):
    squares = [square(i) for i in range(n)]
    total = 0
    for value in squares:
        total = add(total, value)
    places = [where(i) for i in range(2 * n)]
    return total, squares, sorted({(uid, pid) for _, uid, pid, _ in places}), \
        all(has for *_, has in places)


scheduled_pipeline = pydron.schedule(pipeline)


@pytest.fixture(scope="module", autouse=True)
def by_value():
    """Ship this module's functions by value: ssh workers cannot import it."""
    cloudpickle.register_pickle_by_value(THIS)
    yield
    cloudpickle.unregister_pickle_by_value(THIS)


# ------------------------------------------------------------------ fixtures


def write_conf(directory, *entries, mode=0o600):
    path = directory / "pydron.conf"
    path.write_text(json.dumps({"workers": list(entries)}))
    path.chmod(mode)
    return path


@pytest.fixture
def server(sshd):
    """The sshd fixture; afterwards no process of the test user and an empty tmp_dir."""
    for name in os.listdir(sshd.user_tmp):  # a failed earlier test must not spill over
        pytest.fail(f"tmp_dir not empty before the test: {name}")
    yield sshd
    leftovers = sshd.leftover_processes(timeout=5)
    deadline = time.monotonic() + 5
    while os.listdir(sshd.user_tmp) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = os.listdir(sshd.user_tmp)
    for name in left:  # clean up for the next test, then fail
        S._kill(S._user_pids(sshd.user, sshd.tag))
        os.system(f"rm -rf {sshd.user_tmp}/{name}")
    assert leftovers == [], f"processes of {sshd.user} left behind: {leftovers}"
    assert left == [], f"tmp_dir {sshd.user_tmp} not emptied: {left}"


def known_hosts(sshd):
    return {"UserKnownHostsFile": sshd.known_hosts, "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes", "LogLevel": "ERROR"}


_MATCHING_PYTHON: dict[str, str | None] = {}


def matching_python(sshd):
    """A Python of the master's minor version that the test user can run, or None.

    Workers must run the master's version (functions travel as bytecode): the
    test user's python3 is the system's, and the master's own interpreter
    may sit where that user cannot reach it (e.g. pyenv under /root).
    """
    if sshd.tag not in _MATCHING_PYTHON:
        import subprocess

        minor = "%d.%d" % sys.version_info[:2]
        found = None
        for candidate in (sshd.python, os.path.realpath(sys.executable),
                          f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"):
            if not candidate:
                continue
            probe = subprocess.run(
                sshd.ssh_command(candidate, "-c", "'import sys; print(*sys.version_info[:2], sep=chr(46))'"),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            if probe.returncode == 0 and probe.stdout.strip() == minor:
                found = candidate
                break
        _MATCHING_PYTHON[sshd.tag] = found
    return _MATCHING_PYTHON[sshd.tag]


def need_matching_python(sshd):
    python = matching_python(sshd)
    if python is None:
        unavailable(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that the ssh test "
                    f"user {sshd.user} can run (the master's {sys.executable} is out of its "
                    f"reach, see .ci/run's ACL; its python3 is another version), so no task can "
                    f"run remotely")
    return python


@pytest.fixture
def runnable(server):
    """Skip unless the test user has a Python of the master's version."""
    return need_matching_python(server)


def key_entry(sshd, **extra):
    entry = {"type": "ssh", "hostname": sshd.host, "port": sshd.port, "username": sshd.user,
             "python": matching_python(sshd) or "python3",
             "identity_file": sshd.identity_file, "tmp_dir": sshd.user_tmp,
             "ssh_options": {**known_hosts(sshd), "IdentitiesOnly": "yes"}}
    entry.update(extra)
    return entry


def password_entry(sshd, **extra):
    if sshd.password is None:
        unavailable("password login needs sshd running as root (a test user with a password)")
    entry = {"type": "ssh", "hostname": sshd.host, "port": sshd.port, "username": sshd.user,
             "python": matching_python(sshd) or "python3", "password": sshd.password, "tmp_dir": sshd.user_tmp,
             "ssh_options": known_hosts(sshd)}
    entry.update(extra)
    return entry


@pytest.fixture
def global_pool(server, tmp_path, monkeypatch):
    """Point pydron's process-wide pool at a config file; shut it down afterwards."""

    def use(*entries):
        path = write_conf(tmp_path, *entries)
        monkeypatch.delenv("PYDRON_TX", raising=False)
        monkeypatch.setenv("PYDRON_CONF", str(path))
        monkeypatch.setattr(pool_module, "_pool", None)  # another test's pool stays untouched
        return path

    yield use
    pool_module.shutdown()


def all_cmdlines():
    lines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    lines.append(handle.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return lines


# ------------------------------------------------------------------ running


def test_schedule_on_two_ssh_workers_with_key(global_pool, server, runnable):
    global_pool(key_entry(server, cores=2))
    expected = pipeline(6)
    got = scheduled_pipeline(6)
    assert got[:2] == expected[:2] == (55, [0, 1, 4, 9, 16, 25])
    uid = pwd.getpwnam(server.user).pw_uid
    pool = pool_module.get_pool()
    assert len(pool.workers) == 2
    assert {u for u, _ in got[2]} <= {uid} and got[3] is True
    for worker in pool.workers:
        shipped = worker.info["tmp_dir"]
        assert os.path.dirname(shipped) == server.user_tmp
        assert os.path.isfile(os.path.join(shipped, "cloudpickle", "__init__.py"))
        # ssh's command line names the config file and the alias only
        args = worker.gateway._io.popen.args
        assert server.identity_file not in " ".join(args)
        assert args[:4] == ["ssh", "-C", "-F", args[3]] and args[4] == "pydron-worker"


def test_workers_report_remote_python_and_shipped_cloudpickle(server, runnable, tmp_path):
    pool = Pool(load_config(write_conf(tmp_path, key_entry(server, cores=2))))
    try:
        graph = Graph(lambda: pool)
        dirs = {graph.submit(shipped_dir, (), {})._pd_result() for _ in range(6)}
        assert dirs <= {w.info["tmp_dir"] for w in pool.workers}
        versions = {w.info["python"] for w in pool.workers}
        assert len(versions) == 1 and versions.pop().startswith("%d.%d." % sys.version_info[:2])
    finally:
        pool.shutdown()


@pydron.functional
def noisy(x):
    print("noise on stdout")
    print(f"remote stderr line {x}", file=sys.stderr, flush=True)
    return x


def test_remote_output_does_not_disturb_and_stderr_is_passed_on(server, runnable, tmp_path, capfd):
    pool = Pool(load_config(write_conf(tmp_path, key_entry(server))))
    try:
        graph = Graph(lambda: pool)
        assert [graph.submit(noisy, (i,), {})._pd_result() for i in range(3)] == [0, 1, 2]
        deadline = time.monotonic() + 5
        seen = ""
        while "remote stderr line 2" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capfd.readouterr().err
        assert "remote stderr line 2" in seen
    finally:
        pool.shutdown()


LOCAL_PACKAGE = {
    "pd_userpkg/__init__.py": "from pd_userpkg.shapes import Point\n",
    "pd_userpkg/shapes.py": (
        "import pydron\n"
        "from pydron.errors import PydronError\n"
        "class Point:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "@pydron.functional\n"
        "def make(x, y):\n"
        "    return Point(x, y)\n"
        "def norm1(p):\n"
        "    return abs(p.x) + abs(p.y)\n"
    ),
}


def test_users_own_modules_are_shipped(server, runnable, tmp_path, monkeypatch):
    source = tmp_path / "src"  # only root can read it: the remote user cannot
    for name, text in LOCAL_PACKAGE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    monkeypatch.syspath_prepend(str(source))
    import pd_userpkg.shapes as shapes

    try:
        pool = Pool(load_config(write_conf(tmp_path, key_entry(server))))
        try:
            graph = Graph(lambda: pool)
            point = graph.submit(shapes.make, (3, -4), {})
            assert graph.submit(shapes.norm1, (point,), {})._pd_result() == 7
            assert type(point._pd_result()) is shapes.Point  # by reference, both ways
        finally:
            pool.shutdown()
    finally:
        for name in ("pd_userpkg", "pd_userpkg.shapes"):
            sys.modules.pop(name, None)


def test_modules_imported_after_the_pool_started_are_shipped(server, runnable, tmp_path, monkeypatch):
    source = tmp_path / "src"
    for name, text in LOCAL_PACKAGE.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    try:
        pool = Pool(load_config(write_conf(tmp_path, key_entry(server))))
        try:
            graph = Graph(lambda: pool)
            assert graph.submit(square, (3,), {})._pd_result() == 9  # up before the import
            monkeypatch.syspath_prepend(str(source))
            import pd_userpkg.shapes as shapes

            point = graph.submit(shapes.make, (3, -4), {})
            assert graph.submit(shapes.norm1, (point,), {})._pd_result() == 7
            assert type(point._pd_result()) is shapes.Point
        finally:
            pool.shutdown()
    finally:
        for name in ("pd_userpkg", "pd_userpkg.shapes"):
            sys.modules.pop(name, None)


def test_default_tmp_dir_is_removed(server, runnable, tmp_path):
    entry = key_entry(server)
    del entry["tmp_dir"]
    pool = Pool(load_config(write_conf(tmp_path, entry)))
    try:
        shipped = pool.workers[0].info["tmp_dir"]
        assert os.path.isdir(shipped) and not shipped.startswith(server.user_tmp)
        assert Graph(lambda: pool).submit(square, (7,), {})._pd_result() == 49
    finally:
        pool.shutdown()
    deadline = time.monotonic() + 5
    while os.path.exists(shipped) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(shipped)


def test_schedule_with_password(global_pool, server, runnable):
    conf = global_pool(password_entry(server, cores=2))
    assert scheduled_pipeline(4)[:2] == pipeline(4)[:2]
    password = server.password
    pool = pool_module.get_pool()
    assert len(pool.workers) == 2
    # never on a command line, in a spec, in ssh's config file, in os.environ
    assert not [line for line in all_cmdlines() if password in line]
    specs = load_config(conf)
    assert password not in repr(specs)
    config_file = specs[0].xspec.split("//")[0].split("=", 1)[1]
    with open(config_file) as handle:
        assert password not in handle.read()
    assert password not in repr(dict(os.environ))
    assert stat.S_IMODE(os.stat(os.path.dirname(config_file)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(specs[0].askpass).st_mode) == 0o700
    # the password file exists only while a session logs in
    private = os.path.dirname(config_file)
    for name in os.listdir(private):
        with open(os.path.join(private, name), errors="replace") as handle:
            assert password not in handle.read(), name


def test_agent_auth_and_many_cores(server, runnable, tmp_path, monkeypatch):
    import subprocess

    socket_path = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket_path],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": socket_path}
        subprocess.run(["ssh-add", "-q", server.identity_file], env=env, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", socket_path)
        monkeypatch.setattr(ssh, "MAX_STARTS_PER_HOST", 3)
        entry = key_entry(server, cores=8)
        del entry["identity_file"]
        entry["ssh_options"] = known_hosts(server)
        pool = Pool(load_config(write_conf(tmp_path, entry)))
        try:
            assert len(pool.workers) == 8
            graph = Graph(lambda: pool)
            futures = [graph.submit(square, (i,), {}) for i in range(40)]
            assert [f._pd_result() for f in futures] == [i * i for i in range(40)]
            assert len({worker.info["pid"] for worker in pool.workers}) == 8
        finally:
            pool.shutdown()
    finally:
        agent.terminate()
        agent.wait()


# ------------------------------------------------------------------ failures


def failure(server, tmp_path, entry, expected):
    path = write_conf(tmp_path, entry)
    start = time.monotonic()
    with pytest.raises(PydronError) as info:
        pool = Pool(load_config(path))
        pool.shutdown()
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 30, message
    assert server.host in message
    assert expected in message, message
    if server.password:
        assert server.password not in message
    return message


def test_closed_port(server, tmp_path):
    port = S.free_port()  # nobody listens there
    message = failure(server, tmp_path, key_entry(server, port=port), "Connection refused")
    assert f"port {port}" in message


def test_bad_password(server, tmp_path):
    failure(server, tmp_path, password_entry(server, password="not-the-password"), "Permission denied")


def test_unknown_key(server, tmp_path):
    key = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {key}")
    failure(server, tmp_path, key_entry(server, identity_file=str(key)), "Permission denied")


def test_unknown_host_key(server, tmp_path):
    entry = key_entry(server)
    entry["ssh_options"] = {**entry["ssh_options"], "UserKnownHostsFile": "/dev/null"}
    failure(server, tmp_path, entry, "Host key verification failed")


def test_missing_remote_python(server, tmp_path):
    message = failure(server, tmp_path, key_entry(server, python="/nonexistent/python3"), "not found")
    assert "/nonexistent/python3" in message


def test_python_version_mismatch(server, tmp_path):
    fake = os.path.join(server.tmp, "python-3.9")  # readable by the test user
    with open(fake, "w") as handle:
        handle.write("#!/bin/sh\n# a python3 that says it is 3.9.1\nexec %s -c \"import sys; "
                     "sys.version_info = (3, 9, 1, 'final', 0); "
                     "exec(eval(sys.stdin.readline()))\"\n" % server.python)
    os.chmod(fake, 0o755)
    message = failure(server, tmp_path, key_entry(server, python=fake), "runs Python 3.9.1")
    assert "master runs %d.%d" % sys.version_info[:2] in message


def test_start_is_bounded(server, tmp_path, monkeypatch):
    monkeypatch.setattr(ssh, "SSH_START_TIMEOUT", 2)
    entry = key_entry(server)
    entry["ssh_options"] = {**entry["ssh_options"], "ProxyCommand": "sleep 60.4242"}
    failure(server, tmp_path, entry, "within 2 s")
    assert not [line for line in all_cmdlines() if line.strip() == "sleep 60.4242"]


# ------------------------------------------------------------------ configuration


def test_entry_becomes_cores_specs(tmp_path):
    key = tmp_path / "id"
    key.write_text("not really a key")
    path = write_conf(tmp_path, {
        "type": "ssh", "hostname": "node1.example", "username": "ann", "port": 2222,
        "identity_file": str(key), "python": "/opt/py/bin/python3", "cores": 3,
        "tmp_dir": "/scratch/pd", "data_ports": "9000-9003",
        "ssh_options": {"ProxyJump": "gate.example", "ServerAliveInterval": 9,
                        "ProxyCommand": "nc -X connect -x proxy:3128 %h %p"},
    })
    specs = load_config(path)
    assert len(specs) == 3 and len({s.label for s in specs}) == 3
    spec = specs[0]
    assert isinstance(spec, ssh.SshGatewaySpec)
    assert spec.xspec.endswith("//ssh=pydron-worker//python=/opt/py/bin/python3")
    assert spec.tmp_dir == "/scratch/pd" and spec.data_ports == (9000, 9003)
    assert spec.target == "ann@node1.example:2222" and spec.askpass is None
    config_file = spec.xspec.split("//")[0].split("=", 1)[1]
    assert stat.S_IMODE(os.stat(config_file).st_mode) == 0o600
    with open(config_file) as handle:
        lines = [line.strip() for line in handle]
    assert lines[0] == "Host pydron-worker"
    for line in ("HostName node1.example", "Port 2222", "User ann", f"IdentityFile {key}",
                 "ProxyJump gate.example", "ServerAliveInterval 9",
                 "ProxyCommand nc -X connect -x proxy:3128 %h %p", "BatchMode yes",
                 "ConnectTimeout 10"):
        assert line in lines
    assert "ServerAliveInterval 5" not in lines  # the user's value wins


def test_defaults(tmp_path):
    specs = load_config(write_conf(tmp_path, {"type": "ssh", "hostname": "h"}))
    assert len(specs) == 1
    assert specs[0].xspec.endswith("//ssh=pydron-worker//python=python3")
    assert specs[0].tmp_dir is None and specs[0].target == "h"


@pytest.mark.parametrize("extra,field,expected", [
    ({"hostname": ""}, "hostname", "expected a non-empty string"),
    ({"hostname": "-oProxyCommand=x"}, "hostname", "not a host name"),
    ({"hostname": "a b"}, "hostname", "not a host name"),
    ({"username": "a b"}, "username", "not a user name"),
    ({"port": 0}, "port", "expected a positive integer"),
    ({"port": 70000}, "port", "1-65535"),
    ({"cores": 0}, "cores", "expected a positive integer"),
    ({"identity_file": "/nonexistent/key"}, "identity_file", "no such file"),
    ({"python": "py//thon"}, "python", "not a command"),
    ({"ssh_options": ["-v"]}, "ssh_options", "expected an object"),
    ({"ssh_options": {"Port": "22"}}, "ssh_options.Port", "field 'port'"),
    ({"ssh_options": {"Host": "x"}}, "ssh_options.Host", "not allowed"),
    ({"ssh_options": {"-o x": "y"}}, "ssh_options.-o x", "not an OpenSSH option name"),
    ({"ssh_options": {"ProxyJump": "a\nHost *"}}, "ssh_options.ProxyJump", "one-line"),
    ({"ssh_options": {"BatchMode": True}}, "ssh_options.BatchMode", "string or a number"),
    ({"data_ports": "9000"}, "data_ports", 'port range "start-end"'),
    ({"data_ports": "9005-9000"}, "data_ports", "start <= end"),
    ({"cores": 4, "data_ports": "9000-9002"}, "data_ports", "fewer than cores=4"),
    ({"password": 5}, "password", "non-empty one-line string"),
    ({"cpus": 2}, "cpus", "unknown field"),
])
def test_entry_errors(tmp_path, extra, field, expected):
    entry = {"type": "ssh", "hostname": "h", **extra}
    path = write_conf(tmp_path, {"type": "multicore", "cores": 1}, entry)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and f"workers[1].{field}: " in message, message
    assert expected in message, message


def test_missing_hostname(tmp_path):
    with pytest.raises(ConfigError, match=r"workers\[0\]\.hostname: missing required field"):
        load_config(write_conf(tmp_path, {"type": "ssh"}))


def test_readable_password_file_warns(tmp_path):
    entry = {"type": "ssh", "hostname": "h", "password": "s3cret-value"}
    path = write_conf(tmp_path, entry, mode=0o644)
    with pytest.warns(UserWarning, match="readable by group or others") as record:
        specs = load_config(path)
    assert str(path) in str(record[0].message)
    assert "s3cret-value" not in str(record[0].message) + repr(specs)
    with open(specs[0].askpass) as handle:
        assert "s3cret-value" not in handle.read()

    private = write_conf(tmp_path, entry, mode=0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(private)


# ------------------------------------------------------------------ differential suite


def _differential_cases():
    import test_differential
    import test_differential_more

    return test_differential.CASES + test_differential_more.CASES


@pytest.fixture(scope="module")
def diff_sshd(sshd):
    """A second sshd (its own tag and tmp_dir): the pools below outlive single tests."""
    server = S.SshServer.start(f"diff-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    try:
        yield server
    finally:
        server.stop(check=True)


@pytest.fixture(scope="module")
def ssh_global_pool(diff_sshd, tmp_path_factory):
    """pydron's process-wide pool made of ssh workers, for the differential tests."""
    sshd = diff_sshd
    need_matching_python(sshd)
    import test_differential
    import test_differential_more

    # The workers cannot import these (they import pytest); dhelpers is shipped.
    modules = (test_differential, test_differential_more)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    pools = {}

    def use(kind):
        if kind not in pools:
            entry = key_entry(sshd, cores=2) if kind == "key" else password_entry(sshd, cores=2)
            path = write_conf(tmp_path_factory.mktemp(f"conf-{kind}"), entry)
            pools[kind] = Pool(load_config(path))
        pool_module._pool = pools[kind]
        return pools[kind]

    saved = pool_module._pool
    try:
        yield use
    finally:
        pool_module._pool = saved
        for pool in pools.values():
            pool.shutdown()
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
        assert sshd.leftover_processes(timeout=5) == []
        deadline = time.monotonic() + 5
        while os.listdir(sshd.user_tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(sshd.user_tmp) == []


_CASES = _differential_cases()


@pytest.mark.parametrize("fn,args,kwargs", [
    pytest.param(case.fn, case.args, case.kwargs, id=f"key-{case.id}") for case in _CASES
])
def test_differential_on_ssh_workers_key(ssh_global_pool, fn, args, kwargs):
    from difftest import assert_equivalent

    pool = ssh_global_pool("key")
    assert_equivalent(fn, *args, **kwargs)
    assert all(worker.alive for worker in pool.workers)


@pytest.mark.parametrize("kind", ["key", "password"])
def test_ssh_pool_runs_tasks_on_every_worker(ssh_global_pool, kind):
    """Sleeping calls issued together spread over both ssh workers (2 cores, 1 entry)."""
    from dhelpers import slow_pid

    import pydron

    pool = ssh_global_pool(kind)

    @pydron.schedule
    def spread():
        return [slow_pid(i, 0.3) for i in range(4)]

    results = spread()
    assert [x for x, _ in results] == [0, 1, 2, 3]
    worker_pids = {pid for _, pid in results}
    assert len(pool.workers) == 2
    assert len(worker_pids) == 2, f"all four calls ran in one process: {results}"
    assert all(len(worker.functions_sent) > 0 for worker in pool.workers)


@pytest.mark.parametrize("fn,args,kwargs", [
    pytest.param(case.fn, case.args, case.kwargs, id=f"password-{case.id}")
    for case in _CASES[::7]
])
def test_differential_on_ssh_workers_password(ssh_global_pool, fn, args, kwargs):
    from difftest import assert_equivalent

    pool = ssh_global_pool("password")
    assert_equivalent(fn, *args, **kwargs)
    assert all(worker.alive for worker in pool.workers)


# ------------------------------------------------------------------ the master goes away

MASTER = """
import sys, time
from pydron.config import load_config
from pydron.remote.pool import Pool
from pydron.runtime.graph import Graph
pool = Pool(load_config(sys.argv[1]))
graph = Graph(lambda: pool)
slow = graph.submit(time.sleep, (60,), {})     # busy when the master goes
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_remote_workers_end_with_the_master(server, runnable, tmp_path, how):
    import signal
    import subprocess

    conf = write_conf(tmp_path, key_entry(server, cores=2))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo}
    master = subprocess.Popen([sys.executable, "-c", MASTER, str(conf)], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = master.stdout.readline()
        assert line == "ready\n", line + master.stderr.read()
        assert len(os.listdir(server.user_tmp)) == 2
        assert len(server.leftover_processes(timeout=0)) >= 2
        start = time.monotonic()
        master.send_signal(getattr(signal, how))
        master.wait(timeout=20)
        assert server.leftover_processes(timeout=15) == []
        assert time.monotonic() - start < 20
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
        master.stdout.close()
        master.stderr.close()


# ------------------------------------------------------------------ data plane


def _free_port_range(count):
    """``count`` consecutive ports that are free now (best effort: bind-tested)."""
    import socket

    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        start = probe.getsockname()[1]
        probe.close()
        if start + count > 65535:
            continue
        sockets = []
        try:
            for port in range(start, start + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return start, start + count - 1
    pytest.fail("no free port range")


@pydron.schedule
def ssh_data_pipeline(n, size):
    import dphelpers as D

    return [D.digest(D.transform(D.make(i, size))) for i in range(n)] + [
        D.digest(D.combine(D.make(1, size), D.make(2, size)))]


def test_two_ssh_hosts_exchange_values_through_their_data_ports(global_pool, server, runnable):
    """Two entries for the same sshd stand for two hosts, each with its own data ports."""
    import dphelpers as D  # noqa: F401 - imported here, so it is shipped to the workers

    first, second = _free_port_range(2), _free_port_range(2)
    global_pool(key_entry(server, cores=1, data_ports=f"{first[0]}-{first[1]}"),
                key_entry(server, cores=1, data_ports=f"{second[0]}-{second[1]}"))
    size = 2 * 1024 * 1024
    got = ssh_data_pipeline(4, size)
    assert got == ssh_data_pipeline.__wrapped__(4, size)
    pool = pool_module.get_pool()
    ranges = {first: range(first[0], first[1] + 1), second: range(second[0], second[1] + 1)}
    used = {key for w in pool.workers for key, ports in ranges.items() if w.data_address[1] in ports}
    assert used == {first, second}, [w.data_address for w in pool.workers]
    assert pool.bytes_through_master < 5 * size / 100, pool.bytes_through_master


def test_a_taken_data_port_range_is_a_clear_error(server, runnable, tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        specs = load_config(write_conf(tmp_path, key_entry(server, cores=1, data_ports=f"{port}-{port}")))
        with pytest.raises(PydronError, match=rf"no free data port on 127\.0\.0\.1 in {port}-{port}"):
            Pool(specs)
    finally:
        taken.close()
