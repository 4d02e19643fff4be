"""The ``"type": "dask"`` entry of pydron.conf: its fields, their checks, its spec.

Two forms::

    {"type": "dask", "scheduler": "tcp://HOST:PORT"}        join a running cluster
    {"type": "dask", "scheduler_file": "PATH"}               (or through its scheduler file)
    {"type": "dask", "cluster": "dask_jobqueue.SLURMCluster",
     "cluster_options": {...}, "jobs": N}                    start one for the run

``cluster`` is any importable class whose instances a ``distributed.Client``
accepts (``distributed.LocalCluster``, the dask-jobqueue and dask-kubernetes
clusters, ...); it is made with ``cluster_options`` as keyword arguments,
scaled to ``jobs`` if given, and closed when pydron's backend shuts down.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydron.config_entry import show as _show
from pydron.remote.dask_backend import INSTALL_HINT

FIELDS = ("scheduler", "scheduler_file", "cluster", "cluster_options", "jobs")
_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ws|wss|ucx|inproc)://)?[\w.\-\[\]:]+:\d+$")
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+$")


@dataclass(frozen=True)
class DaskSpec:
    """One Dask cluster to run every task on (the entry is the whole configuration)."""

    label: str
    scheduler: str | None = None
    scheduler_file: str | None = None
    # The entry's "cluster" (not called so here: pytest_share reads ``spec.cluster`` as a
    # cloud entry's node group).
    cluster_class_path: str | None = None
    cluster_options: dict[str, Any] = field(default_factory=dict)
    jobs: int | None = None

    def describe(self) -> str:
        if self.cluster_class_path is not None:
            return f"cluster {self.cluster_class_path}" + (f", jobs={self.jobs}" if self.jobs else "")
        if self.scheduler_file is not None:
            return f"scheduler file {self.scheduler_file}"
        return f"scheduler {self.scheduler}"

    def cluster_class(self) -> Any:
        module, _, name = self.cluster_class_path.rpartition(".")  # type: ignore[union-attr]
        return getattr(importlib.import_module(module), name)

    def make_backend(self, retries: int, timeout: float | None) -> Any:
        """The backend this entry asks for (pool.get_pool calls it)."""
        from pydron.remote.dask_backend import DaskBackend

        return DaskBackend(self, retries=retries, timeout=timeout)


def parse(entry: Any) -> list[DaskSpec]:
    """Validate a dask entry (a config ``_Entry``); errors name the file, entry and field."""
    entry.fields(required=(), optional=FIELDS)
    data = entry.data
    forms = [name for name in ("scheduler", "scheduler_file", "cluster") if name in data]
    if len(forms) != 1:
        found = "none" if not forms else " and ".join(forms)
        raise entry.error(None, f"expected exactly one of scheduler, scheduler_file or cluster, "
                                f"found {found}")
    try:
        import distributed  # noqa: F401 - only: is it there?
    except ImportError as exc:
        raise entry.error("type", f"\"dask\" needs Dask's distributed package, which is not "
                                  f"installed ({exc}); install it with: {INSTALL_HINT}") from None
    label = f"{entry.name} (dask)"
    for name in ("cluster_options", "jobs"):
        if name in data and "cluster" not in data:
            raise entry.error(name, "only goes with \"cluster\" (a cluster pydron starts)")
    if "scheduler" in data:
        address = entry.string("scheduler").strip()
        if not _ADDRESS.match(address):
            raise entry.error("scheduler", f"expected a scheduler address like "
                                           f"\"tcp://HOST:PORT\", got {_show(address)}")
        return [DaskSpec(label, scheduler=address)]
    if "scheduler_file" in data:
        path = Path(entry.string("scheduler_file")).expanduser()
        if not path.is_absolute():
            path = entry.path.parent / path
        if not path.is_file():
            raise entry.error("scheduler_file", f"no such file: {path}")
        return [DaskSpec(label, scheduler_file=str(path))]
    cluster = entry.string("cluster").strip()
    if not _CLASS_PATH.match(cluster):
        raise entry.error("cluster", f"expected an importable class like "
                                     f"\"dask_jobqueue.SLURMCluster\", got {_show(cluster)}")
    module_name, _, class_name = cluster.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: {INSTALL_HINT}" if module_name.startswith("dask_jobqueue") else ""
        raise entry.error("cluster", f"cannot import {module_name}: {exc}{hint}") from None
    if not callable(getattr(module, class_name, None)):
        raise entry.error("cluster", f"{module_name} has no class {class_name}")
    options = data.get("cluster_options", {})
    if not isinstance(options, dict):
        raise entry.error("cluster_options", f"expected an object of keyword arguments for "
                                             f"{class_name}, got {_show(options)}")
    for key in options:
        if not key.isidentifier():
            raise entry.error(f"cluster_options.{key}", "not a Python keyword argument name")
    jobs = entry.positive_int("jobs") if "jobs" in data else None
    return [DaskSpec(label, cluster_class_path=cluster, cluster_options=dict(options), jobs=jobs)]

