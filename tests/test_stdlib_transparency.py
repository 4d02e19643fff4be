"""The rewrite is transparent on code in the wild.

Copies of pure-Python standard-library functions (same code, globals,
defaults, closure) run under ``@schedule`` and must give the value or the
exception of the originals; and every function of several large modules
rewrites without error at decoration time.
"""
import argparse
import base64
import calendar
import colorsys
import difflib
import fnmatch
import fractions
import heapq
import html
import importlib
import ipaddress
import json
import posixpath
import shlex
import statistics
import string
import textwrap
import types
import urllib.parse

import pytest

import pydron
from pydron.tracer.rewrite import code_kind, rewrite_code

TEXT = ("The quick brown fox jumps over the lazy dog. " * 8).strip()
A = ["one\n", "two\n", "three\n", "four\n", "five\n"]
B = ["one\n", "too\n", "three\n", "five\n", "six\n"]


def _copy(fn):
    """A fresh function object with the same code, globals, defaults and closure."""
    fn = getattr(fn, "__func__", fn)
    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    return new


def _listed(value):
    """Generators and iterators are compared by their items."""
    if isinstance(value, (types.GeneratorType, map, filter, zip)):
        return list(value)
    return value


CASES = [
    (textwrap.wrap, (TEXT, 30)),
    (textwrap.fill, (TEXT, 25)),
    (textwrap.shorten, (TEXT, 40)),
    (textwrap.dedent, ("    a\n      b\n    c\n",)),
    (textwrap.indent, ("a\nb\n\nc\n", "> ")),
    (difflib.unified_diff, (A, B)),
    (difflib.context_diff, (A, B)),
    (difflib.ndiff, (A, B)),
    (difflib.get_close_matches, ("appel", ["ape", "apple", "peach", "puppy"])),
    (difflib.SequenceMatcher.ratio, (difflib.SequenceMatcher(None, "abcd", "bcde"),)),
    (difflib.SequenceMatcher.get_opcodes, (difflib.SequenceMatcher(None, "qabxcd", "abycdf"),)),
    (statistics.mean, ([1, 2, 3, 4, 4],)),
    (statistics.median, ([3, 1, 4, 1, 5, 9],)),
    (statistics.mode, ([1, 1, 2, 3, 3, 3],)),
    (statistics.pstdev, ([1.5, 2.5, 2.5, 2.75, 3.25, 4.75],)),
    (statistics.variance, ([2.75, 1.75, 1.25, 0.25, 0.5, 1.25, 3.5],)),
    (statistics.harmonic_mean, ([40, 60],)),
    (statistics.quantiles, (list(range(1, 21)),)),
    (statistics.mean, ([],)),  # raises StatisticsError
    (statistics.fmean, ([1, 2, 3],)),
    (fractions.Fraction.__add__, (fractions.Fraction(1, 3), fractions.Fraction(1, 6))),
    (fractions.Fraction.limit_denominator, (fractions.Fraction(3.141592653589793), 100)),
    (fractions.Fraction.__new__, (fractions.Fraction, "3/7")),
    (fractions.Fraction.__new__, (fractions.Fraction, "x/7")),  # raises ValueError
    (heapq.nlargest, (3, [5, 1, 8, 3, 9, 2])),
    (heapq.nsmallest, (2, [5, 1, 8, 3, 9, 2])),
    (heapq.merge, ([1, 4, 7], [2, 5, 8], [3, 6, 9])),
    (statistics.median_low, ([1, 3, 5, 7],)),
    (shlex.split, ('a "b c" d\\ e',)),
    (shlex.quote, ("it's",)),
    (shlex.join, (["a", "b c"],)),
    (string.capwords, ("hello  wide world",)),
    (string.Template.substitute, (string.Template("$who likes $what"), {"who": "tim", "what": "pie"})),
    (string.Template.substitute, (string.Template("$who"), {})),  # raises KeyError
    (posixpath.commonpath, (["/usr/lib/x", "/usr/local/lib", "/usr/lib"],)),
    (posixpath.join, ("a", "b", "/c", "d")),
    (posixpath.splitext, ("archive.tar.gz",)),
    (posixpath.relpath, ("/a/b/c", "/a/d")),
    (fnmatch.translate, ("*.py[co]",)),
    (fnmatch.filter, (["a.py", "b.txt", "c.pyc"], "*.py*")),
    (urllib.parse.urlparse, ("https://user@example.org:8080/p/a;x?q=1#f",)),
    (urllib.parse.urlencode, ({"a": 1, "b": "x y"},)),
    (urllib.parse.parse_qs, ("a=1&b=2&a=3",)),
    (urllib.parse.quote, ("a b/c?d",)),
    (urllib.parse.urljoin, ("http://a/b/c/d;p?q", "../g")),
    (json.dumps, ({"b": [1, 2.5, None], "a": {"x": "y"}},), {"sort_keys": True, "indent": 2}),
    (json.loads, ('{"a": [1, 2, {"b": null}]}',)),
    (json.loads, ('{"a": ',)),  # raises JSONDecodeError
    (html.escape, ("<a href='x'>&</a>",)),
    (html.unescape, ("&lt;p&gt; &amp; &#39;",)),
    (base64.b32encode, (b"pydron",)),
    (base64.b85decode, (base64.b85encode(b"hello world"),)),
    (calendar.monthrange, (2024, 2)),
    (calendar.TextCalendar.formatmonth, (calendar.TextCalendar(), 2024, 2)),
    (colorsys.rgb_to_hls, (0.2, 0.4, 0.6)),
    (colorsys.hsv_to_rgb, (0.5, 0.5, 0.5)),
    (ipaddress.ip_network, ("192.168.0.0/28",)),
    (ipaddress.IPv4Network.subnets, (ipaddress.ip_network("10.0.0.0/24"), 2)),
    (ipaddress.collapse_addresses, ([ipaddress.ip_network("10.0.0.0/25"), ipaddress.ip_network("10.0.0.128/25")],)),
    (argparse.ArgumentParser.parse_args, (None, ["--n", "3", "x"])),
]


def _parser():
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("name")
    return parser


def _run(fn, args, kwargs):
    try:
        return ("value", _listed(fn(*args, **kwargs)))
    except Exception as exc:  # noqa: BLE001 - compared below
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0].__qualname__}-{i}" for i, c in enumerate(CASES)])
def test_stdlib_function_under_schedule(case):
    fn, args = case[0], case[1]
    kwargs = case[2] if len(case) > 2 else {}
    if fn is argparse.ArgumentParser.parse_args:
        args = (_parser(), *args[1:])
    expected = _run(fn, args, kwargs)
    if fn is argparse.ArgumentParser.parse_args:
        args = (_parser(), *args[1:])
    scheduled = pydron.schedule(_copy(fn))
    assert _run(scheduled, args, kwargs) == expected


def test_at_least_fifty_cases():
    assert len(CASES) >= 50


LARGE_MODULES = ["argparse", "difflib", "_pydecimal", "textwrap", "statistics", "email.message",
                 "configparser", "inspect", "tokenize", "json.decoder", "urllib.parse", "zipfile"]


def _functions(namespace, module_name, seen):
    for value in list(vars(namespace).values()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset, value.fdel) if f is not None)
        elif isinstance(value, types.FunctionType):
            yield value
        elif isinstance(value, type) and value.__module__ == module_name and id(value) not in seen:
            seen.add(id(value))
            yield from _functions(value, module_name, seen)


@pytest.mark.parametrize("module_name", LARGE_MODULES)
def test_every_function_of_large_modules_rewrites(module_name):
    module = importlib.import_module(module_name)
    count = 0
    for fn in _functions(module, module_name, set()):
        if code_kind(fn.__code__) is None:
            continue
        rewrite_code(fn.__code__, fn.__globals__)  # as schedule does: range loops typed too
        count += 1
    assert count >= 5
