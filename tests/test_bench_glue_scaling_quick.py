"""``benchmarks/glue_scaling.py --quick``: it exits 0 and every row ran and got the right result.

Only correctness is asserted, never a timing (a quick run's figures mean nothing).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "glue_scaling.py")


def test_glue_scaling_quick(tmp_path):
    out = tmp_path / "quick.json"
    env = dict(os.environ)
    env.pop("PYDRON_TX", None)  # the script sets its own
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--limit", "60", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    report = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert out.exists(), report
    data = json.loads(out.read_text())
    assert data["failures"] == [], report
    results = data["results"]

    glue = results["glue"]
    assert set(glue) == {"helper", "append", "bisect", "textwrap", "json"}, report
    for key, row in glue.items():
        assert row["status"] == "ok" and not row["errors"], f"glue {key}: {row}\n{report}"

    scaling = results["scaling"]
    assert set(scaling) == {"map", "mapreduce", "sumgen", "seed"}, report
    for kind, by_n in scaling.items():
        assert set(by_n) == {"100", "1000"}, report
        for n, modes in by_n.items():
            for mode in ("plain", "pydron"):
                row = modes[mode]
                assert row["status"] == "ok" and not row["errors"], f"{kind} n={n} {mode}: {row}\n{report}"
            assert modes["plain"]["digest"] == modes["pydron"]["digest"], report

    for mode in ("plain", "pydron"):
        row = results["memory"][mode]
        assert row["status"] == "ok" and not row["errors"], f"memory {mode}: {row}\n{report}"

    tables = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert sum(1 for line in tables if line.startswith(("| glue row", "| scaling row", "| memory row"))) == 3
