"""Glue speed, scaling in n, and master memory of ``@pydron.schedule``: three markdown tables.

    python3 benchmarks/glue_scaling.py [--limit 120] [--json FILE]   # full
    python3 benchmarks/glue_scaling.py --quick                         # seconds

glue: plain functions (no functional calls, stdlib textwrap and pure-Python
json among them) run plainly and under @schedule.  scaling: map, map+reduce,
sum(genexpr) and the seed's ``out = out + [inc(x)]`` loop for n = 1k, 10k,
100k.  memory: 60 functional loads of 10 MB, master's peak RSS increase.
The work is in ``glue_workloads.py``.  Every row runs in its own subprocess,
killed (with its pydron workers) after ``--limit`` seconds; larger sizes of
a row that hit the limit are skipped.  Results are checked against the plain
run; the exit status is 1 on a wrong result or an error.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

GLUE_TARGET = 1.3          # scheduled / plain
SCALING_TARGET = 12.0      # (pydron - plain)(n) / (pydron - plain)(n / 10), for the largest n
MEMORY_TARGET_MB = 100.0   # scheduled peak over the plain one
SCALING_BUDGET = 8.0       # seconds of timed runs per scaling figure: a 2 s run is timed
                           # about four times, not once, so one busy moment does not decide

GLUE_ROWS = {  # key: (label, full args, quick args)
    "helper": ("helper-call loop: `t = helper(t, i)`, {0:,} iterations", (100_000,), (10_000,)),
    "append": ("`out.append(str(i))`, {0:,} times", (100_000,), (10_000,)),
    "bisect": ("bisect over a local list of {0:,} floats, {1:,} queries", (10_000, 2_000), (1_000, 200)),
    "textwrap": ("stdlib `TextWrapper.wrap` (its own methods scheduled), {0:,} KB of words",
                 (200,), (20,)),
    "json": ("pure-Python json encoder (`c_make_encoder=None`), {0:,} small dicts",
             (20_000,), (2_000,)),
}
SCALING_KINDS = {
    "map": "map: `[inc(i) for i in range(n)]`",
    "mapreduce": "map + reduce: `total([inc(i) ...])`",
    "sumgen": "`sum(inc(i) for i in range(n))`",
    "seed": "seed loop: `out = out + [inc(x)]`",
}


def digest(value) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


# ================================================================= child side: one row


def child(spec: dict) -> dict:
    sys.path.insert(0, HERE)
    import glue_workloads as gw  # noqa: E402  (imports pydron)

    import pydron

    try:
        if spec["family"] == "glue":
            return child_glue(gw, pydron, spec)
        if spec["family"] == "scaling":
            return child_scaling(gw, pydron, spec)
        return child_memory(gw, pydron, spec)
    finally:
        pydron.shutdown()


def _median_runs(fn, args, repeats, budget=1.0):
    """Timed runs until ``repeats`` of them or ``budget`` seconds; ``(runs, last result)``."""
    runs, result, spent = [], None, 0.0
    while len(runs) < repeats and (not runs or spent < budget):
        t0 = time.perf_counter()
        result = fn(*args)
        runs.append(time.perf_counter() - t0)
        spent += runs[-1]
    return runs, result


def child_glue(gw, pydron, spec):
    key, args, repeats = spec["key"], spec["args"], spec["repeats"]
    if key == "textwrap":
        text = gw.words_text(args[0] * 1000)
        plain_wrapper = gw.textwrap.TextWrapper(width=70)
        sched_wrapper = gw.scheduled_text_wrapper()(width=70)
        plain, sched, call_args = plain_wrapper.wrap, sched_wrapper.wrap, (text,)
    elif key == "json":
        doc = gw.json_document(args[0])
        plain_cls, sched_cls = gw.encoders()
        plain, sched, call_args = plain_cls().encode, sched_cls().encode, (doc,)
    else:
        fn = {"helper": gw.helper_loop, "append": gw.append_str, "bisect": gw.bisect_local}[key]
        plain, sched, call_args = fn, pydron.schedule(fn), tuple(args)
    expected = plain(*call_args)  # also the warm-up
    errors = []
    got = sched(*call_args)
    if got != expected:
        errors.append(f"scheduled result differs from plain ({digest(got)} != {digest(expected)})")
    if key == "json" and expected != gw.json.dumps(call_args[0]):
        errors.append("the pure-Python encoder's output differs from json.dumps")
    plain_runs, sched_runs = [], []
    for _ in range(repeats):  # alternate, so a busier moment hits both alike
        plain_runs += _median_runs(plain, call_args, 1)[0]
        runs, got = _median_runs(sched, call_args, 1)
        sched_runs += runs
        if got != expected and not errors:
            errors.append("scheduled result differs from plain in a timed run")
    return {"plain": statistics.median(plain_runs), "scheduled": statistics.median(sched_runs),
            "plain_runs": plain_runs, "scheduled_runs": sched_runs, "errors": errors,
            "digest": digest(expected)}


def child_scaling(gw, pydron, spec):
    kind, n, mode = spec["kind"], spec["n"], spec["mode"]
    fn = {"map": gw.map_inc, "mapreduce": gw.map_reduce, "sumgen": gw.sum_gen,
          "seed": gw.seed_loop}[kind]
    # Both modes start and warm the pool: the plain run then meets the process
    # state the scheduled one does (threads, and the allocator's thresholds:
    # the seed loop's plain run at 100k took 12-13 s in a bare process, 4 s here).
    scheduled = pydron.schedule(fn)
    scheduled(min(n, 20))  # untimed warm-up: pool up, inc/total on the workers
    if mode == "pydron":
        fn = scheduled
    runs, result = _median_runs(fn, (n,), spec["repeats"], SCALING_BUDGET)
    errors = []
    if result != gw.expected_scaling(kind, n):
        errors.append(f"wrong result: {digest(result)} (expected {digest(gw.expected_scaling(kind, n))})")
    return {"seconds": statistics.median(runs), "runs": runs, "errors": errors, "digest": digest(result)}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child_memory(gw, pydron, spec):
    count, nbytes, mode = spec["count"], spec["nbytes"], spec["mode"]
    fn = gw.memory_loop
    if mode == "pydron":
        fn = pydron.schedule(fn)
        fn(2, 1000)  # warm-up with small values: pool up, functions on the workers
    else:
        fn(2, 1000)
    before = _maxrss_mb()
    t0 = time.perf_counter()
    result = fn(count, nbytes)
    seconds = time.perf_counter() - t0
    after = _maxrss_mb()
    errors = [] if result == count * nbytes else [f"wrong result {result}, expected {count * nbytes}"]
    return {"peak_increase_mb": after - before, "maxrss_before_mb": before,
            "maxrss_after_mb": after, "seconds": seconds, "errors": errors}


# ================================================================= parent side


def run_row(spec: dict, limit: float, env: dict, log) -> dict:
    """One row in a fresh process (its own session, so its pydron workers die with it)."""
    log(f"row {spec}")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the row's process group: it and its workers
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return {"status": "limit", "wall": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (err or out or f"exit status {proc.returncode}").strip().splitlines()[-1]
        return {"status": "error", "wall": wall, "returncode": proc.returncode,
                "detail": tail.replace("|", "/")[-300:]}
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(status="ok", wall=wall)
    if result.get("errors"):
        result["status"] = "wrong"
    return result


def fmt_time(seconds) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.{0 if seconds >= 0.1 else 1}f} ms"
    return f"{seconds * 1e6:.0f} µs"


def verdict(met: bool) -> str:
    return "met" if met else "**MISSED**"


def status_cell(row: dict, limit: float) -> str | None:
    """The cell of a row that has no figure, or None."""
    status = row["status"]
    if status == "limit":
        return f"> {limit:g} s (limit)"
    if status == "skipped":
        return f"> {limit:g} s (not run: {row['why']})"
    if status == "error":
        return f"**ERROR** ({row.get('detail', '')})"
    if status == "wrong":
        return "**WRONG**"
    return None


def glue_family(args, env, log) -> tuple[list[str], dict]:
    results = {}
    lines = ["| glue row (no functional calls) | plain | @schedule | ratio | target |",
             "|---|---:|---:|---:|---|"]
    for key, (label, full, quick) in GLUE_ROWS.items():
        row_args = quick if args.quick else full
        row = run_row({"family": "glue", "key": key, "args": list(row_args),
                       "repeats": args.repeats}, args.limit, env, log)
        results[key] = row
        text = label.format(*row_args)
        bad = status_cell(row, args.limit)
        if bad:
            lines.append(f"| {text} | {bad} | {bad} | — | <= {GLUE_TARGET}x: — |")
            continue
        ratio = row["scheduled"] / row["plain"]
        row["ratio"] = ratio
        lines.append(f"| {text} | {fmt_time(row['plain'])} | {fmt_time(row['scheduled'])} "
                     f"| {ratio:.2f}x | <= {GLUE_TARGET}x plain: {verdict(ratio <= GLUE_TARGET)} |")
    return lines, results


def scaling_family(args, env, log) -> tuple[list[str], dict]:
    sizes = [100, 1_000] if args.quick else [1_000, 10_000, 100_000]
    results: dict = {}
    lines = ["| scaling row | n | plain | pydron | pydron / plain | per task | time / time(n/10) "
             "| pydron's own cost: (pydron - plain) / the same at n/10 | target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for kind, label in SCALING_KINDS.items():
        results[kind] = {}
        over = {"plain": None, "pydron": None}  # the size at which a mode hit the limit
        for n in sizes:
            entry = results[kind][str(n)] = {}
            for mode in ("plain", "pydron"):
                if over[mode] is not None:
                    entry[mode] = {"status": "skipped", "why": f"n={over[mode]:,} hit it"}
                    continue
                row = run_row({"family": "scaling", "kind": kind, "n": n, "mode": mode,
                               "repeats": args.repeats}, args.limit, env, log)
                if row["status"] == "limit":
                    over[mode] = n
                entry[mode] = row
            plain, pd = entry["plain"], entry["pydron"]
            if plain["status"] == "ok" and pd["status"] == "ok" and plain["digest"] != pd["digest"]:
                pd["status"] = "wrong"
                pd.setdefault("errors", []).append("result differs from the plain run")
            cells = [label, f"{n:,}"]
            cells.append(status_cell(plain, args.limit) or fmt_time(plain["seconds"]))
            cells.append(status_cell(pd, args.limit) or fmt_time(pd["seconds"]))
            ok = plain["status"] == "ok" and pd["status"] == "ok"
            ratio = pd["seconds"] / plain["seconds"] if ok else None
            cells.append("—" if ratio is None else f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x")
            cells.append(fmt_time(pd["seconds"] / n) if pd["status"] == "ok" else "—")
            before = results[kind].get(str(n // 10), {})
            previous, previous_plain = before.get("pydron"), before.get("plain")
            last = n == sizes[-1]
            if pd["status"] == "ok" and previous and previous["status"] == "ok":
                growth = pd["seconds"] / previous["seconds"]
                entry["growth"] = growth
                cells.append(f"{growth:.1f}x")
                # The target is on pydron's own cost: a program whose plain run is
                # quadratic (the seed loop copies its list at every step) stays so.
                own = own_before = None
                if ok and previous_plain and previous_plain["status"] == "ok":
                    own = pd["seconds"] - plain["seconds"]
                    own_before = previous["seconds"] - previous_plain["seconds"]
                if own is not None and own <= 0:  # hidden behind the plain run's own work
                    entry["own_growth"] = 0.0
                    cells.append("none: no slower than plain")
                    cells.append(f"<= {SCALING_TARGET:g}x: {verdict(True)}" if last else "—")
                elif own is not None and own_before and own_before > 0:
                    own_growth = entry["own_growth"] = own / own_before
                    cells.append(f"{own_growth:.1f}x")
                    cells.append(f"<= {SCALING_TARGET:g}x: {verdict(own_growth <= SCALING_TARGET)}"
                                 if last else "—")
                else:
                    cells += ["—", "—"]
            elif last and pd["status"] in ("limit", "skipped"):
                cells += ["—", "—"]
                cells.append(f"<= {SCALING_TARGET:g}x: **MISSED** (over the limit)")
            else:
                cells += ["—", "—", "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines, results


def memory_family(args, env, log) -> tuple[list[str], dict]:
    count = 6 if args.quick else 60
    nbytes = 10_000_000
    results = {mode: run_row({"family": "memory", "mode": mode, "count": count, "nbytes": nbytes},
                             args.limit, env, log) for mode in ("plain", "pydron")}
    plain, pd = results["plain"], results["pydron"]
    label = f"`data = load(i); total += size(data)`, {count} x {nbytes // 1_000_000} MB"
    lines = ["| memory row | run | master's peak RSS increase | time | target |",
             "|---|---|---:|---:|---|"]
    for mode, row in results.items():
        bad = status_cell(row, args.limit)
        figure = bad or f"{row['peak_increase_mb']:,.0f} MB"
        seconds = "—" if bad else fmt_time(row["seconds"])
        target = "—"
        if mode == "pydron":
            if not bad and plain["status"] == "ok":
                limit_mb = plain["peak_increase_mb"] + MEMORY_TARGET_MB
                target = (f"< plain + {MEMORY_TARGET_MB:g} MB ({limit_mb:,.0f} MB): "
                          f"{verdict(row['peak_increase_mb'] < limit_mb)}")
            else:
                target = f"< plain + {MEMORY_TARGET_MB:g} MB: —"
        lines.append(f"| {label} | {'plain' if mode == 'plain' else '@schedule'} | {figure} "
                     f"| {seconds} | {target} |")
    return lines, results


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ["execnet", "cloudpickle", "bytecode"]:
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def commit() -> str:
    """HEAD, and a fingerprint of pydron/'s uncommitted changes if there are any."""
    def git(*argv):
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, timeout=30).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").decode().strip()
        changes = git("diff", "HEAD", "--", "pydron") + git("status", "--porcelain", "--", "pydron")
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not changes:
        return head or "?"
    return f"{head} + uncommitted changes to pydron/ (diff {hashlib.sha256(changes).hexdigest()[:8]})"


def failures_of(results: dict) -> list[str]:
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("status") in ("wrong", "error"):
                why = node.get("errors") or [node.get("detail", "")]
                found.append(f"{' / '.join(path)}: {node['status']}: {'; '.join(map(str, why))}")
                return
            for key, value in node.items():
                walk(value, path + [str(key)])

    walk(results, [])
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a seconds-long smoke run")
    parser.add_argument("--limit", type=float, default=120.0,
                        help="seconds per row (its subprocess is killed after that); default 120")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="pydron worker processes (default: one per core)")
    parser.add_argument("--repeats", type=int, help="timed runs per figure, the median counts "
                        "(default 5; 3 with --quick; scaling rows stop repeating after 1 s)")
    parser.add_argument("--families", default="glue,scaling,memory",
                        help="comma-separated subset of glue, scaling, memory")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    families = args.families.split(",")

    def log(message):
        if args.verbose:
            print(message, file=sys.stderr, flush=True)

    env = dict(os.environ)
    # PYDRON_TX wins over pydron.conf: local workers, the same count on every run.
    env["PYDRON_TX"] = f"{args.workers}*popen//python={sys.executable}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    started = time.perf_counter()
    commit_before = commit()
    load_before = os.getloadavg()[0]
    tables, results = [], {}
    makers = {"glue": glue_family, "scaling": scaling_family, "memory": memory_family}
    for family in families:
        lines, results[family] = makers[family](args, env, log)
        tables.append("\n".join(lines))
    load_after = os.getloadavg()[0]
    code = commit()
    if code != commit_before:
        code = f"{commit_before}, then {code} (pydron/ changed during the run)"

    title = "quick run (smoke test; figures mean little)" if args.quick else "full run"
    print(f"{title}: {datetime.date.today().isoformat()}, commit {code}, {os.cpu_count()} cores, "
          f"{args.workers} pydron workers, limit {args.limit:g} s per row, median of up to "
          f"{args.repeats}; {versions()}; load average {load_before:.2f} before, "
          f"{load_after:.2f} after\n")
    print("\n\n".join(tables))
    print("\nglue: time of one call, plain and under `@pydron.schedule` (ratio: scheduled / plain). "
          f"scaling: one call (the median of runs until {SCALING_BUDGET:g} s are spent or the repeats are "
          "done), pool started and warmed up beforehand; per task = pydron time / n; "
          "time / time(n/10) is the growth of pydron's time (10x = linear); pydron's own cost is its "
          "time minus the plain run's, whose growth the target applies to, at the largest n (the "
          "same figure for rows whose plain run is linear and tiny; the seed loop's plain run is "
          "quadratic by itself). memory: `ru_maxrss` of the master (the process that calls the function), "
          "after the call minus before it, each run in a fresh process.")
    failures = failures_of(results)
    if failures:
        print("\nWRONG RESULTS OR ERRORS:")
        for line in failures:
            print(f"- {line}")
    else:
        print(f"\nEvery result that came out was correct. ({time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"quick": args.quick, "limit": args.limit, "workers": args.workers,
                       "repeats": args.repeats, "versions": versions(), "commit": code,
                       "results": results, "failures": failures}, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
