"""Tests for pydron.config: discovery, validation messages and expansion into gateways."""

import json
import shlex
import sys

import pytest

from pydron import config
from pydron.config import GatewaySpec, find_config_file, load_config, parse_tx, worker_specs
from pydron.errors import ConfigError

LOCAL = f"popen//python={shlex.quote(sys.executable)}"


@pytest.fixture(autouse=True)
def no_system_config(tmp_path, monkeypatch):
    """Never look at the real /etc/pydron.conf."""
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc" / "pydron.conf")


@pytest.fixture
def dirs(tmp_path):
    """Separate cwd, home and conf directories under tmp_path."""
    made = {name: tmp_path / name for name in ("cwd", "home", "conf", "etc")}
    for path in made.values():
        path.mkdir()
    return made


def write_conf(directory, data):
    path = directory / "pydron.conf"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(0o644)  # whatever the umask: a group-writable file is refused
    return path


# ---------------------------------------------------------------- discovery


def test_nothing_found(dirs):
    assert find_config_file({}, cwd=dirs["cwd"], home=dirs["home"]) is None


@pytest.mark.parametrize("present,expected", [
    (("conf", "cwd", "home", "etc"), "conf"),
    (("cwd", "home", "etc"), "cwd"),
    (("home", "etc"), "home"),
    (("etc",), "etc"),
])
def test_search_order(dirs, present, expected):
    for name in present:
        write_conf(dirs[name], {"workers": []})
    environ = {"PYDRON_CONF": str(dirs["conf"] / "pydron.conf")} if "conf" in present else {}
    found = find_config_file(environ, cwd=dirs["cwd"], home=dirs["home"])
    assert found == dirs[expected] / "pydron.conf"


def test_pydron_conf_may_name_a_directory(dirs):
    write_conf(dirs["conf"], {"workers": []})
    found = find_config_file({"PYDRON_CONF": str(dirs["conf"])}, cwd=dirs["cwd"], home=dirs["home"])
    assert found == dirs["conf"] / "pydron.conf"


def test_pydron_conf_missing_is_an_error(dirs):
    write_conf(dirs["cwd"], {"workers": []})  # must not silently fall back to this one
    missing = dirs["conf"] / "nope.conf"
    with pytest.raises(ConfigError) as info:
        find_config_file({"PYDRON_CONF": str(missing)}, cwd=dirs["cwd"], home=dirs["home"])
    assert "PYDRON_CONF" in str(info.value) and str(missing) in str(info.value)


def test_defaults_to_cwd_and_home_from_environment(dirs, monkeypatch):
    monkeypatch.chdir(dirs["cwd"])
    write_conf(dirs["home"], {"workers": []})
    assert find_config_file({"HOME": str(dirs["home"])}) == dirs["home"] / "pydron.conf"
    write_conf(dirs["cwd"], {"workers": []})
    assert find_config_file({"HOME": str(dirs["home"])}) == dirs["cwd"] / "pydron.conf"


# ---------------------------------------------------------------- load_config


def test_multicore_expansion(tmp_path):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 3}]})
    gateways = load_config(path)
    assert [g.xspec for g in gateways] == [LOCAL] * 3
    assert len({g.label for g in gateways}) == 3
    assert all(g.label.startswith("workers[0]") for g in gateways)


def test_execnet_expansion(tmp_path):
    path = write_conf(tmp_path, {"workers": [
        {"type": "execnet", "spec": "4*popen"},
        {"type": "execnet", "spec": "popen//python=/usr/bin/python3.12"},
        {"type": "execnet", "spec": "2*ssh=user@node1//python=python3"},
        {"type": "multicore", "cores": 1},
    ]})
    gateways = load_config(path)
    assert [g.xspec for g in gateways] == [LOCAL] * 4 + [
        "popen//python=/usr/bin/python3.12",
        "ssh=user@node1//python=python3",
        "ssh=user@node1//python=python3",
        LOCAL,
    ]
    assert gateways[4].label == "workers[1] (execnet 'popen//python=/usr/bin/python3.12') #1"
    assert all(isinstance(g, GatewaySpec) for g in gateways)


def conf_error(tmp_path, data):
    path = write_conf(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_error_message_format(tmp_path):
    message = conf_error(tmp_path, {"workers": [
        {"type": "multicore", "cores": 2}, {"type": "multicore", "cores": "four"}]})
    assert message == (
        f'pydron.conf: {tmp_path / "pydron.conf"}: workers[1].cores: '
        'expected a positive integer, got "four"'
    )


def test_malformed_json_names_line_and_column(tmp_path):
    message = conf_error(tmp_path, '{"workers": [\n  {"type": "multicore" "cores": 2}\n]}')
    assert "line 2, column 24" in message and "invalid JSON" in message


@pytest.mark.parametrize("data,expected", [
    ([], "expected a JSON object"),
    ("3", "expected a JSON object"),
    ({}, "workers: missing required field"),
    ({"workers": {"type": "multicore"}}, "workers: expected a list"),
    ({"workers": []}, "workers: expected at least one"),
    ({"workers": [], "extra": 1}, "extra: unknown top-level field"),
])
def test_top_level_errors(tmp_path, data, expected):
    assert expected in conf_error(tmp_path, data)


@pytest.mark.parametrize("entry,field,expected", [
    ("multicore", None, "workers[1]: expected an object, got a string"),
    ({"cores": 2}, "type", "missing required field"),
    ({"type": "teleport", "hostname": "h"}, "type", 'unknown worker type "teleport"'),
    ({"type": 3}, "type", "unknown worker type 3"),
    ({"type": "multicore"}, "cores", "missing required field"),
    ({"type": "multicore", "cores": 0}, "cores", "expected a positive integer, got 0"),
    ({"type": "multicore", "cores": -1}, "cores", "expected a positive integer, got -1"),
    ({"type": "multicore", "cores": 2.0}, "cores", "expected a positive integer, got 2.0"),
    ({"type": "multicore", "cores": True}, "cores", "expected a positive integer, got true"),
    ({"type": "multicore", "cores": 2, "core": 1}, "core", "unknown field"),
    ({"type": "execnet"}, "spec", "missing required field"),
    ({"type": "execnet", "spec": 4}, "spec", "expected a non-empty string, got 4"),
    ({"type": "execnet", "spec": ""}, "spec", "expected a non-empty string"),
    ({"type": "execnet", "spec": "0*popen"}, "spec", 'invalid execnet spec "0*popen"'),
    ({"type": "execnet", "spec": "fork"}, "spec", 'invalid execnet spec "fork"'),
    ({"type": "execnet", "spec": "popen", "cores": 2}, "cores", "unknown field"),
])
def test_entry_errors(tmp_path, entry, field, expected):
    message = conf_error(tmp_path, {"workers": [{"type": "multicore", "cores": 1}, entry]})
    where = "workers[1]" if field is None else f"workers[1].{field}: "
    assert where in message
    assert expected in message


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.conf")


# ---------------------------------------------------------------- parse_tx


@pytest.mark.parametrize("spec,expected", [
    ("popen", [LOCAL]),
    ("3*popen", [LOCAL] * 3),
    (" 2 * popen ", [LOCAL] * 2),
    ("popen//python=python3.12", ["popen//python=python3.12"]),
    ("ssh=user@host//python=python3", ["ssh=user@host//python=python3"]),
    ("2*socket=127.0.0.1:8888", ["socket=127.0.0.1:8888"] * 2),
    ("vagrant_ssh=default//python=python3", ["vagrant_ssh=default//python=python3"]),
])
def test_parse_tx(spec, expected):
    assert parse_tx(spec) == expected


@pytest.mark.parametrize("spec", [
    "", "  ", "0*popen", "x*popen", "*popen", "-1*popen", "3*", "fork", "python=python3",
    "popen//ssh=host", "ssh", "popen=3", "popen//python", "popen////python=x", "popen//_x=1",
    "popen//python=a//python=b",
])
def test_parse_tx_errors(spec):
    with pytest.raises(ConfigError) as info:
        parse_tx(spec)
    assert repr(spec) in str(info.value)


# ---------------------------------------------------------------- worker_specs


@pytest.fixture
def isolated(dirs, monkeypatch):
    """An environment whose cwd and home are empty temporary directories."""
    monkeypatch.chdir(dirs["cwd"])
    return {"HOME": str(dirs["home"])}


def test_pydron_tx(isolated):
    gateways = worker_specs({**isolated, "PYDRON_TX": "2*popen; ssh=u@h//python=python3;"})
    assert [g.xspec for g in gateways] == [LOCAL, LOCAL, "ssh=u@h//python=python3"]
    assert gateways[0].label == "PYDRON_TX '2*popen' #1"


def test_pydron_tx_beats_config_file(isolated, dirs):
    write_conf(dirs["cwd"], {"workers": [{"type": "multicore", "cores": 5}]})
    assert len(worker_specs({**isolated, "PYDRON_TX": "popen"})) == 1


def test_bad_pydron_tx(isolated):
    with pytest.raises(ConfigError) as info:
        worker_specs({**isolated, "PYDRON_TX": "popen;x*popen"})
    assert "PYDRON_TX" in str(info.value) and "'x*popen'" in str(info.value)


def test_config_file_used(isolated, dirs):
    write_conf(dirs["home"], {"workers": [{"type": "multicore", "cores": 5}]})
    assert [g.xspec for g in worker_specs(isolated)] == [LOCAL] * 5


def test_system_config_used(isolated, dirs, monkeypatch):
    monkeypatch.setattr(config, "SYSTEM_CONFIG", write_conf(dirs["etc"], {
        "workers": [{"type": "execnet", "spec": "2*popen"}]}))
    assert len(worker_specs(isolated)) == 2


@pytest.mark.parametrize("cpus,expected", [(3, 3), (1, 1)])
def test_default_is_one_worker_per_core(isolated, monkeypatch, cpus, expected):
    monkeypatch.setattr(config, "usable_cores", lambda: cpus)
    gateways = worker_specs({**isolated, "PYDRON_TX": ""})
    assert gateways == [GatewaySpec(f"popen-{k}", LOCAL) for k in range(1, expected + 1)]


def test_usable_cores_follow_cpu_affinity(monkeypatch):
    """`taskset -c 0 python ...`: one usable core, however many the machine has."""
    monkeypatch.delattr(config.os, "process_cpu_count", raising=False)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 64)
    assert config.usable_cores() == 1


def test_usable_cores_of_the_real_process():
    assert 1 <= config.usable_cores() <= (config.os.cpu_count() or 1)


# ---------------------------------------------------------------- oversubscription


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(config, "usable_cores", lambda: 2)


@pytest.mark.parametrize("entry,field", [
    ({"type": "multicore", "cores": 9}, "cores"),
    ({"type": "execnet", "spec": "9*popen"}, "spec"),
])
def test_too_many_local_workers_need_oversubscribe(tmp_path, two_cores, entry, field):
    path = write_conf(tmp_path, {"workers": [entry]})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}: workers[0].{field}: 9 local worker processes on 2 usable core(s)" in message
    assert '"oversubscribe": true' in message
    assert len(load_config(write_conf(tmp_path, {"workers": [{**entry, "oversubscribe": True}]}))) == 9


def test_four_per_core_is_allowed(tmp_path, two_cores):
    assert len(load_config(write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 8}]}))) == 8


def test_remote_workers_do_not_count_against_local_cores(tmp_path, two_cores):
    path = write_conf(tmp_path, {"workers": [{"type": "execnet", "spec": "20*ssh=u@h//python=python3"}]})
    assert len(load_config(path)) == 20


def test_oversubscribe_must_be_a_boolean(tmp_path, two_cores):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1, "oversubscribe": "yes"}]})
    with pytest.raises(ConfigError, match=r"workers\[0\]\.oversubscribe: expected true or false"):
        load_config(path)


def test_pydron_tx_oversubscription(isolated, two_cores):
    with pytest.raises(ConfigError) as info:
        worker_specs({**isolated, "PYDRON_TX": "100000*popen"})
    assert str(info.value).startswith("PYDRON_TX: 100000 local worker processes on 2 usable core(s)")
    assert "PYDRON_OVERSUBSCRIBE=1" in str(info.value)
    assert len(worker_specs({**isolated, "PYDRON_TX": "9*popen", "PYDRON_OVERSUBSCRIBE": "1"})) == 9


@pytest.mark.parametrize("tx", [" ; ", ";", ";;  ;"])
def test_pydron_tx_without_a_spec_is_an_error(isolated, tx):
    with pytest.raises(ConfigError, match="^PYDRON_TX: no worker spec in"):
        worker_specs({**isolated, "PYDRON_TX": tx})


# ---------------------------------------------------------------- retries


def test_retries_default_environment_and_file(isolated, dirs):
    assert config.retries(isolated) == 3
    write_conf(dirs["cwd"], {"workers": [{"type": "multicore", "cores": 1}], "retries": 5})
    assert config.retries(isolated) == 5
    assert config.retries({**isolated, "PYDRON_RETRIES": "2"}) == 2


@pytest.mark.parametrize("value", [0, -1, "3", True, 1.5])
def test_bad_retries_in_file_names_the_field(tmp_path, value):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}], "retries": value})
    with pytest.raises(ConfigError, match=r"pydron\.conf: .*: retries: expected a positive integer"):
        load_config(path)


@pytest.mark.parametrize("value", ["0", "x", "-2"])
def test_bad_pydron_retries(isolated, value):
    with pytest.raises(ConfigError, match="^PYDRON_RETRIES: expected a positive integer"):
        config.retries({**isolated, "PYDRON_RETRIES": value})


# ---------------------------------------------------------------- timeout


def test_timeout_default_environment_and_file(isolated, dirs):
    assert config.timeout(isolated) is None
    write_conf(dirs["cwd"], {"workers": [{"type": "multicore", "cores": 1}], "timeout": 2.5})
    assert config.timeout(isolated) == 2.5
    assert config.timeout({**isolated, "PYDRON_TIMEOUT": "7"}) == 7.0


@pytest.mark.parametrize("value", [0, -1, "3", True, None])
def test_bad_timeout_in_file_names_the_field(tmp_path, value):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}], "timeout": value})
    with pytest.raises(ConfigError, match=r"pydron\.conf: .*: timeout: expected a positive number of seconds"):
        load_config(path)


@pytest.mark.parametrize("value", ["0", "x", "-2", "inf", "nan"])
def test_bad_pydron_timeout(isolated, value):
    with pytest.raises(ConfigError, match="^PYDRON_TIMEOUT: expected a positive number of seconds"):
        config.timeout({**isolated, "PYDRON_TIMEOUT": value})


# ---------------------------------------------------------------- security: socket= and file trust

SOCKET = "socket=127.0.0.1:8888"


@pytest.mark.parametrize("spec", [SOCKET, f"2*{SOCKET}", f"{SOCKET}//python=python3"])
def test_socket_entry_is_refused_without_insecure(tmp_path, spec):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1},
                                             {"type": "execnet", "spec": spec}]})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"pydron.conf: {path}: workers[1].spec: ")
    assert "without authentication" in message and "run code" in message
    assert '"insecure": true' in message


def test_socket_entry_allowed_with_insecure_warns_once_per_spec(tmp_path):
    path = write_conf(tmp_path, {"workers": [
        {"type": "execnet", "spec": f"3*{SOCKET}", "insecure": True}]})
    with pytest.warns(config.InsecureGatewayWarning) as record:
        gateways = load_config(path)
    assert [g.xspec for g in gateways] == [SOCKET] * 3
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message and "workers[0].spec" in message and SOCKET in message
    assert "without authentication" in message and '"insecure": true' in message


def test_insecure_must_be_a_boolean(tmp_path):
    path = write_conf(tmp_path, {"workers": [{"type": "execnet", "spec": SOCKET, "insecure": "yes"}]})
    with pytest.raises(ConfigError, match=r"workers\[0\]\.insecure: expected true or false"):
        load_config(path)


def test_insecure_is_not_needed_for_other_specs(tmp_path, recwarn):
    path = write_conf(tmp_path, {"workers": [{"type": "execnet", "spec": "ssh=u@h//python=python3"}]})
    assert len(load_config(path)) == 1
    assert not [w for w in recwarn if issubclass(w.category, config.InsecureGatewayWarning)]


def test_socket_in_pydron_tx_needs_pydron_insecure(isolated):
    environ = {**isolated, "PYDRON_TX": f"popen;2*{SOCKET}"}
    with pytest.raises(ConfigError) as info:
        worker_specs(environ)
    message = str(info.value)
    assert message.startswith(f"PYDRON_TX '2*{SOCKET}': refused: ")
    assert "without authentication" in message and "PYDRON_INSECURE=1" in message
    with pytest.raises(ConfigError):
        worker_specs({**environ, "PYDRON_INSECURE": "0"})
    with pytest.warns(config.InsecureGatewayWarning, match="PYDRON_INSECURE=1") as record:
        gateways = worker_specs({**environ, "PYDRON_INSECURE": "1"})
    assert [g.xspec for g in gateways] == [LOCAL, SOCKET, SOCKET]
    assert len(record) == 1 and f"2*{SOCKET}" in str(record[0].message)


def conf_mode_error(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize("mode,who", [(0o664, "group"), (0o646, "others"), (0o666, "group and others"),
                                      (0o620, "group")])
def test_config_writable_by_others_is_refused(tmp_path, mode, who):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}]})
    path.chmod(mode)
    message = conf_mode_error(path)
    assert message.startswith(f"pydron.conf: {path}: refused: writable by {who}: mode {mode:o}, owner ")
    assert "ProxyCommand" in message
    assert message.endswith(f"run: chmod go-w {path}")


def test_every_read_of_the_config_checks_it(isolated, dirs):
    """retries() and timeout() read the file too; so does worker_specs()."""
    path = write_conf(dirs["cwd"], {"workers": [{"type": "multicore", "cores": 1}], "retries": 2})
    path.chmod(0o666)
    for read in (worker_specs, config.retries, config.timeout):
        with pytest.raises(ConfigError, match="refused: writable by group and others"):
            read(isolated)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400, 0o755])
def test_config_private_or_read_only_for_others_is_accepted(tmp_path, mode):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}]})
    path.chmod(mode)
    assert len(load_config(path)) == 1


def test_root_owned_config_is_accepted(tmp_path, monkeypatch):
    """E.g. /etc/pydron.conf, read by an ordinary user: root may write it, nobody else."""
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}]})
    real = config.os.fstat
    monkeypatch.setattr(config.os, "geteuid", lambda: 4242)
    monkeypatch.setattr(config.os, "fstat", lambda fd: _with_uid(real(fd), 0))
    assert len(load_config(path)) == 1
    path.chmod(0o664)
    assert "refused: writable by group" in conf_mode_error(path)


def test_config_owned_by_someone_else_is_refused_simulated(tmp_path, monkeypatch):
    """The ownership rule for an ordinary user, whoever runs the tests."""
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}]})
    real = config.os.fstat
    monkeypatch.setattr(config.os, "geteuid", lambda: 4242)
    monkeypatch.setattr(config.os, "fstat", lambda fd: _with_uid(real(fd), 4243))
    message = conf_mode_error(path)
    assert message.startswith(f"pydron.conf: {path}: refused: owned by uid 4243, but you are uid 4242: "
                              "only a file owned by you or by root is trusted")
    assert "copy it to a file of your own" in message


def _with_uid(st, uid):
    fields = list(st)
    fields[4] = uid  # st_uid
    return config.os.stat_result(fields)


@pytest.mark.skipif(not hasattr(config.os, "geteuid") or config.os.geteuid() != 0,
                    reason="needs root to give the file to another user")
def test_config_owned_by_another_user_is_refused(tmp_path):
    path = write_conf(tmp_path, {"workers": [{"type": "multicore", "cores": 1}]})
    path.chmod(0o644)
    config.os.chown(path, 65534, 65534)
    message = conf_mode_error(path)
    assert message.startswith(f"pydron.conf: {path}: refused: owned by ")
    assert "(uid 65534), but you are " in message and "(uid 0): only a file owned by you or by root" in message
    assert "ProxyCommand" in message and "copy it to a file of your own" in message
