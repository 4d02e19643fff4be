"""Shared fixtures.  Helpers live in modules next to this file (sshd.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sshd as _sshd  # noqa: E402
from realparts import unavailable  # noqa: E402


@pytest.fixture(scope="session")
def sshd():
    """A real OpenSSH server on 127.0.0.1, one per pytest(-xdist) process.

    Yields a ``tests/sshd.py:SshServer``: host, port, user, password,
    identity_file, known_hosts, ssh_options, ssh_command(*args),
    proxy_options(), leftover_processes(), user_tmp, python.
    Teardown fails if processes started through it are still alive.
    """
    try:
        _sshd.ensure_sshd()
    except _sshd.SshdUnavailable as exc:
        unavailable(f"the ssh tests need sshd: {exc}")
    server = _sshd.SshServer.start(os.environ.get("PYTEST_XDIST_WORKER", "main"))
    try:
        yield server
    finally:
        server.stop(check=True)
