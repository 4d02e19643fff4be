"""Property-based differential fuzzer: generated schedule functions must run
the same plainly and under ``pydron.schedule`` (value, exception type and
message and chain, traceback lines, ordered ``log`` side effects, arguments
after the run).

The programs come from the grammar in tests/fuzzgen.py, drawn by hypothesis
so that a failure shrinks to a small program.  The run is seeded: the same
seed gives the same programs (for a given hypothesis version).

Environment:
  PYDRON_FUZZ_EXAMPLES   programs per run in total (default 600, split over
                         the shards; each program runs on two argument sets)
  PYDRON_FUZZ_SEED       seed (default 0); each shard uses SEED * 1000 + shard
  PYDRON_FUZZ_KNOWN_BUGS =1: also generate the triggers of the known bugs
                         (fuzzgen.KNOWN_BUGS, tests/test_fuzz_regressions.py)
  PYDRON_FUZZ_SAVE_DIR   write each program there first (to find the one
                         that crashed the interpreter)
  PYDRON_FUZZ_DEATHS     programs of the worker-death variant (default 12):
                         one call kills its worker the first time it runs

See the "Differential fuzzer" section of README.md for longer runs and replay.
"""
from __future__ import annotations

import math
import os
import time

import pytest
from hypothesis import HealthCheck, assume, given, note, seed, settings
from hypothesis import strategies as st

import fuzzgen

EXAMPLES = int(os.environ.get("PYDRON_FUZZ_EXAMPLES", "600"))
SEED = int(os.environ.get("PYDRON_FUZZ_SEED", "0"))
SHARDS = 4
PER_SHARD = math.ceil(EXAMPLES / SHARDS)
DEATHS = int(os.environ.get("PYDRON_FUZZ_DEATHS", "12"))
#: distinct programs each shard must have run (hypothesis may stop early if
#: too many draws repeat a program)
MIN_DISTINCT = math.ceil(0.95 * PER_SHARD)


class Program:
    """A generated program and its argument sets; the repr is the source, so
    hypothesis's 'Falsifying example' shows a readable program."""

    def __init__(self, source: str, args_list: list):
        self.source = source
        self.args_list = args_list

    def __repr__(self):
        return f"\n{self.source}# args: {self.args_list!r}\n"


@st.composite
def programs(draw):
    chooser = fuzzgen.HypothesisChooser(draw)
    source, args = fuzzgen.generate(chooser)
    return Program(source, [args] + fuzzgen.extra_args(chooser, 1))


def _replay_hint(shard: int, program: Program) -> str:
    args = program.args_list[0]
    return (
        f"\nreplay this shard:  PYDRON_FUZZ_SEED={SEED} python -m pytest "
        f"'tests/test_fuzz.py::test_fuzz_programs[shard{shard}]' -p no:xdist\n"
        f"check this program: save it as prog.py, then\n"
        f"  python tests/fuzzgen.py --file prog.py --args '{args!r}'"
    )


@pytest.mark.timeout(120 + PER_SHARD)
@pytest.mark.parametrize("shard", range(SHARDS), ids=[f"shard{i}" for i in range(SHARDS)])
def test_fuzz_programs(shard):
    seen: set = set()

    @seed(SEED * 1000 + shard)
    @settings(max_examples=PER_SHARD, deadline=None, derandomize=False, database=None,
              print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example, HealthCheck.filter_too_much])
    @given(programs())
    def run(program):
        # a program already checked with the same arguments (hypothesis draws
        # small ones more than once) does not count: max_examples distinct
        # programs run; keyed by arguments too, so that a program that fails
        # only with other arguments replays as a failure, not as flaky
        key = (program.source, repr(program.args_list))
        assume(key not in seen)
        note(f"program:\n{program.source}args: {program.args_list!r}")
        try:
            fuzzgen.check(program.source, program.args_list)
        except AssertionError as exc:
            message = f"{exc}{_replay_hint(shard, program)}"
            # Shown with the test's output even if hypothesis then reports only
            # a flaky replay (a failure that depends on timing).
            print(f"--- a program failed ---\n{message}", flush=True)
            raise AssertionError(message) from None
        seen.add(key)

    run()
    print(f"shard {shard}: {len(seen)} distinct programs")
    assert len(seen) >= MIN_DISTINCT, (
        f"only {len(seen)} distinct programs in {PER_SHARD} examples (want {MIN_DISTINCT})")


def test_generator_is_deterministic_and_compiles():
    """The same chooser seed gives the same program; every program compiles and
    runs plainly without leaking anything but the exceptions it means to raise."""
    import difftest

    for i in range(60):
        src1, args1 = fuzzgen.generate(fuzzgen.RandomChooser(f"det:{i}"))
        src2, args2 = fuzzgen.generate(fuzzgen.RandomChooser(f"det:{i}"))
        assert (src1, args1) == (src2, args2)
        out = difftest.outcome(fuzzgen.build(src1), *args1)
        assert out.exc_type is None or out.exc_type.__name__ in {
            "ValueError", "KeyError", "IndexError", "ZeroDivisionError", "OverflowError",
            "CustomError", "AssertionError", "RuntimeError",
        }, (out.exc_type, out.exc_msg, src1)


def test_generator_covers_the_grammar():
    """Across a few hundred programs every construct of the grammar occurs."""
    text = "\n".join(fuzzgen.generate(fuzzgen.RandomChooser(f"cov:{i}"))[0]
                     for i in range(400))
    for construct in [
        "if ", "elif ", "else:", "for ", "while ", "break", "continue", "return ",
        "try:", "except ", "finally:", " as e", "raise", "with Rec(", "contextlib.suppress(",
        "fz_guard(", "+= ", "S |= ", "L.append(", "] = ", "D[", "S.add(", "N[0].append(",
        "sum(", "fail_on(", "log(", ":=", "lambda", "assert ", "xs.append(", "enumerate(",
        "zip(", "fz_div(", "fz_err(", "first(L)", "del D[", "while True:", " = pair(", ", *rest = ",
    ]:
        assert construct in text, construct
    import re

    for kind, pattern in [("list comprehension", r"\[[^\[\]\n]* for c\d+ in "),
                          ("dict comprehension", r"\{[^{}\n]*: [^{}\n]* for c\d+ in "),
                          ("set comprehension", r"\{[^{}:\n]* for c\d+ in "),
                          ("generator expression", r"(sum|any|all)\([^\n]* for c\d+ in ")]:
        assert re.search(pattern, text), kind


def test_known_bugs(monkeypatch):
    """PYDRON_FUZZ_KNOWN_BUGS selects which known-bug triggers are generated, and
    every KNOWN_BUGS entry names tests in tests/test_fuzz_regressions.py."""
    import fnmatch

    import test_fuzz_regressions

    names = [n for n in dir(test_fuzz_regressions) if n.startswith("test_")]
    for bug, pattern in fuzzgen.KNOWN_BUGS.items():
        assert fnmatch.filter(names, pattern), (bug, pattern)

    monkeypatch.setattr(fuzzgen, "KNOWN_BUGS", {"bug-a": "test_a*", "bug-b": "test_b*"})
    monkeypatch.delenv("PYDRON_FUZZ_KNOWN_BUGS", raising=False)
    assert fuzzgen._avoided_from_env() == set(fuzzgen.KNOWN_BUGS)
    monkeypatch.setenv("PYDRON_FUZZ_KNOWN_BUGS", "1")
    assert fuzzgen._avoided_from_env() == set()
    monkeypatch.setenv("PYDRON_FUZZ_KNOWN_BUGS", "bug-a")
    assert fuzzgen._avoided_from_env() == {"bug-b"}
    monkeypatch.setenv("PYDRON_FUZZ_KNOWN_BUGS", "no-such-bug")
    with pytest.raises(ValueError, match="no-such-bug"):
        fuzzgen._avoided_from_env()


@pytest.fixture
def own_pool(monkeypatch):
    """Scheduled runs go to a fresh pool of two local workers that only this test uses
    (the workers it kills are its own); another test's global pool is kept aside."""
    import pydron
    from pydron.remote import pool as pool_module

    monkeypatch.setenv("PYDRON_TX", "2*popen")
    for name in ("PYDRON_CONF", "PYDRON_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield pool_module
    pydron.shutdown()


@pytest.mark.timeout(60 + 5 * DEATHS)
def test_fuzz_worker_deaths(own_pool, tmp_path):
    """Generated programs in which one functional call, placed by the generator,
    SIGKILLs its worker the first time it runs: the call runs again on another
    worker and the scheduled run still equals the plain run."""
    died = 0
    for i in range(DEATHS):
        source, args = fuzzgen.generate(fuzzgen.RandomChooser(f"{SEED}:die:{i}"), die=True)
        assert "fz_die(" in source
        try:
            died += fuzzgen.check(source, [args], die_dir=str(tmp_path))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nreplay: PYDRON_TX=2*popen python tests/fuzzgen.py {i} "
                                 f"--seed {SEED} --die --run") from None
    pool = own_pool._pool
    deadline = time.monotonic() + 20   # the last replacement may still be starting
    while (pool._starting or sum(w.alive for w in pool.workers) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"{DEATHS} programs, {died} worker deaths, {pool.replacements} replacements")
    # Every program whose plain run reaches its fz_die call killed a worker
    # (fuzzgen.check asserts it); many do (the others return or raise before it).
    assert died >= DEATHS // 4, f"only {died} of {DEATHS} programs killed a worker"
    assert sum(w.alive for w in pool.workers) == 2, pool.workers
    assert len(pool.workers) == 2, pool.workers   # a replacement takes the dead one's place
    assert pool.replacements == died == len(pool.deaths), pool.deaths   # each death: one new worker
