"""Where pydron's workers come from: `PYDRON_TX`, a `pydron.conf` file, or the local cores.

Everything is validated up front so that a bad spec or file produces one
`ConfigError` naming the file, the entry and the field, before any worker starts.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import execnet

from pydron.errors import ConfigError

CONFIG_NAME = "pydron.conf"
SYSTEM_CONFIG = Path("/etc") / CONFIG_NAME
CONF_VAR = "PYDRON_CONF"
TX_VAR = "PYDRON_TX"

#: execnet gateway types; exactly one must be set in an execnet spec.
GATEWAY_TYPES = ("popen", "ssh", "socket", "vagrant_ssh")


@dataclass(frozen=True)
class GatewaySpec:
    """One worker process, i.e. one execnet gateway, plus a name for error messages."""

    label: str
    xspec: str


# ---------------------------------------------------------------- discovery


def find_config_file(
    environ: Mapping[str, str] = os.environ,
    cwd: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Path | None:
    """Return the `pydron.conf` to use, or None if there is none.

    Looks in `$PYDRON_CONF` (a file, or a directory holding `pydron.conf`), then
    the current directory, the home directory and `/etc/pydron.conf`; first found wins.
    """
    explicit = environ.get(CONF_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{CONF_VAR}={explicit}: no such file: {path}")
        return path

    candidates = [Path.cwd() if cwd is None else Path(cwd)]
    home_dir = _home(environ) if home is None else Path(home)
    if home_dir is not None:
        candidates.append(home_dir)
    for directory in candidates:
        path = directory / CONFIG_NAME
        if path.is_file():
            return path
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def _home(environ: Mapping[str, str]) -> Path | None:
    if environ.get("HOME"):
        return Path(environ["HOME"])
    try:
        return Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        return None


# ---------------------------------------------------------------- --tx specs


def local_python_spec() -> str:
    """The execnet spec for one local worker running this same interpreter."""
    return f"popen//python={shlex.quote(sys.executable)}"


def _split_tx(spec: str) -> list[str]:
    """Expand one `[N*]xspec` into N execnet spec strings; ValueError says what is wrong."""
    text = spec.strip()
    count = 1
    if "*" in text:
        head, text = text.split("*", 1)
        if not head.strip().isdigit() or int(head) < 1:
            raise ValueError(f"multiplier {head.strip()!r} is not a positive integer")
        count = int(head)
        text = text.strip()
    if not text:
        raise ValueError("empty gateway spec")
    try:
        xspec = execnet.XSpec(text)
    except (IndexError, AttributeError, ValueError) as exc:
        # IndexError: an empty key, as in "popen////python=x"
        raise ValueError(f"not an execnet spec ({exc or 'empty key'})") from None
    kinds = [kind for kind in GATEWAY_TYPES if getattr(xspec, kind)]
    if len(kinds) != 1:
        found = "none" if not kinds else " and ".join(kinds)
        raise ValueError(
            f"expected exactly one gateway type ({', '.join(GATEWAY_TYPES)}), found {found}"
        )
    kind = kinds[0]
    value = getattr(xspec, kind)
    if kind == "popen" and value is not True:
        raise ValueError("'popen' takes no value (use popen//python=...)")
    if kind != "popen" and not isinstance(value, str):
        raise ValueError(f"{kind!r} needs a value, e.g. {kind}=HOST")
    if xspec.python is True:
        raise ValueError("'python' needs a value, e.g. python=python3")
    if kind == "popen" and not xspec.python:
        text = f"{text}//python={shlex.quote(sys.executable)}"
    return [text] * count


def parse_tx(spec: str) -> list[str]:
    """Parse one pytest-xdist style `--tx` spec (`[N*]xspec`) into N execnet spec strings.

    A `popen` without `python=` runs this interpreter (`sys.executable`).
    """
    try:
        return _split_tx(spec)
    except ValueError as exc:
        raise ConfigError(f"invalid worker spec {spec!r}: {exc}") from None


# ---------------------------------------------------------------- socket= gateways

INSECURE_VAR = "PYDRON_INSECURE"

#: Why a `socket=` gateway is refused unless the user opts in.
SOCKET_RISK = (
    "socket= gateways are plain TCP without authentication or encryption: anyone who can "
    "reach the port can run code on that host, and anyone on the path can send the master "
    "pickled data that runs code on it"
)


class InsecureGatewayWarning(UserWarning):
    """A `socket=` gateway was allowed (`"insecure": true` or `PYDRON_INSECURE=1`)."""


def _has_socket(xspecs: list[str]) -> bool:
    return any(execnet.XSpec(xspec).socket for xspec in xspecs)


def _warn_insecure(what: str, allowed_by: str) -> None:
    """Name the risk of an allowed socket= spec; with the default warning filters each
    distinct message is shown once per process, i.e. once per spec."""
    warnings.warn(f"{what}: {SOCKET_RISK} (allowed by {allowed_by})", InsecureGatewayWarning,
                  stacklevel=1)


def check_tx_security(spec: str, where: str, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a `--tx`/`PYDRON_TX` spec that opens a `socket=` gateway unless `PYDRON_INSECURE=1`.

    A command-line spec has no entry to carry `"insecure": true`, so the opt-in is the
    environment; ``where`` ("--tx", "PYDRON_TX") names the source in the error. When
    allowed, warns (the message names the spec only, so `--tx` and the `PYDRON_TX` it
    becomes warn once between them).
    """
    if not _has_socket(parse_tx(spec)):
        return
    if environ.get(INSECURE_VAR, "") in ("", "0"):
        raise ConfigError(
            f"{where} {spec.strip()!r}: refused: {SOCKET_RISK}; "
            f"set {INSECURE_VAR}=1 if you accept that"
        )
    _warn_insecure(f"worker spec {spec.strip()!r}", f"{INSECURE_VAR}=1")


def _tx_gateways(spec: str, where: str) -> list[GatewaySpec]:
    return [
        GatewaySpec(f"{where} {spec.strip()!r} #{k}", xspec)
        for k, xspec in enumerate(parse_tx(spec), 1)
    ]


# ---------------------------------------------------------------- pydron.conf


class _Entry:
    """One `workers[i]` object under validation; words errors as file: workers[i].field."""

    def __init__(self, path: Path, index: int, data: dict[str, Any]) -> None:
        self.path, self.index, self.data = path, index, data
        self.name = f"workers[{index}]"

    def error(self, field: str | None, message: str) -> ConfigError:
        where = self.name if field is None else f"{self.name}.{field}"
        return _file_error(self.path, f"{where}: {message}")

    def fields(self, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        """Reject unknown fields and missing required ones."""
        allowed = ("type", *required, *optional)
        for key in self.data:
            if key not in allowed:
                raise self.error(
                    key, f"unknown field for type {self.data['type']!r} "
                    f"(allowed: {', '.join(allowed)})"
                )
        for key in required:
            if key not in self.data:
                raise self.error(key, "missing required field")

    def positive_int(self, field: str) -> int:
        value = self.data[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(field, f"expected a positive integer, got {_show(value)}")
        return value

    def check_count(self, field: str, count: int) -> None:
        """Refuse more local workers than the cores can take, unless "oversubscribe": true."""
        oversubscribe = self.data.get("oversubscribe", False)
        if not isinstance(oversubscribe, bool):
            raise self.error("oversubscribe", f"expected true or false, got {_show(oversubscribe)}")
        reason = _too_many(count)
        if reason is not None and not oversubscribe:
            raise self.error(field, f"{reason}; add \"oversubscribe\": true to this entry if you mean it")

    def string(self, field: str) -> str:
        value = self.data[field]
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"expected a non-empty string, got {_show(value)}")
        return value


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not all the machine's."""
    counter = getattr(os, "process_cpu_count", None)  # 3.13
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Local workers beyond this many per usable core need an explicit "oversubscribe".
OVERSUBSCRIBE_FACTOR = 4
OVERSUBSCRIBE_VAR = "PYDRON_OVERSUBSCRIBE"


def _too_many(count: int) -> str | None:
    """Why ``count`` local worker processes are refused, or None."""
    limit = OVERSUBSCRIBE_FACTOR * usable_cores()
    if count <= limit:
        return None
    return (f"{count} local worker processes on {usable_cores()} usable core(s) "
            f"(more than {OVERSUBSCRIBE_FACTOR} per core)")


def _local_count(xspecs: list[str]) -> int:
    return sum(1 for xspec in xspecs if execnet.XSpec(xspec).popen and not execnet.XSpec(xspec).via)


def _multicore(entry: _Entry) -> list[GatewaySpec]:
    entry.fields(required=("cores",), optional=("oversubscribe",))
    cores = entry.positive_int("cores")
    entry.check_count("cores", cores)
    return [
        GatewaySpec(f"{entry.name} (multicore) #{k}", local_python_spec())
        for k in range(1, cores + 1)
    ]


def _execnet(entry: _Entry) -> list[GatewaySpec]:
    entry.fields(required=("spec",), optional=("oversubscribe", "insecure"))
    spec = entry.string("spec")
    try:
        xspecs = _split_tx(spec)
    except ValueError as exc:
        raise entry.error("spec", f"invalid execnet spec {_show(spec)}: {exc}") from None
    insecure = entry.data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise entry.error("insecure", f"expected true or false, got {_show(insecure)}")
    if _has_socket(xspecs):
        if not insecure:
            raise entry.error(
                "spec", f"{_show(spec)} refused: {SOCKET_RISK}; "
                'add "insecure": true to this entry if you accept that'
            )
        _warn_insecure(f"{entry.path}: {entry.name}.spec {_show(spec)}", '"insecure": true')
    entry.check_count("spec", _local_count(xspecs))
    return [
        GatewaySpec(f"{entry.name} (execnet {spec.strip()!r}) #{k}", xspec)
        for k, xspec in enumerate(xspecs, 1)
    ]


def _ssh(entry: _Entry) -> list[GatewaySpec]:
    """`cores` workers on one host, each its own `ssh` session (see pydron/remote/ssh.py)."""
    from pydron.remote import ssh

    entry.fields(required=("hostname",), optional=ssh.OPTIONAL_FIELDS)
    data = entry.data
    hostname = entry.string("hostname")
    if not ssh.HOST_RE.match(hostname):
        raise entry.error("hostname", f"not a host name or address: {_show(hostname)}")
    username = None
    if "username" in data:
        username = entry.string("username")
        if not ssh.USER_RE.match(username):
            raise entry.error("username", f"not a user name: {_show(username)}")
    port = _port(entry)
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
        _warn_if_readable(entry.path)
    python = _python(entry)
    cores = entry.positive_int("cores") if "cores" in data else 1
    tmp_dir = entry.string("tmp_dir") if "tmp_dir" in data else None
    options = _ssh_options(entry)
    data_ports = _data_ports(entry, cores)
    return ssh.gateway_specs(
        f"{entry.name} (ssh {hostname})", hostname=hostname, username=username, port=port,
        identity_file=identity_file, password=password, python=python, options=options,
        cores=cores, tmp_dir=tmp_dir, data_ports=data_ports,
    )


def _port(entry: _Entry) -> int | None:
    if "port" not in entry.data:
        return None
    port = entry.positive_int("port")
    if port > 65535:
        raise entry.error("port", f"expected a port number (1-65535), got {port}")
    return port


def _python(entry: _Entry) -> str:
    python = entry.string("python") if "python" in entry.data else "python3"
    if "//" in python or "\n" in python:
        raise entry.error("python", f"not a command for the remote Python: {_show(python)}")
    return python


def _ssh_options(entry: _Entry) -> dict[str, str]:
    from pydron.remote import ssh

    options: dict[str, str] = {}
    if "ssh_options" in entry.data:
        raw = entry.data["ssh_options"]
        if not isinstance(raw, dict):
            raise entry.error("ssh_options", f"expected an object of OpenSSH options, got {_kind(raw)}")
        for key, value in raw.items():
            problem = ssh.option_problem(key, value)
            if problem:
                raise entry.error(f"ssh_options.{key}", problem)
            options[key] = ssh.option_text(value)
    return options


def _data_ports(entry: _Entry, cores: int) -> tuple[int, int] | None:
    if "data_ports" not in entry.data:
        return None
    value = entry.data["data_ports"]
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise entry.error("data_ports", f'expected a port range "start-end", got {_show(value)}')
    start, end = int(parts[0]), int(parts[1])
    if not 1 <= start <= end <= 65535:
        raise entry.error("data_ports", f"expected ports within 1-65535, start <= end, got {_show(value)}")
    if end - start + 1 < cores:
        raise entry.error(
            "data_ports", f"range {_show(value)} has {end - start + 1} ports, fewer than cores={cores}"
        )
    return (start, end)


def _key_file(entry: _Entry, field: str) -> str:
    """An existing file named by ``field``; relative paths are relative to the config file."""
    path = Path(entry.string(field)).expanduser()
    if not path.is_absolute():
        path = entry.path.parent / path
    if not path.is_file():
        raise entry.error(field, f"no such file: {path}")
    return str(path)


def _key_pair_name(entry: _Entry) -> str:
    name = entry.string("keypair")
    if not name.strip() or len(name) > 255 or any(not c.isprintable() for c in name):
        raise entry.error("keypair", f"expected a key pair name (printable, at most 255 characters), "
                          f"got {_show(name)}")
    return name


def _cloud(entry: _Entry) -> list[GatewaySpec]:
    """`count` libcloud nodes of `cores` workers each (see pydron/remote/cloud.py).

    Only validated here: nodes are created when the pool starts its workers.
    """
    from pydron.remote import cloud

    entry.fields(required=cloud.REQUIRED_FIELDS, optional=cloud.OPTIONAL_FIELDS)
    data = entry.data
    provider = entry.string("provider").strip()
    try:
        driver_class = cloud.resolve_provider(provider)
    except ValueError as exc:
        raise entry.error("provider", str(exc)) from None
    credentials = {}
    for name in ("accesskeyid", "accesskey"):
        if name in data:
            value = data[name]
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                # Never show the value: it may be a real credential with a typo.
                raise entry.error(name, "expected a non-empty one-line string")
            credentials[name] = value
    if "accesskey" in credentials and "accesskeyid" not in credentials:
        raise entry.error("accesskeyid", "missing: accesskey is given without its accesskeyid")
    if "accesskey" in credentials:
        _warn_if_readable(entry.path, "cloud credentials")
    username = None
    if "username" in data:
        from pydron.remote import ssh

        username = entry.string("username")
        if not ssh.USER_RE.match(username):
            raise entry.error("username", f"not a user name: {_show(username)}")
    objects = {}
    for name in ("driver_options", "node_options"):
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise entry.error(name, f"expected an object of keyword arguments, got {_kind(value)}")
        for key in value:
            if not key.isidentifier():
                raise entry.error(f"{name}.{key}", "not a Python keyword argument name")
        objects[name] = dict(value)
    timeouts = {}
    for name in ("ssh_timeout", "boot_timeout", "poll_interval"):
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise entry.error(name, f"expected a positive number of seconds, got {_show(value)}")
            timeouts[name] = float(value)
    keep = {}
    if "keep_alive" in data:
        value = data["keep_alive"]
        if isinstance(value, bool):
            keep["keep_alive"] = value
        elif isinstance(value, (int, float)) and value > 0:
            keep.update(keep_alive=True, lease=float(value))
        else:
            raise entry.error("keep_alive", f"expected true, false or a lease in minutes (> 0), "
                              f"got {_show(value)}")
    if data.get("address", "public") not in ("public", "private"):
        raise entry.error("address", f'expected "public" or "private", got {_show(data["address"])}')
    cores = entry.positive_int("cores") if "cores" in data else 1
    settings = cloud.CloudSettings(
        name=f"{entry.name}", error=entry.error, provider=provider, driver_class=driver_class,
        accesskeyid=credentials.get("accesskeyid"), accesskey=credentials.get("accesskey"),
        region=entry.string("region") if "region" in data else None,
        imageid=entry.string("imageid"), sizeid=entry.string("sizeid"), username=username,
        publickey=_key_file(entry, "publickey") if "publickey" in data else None,
        privatekey=_key_file(entry, "privatekey") if "privatekey" in data else None,
        keypair=_key_pair_name(entry) if "keypair" in data else None,
        tmp_dir=entry.string("tmp_dir") if "tmp_dir" in data else None,
        data_ports=_data_ports(entry, cores),
        count=entry.positive_int("count") if "count" in data else 1, cores=cores,
        driver_options=objects["driver_options"], node_options=objects["node_options"],
        port=_port(entry), python=_python(entry), ssh_options=_ssh_options(entry), **timeouts,
        address=data.get("address", "public"), **keep,
    )
    return cloud.gateway_specs(settings)


def _warn_if_readable(path: Path, what: str = "an ssh password") -> None:
    """A file with a password or credentials in it should be readable by its owner only."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o044:
        warnings.warn(
            f"{path} holds {what} but is readable by group or others "
            f"(mode {mode & 0o777:o}); run: chmod 600 {shlex.quote(str(path))}",
            stacklevel=2,
        )


#: Worker entry types: `type` value -> validator that turns the entry into gateways.
ENTRY_TYPES: dict[str, Callable[[_Entry], list[GatewaySpec]]] = {
    "multicore": _multicore,
    "execnet": _execnet,
    "ssh": _ssh,
    "cloud": _cloud,
    "dask": lambda entry: __import__("pydron.remote.dask_entry", fromlist=["parse"]).parse(entry),
}


def load_config(path: str | os.PathLike[str]) -> list[GatewaySpec]:
    """Read and validate a `pydron.conf` JSON file and return the gateways it asks for.

    Any problem raises one ConfigError naming the file, the entry and the field.
    """
    path = Path(path)
    data = _read_config(path)
    gateways: list[GatewaySpec] = []
    for index, item in enumerate(data["workers"]):
        if not isinstance(item, dict):
            raise _file_error(path, f"workers[{index}]: expected an object, got {_kind(item)}")
        entry = _Entry(path, index, item)
        if "type" not in item:
            raise entry.error("type", f"missing required field (one of: {', '.join(ENTRY_TYPES)})")
        kind = item["type"]
        if not isinstance(kind, str) or kind not in ENTRY_TYPES:
            raise entry.error(
                "type", f"unknown worker type {_show(kind)} (known: {', '.join(ENTRY_TYPES)})"
            )
        specs = ENTRY_TYPES[kind](entry)
        if len(data["workers"]) > 1 and any(hasattr(spec, "make_backend") for spec in specs):
            raise entry.error("type", f"a {_show(kind)} entry runs every task itself and cannot be "
                                      f"mixed with other worker entries in one {CONFIG_NAME}")
        gateways.extend(specs)
    return gateways


TOP_LEVEL = ("workers", "retries", "timeout")


def _read_config(path: Path) -> dict[str, Any]:
    """The file's JSON object, its top level validated.

    Every read of a config file goes through here, so that none is used that
    someone else could have written (see `_check_trusted`).
    """
    try:
        with open(path, "rb") as file:
            _check_trusted(path, os.fstat(file.fileno()))  # the file read, not a swapped one
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _file_error(path, f"cannot read file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _file_error(
            path, f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None

    if not isinstance(data, dict):
        raise _file_error(path, f'expected a JSON object {{"workers": [...]}}, got {_kind(data)}')
    unknown = [key for key in data if key not in TOP_LEVEL]
    if unknown:
        raise _file_error(path, f"{unknown[0]}: unknown top-level field (allowed: {', '.join(TOP_LEVEL)})")
    if "retries" in data:
        value = data["retries"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _file_error(path, f"retries: expected a positive integer, got {_show(value)}")
    if "timeout" in data:
        value = data["timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise _file_error(path, f"timeout: expected a positive number of seconds, got {_show(value)}")
    if "workers" not in data:
        example = '"workers": [{"type": "multicore", "cores": 4}]'
        raise _file_error(path, f"workers: missing required field (e.g. {example})")
    workers = data["workers"]
    if not isinstance(workers, list):
        raise _file_error(path, f"workers: expected a list of worker entries, got {_kind(workers)}")
    if not workers:
        raise _file_error(path, "workers: expected at least one worker entry, got an empty list")
    return data


def _check_trusted(path: Path, st: os.stat_result) -> None:
    """Refuse a config file that another user wrote or can write.

    The file runs commands as you (`ProxyCommand` in `ssh_options`, `python=`, execnet
    specs), so, as OpenSSH does with its own files, it must be owned by you or by root
    and not writable by group or others.
    """
    if not hasattr(os, "geteuid"):  # no POSIX owners (Windows)
        return
    me = os.geteuid()
    why = "it can run commands as you (ProxyCommand in ssh_options, python=)"
    quoted = shlex.quote(str(path))
    if st.st_uid not in (me, 0):
        raise _file_error(path, (
            f"refused: owned by {_user(st.st_uid)}, but you are {_user(me)}: only a file owned "
            f"by you or by root is trusted, as {why}; "
            f"copy it to a file of your own (cp {quoted} NEWFILE, then PYDRON_CONF=NEWFILE) "
            f"or have root chown it to you"
        ))
    if st.st_mode & 0o022:
        who = " and ".join(name for bit, name in ((0o020, "group"), (0o002, "others"))
                           if st.st_mode & bit)
        raise _file_error(path, (
            f"refused: writable by {who}: mode {st.st_mode & 0o777:o}, owner "
            f"{_user(st.st_uid)}; only its owner may write it, as {why}; run: chmod go-w {quoted}"
        ))


def _user(uid: int) -> str:
    """``name (uid N)``, or just the uid for a user without a passwd entry."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _file_error(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{CONFIG_NAME}: {path}: {message}")


def _show(value: Any) -> str:
    """A JSON rendering of a bad value for an error message, shortened if long."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({_show(value)})"


# ---------------------------------------------------------------- the answer


RETRIES_VAR = "PYDRON_RETRIES"
DEFAULT_RETRIES = 3


def retries(environ: Mapping[str, str] = os.environ) -> int:
    """How many workers one task may take down before it fails: `PYDRON_RETRIES`,
    else the `retries` of the `pydron.conf` found, else 3."""
    value = environ.get(RETRIES_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{RETRIES_VAR}: expected a positive integer, got {value!r}")
        return int(value)
    path = find_config_file(environ)
    if path is not None:
        return _read_config(path).get("retries", DEFAULT_RETRIES)
    return DEFAULT_RETRIES


TIMEOUT_VAR = "PYDRON_TIMEOUT"


def timeout(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds any one functional call may run (None: no limit): `PYDRON_TIMEOUT`, else
    the `timeout` of the `pydron.conf` found. ``@functional(timeout=...)`` overrides it."""
    value = environ.get(TIMEOUT_VAR, "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if not seconds > 0 or seconds == float("inf"):
            raise ConfigError(f"{TIMEOUT_VAR}: expected a positive number of seconds, got {value!r}")
        return seconds
    path = find_config_file(environ)
    if path is not None:
        limit = _read_config(path).get("timeout")
        return float(limit) if limit is not None else None
    return None


def worker_specs(environ: Mapping[str, str] = os.environ) -> list[GatewaySpec]:
    """The gateways the pool should start.

    `PYDRON_TX` (`;`-separated `--tx` specs) if set, else the first `pydron.conf`
    found, else one local worker per core.
    """
    tx = environ.get(TX_VAR, "")
    if tx.strip():
        specs = [part for part in tx.split(";") if part.strip()]
        if not specs:
            raise ConfigError(f"{TX_VAR}: no worker spec in {tx!r} (e.g. {TX_VAR}=\"2*popen\")")
        gateways: list[GatewaySpec] = []
        for spec in specs:
            try:
                gateways.extend(_tx_gateways(spec, TX_VAR))
            except ConfigError as exc:
                raise ConfigError(f"{TX_VAR}: {exc}") from None
            check_tx_security(spec, TX_VAR, environ)
        reason = _too_many(_local_count([g.xspec for g in gateways]))
        if reason is not None and environ.get(OVERSUBSCRIBE_VAR, "") in ("", "0"):
            raise ConfigError(f"{TX_VAR}: {reason}; set {OVERSUBSCRIBE_VAR}=1 if you mean it")
        return gateways
    path = find_config_file(environ)
    if path is not None:
        return _share(path, load_config(path), environ)
    cores = usable_cores()
    return [GatewaySpec(f"popen-{k}", local_python_spec()) for k in range(1, cores + 1)]


SHARE_VAR = "PYDRON_SHARE"


def _share(path: Path, gateways: list[GatewaySpec], environ: Mapping[str, str]) -> list[GatewaySpec]:
    """This process's part of ``path``'s gateways, if `PYDRON_SHARE` is "I,J,...:PATH" for it.

    The pytest plugin shares one pydron.conf out among pytest-xdist workers this way; the
    path in the value keeps a test that points `PYDRON_CONF` elsewhere from being affected.
    """
    value = environ.get(SHARE_VAR, "")
    indices, sep, shared_path = value.partition(":")
    if not sep or os.path.abspath(shared_path) != os.path.abspath(path):
        return gateways
    try:
        chosen = [int(index) for index in indices.split(",")]
    except ValueError:
        raise ConfigError(f"{SHARE_VAR}: expected positions like 0,2 before the ':', got {indices!r}") from None
    if any(not 0 <= index < len(gateways) for index in chosen):
        raise ConfigError(f"{SHARE_VAR}: {path} has {len(gateways)} workers; no position among {indices}")
    return [gateways[index] for index in chosen]
