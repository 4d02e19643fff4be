"""f-strings on futures are deferred operations: same text as the plain run, calls overlap."""
import time

import pytest

import pydron
from difftest import assert_equivalent
from dhelpers import double, fail_on, inc, log, slow


def fstring_simple(n):
    return [f"item {inc(i)}" for i in range(n)]


def fstring_conversions_and_specs(n):
    out = []
    for i in range(n):
        r = double(i)
        out.append(f"{r!r:>6}|{r!s}|{r!a}|{r:08.3f}|{r:{n}}|{'x'}")
    return out


def fstring_nested_future_spec():
    width = inc(5)
    return f"[{double(2):>{width}}]"


def fstring_logged():
    r = inc(41)
    log(f"answer {r}")
    return f"{r}"


def fstring_of_failed_call():
    r = fail_on(2, 2)
    text = f"value {r}"
    log("after")
    return text


def fstring_format_error():
    r = inc(1)
    return f"{r:q}"


@pytest.mark.parametrize("fn,args", [
    (fstring_simple, (3,)), (fstring_conversions_and_specs, (3,)), (fstring_nested_future_spec, ()),
    (fstring_logged, ()), (fstring_of_failed_call, ()), (fstring_format_error, ()),
], ids=lambda v: getattr(v, "__name__", None))
def test_fstrings_match_plain(fn, args):
    assert_equivalent(fn, *args)


def labels(t):
    out = []
    for i in range(4):
        out.append(f"item {slow(i, t)!r:>4}")
    return out


def test_fstrings_do_not_wait():
    scheduled = pydron.schedule(labels)
    scheduled(0.0)
    start = time.perf_counter()
    assert scheduled(0.4) == labels(0.0)
    # 4 x 0.4 s on 2 workers: 0.8 s if the f-strings defer, 1.6 s if they wait.
    assert time.perf_counter() - start < 1.3
