"""``benchmarks/run.py --quick``: every tool produces the correct result of every workload.

Only correctness is asserted, never a timing: the figures of a quick run on a
shared CI machine mean nothing.  The run takes a few seconds (under 60 s).
joblib and Dask come from the ``bench`` extra (tox installs it); where one is
not installed, run.py skips it and so does its test here, saying which package
is missing, except under CI (``CI=true``), where the test fails instead.
"""
import json
import os
import subprocess
import sys

import pytest
from realparts import unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "benchmarks", "run.py")

POOL_MEASURES = ["cpu", "trivial", "chains", "pipeline", "cold", "warm"]
EXPECTED = {
    "sequential": ["cpu", "trivial", "chains", "pipeline", "glue"],
    "pydron": POOL_MEASURES + ["glue", "progress_off", "progress_on", "trivial_seed"],
    "ProcessPoolExecutor": POOL_MEASURES,
    "multiprocessing.Pool": POOL_MEASURES,
    "joblib": POOL_MEASURES,
    "Dask": POOL_MEASURES,
    "pydron on Dask": POOL_MEASURES,
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ)
    env.pop("PYDRON_TX", None)  # run.py sets its own
    proc = subprocess.run(
        [sys.executable, RUN, "--quick", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    data = json.loads(out.read_text()) if out.exists() else None
    return proc, data


def _output(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}"


def test_quick_run_prints_one_table(quick_run):
    proc, data = quick_run
    assert data is not None, "run.py --quick wrote no JSON: " + _output(proc)
    assert proc.returncode == 0, _output(proc)
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table and all(name in table[0] for name in EXPECTED), _output(proc)


@pytest.mark.parametrize("tool", list(EXPECTED))
def test_tool_results_are_correct(quick_run, tool):
    proc, data = quick_run
    assert data is not None, "run.py --quick wrote no JSON: " + _output(proc)
    if tool in data["skipped"]:
        unavailable(f"{tool}: {data['skipped'][tool]}")
    results = data["results"][tool]
    assert not results.get("fatal"), f"{tool}: {results['fatal']}\n" + _output(proc)
    for measure in EXPECTED[tool]:
        assert measure in results, f"{tool} did not run {measure}\n" + _output(proc)
        assert results[measure]["runs"], f"{tool} has no run of {measure}\n" + _output(proc)
        assert not results[measure]["errors"], f"{tool}: {results[measure]['errors']}"


def test_progress_row_is_in_the_table(quick_run):
    proc, data = quick_run
    assert data is not None, "run.py --quick wrote no JSON: " + _output(proc)
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 2b.")]
    assert len(row) == 1, _output(proc)
    assert "/s on, " in row[0] and "/s off (" in row[0] and ">= 0.95x off" in row[0], row[0]
    assert "redraws" in data["results"]["pydron"]["progress_on"]


def test_master_cpu_row_is_in_the_table(quick_run):
    proc, data = quick_run
    assert data is not None, "run.py --quick wrote no JSON: " + _output(proc)
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 1. ... CPU time of the master")]
    assert len(row) == 1, _output(proc)
    assert row[0].count(" ms |") >= 2, row[0]  # sequential and pydron at least
    assert data["results"]["pydron"]["cpu"]["master_cpu"] >= 0


def test_time_outside_the_tasks_rows_are_in_the_table(quick_run):
    """Each CPU task and chain link times itself where it runs: the rows show what the tool adds."""
    proc, data = quick_run
    assert data is not None, "run.py --quick wrote no JSON: " + _output(proc)
    for prefix, measure in [("| 1. ... time outside the tasks", "cpu"), ("| 3. ... time outside the tasks", "chains")]:
        row = [line for line in proc.stdout.splitlines() if line.startswith(prefix)]
        assert len(row) == 1, _output(proc)
        assert row[0].count(" ms |") >= 2, row[0]
        figures = data["results"]["pydron"][measure]
        assert len(figures["outside_runs"]) == len(figures["runs"])
        # the tasks' own time is part of the run's: what is outside is less than the whole
        assert all(outside < run for outside, run in zip(figures["outside_runs"], figures["runs"]))


def _verdict(pydron_runs, peer_runs):
    sys.path.insert(0, os.path.dirname(RUN))
    import run  # benchmarks/run.py

    results = {"sequential": {"cpu": {"runs": [4.0] * len(peer_runs), "errors": []}},
               "pydron": {"cpu": {"runs": pydron_runs, "errors": []}},
               "joblib": {"cpu": {"runs": peer_runs, "errors": []}}}
    for res in results.values():
        res["cpu"]["seconds"] = sorted(res["cpu"]["runs"])[len(res["cpu"]["runs"]) // 2]
    figs = {measure: {} for measure in run.MEASURES}
    figs["cpu"] = {name: 4.0 / res["cpu"]["seconds"] for name, res in results.items()}
    return run.level_with_best(results, figs, "cpu")


def test_cpu_verdict_counts_a_gap_within_the_peers_spread_as_level():
    """The CPU-bound row's ">= best peer": met when ahead; when behind, met only
    if the gap is inside the peer's own spread and pydron won some round."""
    assert _verdict([2.0, 2.0, 2.0], [2.1, 2.1, 2.1])[1] is True  # ahead
    text, met = _verdict([2.02, 1.96, 2.04], [2.0, 1.9, 2.1])  # 1% behind, spread 10%, ahead once
    assert met is True and "ahead in 1 of 3 rounds" in text
    assert _verdict([2.05, 2.05, 2.05], [2.0, 2.0, 2.01])[1] is False  # behind every round, no spread
    assert _verdict([2.3, 2.3, 2.3], [2.0, 1.9, 2.1])[1] is False  # 13% behind: outside the 10% spread
