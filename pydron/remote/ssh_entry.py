"""The `ssh` entry of pydron.conf: its fields and their checks (the workers: ssh.py).

The readers of fields that other kinds share (`port`, `python`, `ssh_options`,
`data_ports`, key files) live here too; the `cloud` entry uses them.
"""
from __future__ import annotations

from pathlib import Path

from pydron.config_entry import Entry, kind, show, warn_if_readable
from pydron.remote import ssh
from pydron.remote.specs import GatewaySpec

def parse(entry: Entry) -> list[GatewaySpec]:
    """`cores` workers on one host, each its own `ssh` session (see pydron/remote/ssh.py)."""
    entry.fields(required=("hostname",), optional=ssh.OPTIONAL_FIELDS)
    data = entry.data
    hostname = entry.string("hostname")
    if not ssh.HOST_RE.match(hostname):
        raise entry.error("hostname", f"not a host name or address: {show(hostname)}")
    username = None
    if "username" in data:
        username = entry.string("username")
        if not ssh.USER_RE.match(username):
            raise entry.error("username", f"not a user name: {show(username)}")
    port = read_port(entry)
    identity_file = None
    if "identity_file" in data:
        identity = Path(entry.string("identity_file")).expanduser()
        if not identity.is_absolute():
            identity = entry.path.parent / identity
        if not identity.is_file():
            raise entry.error("identity_file", f"no such file: {identity}")
        identity_file = str(identity)
    password = None
    if "password" in data:
        password = data["password"]
        if not isinstance(password, str) or not password or "\n" in password:
            # Never show the value: it may be a real password with a typo.
            raise entry.error("password", "expected a non-empty one-line string")
        warn_if_readable(entry.path)
    python = read_python(entry)
    cores = entry.positive_int("cores") if "cores" in data else 1
    tmp_dir = entry.string("tmp_dir") if "tmp_dir" in data else None
    options = read_ssh_options(entry)
    data_ports = read_data_ports(entry, cores)
    return ssh.gateway_specs(
        f"{entry.name} (ssh {hostname})", hostname=hostname, username=username, port=port,
        identity_file=identity_file, password=password, python=python, options=options,
        cores=cores, tmp_dir=tmp_dir, data_ports=data_ports,
    )


def read_port(entry: Entry) -> int | None:
    if "port" not in entry.data:
        return None
    port = entry.positive_int("port")
    if port > 65535:
        raise entry.error("port", f"expected a port number (1-65535), got {port}")
    return port


def read_python(entry: Entry) -> str:
    python = entry.string("python") if "python" in entry.data else "python3"
    if "//" in python or "\n" in python:
        raise entry.error("python", f"not a command for the remote Python: {show(python)}")
    return python


def read_ssh_options(entry: Entry) -> dict[str, str]:
    options: dict[str, str] = {}
    if "ssh_options" in entry.data:
        raw = entry.data["ssh_options"]
        if not isinstance(raw, dict):
            raise entry.error("ssh_options", f"expected an object of OpenSSH options, got {kind(raw)}")
        for key, value in raw.items():
            problem = ssh.option_problem(key, value)
            if problem:
                raise entry.error(f"ssh_options.{key}", problem)
            options[key] = ssh.option_text(value)
    return options


def read_data_ports(entry: Entry, cores: int) -> tuple[int, int] | None:
    if "data_ports" not in entry.data:
        return None
    value = entry.data["data_ports"]
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise entry.error("data_ports", f'expected a port range "start-end", got {show(value)}')
    start, end = int(parts[0]), int(parts[1])
    if not 1 <= start <= end <= 65535:
        raise entry.error("data_ports", f"expected ports within 1-65535, start <= end, got {show(value)}")
    if end - start + 1 < cores:
        raise entry.error(
            "data_ports", f"range {show(value)} has {end - start + 1} ports, fewer than cores={cores}"
        )
    return (start, end)


def read_key_file(entry: Entry, field: str) -> str:
    """An existing file named by ``field``; relative paths are relative to the config file."""
    path = Path(entry.string(field)).expanduser()
    if not path.is_absolute():
        path = entry.path.parent / path
    if not path.is_file():
        raise entry.error(field, f"no such file: {path}")
    return str(path)
