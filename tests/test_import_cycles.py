"""pydron's modules import each other without circles.

The import graph is read from the modules' source (every ``import`` and
``from ... import``, at the top or inside a function: a lazy import is still a
dependency, and a circle of them is a circle), restricted to pydron's own
modules. Importing a submodule runs its packages' ``__init__`` too; that is
not counted as an edge (every module would then depend on ``pydron``), but an
explicit ``import pydron`` is. Then each module that used to be part of a
circle is imported first in a fresh interpreter, in a fixed order.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pydron

PACKAGE = Path(pydron.__file__).resolve().parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the pydron modules it imports (anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_known_imports():
    graph = import_graph()
    assert "pydron.runtime.future" in graph["pydron.runtime.resolve"]
    assert "pydron.remote.specs" in graph["pydron.remote.ssh"]
    assert "pydron.errors" in graph["pydron.config"]
    assert "pydron.remote.ssh" in graph["pydron.remote.pool"]  # a lazy import counts


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_pydron_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


FORMERLY_CIRCULAR = ["pydron.config", "pydron.remote.ssh", "pydron.remote.cloud", "pydron.remote.pool",
                     "pydron.runtime.future", "pydron.runtime.resolve", "pydron.remote.dask_backend"]


@pytest.mark.parametrize("first", FORMERLY_CIRCULAR)
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    order = [first] + [name for name in FORMERLY_CIRCULAR if name != first]
    code = "import importlib\n" + "".join(f"importlib.import_module({name!r})\n" for name in order)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
