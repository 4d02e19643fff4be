"""pydron against the tools a user would pick instead: one run, one markdown table.

    python3 -m pip install -e '.[bench]' && python3 benchmarks/run.py   # a few minutes on 2 cores
    python3 benchmarks/run.py --quick                                   # smoke test, ~20 s

Tools: sequential Python, pydron, concurrent.futures.ProcessPoolExecutor,
multiprocessing.Pool, joblib (loky) and Dask (dask.delayed on a distributed
LocalCluster), each with the same number of worker processes (``--workers``,
default: one per core).  A tool whose package is not installed is skipped and
the table says so.  Workloads and sizes: ``workloads.py``; how each tool runs
them: ``peers.py``.  Every figure is the median of ``--repeats`` timed runs
after an untimed warm-up, all in this one process.

Every result is checked against the sequential one; ``--json FILE`` writes
figures and checks, and the exit status is 1 if any tool got a wrong result.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402
import workloads as w  # noqa: E402

# The order tools run in: the fork-based pools before any other tool has
# started threads in this process.
RUN_ORDER = ["sequential", "ProcessPoolExecutor", "multiprocessing.Pool", "pydron", "joblib", "Dask",
             "pydron on Dask"]
MEASURES = ["cpu", "trivial", "trivial_seed", "progress_off", "progress_on", "chains", "pipeline", "glue",
            "cold", "warm"]
# measure -> reference workload
PYDRON_ONLY = {"progress_off": "trivial", "progress_on": "trivial", "trivial_seed": "trivial_seed"}
TRIVIAL_OVER_MP_POOL = 1.5  # row 2's target: pydron's list comprehension against apply_async
# Rows that show another figure of a workload's runs (no comparison, no target).
ROW_MEASURE = {"bytes": "pipeline", "master_cpu": "cpu", "outside": "cpu", "chains_outside": "chains"}
EXTRA_ROWS = frozenset(ROW_MEASURE)
LABELS = {"cpu": "1 (CPU-bound)", "trivial": "2 (trivial tasks/s)", "chains": "3 (chains)",
          "pipeline": "4 (pipeline)", "progress_on": "2b (progress line on)",
          "trivial_seed": "2c (the seed's loop)",
          "glue": "5 (glue)", "cold": "6 (cold start)",
          "warm": "6 (warm start)"}


@dataclasses.dataclass
class Params:
    """Everything a workload call needs, fixed for the whole run."""

    sizes: w.Sizes
    cpu_ns: list
    chain_n: int
    pipeline_size: int
    warmup_n: int

    def args(self, measure: str) -> tuple:
        s = self.sizes
        return {
            "cpu": (self.cpu_ns,),
            "trivial": (s.trivial_tasks,),
            "trivial_seed": (s.trivial_tasks,),
            "progress_off": (s.progress_tasks,),
            "progress_on": (s.progress_tasks,),
            "chains": (s.chains, s.chain_length, self.chain_n),
            "pipeline": (s.pipeline_items, self.pipeline_size),
            "glue": (s.glue_iterations,),
        }[measure]

    def warmup_args(self, measure: str, workers: int) -> tuple:
        return {
            "cpu": ([self.warmup_n] * 2 * workers,),
            "trivial": (8 * workers,),
            "chains": (workers, 2, self.warmup_n),
            "pipeline": (workers, 1 << 16),
        }[measure]


def check(measure: str, result, expected) -> str | None:
    if measure.startswith(("cpu", "chains")):  # (value, seconds) pairs: the values must agree
        result, expected = _values(result), _values(expected)
    if result == expected:
        return None
    return f"{measure}: wrong result {_short(result)}, expected {_short(expected)}"


def _values(pairs):
    try:
        return [value for value, _ in pairs]
    except (TypeError, ValueError):
        return pairs  # not pairs at all: compared as it is, and reported


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


class Entry:
    """One tool under test: its results so far, and whether its workers are up."""

    def __init__(self, tool: peers.Tool) -> None:
        self.tool = tool
        self.name = tool.name
        self.started = False
        self.out: dict = {}   # {measure: {"runs": [...], "errors": [...], ...}, "fatal": str}

    def slot(self, measure: str) -> dict:
        return self.out.setdefault(measure, {"runs": [], "errors": []})

    def fail(self, where: str, exc: BaseException, log) -> None:
        self.out.setdefault("fatal", f"{where}: {type(exc).__name__}: {exc}")
        log(traceback.format_exc())


def start_phase(entry: Entry, params: Params, log) -> None:
    """Cold starts, warm first results, and the untimed warm-up; leaves the tool started.

    The tool's last cold start is the pool the timed runs use.
    """
    tool, sizes = entry.tool, params.sizes
    log(f"{entry.name}: start-up")
    try:
        if entry.name == "sequential":
            tool.start()
            entry.started = True
        else:
            cold = entry.slot("cold")
            for i in range(sizes.cold_repeats):
                if entry.started:
                    tool.stop()
                    entry.started = False
                t0 = time.perf_counter()
                tool.start()  # pydron: nothing; its first @schedule call starts the pool
                entry.started = True
                value = tool.first(41)
                cold["runs"].append(time.perf_counter() - t0)
                cold["errors"] += filter(None, [check("cold start", value, 42)])
            warm = entry.slot("warm")
            for _ in range(sizes.warm_repeats):
                value, seconds = w.timed(tool.first, 41)
                warm["runs"].append(seconds)
                warm["errors"] += filter(None, [check("warm start", value, 42)])
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
        entry.fail("start-up", exc, log)
        return
    for measure in ["cpu", "trivial", "chains", "pipeline"]:
        # untimed warm-up: imports done, functions on the workers, windows grown
        wargs = params.warmup_args(measure, tool.workers)
        try:
            entry.slot(measure)["errors"] += filter(None, [check(
                f"{measure} (warm-up)", getattr(tool, measure)(*wargs), getattr(w, measure)(*wargs))])
        except Exception as exc:  # noqa: BLE001
            entry.slot(measure)["errors"].append(f"{measure} (warm-up): {type(exc).__name__}: {exc}")
            log(traceback.format_exc())


def timed_run(entry: Entry, measure: str, params: Params, expected: dict, log) -> None:
    """One timed run of one workload on one started tool."""
    tool = entry.tool
    fn = getattr(tool, measure)
    slot = entry.slot(measure)
    wire = getattr(tool, "wire", None) if measure == "pipeline" else None
    before = wire.total() if wire is not None else None
    counted = False
    cpu_before = time.process_time()  # this process, all its threads: the master's own work
    try:
        with wire.counting() if wire is not None else contextlib.nullcontext():
            counted = wire is not None and wire.installed
            value, seconds = w.timed(fn, *params.args(measure))
    except Exception as exc:  # noqa: BLE001
        slot["errors"].append(f"{measure}: {type(exc).__name__}: {exc}")
        log(traceback.format_exc())
        return
    slot["runs"].append(seconds)
    if measure == "cpu":
        slot.setdefault("master_cpu_runs", []).append(time.process_time() - cpu_before)
        slot["master_cpu"] = statistics.median(slot["master_cpu_runs"])
    if measure in ("cpu", "chains"):
        try:  # the run's time beyond its tasks' own, spread over the workers
            task_seconds = sum(s for _, s in value) / (1 if entry.name == "sequential" else tool.workers)
        except (TypeError, ValueError):
            pass  # a wrong result: reported by check() below
        else:
            slot.setdefault("outside_runs", []).append(seconds - task_seconds)
            slot["outside"] = statistics.median(slot["outside_runs"])
    if entry.name == "sequential":
        expected.setdefault(measure, value)
    if measure in PYDRON_ONLY and measure not in expected:
        expected[measure] = getattr(w, PYDRON_ONLY[measure])(*params.args(measure))
    if measure == "progress_on":
        slot["redraws"] = tool.drawn  # over all its runs: 0 would mean nothing was drawn
    slot["errors"] += filter(None, [check(measure, value, expected.get(measure))])
    if wire is not None:
        if counted:
            slot.setdefault("master_bytes_runs", []).append(wire.total() - before)
            slot["master_bytes"] = statistics.median(slot["master_bytes_runs"])
        else:
            slot["master_bytes_why_not"] = wire.why_not


def finish(entry: Entry) -> dict:
    for value in entry.out.values():
        if isinstance(value, dict):
            value["seconds"] = statistics.median(value["runs"]) if value["runs"] else None
    return entry.out


# ----------------------------------------------------------------- the table


def figures(results: dict, params: Params) -> dict:
    """{measure: {tool: (figure, seconds) or None}} for tools with correct results."""
    s = params.sizes
    seq = results.get("sequential", {})
    table: dict = {}
    for measure in MEASURES:
        table[measure] = {}
        for name, res in results.items():
            m = res.get(measure)
            if not m or m["seconds"] is None or m["errors"]:
                continue
            seconds = m["seconds"]
            base = (seq.get(measure) or {}).get("seconds")
            if measure in ("trivial", "trivial_seed"):
                figure = s.trivial_tasks / seconds
            elif measure in ("progress_off", "progress_on"):
                figure = s.progress_tasks / seconds
            elif measure in ("cpu", "chains"):
                figure = base / seconds if base else None
            else:
                figure = seconds
            table[measure][name] = figure
    return table


def best_peer(figs: dict, measure: str) -> tuple[str, float] | tuple[None, None]:
    higher_is_better = measure in ("cpu", "chains", "trivial")
    candidates = [(v, n) for n, v in figs[measure].items() if n in peers.PEERS and v is not None]
    if not candidates:
        return None, None
    value, name = (max if higher_is_better else min)(candidates)
    return name, value


def paired_rounds(results: dict, measure: str, peer: str) -> list[float]:
    """The peer's time over pydron's, round by round (the rounds go round all
    tools in turn, so both ran under the same load); above 1: pydron ahead."""
    mine = results.get("pydron", {}).get(measure) or {}
    theirs = results.get(peer, {}).get(measure) or {}
    if mine.get("errors") or theirs.get("errors"):
        return []
    return [t / m for m, t in zip(mine.get("runs", []), theirs.get("runs", []))]


def level_with_best(results: dict, figs: dict, measure: str) -> tuple[str, bool] | None:
    """``>= best peer``, where both may sit at the machine's limit: met when
    pydron's median is at least the peer's, or when its gap is smaller than
    the peer's own run-to-run spread and pydron was ahead in some round."""
    name, value = best_peer(figs, measure)
    mine = figs[measure].get("pydron")
    if name is None or mine is None:
        return None
    text = f">= best peer ({value:.2f}x)"
    if mine >= value:
        return text, True
    runs = results[name][measure]["runs"]
    spread = (max(runs) - min(runs)) / statistics.median(runs)
    gap = 1 - mine / value
    pairs = paired_rounds(results, measure, name)
    ahead = sum(ratio >= 1 for ratio in pairs)
    level = gap < spread and ahead > 0
    detail = (f"{gap:.1%} behind {short_name(name)}, whose runs spread {spread:.1%}; "
              f"pydron ahead in {ahead} of {len(pairs)} rounds")
    return f"{text}, or level within the spread ({detail})", level


def targets(figs: dict, results: dict) -> dict:
    """{measure: (text, met)}: issue 7's targets for pydron, against this run's figures."""
    p = figs
    out = {}

    def have(measure, name="pydron"):
        return p[measure].get(name) is not None

    cpu = level_with_best(results, p, "cpu")
    if have("cpu") and cpu:
        out["cpu"] = cpu
    mp = p["trivial"].get("multiprocessing.Pool")
    if have("trivial") and mp:
        goal = TRIVIAL_OVER_MP_POOL * mp
        out["trivial"] = (f">= {TRIVIAL_OVER_MP_POOL}x multiprocessing.Pool ({goal:,.0f}/s)",
                          p["trivial"]["pydron"] >= goal)
    if have("trivial_seed") and mp:
        out["trivial_seed"] = (f">= multiprocessing.Pool ({mp:,.0f}/s)", p["trivial_seed"]["pydron"] >= mp)
    if have("progress_on") and have("progress_off"):
        off = p["progress_off"]["pydron"]
        out["progress_on"] = (f">= 0.95x off ({0.95 * off:,.0f}/s)", p["progress_on"]["pydron"] >= 0.95 * off)
    if have("chains"):
        out["chains"] = (">= 1.9x", p["chains"]["pydron"] >= 1.9)
    if have("glue") and have("glue", "sequential"):
        ratio = p["glue"]["pydron"] / p["glue"]["sequential"]
        out["glue"] = ("<= 1.2x the plain function", ratio <= 1.2)
    if have("cold"):
        out["cold"] = ("<= 100 ms", p["cold"]["pydron"] <= 0.100)
    if have("warm"):
        out["warm"] = ("<= 5 ms", p["warm"]["pydron"] <= 0.005)
    return out


def render(results: dict, skipped: dict, params: Params) -> str:
    s = params.sizes
    figs = figures(results, params)
    goals = targets(figs, results)
    rows = {
        "cpu": f"1. CPU-bound: {s.cpu_tasks} tasks x {s.cpu_ms:g} ms — speed-up",
        "master_cpu": "1. ... CPU time of the master process (per run)",
        "outside": "1. ... time outside the tasks (per run: wall time - tasks' own time / workers)",
        "trivial": f"2. {s.trivial_tasks:,} trivial tasks, one by one — tasks/s",
        "trivial_seed": f"2c. the same, in the seed's loop `out = out + [f(x)]` — tasks/s",
        "progress_on": f"2b. {s.progress_tasks:,} trivial tasks, progress line on / off — tasks/s",
        "chains": f"3. {s.chains} chains x {s.chain_length} dependent {s.chain_ms:g} ms tasks — speed-up",
        "chains_outside": "3. ... time outside the tasks (per run, as in 1)",
        "pipeline": f"4. {s.pipeline_items} items x 3 stages, {s.pipeline_mb} MB values — wall time",
        "bytes": "4. ... bytes through the master (per run)",
        "glue": f"5. glue: {s.glue_iterations:,}-iteration arithmetic loop — time",
        "cold": "6. cold start to first result",
        "warm": "6. warm: call to first result",
    }
    header = (["workload — figure"] + peers.NAMES
              + ["pydron vs best peer", "pydron target"])
    lines = ["| " + " | ".join(header) + " |",
             "|---|" + "---:|" * len(peers.NAMES) + "---|---|"]
    for key, label in rows.items():
        measure = ROW_MEASURE.get(key, key)
        cells = [label]
        for name in peers.NAMES:
            cells.append(cell(key, name, results, skipped, figs, params))
        peer, value = best_peer(figs, measure)
        pd = figs[measure].get("pydron")
        if key in EXTRA_ROWS or key in ("glue", "progress_on", "trivial_seed") or peer is None or pd is None:
            cells.append("—")
        else:
            higher = measure in ("cpu", "chains", "trivial")
            ratio = pd / value if higher else value / pd
            cells.append(f"{ratio_text(ratio)} ({short_name(peer)})")
        goal = goals.get(measure) if key not in EXTRA_ROWS else None
        if goal is None:
            cells.append("—")
        else:
            text, met = goal
            cells.append(f"{text}: {'met' if met else '**MISSED**'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_text(ratio: float) -> str:
    """``0.78x``; a small ratio as ``1/474x`` (474 times slower)."""
    return f"{ratio:.2f}x" if ratio >= 0.095 else f"1/{1 / ratio:,.0f}x"


def short_name(name: str) -> str:
    return {"ProcessPoolExecutor": "PPE", "multiprocessing.Pool": "mp.Pool"}.get(name, name)


def cell(key: str, name: str, results: dict, skipped: dict, figs: dict, params: Params) -> str:
    if name in skipped:
        return "not installed"
    res = results.get(name, {})
    measure = ROW_MEASURE.get(key, key)
    m = res.get(measure)
    if m is None:
        if res.get("fatal"):
            return "error"
        if name == "sequential" and measure in ("cold", "warm"):
            return "— (no pool)"
        if measure in ("glue", "progress_on", "trivial_seed"):
            return "n/a"
        return "—"
    if m["errors"]:
        return "**WRONG/ERROR**"
    seconds = m["seconds"]
    seq = results.get("sequential", {}).get(measure, {}).get("seconds")
    if key == "master_cpu":  # the sequential run's is the work itself
        return f"{m['master_cpu'] * 1000:,.0f} ms" if "master_cpu" in m else "—"
    if key in ("outside", "chains_outside"):
        return f"{m['outside'] * 1000:,.0f} ms" if "outside" in m else "—"
    if key == "bytes":
        if name == "sequential":
            return "0"
        if "master_bytes" in m:
            return f"{m['master_bytes'] / 1e6:,.0f} MB"
        if "master_bytes_why_not" in m:
            return "n/a"
        return "not measured"
    if measure in ("cpu", "chains"):
        return f"{figs[measure][name]:.2f}x ({seconds:.2f} s)"
    if measure == "progress_on":
        on, off = figs[measure][name], figs["progress_off"].get(name)
        if off is None:
            return f"{on:,.0f}/s on"
        return f"{on:,.0f}/s on, {off:,.0f}/s off ({on / off:.2f}x)"
    if measure in ("trivial", "trivial_seed"):
        rate = figs[measure][name]
        ratio = f" ({ratio_text(seq / seconds)})" if seq and name != "sequential" else ""
        return f"{rate:,.0f}/s{ratio}"
    if measure == "pipeline":
        ratio = f" ({ratio_text(seq / seconds)})" if seq and name != "sequential" else ""
        return f"{seconds:.2f} s{ratio}"
    if measure == "glue":
        ratio = f" ({seconds / seq:.2f}x plain)" if seq and name != "sequential" else ""
        return f"{seconds * 1e3:.{0 if seconds >= 0.01 else 2}f} ms{ratio}"
    if measure in ("cold", "warm"):
        return f"{seconds * 1e3:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"
    return f"{seconds:.3f} s"


def _load(value) -> str:
    return "?" if value is None else f"{value:.2f}"


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ["pydron", "execnet", "cloudpickle", "joblib", "dask", "distributed"]:
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def misses(results: dict, params: Params) -> list[str]:
    goals = targets(figures(results, params), results)
    return [measure for measure, (_, met) in goals.items() if not met]


# ----------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests (CI)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes per tool (default: one per core)")
    parser.add_argument("--repeats", type=int, help="timed runs per figure; the median counts")
    parser.add_argument("--tools", help="comma-separated subset of: " + ", ".join(peers.NAMES))
    parser.add_argument("--json", metavar="FILE", help="also write every figure and check here")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = parser.parse_args(argv)

    sizes = w.QUICK if args.quick else w.FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    chosen = args.tools.split(",") if args.tools else peers.NAMES
    unknown = set(chosen) - set(peers.NAMES)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if "sequential" not in chosen:
        chosen = ["sequential"] + chosen  # every figure is relative to it

    def log(message):
        if args.verbose:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    cpu_n = w.calibrate(sizes.cpu_ms / 1000)
    params = Params(sizes=sizes, cpu_ns=[cpu_n] * sizes.cpu_tasks,
                    chain_n=max(1, int(cpu_n * sizes.chain_ms / sizes.cpu_ms)),
                    pipeline_size=sizes.pipeline_mb * 1_000_000,
                    warmup_n=max(1, cpu_n // 50))

    skipped: dict = {}
    expected: dict = {}
    entries: list[Entry] = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        # Phase 1, tool by tool: start-up figures, then leave its workers up.
        for name in RUN_ORDER:
            if name not in chosen:
                continue
            cls = peers.TOOLS[name]
            why = cls.missing()
            if why:
                skipped[name] = why
                log(f"{name}: skipped, {why}")
                continue
            try:
                entry = Entry(cls(args.workers))
            except Exception as exc:  # noqa: BLE001
                entry = Entry(peers.Tool(args.workers))
                entry.name = name
                entry.fail("set-up", exc, log)
                entries.append(entry)
                continue
            entries.append(entry)
            start_phase(entry, params, log)
        # Phase 2, workload by workload: each timed run goes round every tool,
        # so that a busier moment of the machine hits all of them alike.
        live = [e for e in entries if e.started and "fatal" not in e.out]
        # The two progress runs alternate, so that both meet the same moments of the machine.
        for group in [["cpu"], ["trivial", "trivial_seed"], ["progress_off", "progress_on"], ["chains"],
                      ["pipeline"], ["glue"]]:
            runs = sizes.repeats + (2 if group == ["glue"] else 0) + (2 if "progress_on" in group else 0)
            for r in range(runs):
                # Each round starts at the next tool: no tool always follows the same one
                # (the sequential run, say, which leaves the machine in its own state).
                for entry in live[r % len(live):] + live[:r % len(live)]:
                    for measure in group:
                        if getattr(entry.tool, measure) is None:
                            continue
                        log(f"{measure} {r + 1}/{runs}: {entry.name}")
                        timed_run(entry, measure, params, expected, log)
    finally:
        for entry in entries:
            if entry.started:
                try:
                    entry.tool.stop()
                except Exception as exc:  # noqa: BLE001
                    entry.fail("stop", exc, log)
    results = {entry.name: finish(entry) for entry in entries}
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    elapsed = time.perf_counter() - started

    title = "quick run (smoke test; figures mean little)" if args.quick else "full run"
    print(f"{title}: {datetime.date.today().isoformat()}, {os.cpu_count()} cores, "
          f"{args.workers} worker processes per tool, median of {sizes.repeats}; {versions()}; "
          f"load average {_load(load_before)} before, {_load(load_after)} after\n")
    print(render(results, skipped, params))
    print("\nRatios: `Nx` = N times as fast as sequential (`1/Nx`: N times slower); in 5, time "
          "over the plain function (lower is better). 'pydron vs best peer': pydron's figure "
          "against the best of the four peers, above 1x = pydron ahead. Bytes through the "
          "master: counted on pydron's execnet pipes (execnet's Popen2IO.read/write); the "
          "pools pass every intermediate value through the master by construction (one map "
          "per stage); Dask keeps them on its workers.\n")
    for name, idiom in peers.IDIOMS.items():
        if name in chosen:
            print(f"- {name}: {idiom}")
    for name, why in skipped.items():
        print(f"- {name}: skipped, {why}")

    failures = {name: [e for m in res.values() if isinstance(m, dict) for e in m["errors"]]
                + ([res["fatal"]] if res.get("fatal") else [])
                for name, res in results.items()}
    failures = {name: errs for name, errs in failures.items() if errs}
    missed = misses(results, params)
    if missed:
        print(f"\npydron misses its targets in: {', '.join(LABELS[m] for m in missed)}")
    if failures:
        print("\nWRONG RESULTS OR ERRORS:")
        for name, errs in failures.items():
            for e in errs:
                print(f"- {name}: {e}")
    else:
        print(f"\nEvery tool's results were correct. ({elapsed:.0f} s)")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"quick": args.quick, "workers": args.workers, "sizes": dataclasses.asdict(sizes),
                       "versions": versions(), "results": results, "skipped": skipped,
                       "failures": failures, "missed": missed}, fh, indent=1, default=str)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
