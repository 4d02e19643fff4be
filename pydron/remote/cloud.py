"""Workers on cloud instances that pydron starts with apache-libcloud, and always ends.

A ``pydron.conf`` entry ``{"type": "cloud", "provider": ..., "count": N, "cores": C, ...}``
becomes N*C ``CloudGatewaySpec``.  Nothing is provisioned when the file is read:
the first spec the pool starts creates the entry's N nodes (``create_node``
through libcloud's own driver, named ``pydron-<run>-<k>`` and, where the driver
takes metadata, tagged ``pydron-run=<run>``), waits for them
(``wait_until_running``), and every spec then reaches its node with the ssh
worker code (``pydron.remote.ssh``): OpenSSH with the entry's ``ssh_options``,
no direct socket to the node.  A node whose ssh does not answer within
``ssh_timeout`` seconds fails the run with an error naming it; one that answers
but refuses the login fails it at once (``ssh.SshLoginRefused``).

When the pool replaces a dead worker it calls ``make_gateway`` again for the
same spec: the provider is asked for the node first.  A running node is logged
in to again (its ssh retried until ``ssh_timeout``); a node that is terminated,
stopped or no longer listed, or not running and silent for
``NOT_RUNNING_GRACE`` seconds, is terminated and a new node with the same
settings takes its place (``pydron-<run>-<k>-<g>``, tagged, told to the
guardian), shared by that node's cores.  At most ``count`` such new nodes per
entry and run.

The nodes are terminated (with retries) when the pool shuts down, when it
fails to start, at interpreter exit, on Ctrl-C and on SIGTERM (reading a
cloud entry installs a handler that turns SIGTERM into ``SystemExit``, so
the same exit path runs).  A detached guardian process, told each node's id
as it is created, terminates them if this process dies without releasing
them (SIGKILL, out of memory).  Nodes that could not be terminated are named in a
``CloudError`` with their ids and provider; ``python -m pydron cloud list`` and
``cloud cleanup`` find pydron's nodes still alive from their names and tags.

Fields of an entry: ``provider`` (a libcloud provider name such as ``"ec2"``, or
``"package.module:DriverClass"``), ``accesskeyid``/``accesskey`` (the driver's
key and secret), ``region``, ``driver_options`` (keyword arguments of the
driver's constructor, e.g. ``{"host": ..., "port": ..., "secure": false}``),
``imageid``, ``sizeid``, ``node_options`` (keyword arguments of
``create_node``), ``count`` nodes of ``cores`` workers each, ``publickey``
(installed through the provider's key pair ``keypair`` where it has named ones,
see ``pydron.remote.keypair``, else ``create_node(auth=...)``) and
``privatekey`` (ssh's identity), ``address`` (``"public"``/``"private"``: which
address ssh uses), ``boot_timeout``, ``ssh_timeout`` and ``poll_interval``
(seconds), ``keep_alive`` (``true``, or a lease in minutes), and the ssh
entry's ``username``, ``port``, ``python``, ``ssh_options``, ``tmp_dir`` and
``data_ports``.

This is the only module that knows libcloud.  Credentials stay in this
process: never in a spec's repr, a message, a log line or a command line.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydron.remote.specs import GatewaySpec
from pydron.errors import ConfigError, PydronError
from pydron.remote import keypair

#: Name prefix of every node pydron creates; ``pydron-<run id>-<k>``.
NAME_PREFIX = "pydron-"
#: Metadata/tag key carrying the run id, where the driver takes metadata.
RUN_TAG = "pydron-run"

#: Fields of a ``cloud`` entry besides ``type`` (required ones first).
REQUIRED_FIELDS = ("provider", "imageid", "sizeid")
OPTIONAL_FIELDS = ("accesskeyid", "accesskey", "region", "username", "publickey", "privatekey",
                   "keypair", "tmp_dir", "data_ports", "count", "cores", "driver_options",
                   "node_options", "port", "python", "ssh_options", "ssh_timeout", "boot_timeout",
                   "poll_interval", "keep_alive", "address")

#: Default seconds for a node to be running (``boot_timeout``) and to answer ssh (``ssh_timeout``).
BOOT_TIMEOUT = 600.0
SSH_TIMEOUT = 300.0
#: Default seconds between two polls of the provider while nodes boot, and between
#: two ssh attempts to a node that is not up yet (``poll_interval``).
POLL_INTERVAL = 2.0
#: Attempts to terminate one node before it is reported as left running, and the
#: first pause between two (doubled each time, at most 5 s).
TERMINATE_ATTEMPTS = 3
TERMINATE_BACKOFF = 2.0
#: Seconds a node the provider does not report as running may go without answering
#: ssh before a dead worker's replacement gives it up for a new node (at most ssh_timeout).
NOT_RUNNING_GRACE = 30.0
#: Seconds a release waits for a replacement node being created, so that it is
#: terminated with the others (create_node is one provider request).
CREATE_WAIT = 60.0
#: Node states (libcloud ``NodeState`` values, and EC2's ``shutting-down``, which
#: libcloud calls unknown) in which a node cannot run a worker again by itself:
#: a dead worker's replacement starts a new node at once.
GONE_STATES = frozenset({"terminated", "stopped", "stopping", "suspended", "paused", "error",
                         "shutting-down"})
#: ``node_state`` when the provider could not be asked (ssh decides, as before).
UNREACHABLE = "unreachable"

log = logging.getLogger("pydron")


class CloudError(PydronError):
    """A cloud node could not be provisioned, reached or terminated."""


class _NodeGone(Exception):
    """A dead worker's node is gone (``why``): a new node takes its place."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


# ---------------------------------------------------------------- providers


def resolve_provider(name: str) -> type:
    """The libcloud driver class for ``name``: a provider (``"ec2"``) or ``"module:Class"``.

    ValueError says why not.
    """
    try:
        from libcloud.compute.base import NodeDriver
        from libcloud.compute.providers import get_driver
    except ImportError:
        raise ValueError("cloud workers need apache-libcloud (pip install 'pydron[cloud]')") from None
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
            raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
        cls = module
        for part in class_name.split("."):
            cls = getattr(cls, part, None)
            if cls is None:
                raise ValueError(f"module {module_name!r} has no {class_name!r}")
        if not (isinstance(cls, type) and issubclass(cls, NodeDriver)):
            raise ValueError(f"{name!r} is not a libcloud NodeDriver class")
        return cls
    try:
        return get_driver(name.lower())
    except Exception:  # noqa: BLE001 - AttributeError / libcloud's own "not supported"
        raise ValueError(
            f"unknown libcloud compute provider {name!r} (e.g. \"ec2\", \"gce\", "
            f"\"openstack\", or \"package.module:DriverClass\")"
        ) from None


# ---------------------------------------------------------------- the entry


@dataclass(eq=False)
class CloudSettings:
    """A validated ``cloud`` entry (config.py builds it)."""

    name: str                              #: e.g. workers[2], for messages
    error: Callable[[str | None, str], ConfigError] = field(repr=False)
    provider: str = ""
    driver_class: type | None = field(default=None, repr=False)
    accesskeyid: str | None = field(default=None, repr=False)
    accesskey: str | None = field(default=None, repr=False)
    region: str | None = None
    imageid: str = ""
    sizeid: str = ""
    username: str | None = None
    publickey: str | None = None           #: path of a public key file installed on the nodes
    keypair: str | None = None             #: name of the provider's key pair holding it
    privatekey: str | None = None          #: path of the matching private key (ssh IdentityFile)
    tmp_dir: str | None = None
    data_ports: tuple[int, int] | None = None
    count: int = 1
    cores: int = 1
    driver_options: dict[str, Any] = field(default_factory=dict, repr=False)
    node_options: dict[str, Any] = field(default_factory=dict)
    port: int | None = None
    python: str = "python3"
    ssh_options: dict[str, str] = field(default_factory=dict)
    ssh_timeout: float = SSH_TIMEOUT
    boot_timeout: float = BOOT_TIMEOUT
    poll_interval: float = POLL_INTERVAL
    address: str = "public"                #: ssh to the nodes' public or private address
    keep_alive: bool = False               #: nodes outlive the run; the next run reuses them
    lease: float | None = None             #: ... and are terminated after this many idle minutes

    def secrets(self) -> list[str]:
        found = [self.accesskey or "", self.accesskeyid or ""]
        for key, value in self.driver_options.items():
            if isinstance(value, str) and any(w in key.lower() for w in ("secret", "token", "password", "key")):
                found.append(value)
        return [s for s in found if len(s) >= 4]


@dataclass(frozen=True)
class CloudGatewaySpec(GatewaySpec):
    """One worker: core ``core`` of node ``node`` of its entry's ``Cluster``."""

    cluster: "Cluster | None" = field(default=None, repr=False, compare=False)
    node: int = 0
    core: int = 0
    tmp_dir: str | None = None
    data_ports: tuple[int, int] | None = None

    def make_gateway(self, group: Any) -> Any:
        assert self.cluster is not None
        return self.cluster.make_gateway(group, self)

    def release(self) -> None:
        """Terminate the entry's nodes (once; the pool calls this for every spec)."""
        if self.cluster is not None:
            self.cluster.release()


def gateway_specs(settings: CloudSettings) -> list[CloudGatewaySpec]:
    """``count * cores`` specs sharing one (not yet provisioned) Cluster."""
    if settings.publickey:
        try:
            keypair.read_public_key(settings.publickey)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise settings.error("publickey", str(exc)) from None
    cluster = Cluster(settings)
    _install_signal_handler()
    return [
        CloudGatewaySpec(
            f"{settings.name} (cloud {settings.provider} node {n + 1}) #{c + 1}",
            f"cloud={settings.provider}//node={n + 1}", cluster=cluster, node=n, core=c,
            tmp_dir=settings.tmp_dir, data_ports=settings.data_ports,
        )
        for n in range(settings.count) for c in range(settings.cores)
    ]


# ---------------------------------------------------------------- provisioning


_live: set["Cluster"] = set()
_live_lock = threading.Lock()
_closing = threading.Event()   # SIGTERM / exit: stop provisioning, terminate everything


class Cluster:
    """The nodes of one entry in one run: created once, terminated once."""

    def __init__(self, settings: CloudSettings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.run_id = uuid.uuid4().hex[:10]
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._driver: Any = None
        self.nodes: list[Any] = []         # libcloud Nodes created (terminated or not)
        self.slots: list[Any] = []         # the node each spec.node index uses now
        self.replaced = 0                  # nodes started in place of gone ones (<= count)
        self._slot_locks: dict[int, threading.Lock] = {}
        self._connected: dict[tuple[int, int], str] = {}  # (node, core) -> id of its node
        self._creating = 0                 # create_node calls under way
        self._late = False                 # released while a node was being created
        self._image: Any = None
        self._size: Any = None
        self._kwargs: dict[str, Any] | None = None
        self._ssh_specs: dict[str, list[Any]] = {}  # node id -> one ssh spec per core
        self._failure: BaseException | None = None
        self._provisioned = False
        self._released = False
        self._terminated: set[str] = set()   # ids of nodes already terminated
        self._broken = False                  # a node failed: never keep these warm
        self.reused = False                   # warm nodes of an earlier run (keep_alive)
        self._guardian: _Guardian | _NoGuardian = _NoGuardian()

    def __repr__(self) -> str:
        return f"<Cluster {self.settings.name} {self.settings.provider} run={self.run_id} nodes={len(self.nodes)}>"

    # -- messages ---------------------------------------------------------
    def scrub(self, text: str) -> str:
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        return text

    def scrub_exception(self, exc: BaseException) -> str:
        """``exc`` as text for a message, without the entry's credentials."""
        return self._cause(exc)

    def _refused_credentials(self, exc: BaseException) -> Exception:
        s = self.settings
        return s.error("accesskey", f"provider {s.provider!r} refused the credentials "
                                    f"(accesskeyid/accesskey): {self._cause(exc)}")

    def _cause(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return self.scrub(f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text)

    # -- the driver -------------------------------------------------------
    def driver(self) -> Any:
        if self._driver is None:
            self._driver = make_driver(self.settings, self._cause)
        return self._driver

    # -- provisioning -----------------------------------------------------
    def provision(self) -> None:
        """Create and start the entry's nodes (first call only); raise what went wrong."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._released:
                raise CloudError(f"{self.settings.name}: these nodes were released when their "
                                 f"pool shut down; read the configuration again for new ones")
            if self._provisioned:
                return
            try:
                self._provision_locked()
            except BaseException as exc:
                if self._released:  # released meanwhile: end what was created since
                    with contextlib.suppress(CloudError):
                        self.terminate()
                self._failure = exc if isinstance(exc, Exception) else CloudError(
                    f"{self.settings.name}: provisioning interrupted")
                raise
            self._provisioned = True

    def _provision_locked(self) -> None:
        from libcloud.common.types import InvalidCredsError

        s = self.settings
        if _closing.is_set():
            raise CloudError(f"{s.name}: pydron is shutting down; no node is started")
        driver = self.driver()
        try:
            image = find_image(driver, s.imageid)
        except InvalidCredsError as exc:
            raise self._refused_credentials(exc) from None
        except Exception as exc:  # noqa: BLE001
            cause = self._cause(exc)
            what = "no image" if "NotFound" in cause or "not found" in cause.lower() \
                else "cannot look up image"
            raise s.error("imageid", f"{what} {s.imageid!r} at provider "
                          f"{s.provider!r}: {cause}") from None
        if image is None:
            raise s.error("imageid", f"no image {s.imageid!r} at provider {s.provider!r}")
        try:
            size = find_size(driver, s.sizeid)
        except Exception as exc:  # noqa: BLE001
            raise s.error("sizeid", f"cannot look up size {s.sizeid!r} at provider "
                          f"{s.provider!r}: {self._cause(exc)}") from None
        if size is None:
            raise s.error("sizeid", f"no size {s.sizeid!r} at provider {s.provider!r}")

        self._image, self._size = image, size
        _install_signal_handler()
        with _live_lock:
            _live.add(self)
        self._guardian = _Guardian(self)
        if s.keep_alive:
            warm = _claim_warm(self, driver)
            if warm:
                self.nodes, self.slots, self.reused = warm, list(warm), True
                for node in warm:
                    self._guardian.node(node)
                running = self._wait_running(driver, self.nodes)
                for n, (node, addresses) in enumerate(running):
                    self._ssh_specs[str(node.id)] = self._node_ssh_specs(n, node, addresses)
                return
        for k in range(1, s.count + 1):
            self.slots.append(self._create_node(driver, f"{NAME_PREFIX}{self.run_id}-{k}"))
        if s.keep_alive:
            _save_warm(self, in_use=True)
        running = self._wait_running(driver, self.nodes)
        for n, (node, addresses) in enumerate(running):
            self._ssh_specs[str(node.id)] = self._node_ssh_specs(n, node, addresses)

    def _create_node(self, driver: Any, name: str) -> Any:
        """One node named ``name`` with the entry's settings, told to the guardian at once.

        Raises CloudError when pydron is shutting down, before or after creating
        it (``release`` then terminates it: it waits for nodes being created).
        """
        from libcloud.common.types import InvalidCredsError

        s = self.settings
        with self._lock:
            if _closing.is_set() or self._released:
                raise CloudError(f"{s.name}: pydron is shutting down; no node is started")
            if self._kwargs is None:
                self._kwargs = self._create_kwargs(driver)
            kwargs = self._kwargs
            self._creating += 1
        node = None
        try:
            node = driver.create_node(name=name, size=self._size, image=self._image, **kwargs)
        except InvalidCredsError as exc:
            raise self._refused_credentials(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise CloudError(f"{s.name}: provider {s.provider!r} could not create node "
                             f"{name}: {self._cause(exc)}") from None
        finally:
            with self._lock:
                self._creating -= 1
                if node is not None:
                    self.nodes.append(node)
                    self._guardian.node(node)
                late = self._late and node is not None
                self._changed.notify_all()
        if late:  # the release gave up waiting for it: end it here
            if terminate_node(driver, node, self._cause) is None:
                self._terminated.add(str(node.id))
        if not _metadata_keyword(driver):
            self._tag(driver, node)
        if _closing.is_set() or self._released:
            raise CloudError(f"{s.name}: pydron is shutting down; the nodes are terminated")
        return node

    def _create_kwargs(self, driver: Any) -> dict[str, Any]:
        s = self.settings
        kwargs = dict(s.node_options)
        metadata = _metadata_keyword(driver)
        if metadata:
            kwargs[metadata] = {**kwargs.get(metadata, {}), RUN_TAG: self.run_id}
        accepted = _parameters(driver.create_node)
        if s.publickey or s.keypair:
            if "ex_keyname" in kwargs:
                raise s.error("node_options.ex_keyname", "give the key pair's name as the "
                              "entry's `keypair` field, not in node_options")
            if keypair.supports_key_pairs(driver, accepted):
                kwargs["ex_keyname"] = self._key_pair(driver)
            elif s.keypair:
                raise s.error("keypair", f"driver {type(driver).__name__} has no named key "
                              f"pairs; give `publickey` alone")
            else:
                from libcloud.compute.base import NodeAuthSSHKey

                key = keypair.read_public_key(s.publickey)
                kwargs.setdefault("auth", NodeAuthSSHKey(key.text))
        if accepted is not None:
            unknown = [key for key in kwargs if key not in accepted]
            if unknown:
                field_name = "publickey" if unknown == ["auth"] else f"node_options.{unknown[0]}"
                raise s.error(field_name, f"driver {type(driver).__name__} does not take "
                              f"{unknown[0]!r} in create_node")
        return kwargs

    def _key_pair(self, driver: Any) -> str:
        """The name of the provider key pair holding ``publickey``: found, or imported (once)."""
        from libcloud.common.types import InvalidCredsError

        s = self.settings
        key = keypair.read_public_key(s.publickey) if s.publickey else None
        name = s.keypair or key.default_name()
        field_name = "keypair" if s.keypair else "publickey"
        try:
            return keypair.ensure(driver, name, key)
        except keypair.KeyPairMismatch as exc:
            raise s.error(field_name, f"provider {s.provider!r}: {exc}; name another key pair "
                          f"in `keypair`, or delete that one") from None
        except LookupError as exc:
            raise s.error("keypair", f"provider {s.provider!r}: {exc}") from None
        except InvalidCredsError as exc:
            raise self._refused_credentials(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise CloudError(f"{s.name}: provider {s.provider!r} could not find or import key "
                             f"pair {name!r} ({s.publickey}): {self._cause(exc)}") from None

    def _tag(self, driver: Any, node: Any) -> None:
        create_tags = getattr(driver, "ex_create_tags", None)
        if create_tags is not None:
            with contextlib.suppress(Exception):  # the name prefix still marks the node
                create_tags(node, {RUN_TAG: self.run_id})

    def _wait_running(self, driver: Any, nodes: list[Any]) -> list[tuple[Any, list[str]]]:
        """``nodes`` with their addresses, once running (at most ``boot_timeout``)."""
        s = self.settings
        deadline = time.monotonic() + s.boot_timeout
        last: BaseException | None = None
        while True:
            if _closing.is_set() or self._released:
                raise CloudError(f"{s.name}: pydron is shutting down; the nodes are terminated")
            remaining = deadline - time.monotonic()
            try:
                running = driver.wait_until_running(
                    nodes, wait_period=s.poll_interval, timeout=max(1, min(10, remaining)),
                    ssh_interface=f"{s.address}_ips")
            except Exception as exc:  # noqa: BLE001 - libcloud's timeout, or a transient error
                last = exc
                if time.monotonic() >= deadline:
                    ids = ", ".join(str(node.id) for node in nodes)
                    raise CloudError(
                        f"{s.name}: nodes {ids} at provider {s.provider!r} not running with an "
                        f"address within {s.boot_timeout:g} s (boot_timeout): {self._cause(last)}"
                    ) from None
                continue
            by_id = {str(node.id): (node, list(addresses)) for node, addresses in running}
            return [by_id.get(str(node.id), (node, list(getattr(node, f"{s.address}_ips") or [])))
                    for node in nodes]

    def _node_ssh_specs(self, n: int, node: Any, addresses: list[str]) -> list[Any]:
        from pydron.remote import ssh

        s = self.settings
        if not addresses:
            raise CloudError(f"{s.name}: node {node.id} ({node.name}) at provider "
                             f"{s.provider!r} has no address")
        return ssh.gateway_specs(
            f"{s.name} (cloud node {node.id})", hostname=str(addresses[0]),
            username=s.username, port=s.port, identity_file=s.privatekey, password=None,
            python=s.python, options=dict(s.ssh_options), cores=s.cores, tmp_dir=s.tmp_dir,
            data_ports=s.data_ports,
        )

    # -- reaching a node --------------------------------------------------
    def make_gateway(self, group: Any, spec: CloudGatewaySpec) -> Any:
        """Provision (once), then log in to ``spec``'s node, retrying until ``ssh_timeout``.

        Called again for the same spec, the pool is replacing its dead worker:
        then the provider is asked first whether the node is still there (see
        ``_relogin``), and a node that is gone is replaced by a new one.
        """
        self.provision()
        key = (spec.node, spec.core)
        if key in self._connected:
            gateway, node = self._relogin(group, spec)
        else:
            node = self.slots[spec.node]
            gateway = self._login(group, spec, node, watch=False)
        self._connected[key] = str(node.id)
        return gateway

    def _relogin(self, group: Any, spec: CloudGatewaySpec) -> tuple[Any, Any]:
        """A dead worker's replacement: (gateway, node) on its node if that is still there,
        else on a new node started in its place.

        The node's other cores (``cores`` > 1) find the new node in ``slots``: the
        first of them to find the node gone starts it, under the slot's lock,
        and the others wait for it and use it.
        """
        n = spec.node
        with self._lock:
            slot_lock = self._slot_locks.setdefault(n, threading.Lock())
        gone: tuple[Any, str] | None = None
        while True:
            with slot_lock:
                node = self.slots[n]
                if gone is not None and node is gone[0]:
                    node = self._replace_node(n, *gone)
            try:
                return self._login(group, spec, node, watch=True), node
            except _NodeGone as exc:
                gone = (node, exc.why)

    def _login(self, group: Any, spec: CloudGatewaySpec, node: Any, watch: bool) -> Any:
        """An ssh gateway to core ``spec.core`` of ``node``, retrying until ``ssh_timeout``.

        With ``watch`` (a replacement), the provider is asked for the node's state
        before each attempt: ``_NodeGone`` when it is terminated, stopped or no
        longer listed, or not running and silent for ``NOT_RUNNING_GRACE`` seconds.
        """
        from pydron.remote import ssh

        s = self.settings
        ssh_spec = self._ssh_specs[str(node.id)][spec.core]
        deadline = time.monotonic() + s.ssh_timeout
        silent_until: float | None = None  # while the provider says "not running"
        while True:
            if _closing.is_set() or self._released:
                raise CloudError(f"{s.name}: pydron is shutting down")
            if watch:
                state = node_state(self.driver(), node)
                if state is None or state in GONE_STATES:
                    raise _NodeGone("no longer listed by the provider" if state is None
                                    else f"{state} at the provider")
                if state in ("running", UNREACHABLE):
                    silent_until = None
                elif silent_until is None:
                    silent_until = time.monotonic() + min(s.ssh_timeout, NOT_RUNNING_GRACE)
                elif time.monotonic() >= silent_until:
                    raise _NodeGone(f"{state} at the provider and no ssh answer "
                                    f"for {min(s.ssh_timeout, NOT_RUNNING_GRACE):g} s")
            remaining = deadline - time.monotonic()
            try:
                return ssh.make_gateway(group, ssh_spec,
                                        timeout=max(1.0, min(ssh.SSH_START_TIMEOUT, remaining)))
            except ssh.SshLoginRefused as exc:
                self._broken = True
                raise CloudError(
                    f"{s.name}: node {node.id} ({node.name}) at provider {s.provider!r} refused "
                    f"the ssh login of user {ssh_spec.user or 'of this process'!r} (not retried: "
                    f"check username, privatekey/publickey, keypair and ssh_options): "
                    f"{self.scrub(str(exc))}") from None
            except PydronError as exc:
                cause = str(exc)
                # Only "could not connect / log in yet" is worth waiting for.
                if ("could not connect" not in cause and "within" not in cause) \
                        or time.monotonic() + s.poll_interval >= deadline:
                    self._broken = True
                    raise CloudError(
                        f"{s.name}: node {node.id} ({node.name}) at provider {s.provider!r} "
                        f"did not answer ssh within {s.ssh_timeout:g} s (ssh_timeout): "
                        f"{self.scrub(cause)}") from None
            time.sleep(s.poll_interval)

    def _replace_node(self, n: int, old: Any, why: str) -> Any:
        """Start a node for slot ``n`` in place of ``old``, which is gone; terminate ``old``.

        At most ``count`` such nodes per entry and run: a node that keeps
        disappearing (a spot market, a quota, a bad image) is not replaced for ever.
        Called with the slot's lock held.
        """
        s = self.settings
        with self._lock:
            if self.replaced >= s.count:
                self._broken = True
                raise CloudError(
                    f"{s.name}: node {old.id} ({old.name}) at provider {s.provider!r} is gone "
                    f"({why}); not replaced: this entry already started {self.replaced} new "
                    f"node(s) in this run, at most count={s.count}")
            self.replaced += 1
            made = sum(1 for node in self.nodes
                       if str(node.name or "").startswith(f"{NAME_PREFIX}{self.run_id}-{n + 1}-"))
        driver = self.driver()
        node = self._create_node(driver, f"{NAME_PREFIX}{self.run_id}-{n + 1}-{made + 2}")
        if str(old.id) not in self._terminated:  # a stopped node still costs: end it now
            if terminate_node(driver, old, self._cause) is None:
                self._terminated.add(str(old.id))  # else release() tries again and names it
        try:
            [(running, addresses)] = self._wait_running(driver, [node])
            self._ssh_specs[str(node.id)] = self._node_ssh_specs(n, running, addresses)
        except BaseException:
            self._broken = True
            raise
        self.slots[n] = node
        if s.keep_alive:
            _save_warm(self, in_use=True)
        log.warning("%s: node %s (%s) is gone (%s); started node %s (%s) in its place",
                    s.name, old.id, old.name, why, node.id, node.name)
        return node

    # -- termination ------------------------------------------------------
    def release(self) -> None:
        """Terminate every node this cluster created; CloudError names those left running.

        A node still being created (a replacement) is waited for, at most
        ``CREATE_WAIT`` seconds, so that it is terminated with the others.
        """
        with self._lock:
            if self._released:
                return
            self._released = True
            if not self._changed.wait_for(lambda: not self._creating, timeout=CREATE_WAIT):
                self._late = True  # _create_node terminates it; the guardian stays on watch
        try:
            s = self.settings
            keep = bool(s.keep_alive and self.slots and self._provisioned and not self._broken)
            try:
                # kept: only the nodes replaced during the run end now; a lease ends the rest
                self.terminate(retired_only=keep)
            finally:
                if keep:
                    _save_warm(self, in_use=False)
                elif s.keep_alive:
                    _drop_warm(self)
            if not self._late:
                self._guardian.done()  # not when some are left: it tries again when we exit
        finally:
            with _live_lock:
                _live.discard(self)

    def terminate(self, retired_only: bool = False) -> None:
        """Terminate the nodes created (with ``retired_only``: those no slot uses any more)."""
        s = self.settings
        current = {str(node.id) for node in self.slots} if retired_only else set()
        nodes = [node for node in self.nodes if str(node.id) not in current]
        if not nodes:
            return
        driver = self.driver()
        left: list[str] = []
        for node in nodes:
            if str(node.id) in self._terminated:
                continue
            cause = terminate_node(driver, node, self._cause)
            if cause is None:
                self._terminated.add(str(node.id))
            else:
                left.append(f"node {node.id} ({node.name}): {cause}")
        if left:
            raise CloudError(
                f"{s.name}: {len(left)} node(s) at provider {s.provider!r} could not be "
                f"terminated and MAY STILL COST MONEY; end them with `python -m pydron cloud "
                f"cleanup` or the provider's console:\n  " + "\n  ".join(left))


def make_driver(s: CloudSettings, cause: Callable[[BaseException], str]) -> Any:
    """The entry's libcloud driver: ``Driver(accesskeyid, accesskey, region=..., **driver_options)``."""
    cls = s.driver_class or resolve_provider(s.provider)
    args = [value for value in (s.accesskeyid, s.accesskey) if value is not None]
    kwargs = dict(s.driver_options)
    if s.region is not None:
        kwargs.setdefault("region", s.region)
    accepted = _parameters(cls.__init__)
    if accepted is not None:
        positional = [p for p in accepted.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
        args = args[:len(positional)]
        for key in list(kwargs):
            if key not in accepted:
                field_name = "region" if key == "region" and s.region is not None else f"driver_options.{key}"
                raise s.error(field_name, f"driver {cls.__name__} does not take {key!r}")
    try:
        return cls(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise s.error("driver_options", f"cannot create the {s.provider!r} driver: {cause(exc)}") from None


def _parameters(fn: Any) -> dict[str, inspect.Parameter] | None:
    """fn's parameters, or None when it takes ``**kwargs`` (anything goes)."""
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return params


def _metadata_keyword(driver: Any) -> str | None:
    params = _parameters(driver.create_node) or {}
    for name in ("ex_metadata", "ex_tags", "ex_metadata_tags"):
        if name in params:
            return name
    return None


def find_image(driver: Any, imageid: str) -> Any:
    """``get_image`` where the driver has it (never ``list_images``: EC2 lists thousands)."""
    try:
        return driver.get_image(imageid)
    except NotImplementedError:
        pass
    for image in driver.list_images():
        if str(image.id) == imageid:
            return image
    return None


def find_size(driver: Any, sizeid: str) -> Any:
    for size in driver.list_sizes():
        if str(size.id) == sizeid:
            return size
    return None


def terminate_node(driver: Any, node: Any, cause: Callable[[BaseException], str],
                   attempts: int | None = None) -> str | None:
    """Destroy ``node``, retrying; None once it is gone, else why not."""
    attempts = TERMINATE_ATTEMPTS if attempts is None else attempts
    last = "destroy_node returned False"
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(TERMINATE_BACKOFF * 2 ** (attempt - 1), 5.0))
        try:
            if driver.destroy_node(node) is not False:
                return None
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            text = cause(exc)
            if "NotFound" in text or "does not exist" in text:
                return None  # already gone
            last = text
    return last


def node_state(driver: Any, node: Any) -> str | None:
    """``node``'s state at the provider now, as a libcloud ``NodeState`` value
    (``"running"``, ``"terminated"``, ...; where libcloud says ``"unknown"``, the
    provider's own word if the driver keeps it, e.g. EC2's ``"shutting-down"``);
    None when the provider no longer lists it; ``UNREACHABLE`` when it could not be asked."""
    try:
        if "ex_node_ids" in (_parameters(driver.list_nodes) or {}):  # EC2: ask for it alone
            listed = driver.list_nodes(ex_node_ids=[node.id])
        else:
            listed = driver.list_nodes()
    except Exception as exc:  # noqa: BLE001 - EC2 says NotFound for an id it forgot
        text = f"{type(exc).__name__}: {exc}"
        return None if "NotFound" in text or "does not exist" in text else UNREACHABLE
    for candidate in listed:
        if str(candidate.id) == str(node.id):
            state = str(getattr(candidate.state, "value", candidate.state))
            status = (getattr(candidate, "extra", None) or {}).get("status")
            return str(status) if state == "unknown" and isinstance(status, str) else state
    return None


def is_pydron_node(node: Any) -> bool:
    """A node pydron created: its name prefix, or its run tag."""
    tags = {}
    extra = getattr(node, "extra", None) or {}
    for key in ("tags", "metadata"):
        if isinstance(extra.get(key), dict):
            tags.update(extra[key])
    name = str(getattr(node, "name", "") or "")
    return RUN_TAG in tags or name.startswith(NAME_PREFIX)


def alive_nodes(cluster: Cluster) -> list[Any]:
    """The nodes at the entry's provider that pydron created and that are not terminated."""
    from libcloud.compute.types import NodeState

    return [node for node in cluster.driver().list_nodes()
            if is_pydron_node(node) and node.state != NodeState.TERMINATED]


def node_run(node: Any) -> str:
    extra = getattr(node, "extra", None) or {}
    tags = extra.get("tags") if isinstance(extra.get("tags"), dict) else {}
    if RUN_TAG in tags:
        return str(tags[RUN_TAG])
    name = str(node.name or "")
    # pydron-<run>-<k>, or pydron-<run>-<k>-<g> for a node started in place of a gone one
    return name[len(NAME_PREFIX):].split("-", 1)[0] if name.startswith(NAME_PREFIX) else "?"


# ---------------------------------------------------------------- warm nodes (keep_alive)
#
# A kept entry's nodes are recorded in a state file of this machine
# (``$PYDRON_CLOUD_STATE`` or ``~/.cache/pydron/cloud``; ids, never credentials),
# one per entry fingerprint.  A run claims them (``in_use``) and gives them back
# with a lease; a detached reaper (``python -m pydron.remote.cloud reap FILE GEN``,
# credentials on its stdin) terminates them once the lease has passed and no
# later run has claimed them.


def state_dir() -> str:
    return os.environ.get("PYDRON_CLOUD_STATE") or os.path.join(
        os.path.expanduser("~"), ".cache", "pydron", "cloud")


def fingerprint(s: CloudSettings) -> str:
    """Same for two entries that would create interchangeable nodes."""
    secrets = set(s.secrets())
    options = {k: v for k, v in s.driver_options.items() if v not in secrets}
    identity = hashlib.sha256((s.accesskeyid or "").encode()).hexdigest()
    text = json.dumps([s.provider, s.region, s.imageid, s.sizeid, s.count, s.username,
                       s.node_options, options, identity], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _state_path(s: CloudSettings) -> str:
    return os.path.join(state_dir(), f"{fingerprint(s)}.json")


@contextlib.contextmanager
def _state_lock(path: str):
    import fcntl

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_state(path: str, state: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(tmp, path)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_warm(cluster: Cluster, driver: Any) -> list[Any] | None:
    """The kept nodes of an earlier run of this entry, now in use by this one, or None."""
    from libcloud.compute.types import NodeState

    s = cluster.settings
    path = _state_path(s)
    with _state_lock(path):
        state = _read_state(path)
        if not state or not state.get("nodes"):
            return None
        if state.get("in_use") not in (None, os.getpid()) and _pid_alive(state.get("in_use")):
            return None  # another run uses them now: this one starts its own
        ids = [str(i) for i in state["nodes"]]
        alive = {str(node.id): node for node in driver.list_nodes()
                 if str(node.id) in ids and node.state in (NodeState.RUNNING, NodeState.PENDING)}
        if len(alive) != len(ids) or len(ids) != s.count:
            for node in alive.values():  # an incomplete set: not worth keeping
                terminate_node(driver, node, cluster.scrub_exception)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        state.update(in_use=os.getpid(), lease_until=None,
                     generation=int(state.get("generation", 0)) + 1)
        _write_state(path, state)
        cluster.run_id = str(state.get("run_id", cluster.run_id))
        return [alive[i] for i in ids]


def _save_warm(cluster: Cluster, in_use: bool) -> None:
    s = cluster.settings
    path = _state_path(s)
    with _state_lock(path):
        state = _read_state(path) or {}
        generation = int(state.get("generation", 0)) + 1
        lease_until = None if in_use or s.lease is None else time.time() + 60 * s.lease
        _write_state(path, {
            "entry": s.name, "provider": s.provider, "run_id": cluster.run_id,
            "nodes": [str(node.id) for node in cluster.slots],
            "in_use": os.getpid() if in_use else None, "lease_until": lease_until,
            "generation": generation,
        })
    if lease_until is not None:
        _spawn_reaper(cluster, path, generation)


def _drop_warm(cluster: Cluster) -> None:
    path = _state_path(cluster.settings)
    with _state_lock(path):
        state = _read_state(path)
        if state and state.get("run_id") == cluster.run_id:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _spawn_helper(cluster: Cluster, *args: str) -> Any:
    """A detached ``python -m pydron.remote.cloud ARGS`` whose first stdin line says
    how to reach the entry's provider: credentials never go on a command line."""
    import subprocess
    import sys

    s = cluster.settings
    payload = json.dumps({
        "name": s.name, "provider": s.provider, "accesskeyid": s.accesskeyid,
        "accesskey": s.accesskey, "region": s.region, "driver_options": s.driver_options,
    })
    # This process's imports (pydron, a "module:Class" driver) must work there too.
    search = [os.path.abspath(p or os.getcwd()) for p in sys.path if isinstance(p, str)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(search)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pydron.remote.cloud", *args],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd="/", env=env,
    )
    with contextlib.suppress(OSError):
        process.stdin.write(payload.encode() + b"\n")
        process.stdin.flush()
    return process


def _helper_settings(line: bytes) -> CloudSettings:
    payload = json.loads(line)
    return CloudSettings(name=payload.pop("name"), error=lambda f, m: ConfigError(m), **payload)


def _spawn_reaper(cluster: Cluster, path: str, generation: int) -> None:
    """A detached process that ends the lease."""
    process = _spawn_helper(cluster, "reap", path, str(generation))
    with contextlib.suppress(OSError):
        process.stdin.close()


class _NoGuardian:
    def node(self, node: Any) -> None:
        pass

    def done(self) -> None:
        pass


class _Guardian:
    """A detached process that terminates the cluster's nodes if this one dies first.

    It learns each node's id as it is created, on a pipe; when the cluster is
    released it is told ``done``.  End of file without ``done`` (the master
    was killed: SIGKILL, out of memory, ...) makes it terminate them.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.process = _spawn_helper(cluster, "guard")
        self._lock = threading.Lock()

    def _send(self, text: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(text.encode() + b"\n")
            self.process.stdin.flush()

    def node(self, node: Any) -> None:
        self._send(f"node {node.id}")

    def done(self) -> None:
        self._send("done")
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.process.stdin.close()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)


def _guard() -> int:
    """The guardian (see ``_Guardian``)."""
    import sys

    from libcloud.compute.types import NodeState

    stdin = sys.stdin.buffer
    settings = _helper_settings(stdin.readline())
    ids: set[str] = set()
    for line in stdin:
        text = line.decode("utf-8", "replace").strip()
        if text == "done":
            return 0
        if text.startswith("node "):
            ids.add(text[5:])
    if not ids:
        return 0
    cluster = Cluster(settings)
    for attempt in range(5):
        try:
            driver = cluster.driver()
            nodes = [node for node in driver.list_nodes()
                     if str(node.id) in ids and node.state != NodeState.TERMINATED]
        except Exception:  # noqa: BLE001 - the provider may be unreachable for a while
            nodes = None
        if nodes is not None and not [
                node for node in nodes
                if terminate_node(driver, node, cluster.scrub_exception) is not None]:
            return 0
        time.sleep(min(5 * 2 ** attempt, 60))
    return 1


def _reap(path: str, generation: int) -> int:
    """The reaper: wait for the lease of ``path`` to pass, then terminate its nodes."""
    import sys

    settings = _helper_settings(sys.stdin.buffer.readline())
    sys.stdin.close()
    while True:
        with _state_lock(path):
            state = _read_state(path)
            if (not state or int(state.get("generation", -1)) != generation
                    or state.get("in_use") or state.get("lease_until") is None):
                return 0  # a later run took them over (and will start its own reaper)
            wait = float(state["lease_until"]) - time.time()
            if wait <= 0:
                cluster = Cluster(settings)
                driver = cluster.driver()
                ids = {str(i) for i in state["nodes"]}
                left = [node.id for node in driver.list_nodes() if str(node.id) in ids
                        and terminate_node(driver, node, cluster.scrub_exception) is not None]
                if not left:
                    os.unlink(path)
                    return 0
                wait = 30.0  # try again later; `cloud cleanup` also ends them
        time.sleep(min(max(wait, 0.05), 30.0))


# ---------------------------------------------------------------- exit paths


def terminate_all() -> None:
    """Terminate the nodes of every cluster still alive in this process.

    Not in a child made by ``os.fork``: the nodes belong to the parent.
    """
    _closing.set()
    with _live_lock:
        clusters = [cluster for cluster in _live if cluster.pid == os.getpid()]
    errors = []
    for cluster in clusters:
        try:
            cluster.release()
        except CloudError as exc:
            errors.append(str(exc))
    if errors:
        raise CloudError("\n".join(errors))


def _at_exit() -> None:
    with _live_lock:
        if not [cluster for cluster in _live if cluster.pid == os.getpid()]:
            return
    with contextlib.suppress(Exception):
        from pydron.remote import pool

        pool.shutdown()  # the workers first, then their nodes
    try:
        terminate_all()
    except CloudError as exc:
        import sys

        print(f"pydron: error: {exc}", file=sys.stderr)


atexit.register(_at_exit)

_handler_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    if _closing.is_set():
        return  # already on the way out
    _closing.set()
    raise SystemExit(128 + signum)  # unwinds to the exit path: atexit terminates the nodes


def _install_signal_handler() -> None:
    """SIGTERM ends the run like an exception: from the main thread, if nobody claimed it.

    Called when a cloud entry is read (usually on the main thread) and again
    when nodes are created (on the pool's start-up threads: then a no-op).
    """
    global _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
    _handler_installed = True


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "reap":
        sys.exit(_reap(sys.argv[2], int(sys.argv[3])))
    if sys.argv[1:] == ["guard"]:
        sys.exit(_guard())
    sys.exit("usage: python -m pydron.remote.cloud reap STATE_FILE GENERATION | guard")
