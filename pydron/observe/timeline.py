"""The run report's model: the recorder's per-task records turned into lanes, bars, waits and a graph.

Times are seconds from the start of the recording, on the master's clock. A
task's bar spans the time its worker spent on it: the worker's own clock,
shifted onto the master's by the smallest delay seen between a task's end and
its result's arrival (so bars of one worker never overlap or run late).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class Bar:
    """One task on one worker (a task that was retried has one bar per attempt)."""

    task_id: int
    worker: str
    name: str
    file: str
    line: int
    start: float
    end: float
    status: str  # "ok", "failed", "cancelled" or "lost" (its worker died)
    bytes_out: int
    bytes_in: int
    node: int  # index of its task in Timeline.nodes
    inputs_from: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def site(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


@dataclass
class Wait:
    """The schedule function blocked for results (a sync point, or a value it needed)."""

    start: float
    end: float
    file: str
    line: int
    at_return: bool  # the final wait, as the schedule function returned (line: the caller's)

    @property
    def site(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


@dataclass
class Node:
    """A functional call in the task graph; ``inputs`` are indexes of the calls it needed."""

    name: str
    file: str
    line: int
    run: int
    inputs: list[int] = field(default_factory=list)
    worker: str = ""


@dataclass
class Lane:
    label: str
    start: float
    end: float | None = None
    died: bool = False


@dataclass
class Timeline:
    lanes: list[Lane]
    bars: list[Bar]
    waits: list[Wait]
    nodes: list[Node]
    runs: list[tuple[int, float, float]]  # (number, start, end)
    span: float  # seconds from the first record to the last

    @property
    def task_seconds(self) -> float:
        return sum(b.seconds for b in self.bars if b.status != "lost")

    @property
    def elapsed(self) -> float:
        """Time inside top-level schedule calls (or the whole recording when there was none)."""
        return sum(end - start for _, start, end in self.runs) or self.span

    @property
    def speedup(self) -> float:
        return self.task_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def busy(self, label: str) -> float:
        return sum(b.seconds for b in self.bars if b.worker == label)


def build(records: list[tuple], now: float) -> Timeline:
    """The timeline of ``records`` (see events.py for their shapes); ``now`` ends open items."""
    stamps = {"run": 2, "start": 2, "issue": 7, "send": 5}  # where each kind keeps its time
    origin = min((r[stamps[r[0]]] for r in records if r[0] in stamps), default=now)
    lanes: dict[str, Lane] = {}
    nodes: list[Node] = []
    node_of: dict[tuple[int, int], int] = {}
    sends: dict[int, tuple] = {}
    done: dict[int, tuple] = {}
    waits: list[Wait] = []
    runs: list[tuple[int, float, float]] = []
    open_runs: dict[int, float] = {}
    worker_started: dict[str, float] = {}  # label -> when the worker started, if while recording
    run = 0
    for record in records:
        kind = record[0]
        if kind == "issue":
            _, graph, seq, name, file, line, inputs, _ = record
            node = Node(name, file, line, run,
                        [node_of[(graph, s)] for s in inputs if (graph, s) in node_of])
            node_of[(graph, seq)] = len(nodes)
            nodes.append(node)
        elif kind == "send":
            sends[record[1]] = record
            lane = lanes.get(record[4])
            if lane is None:
                lanes[record[4]] = Lane(record[4], worker_started.get(record[4], record[5]) - origin)
        elif kind == "done":
            done[record[1]] = record
        elif kind == "revoked":  # sent again, to another worker: no bar for this send
            sends.pop(record[1], None)
        elif kind == "start":  # a lane only once it runs a task (not: another pool's worker)
            worker_started[record[1]] = record[2]
        elif kind in ("stop", "died"):
            # A worker that neither started nor ran a task while recording (say, one of
            # another pool, stopped meanwhile) has no lane.
            lane = lanes.get(record[1])
            if lane is not None and lane.end is None:
                lane.end, lane.died = record[2] - origin, kind == "died"
        elif kind == "wait":
            _, began, ended, file, line, inside = record
            waits.append(Wait(began - origin, ended - origin, file, line, not inside))
        elif kind == "run":
            run = record[1]
            open_runs[run] = record[2] - origin
        elif kind == "end":
            started = open_runs.pop(record[1], None)
            if started is not None:
                runs.append((record[1], started, record[2] - origin))
    for number, started in open_runs.items():
        runs.append((number, started, now - origin))
    runs.sort()

    # The shift from each worker's clock to the master's.
    offsets: dict[str, float] = {}
    for task_id, record in done.items():
        send = sends.get(task_id)
        if send is None or record[6] is None:
            continue
        shift = record[4] - record[6]
        label = send[4]
        if label not in offsets or shift < offsets[label]:
            offsets[label] = shift

    worker_of_node: dict[int, str] = {}
    bars: list[Bar] = []
    for task_id, send in sends.items():
        _, _, graph, seq, label, sent, bytes_out, routes = send
        index = node_of.get((graph, seq))
        node = nodes[index] if index is not None else Node("?", "?", 0, run)
        result = done.get(task_id)
        if result is not None and result[5] is not None and label in offsets:
            start, end = result[5] + offsets[label], result[6] + offsets[label]
            status = {True: "ok", False: "failed", None: "cancelled"}[result[2]]
            bytes_in = result[3]
        else:
            lane = lanes.get(label)
            died = lane.end + origin if lane is not None and lane.end is not None else now
            start, end, status, bytes_in = sent, died, "lost", 0
        if index is not None and status != "lost":
            worker_of_node[index] = label
            node.worker = label
        bar = Bar(task_id, label, node.name, node.file, node.line, start - origin,
                  end - origin, status, bytes_out, bytes_in, index if index is not None else -1)
        bar.inputs_from = routes  # type: ignore[assignment] - made readable below
        bars.append(bar)
    how = {"master": "via the master", "here": "kept on this worker", "peer": "fetched directly"}
    for bar in bars:
        routes = bar.inputs_from
        producers = nodes[bar.node].inputs if bar.node >= 0 else []
        # Inputs made on the master (deferred operators) have no producing call here.
        bar.inputs_from = [f"{worker_of_node.get(p, 'the master')} ({how.get(r, r)})"
                           for p, r in zip(producers, routes)] if len(producers) == len(routes) else \
                          [how.get(r, r) for r in routes]
    bars.sort(key=lambda b: (b.worker, b.start))
    return Timeline(list(lanes.values()), bars, waits, nodes, runs, now - origin)
