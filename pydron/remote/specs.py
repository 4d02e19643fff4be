"""What an execnet pool is started from: one spec per worker process.

A module of its own (nothing of pydron imported) so that config.py and the
entry parsers of each worker kind (execnet_entry, ssh, cloud) can share it
without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewaySpec:
    """One worker process, i.e. one execnet gateway, plus a name for error messages."""

    label: str
    xspec: str
