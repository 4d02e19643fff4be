"""A real OpenSSH server on 127.0.0.1 for tests (stdlib only).

Used by the ``sshd`` fixture in ``conftest.py``; ``.ci/run`` also runs this
file (``python3 tests/sshd.py ensure-user``) to create the test account.

As root, the server authenticates a dedicated local account (``TEST_USER``,
created on demand) by key or by password.  Not as root, sshd runs as the
current user, who is then the only one who can log in (key only, no password).

Every session started through one server carries ``PYDRON_TEST_SSHD=<tag>`` in
its environment (sshd ``SetEnv``), so the processes a server left behind can be
told apart from those of another server (another xdist worker, another run)
that uses the same account.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

TEST_USER = "pydrontest"
#: Test-only account on throw-away machines; never reused for anything else.
TEST_PASSWORD = "pydron-test-Pw-7c1e"
HOST = "127.0.0.1"
HOST_KEY_ALIAS = "pydron-test-sshd"
TAG_VARIABLE = "PYDRON_TEST_SSHD"

_LOCK_FILE = os.path.join(tempfile.gettempdir(), "pydron-sshd-setup.lock")
_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class SshdUnavailable(Exception):
    """sshd cannot be run here at all (the fixture skips, or fails under CI)."""


def _is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def _setup_lock():
    """Serialise user creation / package installation between processes."""
    with open(_LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_sshd() -> str | None:
    for candidate in _SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def ensure_sshd() -> str:
    """Path of sshd; as root, install openssh-server with apt-get if missing."""
    path = find_sshd()
    if path:
        return path
    if not _is_root() or not shutil.which("apt-get"):
        raise SshdUnavailable(
            "OpenSSH server (sshd) is not installed and cannot be installed "
            "without root and apt-get; install openssh-server or run .ci/run"
        )
    with _setup_lock():
        if not find_sshd():
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            for argv in (
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 "openssh-server", "openssh-client", "netcat-openbsd"],
            ):
                subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, check=True)
    path = find_sshd()
    if not path:
        raise SshdUnavailable("apt-get install openssh-server did not provide sshd")
    return path


def ensure_user(user: str = TEST_USER, password: str = TEST_PASSWORD) -> None:
    """Create the local test account if missing (root only); set its password."""
    if not _is_root():
        raise PermissionError(f"creating the test user {user!r} needs root")
    with _setup_lock():
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", user],
                           stdin=subprocess.DEVNULL, check=True)
        # Always (re)set: the password is a constant of this file.
        subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True,
                       check=True)


def _remote_python() -> str | None:
    """A python3 the test account can run (sshd's default PATH holds these)."""
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# processes


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, uid) for every visible process that is not a zombie."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
            if fields["State"].split()[0] in ("Z", "X"):
                continue
            table[int(entry)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]))
        except (OSError, KeyError, ValueError):
            continue
    return table


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        args = "?"
    return f"{pid} {args or '[defunct]'}"


def _has_tag(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return False
    return f"{TAG_VARIABLE}={tag}".encode() in environ


def _user_pids(user: str, tag: str | None) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    me = os.getpid()
    return sorted(
        pid for pid, (_, owner) in _proc_table().items()
        if owner == uid and pid != me and (tag is None or _has_tag(pid, tag))
    )


def leftover_processes(user: str, tag: str | None = None,
                       timeout: float = 3.0) -> list[str]:
    """Processes of ``user`` still alive (``"pid cmdline"``), [] if none.

    With ``tag``, only those started through the server with that tag
    (``SshServer.tag``).  Waits up to ``timeout`` seconds for them to go away,
    since sshd cleans a session up a moment after the client has exited.
    Without ``tag`` this also sees other servers' sessions of the same user.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = _user_pids(user, tag)
        if not pids or time.monotonic() >= deadline:
            return [_describe(pid) for pid in pids]
        time.sleep(0.05)


def _descendants(root: int) -> list[int]:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# the server


class SshServer:
    """One running sshd.  Create with :meth:`start`, end with :meth:`stop`."""

    host = HOST
    host_key_alias = HOST_KEY_ALIAS

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.tag = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.sshd_path = ensure_sshd()
        self.ssh_path = shutil.which("ssh") or "/usr/bin/ssh"
        if _is_root():
            ensure_user()
            self.user, self.password = TEST_USER, TEST_PASSWORD
        else:
            self.user, self.password = pwd.getpwuid(os.getuid()).pw_name, None
        self.python = _remote_python()
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.tmp = tempfile.mkdtemp(prefix=f"pydron-sshd-{name}-")
        os.chmod(self.tmp, 0o755)  # sshd and the test user must traverse it
        self.identity_file = os.path.join(self.tmp, "id_ed25519")
        self.known_hosts = os.path.join(self.tmp, "known_hosts")
        self.config_file = os.path.join(self.tmp, "sshd_config")
        self.log_file = os.path.join(self.tmp, "sshd.log")
        self.pid_file = os.path.join(self.tmp, "sshd.pid")
        # A directory the test user owns, private to this server (tmp_dir etc.).
        self.user_tmp = os.path.join(self.tmp, "user-tmp")
        os.mkdir(self.user_tmp, 0o700)
        if _is_root():
            entry = pwd.getpwnam(self.user)
            os.chown(self.user_tmp, entry.pw_uid, entry.pw_gid)

    # -- life cycle ---------------------------------------------------------

    @classmethod
    def start(cls, name: str = "main", attempts: int = 5) -> "SshServer":
        server = cls(name)
        try:
            server._make_keys()
            for attempt in range(attempts):
                server.port = free_port()
                if server._launch():
                    server._write_known_hosts()
                    return server
            raise RuntimeError(f"sshd did not start after {attempts} attempts:\n"
                               + server.log_tail())
        except BaseException:
            server.stop(check=False)
            raise

    def _make_keys(self) -> None:
        keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
        self.host_key = os.path.join(self.tmp, "ssh_host_ed25519_key")
        for path, comment in ((self.host_key, "pydron-test-host"),
                              (self.identity_file, "pydron-test-client")):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", path], stdin=subprocess.DEVNULL, check=True)
        keys_dir = os.path.join(self.tmp, "authorized_keys")
        os.mkdir(keys_dir, 0o755)
        shutil.copy(self.identity_file + ".pub", os.path.join(keys_dir, self.user))

    def _config_text(self) -> str:
        lines = [
            f"ListenAddress {HOST}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.tmp}/authorized_keys/%u",
            "StrictModes no",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password else 'no'}",
            "KbdInteractiveAuthentication no",
            # Password login is checked against /etc/shadow by sshd itself;
            # PAM's session modules (pam_loginuid) fail in some containers.
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            f"SetEnv {TAG_VARIABLE}={self.tag}",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "MaxStartups 200",
            "MaxSessions 100",
            "LoginGraceTime 60",
            "LogLevel INFO",
        ]
        sftp = "/usr/lib/openssh/sftp-server"
        if os.path.exists(sftp):
            lines.append(f"Subsystem sftp {sftp}")
        return "\n".join(lines) + "\n"

    def _launch(self) -> bool:
        with open(self.config_file, "w") as handle:
            handle.write(self._config_text())
        if _is_root():
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privsep dir
        check = subprocess.run([self.sshd_path, "-t", "-f", self.config_file],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd rejects its config: {check.stderr.strip()}")
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [self.sshd_path, "-D", "-e", "-f", self.config_file],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        marker = f"Server listening on {HOST} port {self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:  # port taken meanwhile?
                self.process = None
                return False
            if marker in self.log_tail():
                return True
            time.sleep(0.02)
        self._stop_process()
        raise RuntimeError("sshd did not report listening within 20s:\n"
                           + self.log_tail())

    def _write_known_hosts(self) -> None:
        with open(self.host_key + ".pub") as handle:
            keytype, key = handle.read().split()[:2]
        with open(self.known_hosts, "w") as handle:
            handle.write(f"[{HOST}]:{self.port},{HOST_KEY_ALIAS} {keytype} {key}\n")

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # Connection handlers call setsid(), so collect them by ancestry.
        children = _descendants(process.pid)
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _kill(children)

    def stop(self, check: bool = True) -> list[str]:
        """Stop sshd, kill what its sessions left behind, remove temp files.

        Returns the leftover processes (``"pid cmdline"``) found, and killed,
        after sshd stopped; with ``check`` an AssertionError is raised instead
        when there are any.
        """
        self._stop_process()
        leftovers = []
        with contextlib.suppress(KeyError):
            leftovers = leftover_processes(self.user, self.tag, timeout=2.0)
            _kill(_user_pids(self.user, self.tag))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if check and leftovers:
            raise AssertionError(
                f"processes of {self.user} left behind by tests (killed now):\n  "
                + "\n  ".join(leftovers))
        return leftovers

    # -- helpers for tests ----------------------------------------------------

    @property
    def ssh_options(self) -> dict[str, str]:
        """``-o`` options for a non-interactive key login to this server."""
        return {
            "IdentityFile": self.identity_file,
            "IdentitiesOnly": "yes",
            "UserKnownHostsFile": self.known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "UpdateHostKeys": "no",
            "BatchMode": "yes",
            "ConnectTimeout": "10",
            "LogLevel": "ERROR",
        }

    def proxy_options(self) -> dict[str, str]:
        """Options that reach this server whatever hostname ssh is given.

        ssh opens no socket itself: ``nc`` connects to 127.0.0.1, and the
        host key is checked under ``HostKeyAlias``.  Use with a made-up
        address as the target (how cloud tests reach invented nodes).
        """
        return {
            "ProxyCommand": f"nc {HOST} {self.port}",
            "HostKeyAlias": HOST_KEY_ALIAS,
        }

    def leftover_processes(self, timeout: float = 3.0) -> list[str]:
        """Processes started through this server that are still alive."""
        return leftover_processes(self.user, self.tag, timeout)

    def ssh_command(self, *remote_args: str, host: str | None = None,
                    options: dict[str, str] | None = None) -> list[str]:
        """argv for ``ssh`` (key login) running ``remote_args`` on this server.

        ``options`` are added to / override :attr:`ssh_options`.  ssh joins the
        remote arguments with spaces and hands them to the remote shell, so
        quote them (``shlex.join``) if they contain spaces.
        """
        merged = {**self.ssh_options, **(options or {})}
        argv = [self.ssh_path, "-F", "/dev/null", "-p", str(self.port),
                "-l", self.user]
        for key, value in merged.items():
            argv += ["-o", f"{key}={value}"]
        return argv + ["--", host or self.host, *remote_args]

    def write_ssh_config(self, path: str, alias: str = "pydron-test",
                         hostname: str | None = None, proxy: bool = False) -> str:
        """Write an ssh_config with a ``Host alias`` block for this server.

        For tools that take ``-F file`` (execnet's ``ssh_config=``).  With
        ``proxy`` the connection goes through :meth:`proxy_options`.
        """
        options = {"HostName": hostname or self.host, "Port": str(self.port),
                   "User": self.user, **self.ssh_options}
        if proxy:
            options.update(self.proxy_options())
        with open(path, "w") as handle:
            handle.write(f"Host {alias}\n")
            for key, value in options.items():
                if " " in value and key != "ProxyCommand":
                    value = f'"{value}"'
                handle.write(f"    {key} {value}\n")
        return path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            with open(self.log_file, errors="replace") as handle:
                return handle.read()[-chars:]
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<SshServer {self.user}@{self.host}:{self.port} tag={self.tag}>"


if __name__ == "__main__":
    if sys.argv[1:] != ["ensure-user"]:
        sys.exit("usage: python3 tests/sshd.py ensure-user")
    ensure_user()
    print(f"test user {TEST_USER} ready")
