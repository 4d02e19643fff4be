"""Where pydron's workers come from: `PYDRON_TX`, a `pydron.conf` file, or the local cores.

Everything is validated up front so that a bad spec or file produces one
`ConfigError` naming the file, the entry and the field, before any worker starts.

This module finds and reads the file and checks its top level; each worker
entry goes to the parser its `type` names in ``ENTRY_TYPES``, which lives with
that kind of worker (remote/execnet_entry.py, ssh_entry.py, cloud_entry.py,
dask_entry.py) and is imported only when an entry of its type is read.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydron.config_entry import CONFIG_NAME, Entry, file_error as _file_error, kind as _kind, show as _show
from pydron.errors import ConfigError
# Re-exported: callers (cli, pytest plugin, tests) know them as pydron.config's.
from pydron.remote.execnet_entry import (GATEWAY_TYPES, INSECURE_VAR, SOCKET_RISK,  # noqa: F401
                                         InsecureGatewayWarning, check_tx_security, local_count,
                                         local_python_spec, parse_tx)
from pydron.remote.specs import GatewaySpec

_Entry = Entry  # the name it had here
SYSTEM_CONFIG = Path("/etc") / CONFIG_NAME
CONF_VAR = "PYDRON_CONF"
TX_VAR = "PYDRON_TX"

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


def _tx_gateways(spec: str, where: str) -> list[GatewaySpec]:
    return [
        GatewaySpec(f"{where} {spec.strip()!r} #{k}", xspec)
        for k, xspec in enumerate(parse_tx(spec), 1)
    ]


# ---------------------------------------------------------------- pydron.conf


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


#: Worker entry types: `type` value -> "module:function" of its parser, which turns an
#: ``Entry`` into specs (execnet gateways, or one spec that brings its own backend).
ENTRY_TYPES: dict[str, str] = {
    "multicore": "pydron.remote.execnet_entry:parse_multicore",
    "execnet": "pydron.remote.execnet_entry:parse_execnet",
    "ssh": "pydron.remote.ssh_entry:parse",
    "cloud": "pydron.remote.cloud_entry:parse",
    "dask": "pydron.remote.dask_entry:parse",
}


def entry_parser(kind: str) -> Callable[[Entry], list[Any]]:
    """The parser of entries of type ``kind`` (its module imported now)."""
    module, _, name = ENTRY_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


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
        entry = Entry(path, index, item, too_many=lambda count: _too_many(count))
        if "type" not in item:
            raise entry.error("type", f"missing required field (one of: {', '.join(ENTRY_TYPES)})")
        kind = item["type"]
        if not isinstance(kind, str) or kind not in ENTRY_TYPES:
            raise entry.error(
                "type", f"unknown worker type {_show(kind)} (known: {', '.join(ENTRY_TYPES)})"
            )
        specs = entry_parser(kind)(entry)
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
        reason = _too_many(local_count([g.xspec for g in gateways]))
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
