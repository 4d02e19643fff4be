"""Skip a test whose real part (sshd, moto, libcloud, a benchmark peer) is missing, or fail it under CI.

On a developer's machine a missing sshd or moto skips the tests that need it.
Under CI (``CI`` set to anything but empty, ``0``, ``false`` or ``no``, as CI
services and ``.ci/run`` set it) every real part must have run, so the same
test fails instead and says what was missing.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def under_ci() -> bool:
    """Whether ``CI`` asks that every real part run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test (or module) for ``reason``; under CI fail it instead."""
    if under_ci():
        pytest.fail(f"{reason} (CI={os.environ.get('CI')}: every real part must run, "
                    f"so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def need_module(name: str, reason: str) -> ModuleType:
    """``import name``, or ``unavailable(reason)`` with the ImportError appended."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{reason}: {exc}")
