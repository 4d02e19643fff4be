"""The run report as one self-contained HTML page: inline CSS, SVG and a few lines of JS, no network."""
from __future__ import annotations

import datetime
import html
import zlib

from pydron.observe import graphdraw
from pydron.observe.timeline import Bar, Timeline

WIDTH = 1300  # of the timeline, in px
LABEL_W = 190  # room for lane labels
LANE_H = 26
AXIS_H = 24

_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 22px 0 6px; }
.meta { color: #666; margin: 0 0 10px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; }
td.num, th.num { text-align: right; }
#summary td:first-child { color: #555; }
svg text { font: 11px sans-serif; fill: #222; } svg text.small { font-size: 10px; fill: #555; }
.lane-bg { fill: #f4f5f7; } .lane-label { font-weight: 600; }
rect.task { stroke: #0003; stroke-width: 0.5; } rect.task.failed { stroke: #c00; stroke-width: 2; }
rect.task.lost { fill: #bbb !important; stroke: #c00; stroke-dasharray: 3 2; }
rect.task.cancelled { fill: #ddd !important; stroke: #888; stroke-dasharray: 2 2; }
rect.task:hover, rect.wait:hover { stroke: #000; stroke-width: 1.5; }
rect.wait { fill: #e8a33d; } rect.run { fill: #dfe7f3; }
.tick { stroke: #ccc; } .dead { stroke: #c00; stroke-width: 2; }
#details { min-height: 3em; padding: 6px 8px; background: #f7f7f2; border: 1px solid #ddd; margin-top: 6px;
           white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
g.node rect { fill: #eef3fb; stroke: #6b7fa8; } line.edge { stroke: #667; stroke-width: 1; }
pre.dot { max-height: 300px; overflow: auto; background: #f7f7f7; padding: 8px; }
"""

_JS = """
(function () {
  var box = document.getElementById('details');
  function show(event) {
    var t = event.target;
    if (!t.dataset || !t.dataset.info) return;
    box.textContent = t.dataset.info;
  }
  document.getElementById('timeline-svg').addEventListener('mouseover', show);
  document.getElementById('timeline-svg').addEventListener('click', show);
})();
"""


def page(timeline: Timeline, title: str = "pydron run report") -> tuple[str, str]:
    """(the HTML page, the DOT text of the task graph) of ``timeline``."""
    dot = graphdraw.dot_text(timeline.nodes)
    drawn = graphdraw.graphviz_svg(dot) if timeline.nodes else None
    drawn_by = "graphviz" if drawn else "pydron"
    if drawn is None:
        drawn = graphdraw.svg(timeline.nodes)
    if not drawn:
        note = ("no functional call was recorded" if not timeline.nodes else
                f"{len(timeline.nodes)} calls are too many to draw here; install graphviz, or "
                f"open the DOT text below with it")
        graph_html = f'<p class="note">{html.escape(note)}</p>'
    else:
        graph_html = f'<div id="graph" data-drawn-by="{drawn_by}">{drawn}</div>'
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    runs = len(timeline.runs)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">written {written}; {runs} top-level schedule call{"s" * (runs != 1)}, '
        f"{len(timeline.bars)} task runs on {len(timeline.lanes)} workers, "
        f"{timeline.span:.3f} s recorded</p>",
        "<h2>Summary</h2>", _summary(timeline),
        "<h2>Timeline</h2>",
        '<p class="meta">one lane per worker, one bar per task (hover or click for details); '
        "the top lane shows the top-level calls (blue) and where the schedule function waited "
        "for results (orange)</p>",
        _timeline_svg(timeline),
        '<div id="details">hover over a bar</div>',
        "<h2>Where the schedule function waited</h2>", _waits(timeline),
        "<h2>Task graph</h2>",
        '<p class="meta">one box per functional call; an arrow means a call needed the other\'s '
        "result (operations done on the master in between are folded into the arrow)</p>",
        graph_html,
        f'<details><summary>DOT text ({len(timeline.nodes)} nodes, for graphviz)</summary>'
        f'<pre class="dot">{html.escape(dot)}</pre></details>',
    ]
    text = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{_JS}</script>\n</body></html>\n")
    return text, dot


def _summary(tl: Timeline) -> str:
    done = [b for b in tl.bars if b.status in ("ok", "failed")]
    cancelled = sum(b.status == "cancelled" for b in tl.bars)
    failed = sum(b.status == "failed" for b in tl.bars)
    lost = sum(b.status == "lost" for b in tl.bars)
    bytes_out = sum(b.bytes_out for b in tl.bars)
    bytes_in = sum(b.bytes_in for b in tl.bars)
    rows = [
        ("tasks", f"{len(done)} finished ({failed} failed), {lost} lost with a worker and run again, "
                  f"{cancelled} cancelled"),
        ("functional calls", f"{len(tl.nodes)}"),
        ("elapsed", f"{tl.elapsed:.3f} s in top-level schedule calls"),
        ("summed task time", f"{tl.task_seconds:.3f} s"),
        ("speed-up", f"{tl.speedup:.2f}x (summed task time / elapsed)"),
        ("bytes moved", f"{_size(bytes_out + bytes_in)} ({_size(bytes_out)} to workers, "
                        f"{_size(bytes_in)} back)"),
        ("waits", f"{len(tl.waits)}, {sum(w.end - w.start for w in tl.waits):.3f} s in all"),
    ]
    out = ['<table id="summary">']
    out += [f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    out.append('<table id="workers"><tr><th>worker</th><th class="num">tasks</th>'
               '<th class="num">busy</th><th class="num">busy fraction</th><th>state</th></tr>')
    elapsed = tl.elapsed
    for lane in tl.lanes:
        busy = tl.busy(lane.label)
        count = sum(1 for b in tl.bars if b.worker == lane.label and b.status != "lost")
        state = "died" if lane.died else "stopped" if lane.end is not None else "up"
        fraction = f"{busy / elapsed:.0%}" if elapsed > 0 else "—"
        out.append(f'<tr data-worker="{html.escape(lane.label)}"><td>{html.escape(lane.label)}</td>'
                   f'<td class="num">{count}</td><td class="num">{busy:.3f} s</td>'
                   f'<td class="num">{fraction}</td><td>{state}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def _timeline_svg(tl: Timeline) -> str:
    span = max(tl.span, 1e-6)
    scale = (WIDTH - LABEL_W - 10) / span
    height = AXIS_H + LANE_H * (len(tl.lanes) + 1) + 6

    def x(t: float) -> float:
        return LABEL_W + max(0.0, t) * scale

    out = [f'<svg id="timeline-svg" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}">']
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        out.append(f'<line class="tick" x1="{x(tick):.1f}" y1="{AXIS_H - 6}" x2="{x(tick):.1f}" '
                   f'y2="{height}"/><text x="{x(tick) + 2:.1f}" y="{AXIS_H - 10}">{_seconds(tick)}</text>')
        tick += step
    y = AXIS_H
    out.append(f'<g class="lane" id="lane-schedule" data-worker=""><rect class="lane-bg" x="0" y="{y}" '
               f'width="{WIDTH}" height="{LANE_H - 4}"/><text class="lane-label" x="4" y="{y + 15}">'
               "schedule function</text>")
    for number, start, end in tl.runs:
        info = f"top-level call {number}: {end - start:.3f} s"
        out.append(f'<rect class="run" x="{x(start):.1f}" y="{y + 2}" width="{max(1.0, (end - start) * scale):.1f}" '
                   f'height="{LANE_H - 8}" data-info="{html.escape(info)}"><title>{html.escape(info)}</title></rect>')
    for wait in tl.waits:
        where = (f"as the schedule function returned (to {wait.site})" if wait.at_return
                 else f"at {wait.site}")
        info = f"waited {(wait.end - wait.start) * 1e3:.1f} ms {where}"
        out.append(f'<rect class="wait" x="{x(wait.start):.1f}" y="{y + 5}" '
                   f'width="{max(1.0, (wait.end - wait.start) * scale):.1f}" height="{LANE_H - 14}" '
                   f'data-line="{wait.line}" data-info="{html.escape(info)}"><title>{html.escape(info)}</title></rect>')
    out.append("</g>")
    for lane in tl.lanes:
        y += LANE_H
        label = html.escape(lane.label)
        out.append(f'<g class="lane worker-lane" data-worker="{label}"><rect class="lane-bg" x="0" y="{y}" '
                   f'width="{WIDTH}" height="{LANE_H - 4}"/><text class="lane-label" x="4" y="{y + 15}">'
                   f"{html.escape(_clip(lane.label, 28))}</text>")
        if lane.died and lane.end is not None:
            out.append(f'<line class="dead" x1="{x(lane.end):.1f}" y1="{y}" x2="{x(lane.end):.1f}" '
                       f'y2="{y + LANE_H - 4}"><title>{label} died</title></line>')
        for bar in tl.bars:
            if bar.worker == lane.label:
                out.append(_bar(bar, x(bar.start), max(1.0, bar.seconds * scale), y + 2))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _bar(bar: Bar, x: float, width: float, y: float) -> str:
    inputs = ", ".join(sorted(set(bar.inputs_from))) or "none (arguments from the call)"
    info = (f"{bar.name}() called at {bar.file}, line {bar.line}\n"
            f"on {bar.worker}: {bar.seconds * 1e3:.2f} ms, {bar.status}\n"
            f"bytes out {bar.bytes_out}, in {bar.bytes_in}; inputs from: {inputs}")
    hue = zlib.crc32(bar.name.encode()) % 360
    return (f'<rect class="task {bar.status}" x="{x:.1f}" y="{y}" width="{width:.1f}" '
            f'height="{LANE_H - 8}" style="fill:hsl({hue},55%,62%)" data-task="{bar.task_id}" '
            f'data-name="{html.escape(bar.name)}" data-line="{bar.line}" '
            f'data-info="{html.escape(info)}"><title>{html.escape(info)}</title></rect>')


def _waits(tl: Timeline) -> str:
    if not tl.waits:
        return '<p class="note">the schedule function never waited for a result</p>'
    by_site: dict[tuple[str, int, bool], list[float]] = {}
    for wait in tl.waits:
        by_site.setdefault((wait.file, wait.line, wait.at_return), []).append(wait.end - wait.start)
    out = ['<table id="wait-table"><tr><th>where</th><th class="num">times</th>'
           '<th class="num">waited</th></tr>']
    for (file, line, at_return), seconds in sorted(by_site.items(), key=lambda kv: -sum(kv[1])):
        where = f"{file}, line {line}" + (" (the call's return)" if at_return else "")
        out.append(f"<tr><td>{html.escape(where)}</td><td class=\"num\">{len(seconds)}</td>"
                   f"<td class=\"num\">{sum(seconds):.3f} s</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _tick_step(span: float) -> float:
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120,
                 300, 600, 1800, 3600):
        if span / step <= 12:
            return float(step)
    return span / 10


def _seconds(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 and t != 0 else f"{t:g} s"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
