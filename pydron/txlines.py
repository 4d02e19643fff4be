"""`python -m pydron tx`: the configured workers as pytest-xdist `--tx` options.

So that a user can hand pydron's workers to pytest-xdist itself
(``pytest -d $(python -m pydron tx)``). popen and execnet specs pass through; an ssh
entry of pydron.conf becomes ``ssh_config=FILE//ssh=pydron-worker//python=...`` with
FILE a copy of the ssh settings pydron itself uses, kept in a cache directory (pydron's
own copy is removed when it exits). Password entries are refused (pytest-xdist cannot
answer ssh's prompt); cloud entries are skipped (their nodes exist only while pydron's
pool runs).
"""
from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import execnet

from pydron.remote.specs import GatewaySpec
from pydron.errors import ConfigError


def default_ssh_config_dir() -> Path:
    """``$XDG_CACHE_HOME/pydron/tx``, else ``~/.cache/pydron/tx``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pydron" / "tx"


def tx_lines(gateways: Sequence[GatewaySpec], ssh_config_dir: Path) -> tuple[list[str], list[str]]:
    """(`--tx` option texts, messages about skipped entries); ConfigError for a password entry."""
    specs: list[str] = []
    skipped: list[str] = []
    clusters: set[int] = set()
    for gateway in gateways:
        cluster = getattr(gateway, "cluster", None)
        if cluster is not None:
            if id(cluster) not in clusters:
                clusters.add(id(cluster))
                skipped.append(f"{cluster.settings.name} (cloud {cluster.settings.provider}): "
                               "skipped, cloud nodes exist only while pydron's own pool runs")
            continue
        if getattr(gateway, "password", None):
            raise ConfigError(
                f"{gateway.label}: uses a password; pytest-xdist's --tx can only use key-based "
                "ssh (an identity_file, or a key in the ssh agent)")
        if getattr(gateway, "target", None):  # a pydron.conf ssh entry
            specs.append(_persistent_ssh_spec(gateway.xspec, ssh_config_dir))
        else:
            specs.append(gateway.xspec)
    lines = []
    for spec, count in _runs(specs):
        text = spec if not any(c.isspace() for c in spec) else shlex.quote(spec)
        lines.append(f"--tx {count}*{text}" if count > 1 else f"--tx {text}")
    return lines, skipped


def _runs(specs: Sequence[str]) -> list[tuple[str, int]]:
    """Consecutive equal specs counted: a, a, b -> (a, 2), (b, 1)."""
    runs: list[tuple[str, int]] = []
    for spec in specs:
        if runs and runs[-1][0] == spec:
            runs[-1] = (spec, runs[-1][1] + 1)
        else:
            runs.append((spec, 1))
    return runs


def _persistent_ssh_spec(xspec: str, directory: Path) -> str:
    """The spec with its ssh config file copied to ``directory`` (named by its contents)."""
    spec = execnet.XSpec(xspec)
    text = Path(spec.ssh_config).read_text(encoding="utf-8")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.ssh_config"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, target)
    return f"ssh_config={target}//ssh={spec.ssh}//python={spec.python}"
