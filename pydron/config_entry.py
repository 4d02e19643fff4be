"""One `workers[i]` entry of a pydron.conf under validation, for the parsers of every worker kind.

config.py finds and reads the file and hands each entry, as an ``Entry``, to
the parser its ``type`` names (see ``config.ENTRY_TYPES``). Every parser words
its errors through ``Entry.error``, so that each one names the file, the entry
and the field: ``pydron.conf: PATH: workers[1].cores: expected ...``.
"""
from __future__ import annotations

import json
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydron.errors import ConfigError

CONFIG_NAME = "pydron.conf"


class Entry:
    """One `workers[i]` object under validation; words errors as file: workers[i].field."""

    def __init__(self, path: Path, index: int, data: dict[str, Any],
                 too_many: Callable[[int], str | None] = lambda count: None) -> None:
        self.path, self.index, self.data = path, index, data
        self.name = f"workers[{index}]"
        # Why this many local worker processes are too many (config.py's policy), or None.
        self._too_many = too_many

    def error(self, field: str | None, message: str) -> ConfigError:
        where = self.name if field is None else f"{self.name}.{field}"
        return file_error(self.path, f"{where}: {message}")

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
            raise self.error(field, f"expected a positive integer, got {show(value)}")
        return value

    def check_count(self, field: str, count: int) -> None:
        """Refuse more local workers than the cores can take, unless "oversubscribe": true."""
        oversubscribe = self.data.get("oversubscribe", False)
        if not isinstance(oversubscribe, bool):
            raise self.error("oversubscribe", f"expected true or false, got {show(oversubscribe)}")
        reason = self._too_many(count)
        if reason is not None and not oversubscribe:
            raise self.error(field, f"{reason}; add \"oversubscribe\": true to this entry if you mean it")

    def string(self, field: str) -> str:
        value = self.data[field]
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"expected a non-empty string, got {show(value)}")
        return value


def warn_if_readable(path: Path, what: str = "an ssh password") -> None:
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


def file_error(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{CONFIG_NAME}: {path}: {message}")


def show(value: Any) -> str:
    """A JSON rendering of a bad value for an error message, shortened if long."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({show(value)})"
