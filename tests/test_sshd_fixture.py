"""The ``sshd`` fixture runs a real OpenSSH server that ssh can log in to."""

import contextlib
import os
import stat
import subprocess
import time

import pytest

from realparts import unavailable
from sshd import free_port

FAKE_NODE = "10.255.0.1"  # never contacted: only reachable through ProxyCommand


def run(argv, env=None, timeout=60):
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_key_login_runs_command(sshd):
    result = run(sshd.ssh_command("echo", "ok"))
    assert result.returncode == 0, result.stderr + sshd.log_tail()
    assert result.stdout == "ok\n"
    assert sshd.host == "127.0.0.1"


def test_remote_identity_and_python(sshd):
    result = run(sshd.ssh_command("id -un; command -v python3"))
    assert result.returncode == 0, result.stderr
    user, python = result.stdout.split()
    assert user == sshd.user
    assert python == sshd.python


def test_password_login_with_askpass(sshd, tmp_path):
    if sshd.password is None:
        unavailable("password login needs sshd running as root")
    askpass = tmp_path / "askpass.sh"
    askpass.write_text('#!/bin/sh\nprintf \'%s\\n\' "$PYDRON_TEST_PASSWORD"\n')
    askpass.chmod(stat.S_IRWXU)
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force",
               PYDRON_TEST_PASSWORD=sshd.password)
    env.pop("SSH_AUTH_SOCK", None)
    argv = sshd.ssh_command("echo", "ok", options={
        "BatchMode": "no",
        "PubkeyAuthentication": "no",
        "PreferredAuthentications": "password",
        "NumberOfPasswordPrompts": "1",
    })
    assert sshd.password not in " ".join(argv)
    result = run(argv, env=env)
    assert result.returncode == 0, result.stderr + sshd.log_tail()
    assert result.stdout == "ok\n"

    env["PYDRON_TEST_PASSWORD"] = "wrong"
    result = run(argv, env=env)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_unknown_client_key_is_refused(sshd, tmp_path):
    key = tmp_path / "other"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    result = run(sshd.ssh_command("true", options={"IdentityFile": str(key)}))
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_closed_port_fails_quickly(sshd):
    port = free_port()  # nobody listens there
    start = time.monotonic()
    argv = sshd.ssh_command("true")
    argv[argv.index("-p") + 1] = str(port)
    result = run(argv, timeout=30)
    assert result.returncode == 255
    assert "Connection refused" in result.stderr
    assert time.monotonic() - start < 5


def test_proxycommand_reaches_server_for_fake_address(sshd):
    argv = sshd.ssh_command("echo", "ok", host=FAKE_NODE,
                            options={**sshd.proxy_options(), "LogLevel": "DEBUG1"})
    result = run(argv)
    assert result.returncode == 0, result.stderr + sshd.log_tail()
    assert result.stdout == "ok\n"
    assert f"Executing proxy command: exec nc 127.0.0.1 {sshd.port}" in result.stderr
    # ssh itself opened no connection to the fake address.
    assert "Connecting to" not in result.stderr
    assert "Connection established" not in result.stderr


def test_ssh_config_file_with_proxy(sshd, tmp_path):
    config = sshd.write_ssh_config(str(tmp_path / "config"), alias="node1",
                                   hostname=FAKE_NODE, proxy=True)
    result = run(["ssh", "-F", config, "node1", "echo", "ok"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_sessions_are_tagged_and_leftovers_are_seen(sshd):
    result = run(sshd.ssh_command("echo", "$PYDRON_TEST_SSHD"))
    assert result.stdout.strip() == sshd.tag
    # A process that outlives its session is a leftover...
    result = run(sshd.ssh_command("setsid sleep 300 </dev/null >/dev/null 2>&1 &"))
    assert result.returncode == 0, result.stderr
    # The detached process may still be forking when the session ends: look
    # until it shows up (a busy machine can take a while), then end it.
    deadline = time.monotonic() + 10
    leftovers = sshd.leftover_processes(timeout=0)
    while not any("sleep 300" in line for line in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)
        leftovers = sshd.leftover_processes(timeout=0)
    try:
        assert len(leftovers) == 1 and "sleep 300" in leftovers[0], leftovers
    finally:
        for line in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), 9)
    # ...and is gone once killed.
    assert sshd.leftover_processes() == []


def test_no_leftover_processes_after_sessions(sshd):
    for _ in range(3):
        assert run(sshd.ssh_command("sleep 0.1; echo ok")).stdout == "ok\n"
    assert sshd.leftover_processes() == []


def test_user_tmp_is_writable_by_the_user(sshd):
    path = f"{sshd.user_tmp}/probe"
    result = run(sshd.ssh_command(f"echo hi > {path} && cat {path}"))
    assert result.stdout == "hi\n", result.stderr
