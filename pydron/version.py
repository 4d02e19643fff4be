"""pydron's version: the installed package's metadata (pyproject.toml) is the one source."""
from __future__ import annotations

import functools
import importlib.metadata


@functools.cache
def version() -> str:
    """The version pip installed (``0+unknown`` when run from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("pydron")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
