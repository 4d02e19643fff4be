"""Which workers a pytest run has, and how they are shared out among pytest-xdist workers.

Pure functions of options and the environment, so that the plugin (pydron/pytest_plugin.py)
stays a thin layer of hooks and this part can be tested without starting pytest.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import execnet

from pydron.errors import ConfigError
from pydron.config import (CONF_VAR, CONFIG_NAME, OVERSUBSCRIBE_VAR, SHARE_VAR, TX_VAR, GatewaySpec,
                           find_config_file, parse_tx, usable_cores, worker_specs)


@dataclass(frozen=True)
class Source:
    """Where the run's workers come from: `--tx`-style specs, or a pydron.conf file."""

    origin: str                 #: for the header, e.g. "--pydron-tx" or "pydron.conf /x/pydron.conf"
    tx: tuple[str, ...] = ()    #: `[N*]xspec` strings (when not from a file)
    conf: str | None = None     #: absolute path of a pydron.conf
    explicit: bool = False      #: given to pytest (option or ini), not found in the environment

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` changed so that pydron's own lookup (config.worker_specs) finds this source."""
        env = {k: v for k, v in base.items() if k not in (TX_VAR, CONF_VAR, SHARE_VAR)}
        if self.conf is not None:
            env[CONF_VAR] = self.conf
        else:
            env[TX_VAR] = ";".join(self.tx)
        return env

    def gateways(self, base: Mapping[str, str]) -> list[GatewaySpec]:
        """Every worker of the run, validated (ConfigError names what is wrong and where from)."""
        try:
            return worker_specs(self.environ(base))
        except ConfigError as exc:
            message = str(exc)
            if self.conf is None and message.startswith(f"{TX_VAR}: "):
                message = f"{self.origin}: {message[len(TX_VAR) + 2:]}"
            raise ConfigError(message) from None


def resolve(cli_tx: Sequence[str], cli_conf: str | None, ini_tx: Sequence[str],
            environ: Mapping[str, str], cwd: str) -> Source:
    """The run's source, first found: --pydron-tx, --pydron-conf, PYDRON_TX, PYDRON_CONF,
    the ini option pydron_tx, pydron.conf in the current or home directory or /etc,
    and last one worker per usable core."""
    if cli_tx:
        return Source("--pydron-tx", tx=tuple(cli_tx), explicit=True)
    if cli_conf:
        path = os.path.abspath(os.path.join(cwd, os.path.expanduser(cli_conf)))
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise ConfigError(f"--pydron-conf {cli_conf}: no such file: {path}")
        return Source(f"--pydron-conf {path}", conf=path, explicit=True)
    if environ.get(TX_VAR, "").strip():
        specs = tuple(part for part in environ[TX_VAR].split(";") if part.strip())
        return Source(TX_VAR, tx=specs)
    if environ.get(CONF_VAR):
        path = find_config_file(environ, cwd=cwd)
        assert path is not None  # find_config_file raises when PYDRON_CONF names nothing
        return Source(f"{CONF_VAR} {path}", conf=str(path.resolve()))
    if ini_tx:
        return Source("ini pydron_tx", tx=tuple(ini_tx), explicit=True)
    path = find_config_file(environ, cwd=cwd)
    if path is not None:
        return Source(f"pydron.conf {path}", conf=str(path.resolve()))
    return Source(f"{usable_cores()} usable cores", tx=(f"{usable_cores()}*popen",))


# ---------------------------------------------------------------- sharing out


def _units(gateways: Sequence[GatewaySpec]) -> list[list[int]]:
    """Positions grouped into what cannot be split: one gateway, or all of one cloud entry
    (its nodes are created together, so two xdist workers with a part each would create
    them twice)."""
    units: list[list[int]] = []
    clusters: dict[int, list[int]] = {}
    for index, spec in enumerate(gateways):
        cluster = getattr(spec, "cluster", None)
        if cluster is None:
            units.append([index])
        elif id(cluster) in clusters:
            clusters[id(cluster)].append(index)
        else:
            clusters[id(cluster)] = [index]
            units.append(clusters[id(cluster)])
    return units


def share_out(gateways: Sequence[GatewaySpec], nodes: int) -> list[list[int]]:
    """For each of ``nodes`` xdist workers, the positions of the gateways it starts.

    Every gateway goes to exactly one xdist worker, balanced by count. With fewer
    gateways than xdist workers, each xdist worker still gets one (a second copy of a
    local or ssh gateway); ValueError if only cloud entries could be copied.
    """
    if nodes < 1:
        raise ValueError("no xdist workers")
    units = _units(gateways)
    shares: list[list[int]] = [[] for _ in range(nodes)]
    for unit in units:
        smallest = min(range(nodes), key=lambda k: (len(shares[k]), k))
        shares[smallest].extend(unit)
    empty = [k for k in range(nodes) if not shares[k]]
    if empty:
        copyable = [unit[0] for unit in units if len(unit) == 1
                    and getattr(gateways[unit[0]], "cluster", None) is None]
        if not copyable:
            raise ValueError(
                f"{len(units)} cloud entr{'y' if len(units) == 1 else 'ies'} for {nodes} xdist "
                "workers: each xdist worker needs a pydron worker, and a cloud entry's nodes "
                "cannot be shared; use fewer xdist workers (-n) or add a local or ssh entry")
        for n, k in enumerate(empty):
            shares[k].append(copyable[n % len(copyable)])
    for share in shares:
        share.sort()
    return shares


def share_environ(source: Source, gateways: Sequence[GatewaySpec], share: Sequence[int],
                  base: Mapping[str, str]) -> dict[str, str]:
    """The variables one xdist worker sets so that its pool starts only ``share``."""
    if source.conf is not None:
        env = {CONF_VAR: source.conf, SHARE_VAR: ",".join(map(str, share)) + ":" + source.conf}
    else:
        env = {TX_VAR: ";".join(gateways[k].xspec for k in share)}
        if base.get(OVERSUBSCRIBE_VAR, "") not in ("", "0"):
            env[OVERSUBSCRIBE_VAR] = base[OVERSUBSCRIBE_VAR]
    return env


# ---------------------------------------------------------------- describing


def describe(spec: GatewaySpec) -> tuple[str, str]:
    """(kind, host) of one gateway, e.g. ("popen", "localhost") or ("ssh", "me@node1:2222")."""
    target = getattr(spec, "target", None)
    if target:
        return "ssh", target
    if getattr(spec, "make_backend", None) is not None:  # a dask entry: its own backend
        return "dask", spec.describe()
    cluster = getattr(spec, "cluster", None)
    if cluster is not None:
        return "cloud", f"{cluster.settings.provider} node {getattr(spec, 'node', 0) + 1}"
    xspec = execnet.XSpec(spec.xspec)
    if xspec.popen:
        return "popen", f"via {xspec.via}" if xspec.via else "localhost"
    if xspec.ssh:
        return "ssh", str(xspec.ssh).split()[-1]
    if xspec.socket:
        return "socket", str(xspec.socket)
    return "vagrant_ssh", str(xspec.vagrant_ssh)


def summary(gateways: Sequence[GatewaySpec], positions: Sequence[int] | None = None) -> str:
    """"2 x popen (localhost), 1 x ssh (me@node1)" for the gateways (or those at ``positions``)."""
    counts: dict[tuple[str, str], int] = {}
    for index in range(len(gateways)) if positions is None else positions:
        key = describe(gateways[index])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {kind} ({host})" for (kind, host), n in counts.items())


def check_tx(specs: Sequence[str]) -> None:
    """Raise ConfigError naming the first malformed spec."""
    for spec in specs:
        parse_tx(spec)
