"""Start-up: a fresh process's first call, its second call, and the first burst.

    python3 benchmarks/startup.py [--repeats 5] [--json FILE]
    python3 benchmarks/startup.py --quick      # one fresh process per row

Every figure is the median over --repeats fresh processes, each timing from
the call (``@schedule`` applied beforehand, as at a module's import) to its
result:

- first call, 2 local workers, the functional functions in ``__main__``;
- the same with them in ``startup_module.py``, which imports numpy and pydron
  as a user's pipeline module does, beside that module's plain import time in
  a fresh process (the target is 150 ms plus that);
- the steps of a first call: the master before the pool (rewrite, config),
  a worker's process start with execnet's bootstrap, its init to "ready"
  (cloudpickle, data plane), and the rest: the first task, with the import of
  the user's module;
- the second call in the same process;
- the first burst: 8 calls of 0.3 s on 4 workers, right after a first call
  started the pool (the ideal is 0.6 s);
- peers: ProcessPoolExecutor (fork, forkserver, spawn) and two bare execnet
  popen gateways, from creation to the first result.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FIRST_TARGET_S = 0.150
SECOND_TARGET_S = 0.005
BURST_TARGET_S = 0.8

_PYDRON_CHILD = r"""
import json, os, sys, time
sys.path[:0] = [{root!r}, {here!r}]
import pydron
if {in_main!r}:
    @pydron.functional
    def inc(x):
        return x + 1

    @pydron.functional
    def nap(x):
        time.sleep(0.3)
        return x

    def first(x):
        return inc(x)

    def burst(n):
        return [nap(i) for i in range(n)]
else:
    from startup_module import burst, first
first, burst = pydron.schedule(first), pydron.schedule(burst)
from pydron.remote import pool as pool_module
t0 = time.perf_counter()
assert first(41) == 42
t1 = time.perf_counter()
pool = pool_module.get_pool()
steps = [w.start_steps for w in pool.workers]
assert first(41) == 42
t2 = time.perf_counter()
out = dict(first=t1 - t0, second=t2 - t1, pool=pool.start_seconds,
           process=max(s[0] for s in steps), ready=max(s[1] for s in steps))
if {burst!r}:
    t3 = time.perf_counter()
    assert burst(8) == list(range(8))
    out["burst"] = time.perf_counter() - t3
pydron.shutdown()
print(json.dumps(out))
"""

_IMPORT_CHILD = r"""
import sys, time
sys.path[:0] = [{root!r}, {here!r}]
t0 = time.perf_counter()
import startup_module
print(time.perf_counter() - t0)
"""

_PEER_CHILD = r"""
import sys, time
t0 = time.perf_counter()
if {kind!r} == "execnet":
    import execnet
    group = execnet.Group()
    gateways = [group.makegateway("popen//python=" + sys.executable) for _ in range(2)]
    channel = gateways[0].remote_exec("channel.send(channel.receive() + 1)")
    channel.send(41)
    assert channel.receive() == 42
    print(time.perf_counter() - t0)
    group.terminate()
else:
    import multiprocessing, operator
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context({kind!r})) as ex:
        assert ex.submit(operator.add, 41, 1).result() == 42
        print(time.perf_counter() - t0)
"""


def _child(code: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **(env or {})}, cwd=HERE)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


def pydron_runs(repeats: int, in_main: bool, workers: int, burst: bool) -> dict:
    code = _PYDRON_CHILD.format(root=ROOT, here=HERE, in_main=in_main, burst=burst)
    runs = [json.loads(_child(code, {"PYDRON_TX": f"{workers}*popen", "PYDRON_PROGRESS": "0"}))
            for _ in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    try:
        import numpy  # noqa: F401
        heavy = "numpy"
    except ImportError:
        heavy = "no heavy library (numpy is not installed)"

    in_main = pydron_runs(repeats, True, 2, False)
    in_module = pydron_runs(repeats, False, 2, False)
    imports = statistics.median(float(_child(_IMPORT_CHILD.format(root=ROOT, here=HERE)))
                                for _ in range(repeats))
    burst = pydron_runs(repeats, False, 4, True)
    peers = {kind: statistics.median(float(_child(_PEER_CHILD.format(kind=kind)))
                                     for _ in range(repeats))
             for kind in ("fork", "forkserver", "spawn", "execnet")}

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.1f} ms"

    def met(ok: bool) -> str:
        return "met" if ok else "**MISSED**"

    module_target = FIRST_TARGET_S + imports
    rows = [
        ("first call, functions in `__main__`, 2 workers", ms(in_main["first"]),
         f"<= {ms(FIRST_TARGET_S)}: {met(in_main['first'] <= FIRST_TARGET_S)}"),
        ("... of which: pool start (every worker ready)", ms(in_main["pool"]), ""),
        ("... a worker's process start + execnet bootstrap (slowest)", ms(in_main["process"]), ""),
        ("... a worker's init to ready: cloudpickle, data plane (slowest)", ms(in_main["ready"]), ""),
        ("... the master's own part and the first task", ms(in_main["first"] - in_main["pool"]), ""),
        (f"first call, functions in a module importing {heavy} and pydron", ms(in_module["first"]),
         f"<= 150 ms + its import ({ms(module_target)}): {met(in_module['first'] <= module_target)}"),
        ("... that module's plain import in a fresh process", ms(imports), ""),
        ("... the first task, with the worker's import of the module",
         ms(in_module["first"] - in_module["pool"]), ""),
        ("second call, functions in `__main__`", ms(in_main["second"]),
         f"<= {ms(SECOND_TARGET_S)}: {met(in_main['second'] <= SECOND_TARGET_S)}"),
        ("second call, functions in the module", ms(in_module["second"]),
         f"<= {ms(SECOND_TARGET_S)}: {met(in_module['second'] <= SECOND_TARGET_S)}"),
        ("first burst: 8 x 0.3 s on 4 workers right after the pool started",
         f"{burst['burst']:.2f} s", f"<= {BURST_TARGET_S} s: {met(burst['burst'] <= BURST_TARGET_S)}"),
    ] + [(f"peer: {name}, creation to first result", ms(peers[kind]), "")
         for kind, name in (("fork", "ProcessPoolExecutor(fork)"),
                            ("forkserver", "ProcessPoolExecutor(forkserver)"),
                            ("spawn", "ProcessPoolExecutor(spawn)"),
                            ("execnet", "2 bare execnet popen gateways"))]
    print(f"\nPython {sys.version.split()[0]}, medians of {repeats} fresh processes\n")
    print("| start-up figure | time | target |")
    print("|---|---:|---|")
    for label, value, target in rows:
        print(f"| {label} | {value} | {target} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"main": in_main, "module": in_module, "module_import": imports,
                       "burst": burst, "peers": peers}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
