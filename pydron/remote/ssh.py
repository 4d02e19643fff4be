"""Workers on other machines, through the system's OpenSSH client (execnet ``ssh=``).

A ``pydron.conf`` entry ``{"type": "ssh", "hostname": ..., "cores": N, ...}``
becomes N ``SshGatewaySpec``: one ssh session and one remote Python each.

* Every option goes into a per-entry ssh config file in a private (0700)
  directory of this process, used as ``ssh -F FILE ALIAS``; nothing but that
  path and the alias is on ssh's command line.  With ``-F``, ssh reads
  neither ``~/.ssh/config`` nor ``/etc/ssh/ssh_config`` (so a ``ControlMaster``
  there cannot leave a process behind): put what a host needs (``ProxyJump``,
  known hosts, ...) in the entry's ``ssh_options``.  The default identities,
  ``~/.ssh/known_hosts`` and the agent (``SSH_AUTH_SOCK``) still apply.
* A password is handed to ssh by ``SSH_ASKPASS`` (with
  ``SSH_ASKPASS_REQUIRE=force``): a private script that prints the contents of
  a 0600 file, and only when ssh asks for a password.  The file exists only
  while that ssh session logs in.  Those variables are given to the ssh
  process alone (its own environment, not ``os.environ``).
* ssh's standard error is read by a thread: kept while the session starts, so
  that a failure names its cause (connection refused, permission denied,
  missing remote Python), and passed on to ours once the worker runs.
* Start-up is bounded: ``ConnectTimeout``, server-alive probes and a watchdog
  that ends ssh after ``SSH_START_TIMEOUT`` seconds.

The remote side needs only Python: the pool sends cloudpickle's source files,
and those of the user's own modules the master has imported, in the worker's
init message (``shipment``); the worker writes them into a fresh directory
under ``tmp_dir``, puts it first on sys.path and removes it when it ends.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import execnet
from execnet import gateway_bootstrap, gateway_io
from execnet.gateway_base import Popen2IO

from pydron.remote.specs import GatewaySpec
from pydron.errors import PydronError

#: Seconds an ssh worker may take from spawning ssh to a running remote Python.
SSH_START_TIMEOUT = float(os.environ.get("PYDRON_SSH_START_TIMEOUT", "25"))

#: The fields of an ``ssh`` entry besides ``type`` and ``hostname``.
OPTIONAL_FIELDS = ("username", "port", "identity_file", "password", "python",
                   "ssh_options", "cores", "tmp_dir", "data_ports")

HOST_RE = re.compile(r"^(?!-)[A-Za-z0-9._%:\[\]-]+$")
USER_RE = re.compile(r"^(?!-)[A-Za-z0-9._@\\$-]+$")
_OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")

#: Options the entry's own fields set, or that would break the config file's structure.
_FIELD_OPTIONS = {"hostname": "hostname", "port": "port", "user": "username",
                  "identityfile": "identity_file"}
_FORBIDDEN_OPTIONS = ("host", "match", "include")

#: Written after the user's options: OpenSSH takes the first value it reads.
_DEFAULTS = {
    "ConnectTimeout": "10",
    "ServerAliveInterval": "5",
    "ServerAliveCountMax": "3",
}
_KEY_DEFAULTS = {"BatchMode": "yes"}  # never prompt: fail instead
_PASSWORD_DEFAULTS = {
    "BatchMode": "no",
    "PreferredAuthentications": "password,keyboard-interactive",
    "NumberOfPasswordPrompts": "1",
}

_PASSWORD_FILE_VAR = "PYDRON_SSH_PASSWORD_FILE"
_ASKPASS_SCRIPT = f"""#!/bin/sh
# pydron: answers ssh's password prompt (and nothing else) from a 0600 file.
case "$1" in
  *assword*) exec cat "${_PASSWORD_FILE_VAR}" ;;
  *) exit 1 ;;
esac
"""


@dataclass(frozen=True)
class SshGatewaySpec(GatewaySpec):
    """One ssh worker.  ``xspec`` is ``ssh_config=FILE//ssh=ALIAS//python=PYTHON``."""

    target: str = ""                      #: user@host:port, for messages
    user: str | None = None               #: the entry's username (None: this process's)
    python: str = "python3"
    askpass: str | None = None            #: script for SSH_ASKPASS, if a password is used
    password: str | None = field(default=None, repr=False, compare=False)
    tmp_dir: str | None = None            #: remote directory for shipped files
    data_ports: tuple[int, int] | None = None  #: where the worker's data server may listen
    #: the host other processes reach the data port at (None: reached through a proxy,
    #: so values travel through the master instead)
    data_host: str | None = None
    index: int = field(default=1)

    def make_gateway(self, group: execnet.Group) -> execnet.Gateway:
        return make_gateway(group, self)


# ---------------------------------------------------------------- configuration


def option_problem(key: Any, value: Any) -> str | None:
    """Why ``key: value`` cannot be an entry's ssh option, or None if it can."""
    if not isinstance(key, str) or not _OPTION_RE.match(key):
        return "not an OpenSSH option name"
    lower = key.lower()
    if lower in _FIELD_OPTIONS:
        return f"set this with the entry's field {_FIELD_OPTIONS[lower]!r}"
    if lower in _FORBIDDEN_OPTIONS:
        return "not allowed in ssh_options"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return "expected a string or a number"
    text = str(value)
    if not text.strip() or "\n" in text or "\r" in text or "\0" in text:
        return "expected a non-empty one-line value"
    return None


def option_text(value: str | int) -> str:
    return str(value)


_private: str | None = None
_private_lock = threading.Lock()
_counter = iter(range(1, sys.maxsize))


def private_dir() -> str:
    """This process's 0700 directory for ssh config files; removed at exit."""
    global _private
    with _private_lock:
        if _private is None or not os.path.isdir(_private):
            _private = tempfile.mkdtemp(prefix="pydron-ssh-")
            os.chmod(_private, 0o700)
            atexit.register(shutil.rmtree, _private, True)
        return _private


def _config_value(key: str, value: str) -> str:
    if key.lower() in ("proxycommand", "localcommand", "remotecommand", "knownhostscommand"):
        return value  # the rest of the line, as written
    return f'"{value}"' if any(c.isspace() for c in value) else value


def _write_private(path: str, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def gateway_specs(label: str, *, hostname: str, username: str | None, port: int | None,
                  identity_file: str | None, password: str | None, python: str,
                  options: dict[str, str], cores: int, tmp_dir: str | None,
                  data_ports: tuple[int, int] | None) -> list[SshGatewaySpec]:
    """Write the entry's ssh config (and askpass) files; return its ``cores`` specs."""
    directory = private_dir()
    stem = os.path.join(directory, f"entry{next(_counter)}")
    alias = "pydron-worker"
    settings = {"HostName": hostname}
    if port is not None:
        settings["Port"] = str(port)
    if username is not None:
        settings["User"] = username
    if identity_file is not None:
        settings["IdentityFile"] = identity_file
    settings.update(options)
    chosen = {key.lower() for key in settings}
    extra = {**_DEFAULTS, **(_PASSWORD_DEFAULTS if password else _KEY_DEFAULTS)}
    if password and identity_file is None:
        extra["PubkeyAuthentication"] = "no"
    settings.update({k: v for k, v in extra.items() if k.lower() not in chosen})
    lines = [f"Host {alias}"] + [f"    {k} {_config_value(k, v)}" for k, v in settings.items()]
    config_file = stem + ".ssh_config"
    _write_private(config_file, "\n".join(lines) + "\n", 0o600)

    askpass = _askpass_script() if password else None

    target = f"{username + '@' if username else ''}{hostname}{f':{port}' if port else ''}"
    xspec = f"ssh_config={config_file}//ssh={alias}//python={python}"
    proxied = any(key.lower() in ("proxycommand", "proxyjump") for key in options)
    return [
        SshGatewaySpec(f"{label} #{k}", xspec, target=target, user=username, python=python,
                       askpass=askpass, password=password, tmp_dir=tmp_dir, data_ports=data_ports,
                       data_host=None if proxied or data_ports is None else hostname, index=k)
        for k in range(1, cores + 1)
    ]


def _askpass_script() -> str:
    path = os.path.join(private_dir(), "askpass")
    with _private_lock:
        if not os.path.exists(path):
            _write_private(path, _ASKPASS_SCRIPT, 0o700)
    return path


@contextlib.contextmanager
def _password_file(password: str | None) -> Iterator[str | None]:
    """A 0600 file holding ``password`` for one login, removed right after it."""
    if not password:
        yield None
        return
    path = os.path.join(private_dir(), f"password-{uuid.uuid4().hex}")
    _write_private(path, password + "\n", 0o600)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------- starting


class _SshIO(gateway_io.Popen2IOMaster):
    """execnet's ssh pipe, with our own environment for ssh and its stderr read by us."""

    def __init__(self, args: list[str], execmodel: Any, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, start_new_session=True,  # Ctrl-C reaches pydron, which ends the session
        )
        Popen2IO.__init__(self, self.popen.stdin, self.popen.stdout, execmodel=execmodel)
        self.errors = bytearray()      # ssh's stderr while starting (bounded)
        self.forward = False           # once running: pass stderr on
        self.timed_out = False
        self._reader = threading.Thread(target=self._read_stderr, daemon=True,
                                        name="pydron-ssh-stderr")
        self._reader.start()

    def _read_stderr(self) -> None:
        stream = self.popen.stderr
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except OSError:
                chunk = b""
            if not chunk:
                stream.close()
                return
            if self.forward:
                _write_stderr(chunk)
            else:
                self.errors += chunk
                del self.errors[:-16384]

    def start_forwarding(self) -> None:
        self.forward = True
        pending, self.errors = bytes(self.errors), bytearray()
        if pending:
            _write_stderr(pending)

    def error_text(self) -> str:
        self._reader.join(timeout=2)
        return bytes(self.errors).decode("utf-8", "replace").strip()

    def time_out(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """End ssh and what it started here (e.g. a ProxyCommand): its process group."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except OSError:
                super().kill()


def _write_stderr(data: bytes) -> None:
    try:
        sys.stderr.write(data.decode("utf-8", "replace"))
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - stderr closed: nothing to tell
        pass


def ssh_environment(askpass: str | None, password_file: str | None) -> dict[str, str]:
    """The environment of one ssh process: ours, plus askpass when a password is used."""
    env = dict(os.environ)
    if askpass and password_file:
        env.update(SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force",
                   DISPLAY=env.get("DISPLAY") or ":0")
        env[_PASSWORD_FILE_VAR] = password_file
    return env


#: Sessions that may be logging in to one host at a time.  sshd's default
#: ``MaxStartups 10:30:100`` drops new connections at random beyond 10
#: unauthenticated ones, so many cores on one host log in a few at a time.
MAX_STARTS_PER_HOST = 6
_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}


def _start_slot(target: str) -> threading.BoundedSemaphore:
    with _private_lock:
        key = (target, MAX_STARTS_PER_HOST)
        return _slots.setdefault(key, threading.BoundedSemaphore(MAX_STARTS_PER_HOST))


def make_gateway(group: execnet.Group, spec: SshGatewaySpec,
                 timeout: float | None = None) -> execnet.Gateway:
    """Start one ssh worker's gateway in ``group``, or raise a PydronError saying why not.

    What ``Group.makegateway`` does for ``ssh=``, except that ssh gets its own
    environment, its stderr is kept for the error message, and start-up is bounded.
    """
    timeout = SSH_START_TIMEOUT if timeout is None else timeout
    xspec = execnet.XSpec(spec.xspec)
    group.allocate_id(xspec)
    if xspec.execmodel is None:
        xspec.execmodel = group.remote_execmodel.backend
    with _start_slot(spec.target), _password_file(spec.password) as password_file:
        env = ssh_environment(spec.askpass, password_file)
        io = _SshIO(gateway_io.ssh_args(xspec), group.execmodel, env)
        io.remoteaddress = spec.target
        watchdog = threading.Timer(timeout, io.time_out)
        watchdog.daemon = True
        watchdog.start()
        failure: BaseException | None = None
        try:
            gateway_bootstrap.bootstrap_exec(io, xspec)
        except Exception as exc:  # noqa: BLE001 - HostNotFound, EOFError, broken pipe ...
            failure = exc
        except BaseException:  # e.g. Ctrl-C: leave no ssh behind
            io.kill()
            raise
        finally:
            watchdog.cancel()
    if failure is not None or io.popen.poll() is not None:
        if io.popen.poll() is None:
            io.kill()
        code = io.wait()
        message = _start_failure(spec, code, io, timeout)
        if code == 255 and not io.timed_out and login_refused(io.error_text()):
            raise SshLoginRefused(message) from None
        raise PydronError(message) from None
    gateway = execnet.Gateway(io, xspec)
    gateway.spec = xspec
    group._register(gateway)
    io.start_forwarding()
    return gateway


class SshLoginRefused(PydronError):
    """The host answered ssh but refused the login (authentication or host key):
    trying again cannot help, unlike a host that is not up yet."""


#: What OpenSSH prints when the server answered and the login itself failed.
_REFUSED = ("Permission denied", "Host key verification failed", "Too many authentication failures",
            "REMOTE HOST IDENTIFICATION HAS CHANGED")


def login_refused(ssh_errors: str) -> bool:
    """Whether ssh's standard error says the login was refused (not: could not connect)."""
    return any(marker in ssh_errors for marker in _REFUSED)


def _start_failure(spec: SshGatewaySpec, code: int | None, io: _SshIO, timeout: float) -> str:
    text = io.error_text()
    where = f"ssh worker on {spec.target}"
    if io.timed_out:
        cause = f"no running Python there within {timeout:g} s"
    elif code == 255 and login_refused(text):
        import getpass

        user = spec.user or getpass.getuser()
        cause = f"ssh login refused for user {user!r}"
    elif code == 255:
        cause = "ssh could not connect or log in"
    elif code == 127:
        cause = f"remote Python {spec.python!r} not found"
    elif code == 126:
        cause = f"remote Python {spec.python!r} cannot be run"
    else:
        cause = f"the remote Python {spec.python!r} ended at start-up (exit status {code})"
    lines = [line for line in text.splitlines() if line.strip()][-8:]
    detail = "\n  ".join(lines)
    return f"{where}: {cause}" + (f":\n  {detail}" if detail else "")


# ---------------------------------------------------------------- shipping


#: At most this many bytes of the master's own modules go to each remote worker.
SHIP_LIMIT = 16 * 2**20

_shipment_cache: dict[str, str] | None = None

#: A remote worker's ``pydron``: enough for the user's modules (``@pydron.functional``,
#: ``@pydron.schedule``) to import there; the worker itself needs none of pydron.
_PYDRON_STUB_MODULES = ("errors.py", "functional.py")
_PYDRON_STUB = '''"""pydron on a remote worker: the decorators and errors only (shipped by the master)."""
from pydron.errors import ConfigError, PydronError, RemoteError, WorkerDied
from pydron.functional import functional


def schedule(fn):
    """On a worker a schedule function runs as it is."""
    return fn


def shutdown():
    pass
'''
_source_cache: dict[tuple[str, float], str] = {}


def shipment(tmp_dir: str | None) -> dict[str, Any]:
    """What a worker that cannot use the master's sys.path gets in its init message.

    ``files`` maps relative paths to source text: cloudpickle's package, and the
    modules this process imported from outside the Python installation (the
    user's own, which functions pickled by reference need; see ``local_modules``).
    """
    global _shipment_cache
    if _shipment_cache is None:
        import cloudpickle

        root = os.path.dirname(os.path.abspath(cloudpickle.__file__))
        files = {}
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8") as handle:
                    files[f"cloudpickle/{name}"] = handle.read()
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../pydron
        for name in _PYDRON_STUB_MODULES:
            with open(os.path.join(package, name), encoding="utf-8") as handle:
                files[f"pydron/{name}"] = handle.read()
        files["pydron/__init__.py"] = _PYDRON_STUB
        _shipment_cache = files
    return {"tmp_dir": tmp_dir, "files": {**local_modules(), **_shipment_cache}}


def local_modules(limit: int | None = None) -> dict[str, str]:
    """Source of the modules imported so far from sys.path entries outside the
    Python installation (stdlib, site-packages), keyed by path relative to
    their sys.path entry; pydron itself and ``__main__`` (pickled by value) excepted.
    """
    limit = SHIP_LIMIT if limit is None else limit
    excluded = {os.path.abspath(p) for p in (
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
        *(sysconfig.get_paths().get(k) or sys.prefix
          for k in ("stdlib", "platstdlib", "purelib", "platlib")),
    )}
    roots = {os.path.abspath(entry or os.getcwd()) for entry in sys.path if isinstance(entry, str)}
    files: dict[str, str] = {}
    size = 0
    for name, module in sorted(list(sys.modules.items()), key=lambda item: item[0]):
        if name == "__main__" or name.partition(".")[0] in ("pydron", "cloudpickle"):
            continue
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        path = os.path.abspath(path)
        if any(path.startswith(directory + os.sep) for directory in excluded):
            continue
        package = os.path.basename(path) == "__init__.py"
        relative = name.replace(".", "/") + ("/__init__.py" if package else ".py")
        if not any(path == os.path.join(root, relative) for root in roots):
            continue
        try:
            key = (path, os.stat(path).st_mtime)
            text = _source_cache.get(key)
            if text is None:
                with open(path, encoding="utf-8") as handle:
                    text = _source_cache[key] = handle.read()
        except (OSError, UnicodeDecodeError):
            continue
        if size + len(text) > limit:
            break
        size += len(text)
        files[relative] = text
    return files
