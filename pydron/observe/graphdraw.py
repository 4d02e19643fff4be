"""The task graph of a recording as DOT text and as an SVG drawn here (a simple layered layout).

Nodes are functional calls; an edge means a call needed another's result.
Values computed on the master in between (deferred operators such as
``r * 2``) are folded into the edge. Graphviz draws the DOT text when its
``dot`` program is installed; otherwise the page shows this module's drawing.
"""
from __future__ import annotations

import html
import os
import shutil
import subprocess

from pydron.observe.timeline import Node

MAX_DRAWN = 400  # more nodes than this are left to graphviz (the DOT text always has them all)
BOX_W, BOX_H, GAP_X, GAP_Y = 150, 36, 60, 14


def dot_text(nodes: list[Node]) -> str:
    """The graph in graphviz's DOT language."""
    lines = ["digraph pydron {", "  rankdir=LR;", '  node [shape=box, fontname="sans-serif", fontsize=10];']
    for index, node in enumerate(nodes):
        label = f"{node.name}()\\n{os.path.basename(node.file)}:{node.line}"
        if node.worker:
            label += f"\\n{node.worker}"
        lines.append(f'  t{index} [label="{_dot_escape(label)}"];')
    for index, node in enumerate(nodes):
        for source in node.inputs:
            lines.append(f"  t{source} -> t{index};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace('"', '\\"')


def graphviz_svg(dot: str, timeout: float = 20.0) -> str | None:
    """Graphviz's drawing of ``dot`` as inline SVG, or None when ``dot`` is missing or fails."""
    program = shutil.which("dot")
    if program is None:
        return None
    try:
        result = subprocess.run([program, "-Tsvg"], input=dot, capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or "<svg" not in result.stdout:
        return None
    return result.stdout[result.stdout.index("<svg"):]


def layers(nodes: list[Node]) -> list[int]:
    """Each node's column: 0 for calls that needed no other call, else one past their inputs'."""
    layer: list[int] = []
    for node in nodes:  # inputs always come earlier in issue order
        layer.append(1 + max((layer[i] for i in node.inputs), default=-1))
    return layer


def svg(nodes: list[Node]) -> str:
    """A left-to-right layered drawing of the graph (empty text when it has too many nodes)."""
    if not nodes or len(nodes) > MAX_DRAWN:
        return ""
    layer = layers(nodes)
    rows: dict[int, int] = {}
    position: list[tuple[float, float]] = []
    for index in range(len(nodes)):
        row = rows.get(layer[index], 0)
        rows[layer[index]] = row + 1
        position.append((10 + layer[index] * (BOX_W + GAP_X), 10 + row * (BOX_H + GAP_Y)))
    width = 20 + (max(layer) + 1) * (BOX_W + GAP_X)
    height = 20 + max(rows.values()) * (BOX_H + GAP_Y)
    parts = [f'<svg id="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
             'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#667"/></marker></defs>']
    for index, node in enumerate(nodes):
        x2, y2 = position[index]
        for source in node.inputs:
            x1, y1 = position[source]
            parts.append(f'<line class="edge" x1="{x1 + BOX_W:.0f}" y1="{y1 + BOX_H / 2:.0f}" '
                         f'x2="{x2:.0f}" y2="{y2 + BOX_H / 2:.0f}" marker-end="url(#arrow)"/>')
    for index, node in enumerate(nodes):
        x, y = position[index]
        site = f"{os.path.basename(node.file)}:{node.line}"
        worker = node.worker or "not run"
        title = html.escape(f"{node.name}() at {site}, on {worker}")
        parts.append(
            f'<g class="node" data-node="{index}"><title>{title}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="4"/>'
            f'<text x="{x + 6:.0f}" y="{y + 15:.0f}">{html.escape(_clip(node.name, 20))}()</text>'
            f'<text class="small" x="{x + 6:.0f}" y="{y + 29:.0f}">'
            f'{html.escape(_clip(site, 16))} {html.escape(_clip(worker, 12))}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
