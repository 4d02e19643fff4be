"""``pydron.explain`` and ``python -m pydron explain``: expected reports.

Each function below has its expected report as exact text. Line numbers in
the expectations are relative to the function's first line (``line +2`` is
two lines below the ``def``, or below the first decorator), so that editing
this file above a function does not break its test.

Reports that are wrong or misleading are not enshrined: their tests state the
correct expectation and are marked ``xfail(strict=True)`` with the reason.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pydron
from dhelpers import Rec, double, inc, log, plain_add

REPO = Path(__file__).resolve().parent.parent
RESULT = None


@pydron.pure
def label(x):
    return f"<{x}>"


def expected(fn, body: str) -> str:
    """The report ``explain`` should give: header, then ``body`` with ``+k`` resolved."""
    target = getattr(fn, "__wrapped__", fn)
    first = target.__code__.co_firstlineno
    header = f"{target.__qualname__} ({target.__code__.co_filename}, line {first})"
    body = re.sub(r"line \+(\d+)", lambda m: f"line {first + int(m.group(1))}",
                  textwrap.dedent(body).strip("\n"))
    return header + "\n" + textwrap.indent(body, "  ")


# ---------------------------------------------------------------------------
# Functions under test
# ---------------------------------------------------------------------------


def seed_loop(xs):
    outputs = []
    for x in xs:
        output = inc(x)
        outputs = outputs + [output]
    return outputs


def print_in_loop(xs):
    out = []
    for x in xs:
        r = inc(x)
        log(r)
        out.append(r)
    return out


def append_then_escape(xs):
    out = []
    for x in xs:
        out.append(double(x))
    log(out)
    return out


def outside_container(box, xs):
    for x in xs:
        box.items.append(inc(x))


def sum_of_generator(xs):
    return sum(inc(x) for x in xs)


def user_pure_and_math(xs):
    return [label(math.sqrt(inc(x))) for x in xs]


def iadd_on_future(xs):
    total = 0
    for x in xs:
        total += inc(x)
    return total


def no_calls(a, b):
    return a + b


def attribute_in_loop(o, xs):
    for x in xs:
        o.last = inc(x)


def global_store(x):
    global RESULT
    RESULT = inc(x)


def helper_in_comprehension(xs):
    return [plain_add(inc(x), 1) for x in xs]


def calls_schedule_function(xs):
    return [inner_schedule(x) for x in xs]


@pydron.schedule
def inner_schedule(x):
    return inc(x)


def with_block(xs):
    with Rec("r"):
        out = [inc(x) for x in xs]
    return out


def dynamic_callable(g, xs):
    return [g(x) for x in xs]


def local_setitem(xs):
    out = [None] * len(xs)
    for i, x in enumerate(xs):
        out[i] = inc(x)
    return out


def local_dict_setitem(xs):
    d = {}
    for x in xs:
        d[x] = inc(x)
    return d


def local_del(xs):
    out = []
    for x in xs:
        out.append(inc(x))
        del out[0]
    return out


def list_map(xs):
    return list(map(inc, xs))


def while_loop(n):
    out = []
    i = 0
    while i < n:
        out.append(inc(i))
        i += 1
    return out


# ---------------------------------------------------------------------------
# Expected reports
# ---------------------------------------------------------------------------

REPORTS = [
    (seed_loop, """
        line +3: `inc` is functional: a task
        loop of line +2 (`for`): its functional calls run in parallel
    """),
    (print_in_loop, """
        line +3: `inc` is functional: a task
        line +4: call to `log` (not functional): a sync point, inside the `for` loop of line +2, so its iterations run one after another
        line +5: `out.append` on a container built here: no sync point
        loop of line +2 (`for`): serialised by the sync point(s) on line +4
    """),
    (append_then_escape, """
        line +3: `double` is functional: a task
        line +3: `out.append` on a container built here: no sync point
        line +4: call to `log` (not functional): a sync point
        loop of line +2 (`for`): its functional calls run in parallel
    """),
    (outside_container, """
        line +2: `inc` is functional: a task
        line +2: call of `box.items.append` (known only at run time): a sync point unless it is functional, pure, or a method of a list/dict/set built here, inside the `for` loop of line +1, so its iterations run one after another
        loop of line +1 (`for`): serialised by the sync point(s) on line +2
    """),
    (sum_of_generator, """
        line +1: `sum` is pure: no sync point
        line +1: `inc` is functional: a task
        loop of line +1 (`for`): its functional calls run in parallel
    """),
    (user_pure_and_math, """
        line +1: `inc` is functional: a task
        line +1: `math.sqrt` is pure: no sync point
        line +1: `label` is pure: no sync point
        loop of line +1 (`for`): its functional calls run in parallel
    """),
    (iadd_on_future, """
        line +3: `inc` is functional: a task
        loop of line +2 (`for`): its functional calls run in parallel
    """),
    (no_calls, """
        no calls and no sync points
    """),
    (attribute_in_loop, """
        line +2: `inc` is functional: a task
        line +2: `last` attribute assignment: a sync point, inside the `for` loop of line +1, so its iterations run one after another
        loop of line +1 (`for`): serialised by the sync point(s) on line +2
    """),
    (global_store, """
        line +2: `inc` is functional: a task
        line +2: assignment to global `RESULT`: a sync point
    """),
    (helper_in_comprehension, """
        line +1: `inc` is functional: a task
        line +1: call to `plain_add` (not functional): a sync point, inside the `for` loop of line +1, so its iterations run one after another
        loop of line +1 (`for`): serialised by the sync point(s) on line +1
    """),
    (calls_schedule_function, """
        line +1: `inner_schedule` is a schedule function: runs inline, in the same graph
    """),
    (inner_schedule, """
        line +2: `inc` is functional: a task
    """),
]


@pytest.mark.parametrize("fn,body", REPORTS, ids=[fn.__name__ for fn, _ in REPORTS])
def test_report(fn, body):
    assert pydron.explain(fn) == expected(fn, body)


def test_schedule_decorated_function_is_explained_like_the_plain_one():
    assert pydron.explain(pydron.schedule(seed_loop)) == pydron.explain(seed_loop)


def test_explain_refuses_a_non_function():
    with pytest.raises(TypeError, match="needs a function, got int"):
        pydron.explain(3)


def hashed_keys(xs):
    seen = {0}
    by_value = {}
    for x in xs:
        seen.add(inc(x))
        by_value[inc(x)] = x
        by_value[x] = inc(x)
    return seen, by_value


def test_report_set_add_and_key_of_a_call_result_wait_for_it():
    """A set or dict built here takes a call's value without a sync point, but not
    as an element of a set or as a key: those need the value (its hash)."""
    fifth = hashed_keys.__code__.co_firstlineno + 5
    assert pydron.explain(hashed_keys) == expected(hashed_keys, f"""
        line +4: `inc` is functional: a task
        line +4: `seen.add` of `inc`'s result on a container built here: waits for that call (a set needs the value's hash), inside the `for` loop of line +3, so its iterations run one after another
        line +5: `inc` is functional: a task
        line +5: item assignment with `inc`'s result as the key, on a container built here: waits for that call (the key must be known), inside the `for` loop of line +3, so its iterations run one after another
        line +6: `inc` is functional: a task
        line +6: item assignment on a container built here: no sync point
        loop of line +3 (`for`): serialised by the sync point(s) on line +4, {fifth}
    """)


# -- reports that are wrong today: the correct expectation, xfail -------------------


def test_report_with_block():
    assert pydron.explain(with_block) == expected(with_block, """
        line +1: call to `Rec` (not functional): a sync point
        line +1: entering a `with` block: a sync point; calls inside overlap, and the block waits for them where it ends
        line +2: `inc` is functional: a task
        line +2: storing `out`, which the handler may read: waits for the block's calls first
        loop of line +2 (`for`): its functional calls run in parallel
    """)


def try_loop_append(xs):
    out = []
    try:
        for x in xs:
            out.append(inc(x))
    except ValueError:
        log("failed")
    return out


def try_handler_reads(a):
    y = 0
    try:
        y = inc(a)
        z = inc(y)
    except ValueError:
        return y
    return z


def try_nested(a):
    try:
        try:
            y = inc(a)
        except KeyError:
            y = 0
    except ValueError:
        y = 1
    return y


def test_report_try_block_with_loop():
    assert pydron.explain(try_loop_append) == expected(try_loop_append, """
        line +2: entering a `try` block: a sync point; calls inside overlap, and the block waits for them where it ends
        line +4: `inc` is functional: a task
        line +4: `out.append` on a container built here: no sync point
        line +6: call to `log` (not functional): a sync point
        loop of line +3 (`for`): its functional calls run in parallel
    """)


def test_report_try_block_store_read_by_handler():
    assert pydron.explain(try_handler_reads) == expected(try_handler_reads, """
        line +2: entering a `try` block: a sync point; calls inside overlap, and the block waits for them where it ends
        line +3: `inc` is functional: a task
        line +3: storing `y`, which the handler may read: waits for the block's calls first
        line +4: `inc` is functional: a task
    """)


def test_report_nested_try():
    # The outer block's protected code starts after the inner block: one entry.
    assert pydron.explain(try_nested) == expected(try_nested, """
        line +2: entering a `try` block: a sync point; calls inside overlap, and the block waits for them where it ends
        line +3: `inc` is functional: a task
    """)


def test_report_dynamic_callable():
    assert pydron.explain(dynamic_callable) == expected(dynamic_callable, """
        line +1: call of `g` (known only at run time): a sync point unless it is functional, pure, or a method of a list/dict/set built here, inside the `for` loop of line +1, so its iterations run one after another
    """)


@pytest.mark.parametrize("fn,line", [(local_setitem, 3), (local_dict_setitem, 3), (local_del, 4)],
                         ids=["setitem", "dict_setitem", "del"])
def test_report_local_item_assignment(fn, line):
    report = pydron.explain(fn)
    first = fn.__code__.co_firstlineno
    assert f"loop of line {first + 2} (`for`): its functional calls run in parallel" in report
    assert not [row for row in report.splitlines()
                if row.startswith(f"  line {first + line}:") and "a sync point" in row], report


def test_report_list_map():
    assert pydron.explain(list_map) == expected(list_map, """
        line +1: `inc` is functional, mapped with `map`: one task per item
        line +1: `list` is pure: no sync point
    """)


def test_report_while_loop():
    assert pydron.explain(while_loop) == expected(while_loop, """
        line +4: `inc` is functional: a task
        line +4: `out.append` on a container built here: no sync point
        loop of line +3 (`while`): its functional calls run in parallel
    """)


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

MODULE = '''\
import pydron


@pydron.functional
def f(x):
    return x + 1


def pipeline(xs):
    out = []
    for x in xs:
        out.append(f(x))
        print(x)
    return out


class K:
    @staticmethod
    def m(xs):
        return [f(x) for x in xs]


NOT_A_FUNCTION = 3
'''

PIPELINE = """\
  line 12: `f` is functional: a task
  line 12: `out.append` on a container built here: no sync point
  line 13: call to `print` (not functional): a sync point, inside the `for` loop of line 11, so its iterations run one after another
  loop of line 11 (`for`): serialised by the sync point(s) on line 13
"""


def cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYDRON_TX", "PYDRON_CONF")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pydron", "explain", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "pipemod.py").write_text(MODULE)
    return tmp_path


def test_cli_file_target(project):
    result = cli("pkg/pipemod.py:pipeline", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pipeline (pkg/pipemod.py, line 9)\n" + PIPELINE
    assert result.stderr == ""


def test_cli_module_target(project):
    result = cli("pkg.pipemod:pipeline", cwd=project)
    assert result.returncode == 0, result.stderr
    path = project / "pkg" / "pipemod.py"
    assert result.stdout == f"pipeline ({path}, line 9)\n" + PIPELINE


def test_cli_dotted_function(project):
    result = cli("pkg.pipemod:K.m", cwd=project)
    assert result.returncode == 0, result.stderr
    path = project / "pkg" / "pipemod.py"
    assert result.stdout == (f"K.m ({path}, line 18)\n"
                             "  line 20: `f` is functional: a task\n"
                             "  loop of line 20 (`for`): its functional calls run in parallel\n")


@pytest.mark.parametrize("target,message", [
    ("pipeline", "expected MODULE:FUNCTION, got 'pipeline'"),
    ("pkg.pipemod:", "expected MODULE:FUNCTION, got 'pkg.pipemod:'"),
    (":pipeline", "expected MODULE:FUNCTION, got ':pipeline'"),
    ("pkg.nosuch:pipeline", "cannot load pkg.nosuch"),
    ("pkg/nosuch.py:pipeline", "cannot load pkg/nosuch.py"),
    ("pkg.pipemod:nosuch", "pkg.pipemod has no function 'nosuch'"),
    ("pkg/pipemod.py:nosuch", "pkg/pipemod.py has no function 'nosuch'"),
    ("pkg.pipemod:K.nosuch", "pkg.pipemod has no function 'K.nosuch'"),
])
def test_cli_errors(project, target, message):
    result = cli(target, cwd=project)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "pydron: error: " in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_target_not_a_function(project):
    result = cli("pkg.pipemod:NOT_A_FUNCTION", cwd=project)
    assert result.returncode == 2, result.stderr
    assert "NOT_A_FUNCTION" in result.stderr and "Traceback" not in result.stderr
