"""Local and execnet worker kinds: the `--tx` syntax, and the `multicore` and `execnet` entries.

``parse_tx`` reads pytest-xdist style `[N*]xspec` strings (``--tx``, `PYDRON_TX`,
the `execnet` entry's `spec`); ``multicore`` and ``execnet`` validate their
pydron.conf entries into one ``GatewaySpec`` per worker process.
"""
from __future__ import annotations

import os
import shlex
import sys
import warnings
from collections.abc import Mapping

import execnet

from pydron.config_entry import Entry, show
from pydron.errors import ConfigError
from pydron.remote.specs import GatewaySpec

#: execnet gateway types; exactly one must be set in an execnet spec.
GATEWAY_TYPES = ("popen", "ssh", "socket", "vagrant_ssh")


def local_python_spec() -> str:
    """The execnet spec for one local worker running this same interpreter."""
    return f"popen//python={shlex.quote(sys.executable)}"


def split_tx(spec: str) -> list[str]:
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
        return split_tx(spec)
    except ValueError as exc:
        raise ConfigError(f"invalid worker spec {spec!r}: {exc}") from None


INSECURE_VAR = "PYDRON_INSECURE"


#: Why a `socket=` gateway is refused unless the user opts in.
SOCKET_RISK = (
    "socket= gateways are plain TCP without authentication or encryption: anyone who can "
    "reach the port can run code on that host, and anyone on the path can send the master "
    "pickled data that runs code on it"
)


class InsecureGatewayWarning(UserWarning):
    """A `socket=` gateway was allowed (`"insecure": true` or `PYDRON_INSECURE=1`)."""


def has_socket(xspecs: list[str]) -> bool:
    return any(execnet.XSpec(xspec).socket for xspec in xspecs)


def warn_insecure(what: str, allowed_by: str) -> None:
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
    if not has_socket(parse_tx(spec)):
        return
    if environ.get(INSECURE_VAR, "") in ("", "0"):
        raise ConfigError(
            f"{where} {spec.strip()!r}: refused: {SOCKET_RISK}; "
            f"set {INSECURE_VAR}=1 if you accept that"
        )
    warn_insecure(f"worker spec {spec.strip()!r}", f"{INSECURE_VAR}=1")


def local_count(xspecs: list[str]) -> int:
    return sum(1 for xspec in xspecs if execnet.XSpec(xspec).popen and not execnet.XSpec(xspec).via)


def parse_multicore(entry: Entry) -> list[GatewaySpec]:
    entry.fields(required=("cores",), optional=("oversubscribe",))
    cores = entry.positive_int("cores")
    entry.check_count("cores", cores)
    return [
        GatewaySpec(f"{entry.name} (multicore) #{k}", local_python_spec())
        for k in range(1, cores + 1)
    ]


def parse_execnet(entry: Entry) -> list[GatewaySpec]:
    entry.fields(required=("spec",), optional=("oversubscribe", "insecure"))
    spec = entry.string("spec")
    try:
        xspecs = split_tx(spec)
    except ValueError as exc:
        raise entry.error("spec", f"invalid execnet spec {show(spec)}: {exc}") from None
    insecure = entry.data.get("insecure", False)
    if not isinstance(insecure, bool):
        raise entry.error("insecure", f"expected true or false, got {show(insecure)}")
    if has_socket(xspecs):
        if not insecure:
            raise entry.error(
                "spec", f"{show(spec)} refused: {SOCKET_RISK}; "
                'add "insecure": true to this entry if you accept that'
            )
        warn_insecure(f"{entry.path}: {entry.name}.spec {show(spec)}", '"insecure": true')
    entry.check_count("spec", local_count(xspecs))
    return [
        GatewaySpec(f"{entry.name} (execnet {spec.strip()!r}) #{k}", xspec)
        for k, xspec in enumerate(xspecs, 1)
    ]
