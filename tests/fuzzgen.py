"""Program generator for the differential fuzzer (tests/test_fuzz.py).

``generate(chooser)`` writes the source text of one small schedule function
``fz(a, b, xs)`` from a grammar: assignments, integer arithmetic, calls of
functional helpers (some raise for some inputs) and of the non-functional
``log``, if/elif/else, ``for`` over ranges and lists, bounded ``while``,
break/continue, list/dict/set comprehensions, generator expressions,
try/except/else/finally, ``with`` blocks, returns inside loops, augmented
assignment, mutation of local (and aliased, nested) containers.

Every program terminates quickly: loops run at most 4 times, at most 3 deep,
and a program has at most ~20 statements.  Values are ints (no float noise);
the state (``v0 v1 v2 L D S N``) is returned at the end, so the differential
harness sees all of it, and ``xs`` (an argument) may be mutated, which the
harness sees as well.

The choices come from a *chooser*: ``HypothesisChooser(draw)`` inside a
hypothesis test (so failures shrink to small programs), or
``RandomChooser(seed)`` for a standalone run:

    python tests/fuzzgen.py 5                    # print program 5 of seed 0
    python tests/fuzzgen.py --run 5              # ... and compare plain vs scheduled
    python tests/fuzzgen.py --file p.py --args '(1, 2, [3])'   # check a saved program

The functional helpers used by the programs live in importable modules
(``dhelpers`` and this one), so pydron's workers import them by name.  This
module imports no hypothesis at import time: workers import it cheaply.
"""
from __future__ import annotations

import contextlib
import hashlib
import linecache
import os
import random
import signal
import sys
import uuid

if __name__ == "__main__":  # python tests/fuzzgen.py: this checkout's tests/ and pydron
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [_here, os.path.dirname(_here)]

import dhelpers  # noqa: E402
from dhelpers import CustomError, log  # noqa: E402
from pydron.functional import functional  # noqa: E402

# ---------------------------------------------------------------------------
# Extra helpers (importable by workers as ``fuzzgen.<name>``)
# ---------------------------------------------------------------------------


@functional
def fz_div(a, b):
    """a // b: ZeroDivisionError for b == 0."""
    return a // b


@functional
def fz_key(d, k):
    """d[k]: KeyError for a missing key."""
    return d[k]


@functional
def fz_pick(xs, i):
    """xs[i]: IndexError out of range."""
    return xs[i]


@functional
def fz_clip(x):
    return max(-60, min(60, x))


@functional
def fz_big(x):
    """OverflowError (an ArithmeticError) for |x| > 40."""
    if abs(x) > 40:
        raise OverflowError(f"too big {x}")
    return x


@functional
def fz_err(x):
    """Always raises a CustomError with two args."""
    raise CustomError("custom", x)


@functional
def fz_pairsum(p):
    return p[0] + p[1]


@functional
def fz_cond(x):
    """A functional bool that is True for x % 3 == 0."""
    return x % 3 == 0


@functional
def fz_die(x, token):
    """x; but the first time it runs outside the master, it SIGKILLs its own worker first.

    ``token`` is ``(marker_path, master_pid)`` (``DIE`` in a program's globals;
    None: never die).  The marker file, made just before the kill, keeps the
    task's re-run on the replacement worker from dying again. In the master
    (the plain run) it makes ``marker_path + ".reached"`` instead.
    """
    if token is None:
        return x
    if os.getpid() == token[1]:  # the plain run: note that the program reaches this call
        with open(token[0] + ".reached", "w"):
            pass
        return x
    try:
        fd = os.open(token[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return x
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    return x  # not reached


def fz_log(*args):
    """``log`` that also records who called it (function and line), as the callee sees it:
    a scheduled run must show the callee the caller's own frame, as the plain run does."""
    caller = sys._getframe(1)
    dhelpers.log(*args, ("caller", caller.f_code.co_name, caller.f_lineno))


@contextlib.contextmanager
def fz_guard(name, swallow=()):
    """A generator-based context manager that logs and may swallow exceptions."""
    log("guard-in", name)
    try:
        yield name
    except swallow as e:  # noqa: B030 - a tuple of types, possibly empty
        log("guard-swallow", name, type(e).__name__, str(e))
    finally:
        log("guard-out", name)


#: Names the generated programs may use (their module globals).
NAMESPACE = {
    "contextlib": contextlib,
    "log": fz_log, "log_ret": dhelpers.log_ret, "plain_add": dhelpers.plain_add,
    "Rec": dhelpers.Rec, "CustomError": CustomError,
    "inc": dhelpers.inc, "dec": dhelpers.dec, "double": dhelpers.double, "add": dhelpers.add,
    "mul": dhelpers.mul, "ident": dhelpers.ident, "pair": dhelpers.pair,
    "fail_on": dhelpers.fail_on, "boom": dhelpers.boom, "is_even": dhelpers.is_even,
    "length": dhelpers.length, "first": dhelpers.first, "total": dhelpers.total,
    "scale": dhelpers.scale, "mklist": dhelpers.mklist,
    "fz_div": fz_div, "fz_key": fz_key, "fz_pick": fz_pick, "fz_clip": fz_clip,
    "fz_big": fz_big, "fz_err": fz_err, "fz_pairsum": fz_pairsum, "fz_cond": fz_cond,
    "fz_guard": fz_guard, "fz_die": fz_die, "DIE": None,
}

# ---------------------------------------------------------------------------
# Choosers
# ---------------------------------------------------------------------------


class RandomChooser:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def below(self, n: int) -> int:
        return self.rng.randrange(n)


class HypothesisChooser:
    """Draws from a hypothesis ``draw``; choice 0 is always the simplest one,
    so shrinking walks towards short, plain programs."""

    def __init__(self, draw):
        from hypothesis import strategies as st

        self.draw = draw
        self._ints = {}
        self._st = st

    def below(self, n: int) -> int:
        s = self._ints.get(n)
        if s is None:
            s = self._ints[n] = self._st.integers(0, n - 1)
        return self.draw(s)


# ---------------------------------------------------------------------------
# The grammar
# ---------------------------------------------------------------------------

#: Known pydron bugs (name -> its tests in tests/test_fuzz_regressions.py)
#: whose triggers the generator leaves out, so that the fuzzer finds other
#: bugs and CI stays green.  ``PYDRON_FUZZ_KNOWN_BUGS=1`` generates them again
#: (to see whether they are fixed); ``=name,name`` generates only those.
#: Empty: every bug the fuzzer found is fixed (see the regression tests).
KNOWN_BUGS: dict[str, str] = {}


def _avoided_from_env():
    v = os.environ.get("PYDRON_FUZZ_KNOWN_BUGS", "").strip()
    if v in ("", "0"):
        return set(KNOWN_BUGS)
    if v == "1":
        return set()
    wanted = {w.strip() for w in v.split(",")}
    unknown = wanted - set(KNOWN_BUGS)
    if unknown:
        raise ValueError(f"PYDRON_FUZZ_KNOWN_BUGS: unknown names {sorted(unknown)}; "
                         f"known: {sorted(KNOWN_BUGS)}")
    return set(KNOWN_BUGS) - wanted


INDENT = "    "
INT_VARS = ("v0", "v1", "v2")
KEYS = ('"k0"', '"k1"', '"k2"')
HANDLER_TYPES = (
    "ValueError", "KeyError", "IndexError", "(KeyError, IndexError)", "LookupError",
    "ArithmeticError", "ZeroDivisionError", "CustomError", "RuntimeError", "Exception",
    "(ValueError, ArithmeticError)",
)


class Ctx:
    """What a statement or expression may refer to at its position."""

    __slots__ = ("ints", "loop", "handler", "depth", "comp", "walrus", "guarded", "region",
                 "noraise")

    def __init__(self, ints=("a", "b") + INT_VARS, loop=False, handler=None, depth=0,
                 comp=False, walrus=True, guarded=False, region=False, noraise=False):
        self.ints = ints
        self.loop = loop
        self.handler = handler
        self.depth = depth
        self.comp = comp
        self.walrus = walrus
        #: inside a try body or with block: exceptions are likely to be handled,
        #: so helpers that raise are chosen more often
        self.guarded = guarded
        #: anywhere in a try statement (any clause) or with block
        self.region = region
        #: expressions here must not raise
        self.noraise = noraise

    @property
    def risky(self):
        """Weight of an option that raises often."""
        return 0 if self.noraise else 3 if self.guarded else 0

    @property
    def unsafe(self):
        """Weight of an option that raises sometimes."""
        return 0 if self.noraise else 3 if self.guarded else 1

    @property
    def failing(self):
        """Weight of ``fail_on``."""
        return 0 if self.noraise else 3

    def but(self, **kw):
        c = Ctx(self.ints, self.loop, self.handler, self.depth, self.comp, self.walrus,
                self.guarded, self.region, self.noraise)
        for k, v in kw.items():
            setattr(c, k, v)
        return c


class Generator:
    MAX_DEPTH = 3

    def __init__(self, chooser, max_stmts=18, avoid=None, die=False):
        self.ch = chooser
        #: a worker-death variant: one top-level statement calls fz_die (see program())
        self.die = die
        #: known pydron bugs (KNOWN_BUGS keys) whose trigger is not generated
        self.avoid = set(KNOWN_BUGS if avoid is None else avoid)
        self.budget = max_stmts
        self.n = 0

    # -- choice helpers -------------------------------------------------------

    def below(self, n):
        return self.ch.below(n) if n > 1 else 0

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def weighted(self, options):
        """options: [(weight, thunk)]; the first option is the 'simplest'."""
        total = sum(w for w, _ in options)
        r = self.below(total)
        for w, thunk in options:
            if r < w:
                return thunk()
            r -= w
        raise AssertionError("unreachable")

    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def small(self, lo=0, hi=6):
        return lo + self.below(hi - lo + 1)

    # -- expressions ----------------------------------------------------------

    def leaf(self, ctx):
        return self.weighted([
            (3, lambda: self.pick(ctx.ints)),
            (2, lambda: str(self.small())),
        ])

    def iexpr(self, ctx, d=2):
        """An int-valued expression (may raise for some inputs)."""
        if d <= 0:
            return self.leaf(ctx)
        e = lambda: self.iexpr(ctx, d - 1)  # noqa: E731
        k = lambda: str(self.small(1, 5))  # noqa: E731
        opts = [
            (6, lambda: self.leaf(ctx)),
            (3, lambda: f"({e()} + {e()})"),
            (2, lambda: f"({e()} - {e()})"),
            (2, lambda: f"({e()} * {k()})"),
            (1, lambda: f"({e()} % {k()})"),
            (1, lambda: f"-{e()}"),
            (1, lambda: f"{self.pick(('min', 'max'))}({e()}, {e()})"),
            (1, lambda: f"abs({e()})"),
            # functional helpers
            (4, lambda: f"{self.pick(('inc', 'dec', 'double', 'ident', 'fz_clip'))}({e()})"),
            (2, lambda: f"add({e()}, {e()})"),
            (1, lambda: f"mul({e()}, {k()})"),
            (1, lambda: f"scale({e()}, by={k()})"),
            (1, lambda: f"total({e()}, {e()})"),
            (ctx.failing, lambda: f"fail_on({e()}, {self.small()})"),
            (ctx.unsafe, lambda: f"fz_div({e()}, {self.small(0, 3)})"),
            (ctx.unsafe, lambda: f"fz_big({e()})"),
            (1, lambda: f"fz_pairsum(pair({e()}, {e()}))"),
            (ctx.risky, lambda: f"fz_err({e()})"),
            (ctx.risky, lambda: f"boom({e()})"),
            (ctx.risky, lambda: f"fz_key(D, {self.key(ctx)})"),
            (ctx.unsafe, lambda: f"fz_pick(L, {self.small(-1, 2)})"),
            # reads of local containers
            (2, lambda: self.pick(("len(L)", "sum(L)", "length(L)", "len(D)", "len(S)",
                                   "N[2][0]", "len(N[0])", "sum(N[2][1])", "total(*L)",
                                   "max(L, default=0)"))),
            (ctx.unsafe, lambda: self.pick(("first(L)", "L[-1]", f"L[{self.small(0, 3)}]"))),
            (1, lambda: f"D.get({self.key(ctx)}, {self.small()})"),
            # non-functional
            (1, lambda: f"log_ret({e()})"),
            (1, lambda: f"plain_add({e()}, {e()})"),
            # control flow inside expressions
            (1, lambda: f"({e()} if {self.cond(ctx, d - 1)} else {e()})"),
            (1, lambda: self.genexp(ctx, d - 1)),
            (1, lambda: self.walrus(ctx, d - 1)),
        ]
        return self.weighted(opts)

    def walrus(self, ctx, d):
        if not ctx.walrus:
            return self.leaf(ctx)
        return f"({self.pick(INT_VARS)} := {self.iexpr(ctx, d)})"

    def key(self, ctx):
        return self.weighted([
            (4, lambda: self.pick(KEYS)),
            (1, lambda: f"({self.iexpr(ctx, 1)}) % 3"),
        ])

    def cond(self, ctx, d=1):
        e = lambda: self.iexpr(ctx, d)  # noqa: E731
        c = lambda: self.cond(ctx, d - 1)  # noqa: E731
        opts = [
            (4, lambda: f"{e()} {self.pick(('<', '>', '==', '!=', '<=', '>='))} {e()}"),
            (2, lambda: f"{e()} > {self.small()}"),
            (2, lambda: f"{self.pick(('is_even', 'fz_cond'))}({e()})"),
            (1, lambda: f"{e()} in L"),
            (1, lambda: f"{self.key(ctx)} in D"),
            (1, lambda: f"{e()} in S"),
            (1, lambda: self.pick(("L", "D", "S", "not L", "len(L) > 2", "xs"))),
            (1, lambda: e()),
        ]
        if d > 0:
            opts += [
                (1, lambda: f"not {c()}"),
                (2, lambda: f"({c()} and {c()})"),
                (2, lambda: f"({c()} or {c()})"),
                (1, lambda: self.genexp(ctx, d - 1, fn=self.pick(("any", "all")), cond=True)),
            ]
        return self.weighted(opts)

    def iterable(self, ctx):
        """An iterable of ints, bounded to a few items (no walrus allowed here)."""
        ictx = ctx.but(walrus=False)
        return self.weighted([
            (4, lambda: f"range({self.small(0, 4)})"),
            (2, lambda: "L[:4]"),
            (1, lambda: "xs[:4]"),
            (1, lambda: f"range(min({self.iexpr(ictx, 1)}, 4))"),
            (2, lambda: f"[{self.iexpr(ictx, 1)}, {self.iexpr(ictx, 1)}]"),
            (1, lambda: "sorted(S)[:4]"),
            (1, lambda: "list(D.values())[:4]"),
            (1, lambda: "N[0][:3]"),
            (1, lambda: f"mklist({self.small(0, 4)})"),
        ])

    def comp_ctx(self, ctx):
        var = self.fresh("c")
        cctx = ctx.but(ints=ctx.ints + (var,), comp=True)
        return var, cctx

    def genexp(self, ctx, d, fn=None, cond=False):
        it = self.iterable(ctx)
        var, cctx = self.comp_ctx(ctx)
        if fn is None:
            fn = self.pick(("sum", "max", "min", "len"))
        body = self.cond(cctx, 0) if cond else self.iexpr(cctx, max(d, 1))
        if fn in ("max", "min"):
            return f"{fn}(({body} for {var} in {it}), default={self.small()})"
        if fn == "len":
            return f"len([{body} for {var} in {it}])"
        return f"{fn}({body} for {var} in {it})"

    def comp_clause(self, ctx):
        it = self.iterable(ctx)
        var, cctx = self.comp_ctx(ctx)
        clause = f"for {var} in {it}"
        if self.below(3) == 0:
            clause += f" if {self.cond(cctx, 0)}"
        if self.below(6) == 0:
            it2 = self.iterable(cctx)
            var2, cctx = self.comp_ctx(cctx)
            clause += f" for {var2} in {it2}"
        return clause, cctx

    def list_expr(self, ctx):
        def comp():
            clause, cctx = self.comp_clause(ctx)
            return f"[{self.iexpr(cctx, 1)} {clause}]"
        return self.weighted([
            (2, lambda: f"[{', '.join(self.iexpr(ctx, 1) for _ in range(self.small(0, 3)))}]"),
            (3, comp),
            (1, lambda: "list(xs)"),
            (1, lambda: "L + [" + self.iexpr(ctx, 1) + "]"),
            (1, lambda: "sorted(L, key=lambda t: (t % 3, t))"),
            (1, lambda: f"list(map({self.pick(('inc', 'double', 'fz_clip'))}, L))"),
            (1, lambda: f"list(map(lambda t: t + {self.pick(ctx.ints)}, L))"),
            (1, lambda: f"mklist({self.small(0, 4)})"),
        ])

    def dict_expr(self, ctx):
        def comp():
            clause, cctx = self.comp_clause(ctx)
            return f"{{{self.key(cctx)}: {self.iexpr(cctx, 1)} {clause}}}"
        return self.weighted([
            (2, lambda: "{" + ", ".join(f"{self.key(ctx)}: {self.iexpr(ctx, 1)}"
                                        for _ in range(self.small(0, 2))) + "}"),
            (3, comp),
            (1, lambda: "dict(D)"),
        ])

    def set_expr(self, ctx):
        def comp():
            clause, cctx = self.comp_clause(ctx)
            return f"{{{self.iexpr(cctx, 1)} {clause}}}"
        return self.weighted([
            (1, lambda: "set()"),
            (3, comp),
            (1, lambda: "set(L)"),
            (1, lambda: "{" + self.iexpr(ctx, 1) + ", " + self.iexpr(ctx, 1) + "}"),
        ])

    # -- statements -----------------------------------------------------------

    def block(self, ctx, lo=1, hi=3):
        lines = []
        for _ in range(self.small(lo, hi)):
            if self.budget <= 0:
                break
            lines += self.stmt(ctx)
        return lines or ["pass"]

    def indent(self, lines):
        return [INDENT + ln for ln in lines]

    def stmt(self, ctx):
        self.budget -= 1
        e = lambda d=2: self.iexpr(ctx, d)  # noqa: E731
        v = lambda: self.pick(INT_VARS)  # noqa: E731
        opts = [
            (8, lambda: [f"{v()} = {e()}"]),
            (4, lambda: [self.aug(v(), self.pick(('+', '-')), e())]),
            (1, lambda: [self.aug(v(), self.pick(('*', '%', '//')), str(self.small(1, 4)))]),
            (1, lambda: [self.unpack_stmt(ctx)]),
            (5, lambda: [self.log_stmt(ctx)]),
            (5, lambda: [self.list_stmt(ctx)]),
            (3, lambda: [self.dict_stmt(ctx)]),
            (2, lambda: [self.set_stmt(ctx)]),
            (2, lambda: [self.nested_stmt(ctx)]),
            (1, lambda: [self.pick((f"xs.append({e(1)})", f"xs[0] = {e(1)}"))]),
            (ctx.unsafe, lambda: [f"if {self.cond(ctx)}:",
                         INDENT + f"raise {self.pick(('ValueError', 'KeyError', 'CustomError'))}"
                                  f"(\"r{self.fresh('')}\", {e(1)})"]),
            (ctx.unsafe, lambda: [f"assert {self.cond(ctx)}, \"a{self.fresh('')}\""]),
        ]
        opts.append((1, lambda: [f"return {self.ret_expr(ctx)}"]))
        if ctx.loop:
            jumps = ("break", "continue")
            opts += [
                (3, lambda: [f"if {self.cond(ctx)}:", INDENT + self.pick(jumps)]),
                (1, lambda: [self.pick(jumps)]),
            ]
            opts.append((2, lambda: [f"if {self.cond(ctx)}:",
                                     INDENT + f"return {self.ret_expr(ctx)}"]))
        if ctx.handler is not None:
            h = ctx.handler
            opts += [
                (1, lambda: ["raise"]),
                (1, lambda: [f"raise RuntimeError(\"re{self.fresh('')}\") from {h}"]
                    if h != "_" else ["raise RuntimeError(\"re\") from None"]),
                (1, lambda: [f"raise RuntimeError(\"ctx{self.fresh('')}\")"]),
            ]
        if ctx.depth < self.MAX_DEPTH and self.budget > 1:
            inner = ctx.but(depth=ctx.depth + 1)
            opts += [
                (4, lambda: self.if_stmt(inner)),
                (3, lambda: self.for_stmt(inner)),
                (2, lambda: self.while_stmt(inner)),
                (4, lambda: self.try_stmt(inner)),
                (3, lambda: self.with_stmt(inner)),
            ]
        return self.weighted(opts)

    def ret_expr(self, ctx):
        return self.weighted([
            (2, lambda: self.iexpr(ctx, 1)),
            (1, lambda: "(v0, v1, v2, L, D, S, N)"),
            (1, lambda: f"(\"early\", {self.iexpr(ctx, 1)}, L, D)"),
        ])

    def aug(self, target, op, operand):
        """``target op= operand`` on an int target."""
        return f"{target} {op}= {operand}"

    def unpack_stmt(self, ctx):
        x, y = self.pick((("v0", "v1"), ("v1", "v2"), ("v2", "v0")))
        return self.weighted([
            (2, lambda: f"{x}, {y} = pair({self.iexpr(ctx, 1)}, {self.iexpr(ctx, 1)})"),
            (1, lambda: f"{x}, {y} = {y}, {x}"),
            (1, lambda: f"{x}, *rest = [{self.iexpr(ctx, 1)}] + L"),
        ])

    def log_stmt(self, ctx):
        args = [f'"s{self.fresh("")}"']
        for _ in range(self.small(0, 2)):
            args.append(self.weighted([
                (4, lambda: self.iexpr(ctx, 2)),
                (1, lambda: self.pick(("L", "D", "S", "N", "xs", "sorted(S)"))),
            ]))
        return f"log({', '.join(args)})"

    def list_stmt(self, ctx):
        e = lambda: self.iexpr(ctx, 2)  # noqa: E731
        return self.weighted([
            (4, lambda: f"L.append({e()})"),
            (ctx.unsafe, lambda: f"L[{self.small(-1, 3)}] = {e()}"),
            (2, lambda: f"L += [{e()}]"),
            (1, lambda: f"L = L + [{e()}]"),
            (3, lambda: f"L = {self.list_expr(ctx)}"),
            (1, lambda: f"L.extend({self.list_expr(ctx)})"),
            (1, lambda: f"L.insert({self.small(0, 2)}, {e()})"),
            (ctx.unsafe, lambda: f"{self.pick(INT_VARS)} = L.pop()"),
            (ctx.risky, lambda: "del L[0]"),
            (1, lambda: "L.sort()"),
            (1, lambda: "L.reverse()"),
            (ctx.unsafe, lambda: self.aug(f"L[{self.small(0, 2)}]", "+", e())),
        ])

    def dict_stmt(self, ctx):
        e = lambda: self.iexpr(ctx, 2)  # noqa: E731
        k = lambda: self.key(ctx)  # noqa: E731
        return self.weighted([
            (4, lambda: f"D[{k()}] = {e()}"),
            (2, lambda: (lambda kk: f"D[{kk}] = D.get({kk}, 0) + {e()}")(self.pick(KEYS))),
            (ctx.unsafe, lambda: self.aug(f"D[{self.pick(KEYS)}]", "+", e())),
            (2, lambda: f"D = {self.dict_expr(ctx)}"),
            (1, lambda: f"D.update({{{k()}: {e()}}})"),
            (1, lambda: f"D.pop({k()}, None)"),
            (ctx.risky, lambda: f"del D[{k()}]"),
            (1, lambda: f"D.setdefault({k()}, {e()})"),
        ])

    def set_stmt(self, ctx):
        e = lambda: self.iexpr(ctx, 2)  # noqa: E731
        return self.weighted([
            (3, lambda: f"S.add({e()})"),
            (2, lambda: f"S = {self.set_expr(ctx)}"),
            (1, lambda: f"S |= {{{e()}}}"),
            (1, lambda: f"S.discard({e()})"),
        ])

    def nested_stmt(self, ctx):
        e = lambda: self.iexpr(ctx, 1)  # noqa: E731
        return self.weighted([
            (2, lambda: f"N[0].append({e()})"),
            (2, lambda: f"N[1][{self.key(ctx)}] = {e()}"),
            (2, lambda: f"N[2][1].append({e()})"),
            (1, lambda: f"N = [L, D, ({e()}, [{e()}])]"),
            (1, lambda: f"N = [list(L), dict(D), ({e()}, N[2][1])]"),
            (1, lambda: f"N[0] = {self.list_expr(ctx)}"),
        ])

    def if_stmt(self, ctx):
        lines = [f"if {self.cond(ctx)}:"] + self.indent(self.block(ctx))
        for _ in range(self.below(3) if self.below(2) else 0):
            lines += [f"elif {self.cond(ctx)}:"] + self.indent(self.block(ctx))
        if self.below(2):
            lines += ["else:"] + self.indent(self.block(ctx))
        return lines

    def for_stmt(self, ctx):
        var = self.fresh("i")
        body_ctx = ctx.but(loop=True, ints=ctx.ints + (var,))
        head = self.weighted([
            (3, lambda: f"for {var} in {self.iterable(ctx)}:"),
            (1, lambda: f"for j{var}, {var} in enumerate({self.iterable(ctx)}):"),
            (1, lambda: f"for {var}, k{var} in zip({self.iterable(ctx)}, xs):"),
            (1, lambda: f"for k{var}, {var} in list(D.items())[:3]:"),
        ])
        lines = [head] + self.indent(self.block(body_ctx))
        if self.below(5) == 0:
            lines += ["else:"] + self.indent(self.block(ctx))
        return lines

    def while_stmt(self, ctx):
        w = self.fresh("w")
        body_ctx = ctx.but(loop=True, ints=ctx.ints + (w,))
        cond = f"{w} < {self.small(1, 4)}"
        if self.below(2):
            cond += f" and {self.cond(ctx)}"
        if self.below(4) == 0:
            lines = [f"{w} = 0", "while True:", INDENT + f"{w} += 1",
                     INDENT + f"if {w} > {self.small(1, 4)}:", INDENT * 2 + "break"]
        else:
            lines = [f"{w} = 0", f"while {cond}:", INDENT + f"{w} += 1"]
        lines += self.indent(self.block(body_ctx))
        return lines

    def try_stmt(self, ctx):
        ctx = ctx.but(region=True)
        n_handlers = self.pick((1, 1, 2, 0))
        lines = ["try:"] + self.indent(self.block(ctx.but(guarded=True)))
        for _ in range(n_handlers):
            typ = self.pick(HANDLER_TYPES)
            if self.below(2):
                name = self.fresh("e")
                hctx = ctx.but(handler=name)
                lines.append(f"except {typ} as {name}:")
                lines.append(INDENT + f"log(\"h{self.fresh('')}\", type({name}).__name__, str({name}))")
            else:
                hctx = ctx.but(handler="_")
                lines.append(f"except {typ}:")
            lines += self.indent(self.block(hctx, 0, 2))
        if n_handlers and self.below(3) == 0:
            lines += ["else:"] + self.indent(self.block(ctx))
        if n_handlers == 0 or self.below(2):
            lines += ["finally:"] + self.indent(self.block(ctx.but(handler=None), 1, 2))
        return lines

    def with_stmt(self, ctx):
        ctx = ctx.but(region=True)
        def cm():
            return self.weighted([
                (3, lambda: f"Rec(\"w{self.fresh('')}\")"),
                (2, lambda: f"Rec(\"w{self.fresh('')}\", suppress=True)"),
                (2, lambda: f"contextlib.suppress({self.pick(('ValueError', 'KeyError', 'LookupError', 'Exception'))})"),
                (2, lambda: f"fz_guard(\"g{self.fresh('')}\", ({self.pick(('ValueError', 'IndexError', 'CustomError'))},))"),
                (1, lambda: f"fz_guard(\"g{self.fresh('')}\")"),
            ])
        items = [cm() for _ in range(1 + (self.below(4) == 0))]
        return [f"with {', '.join(items)}:"] + self.indent(self.block(ctx.but(guarded=True)))

    # -- the function ---------------------------------------------------------

    def program(self, name="fz"):
        ctx = Ctx()
        body = [
            "v0 = a",
            "v1 = b",
            f"v2 = {self.pick(('0', 'inc(a)', 'add(a, b)', 'fail_on(b, 5)'))}",
            f"L = {self.pick(('[1, 2]', 'list(xs)', '[]', 'xs', '[inc(a), double(b)]'))}",
            "D = " + self.pick(("{}", '{"k0": a}', '{"k1": inc(b), 0: 2}')),
            f"S = {self.pick(('set()', '{a, b}'))}",
            "N = [L, D, (a, [b])]",
        ]
        prologue = len(body)
        body += self.block(ctx, 2, 6)
        while self.budget > 0 and self.below(2):
            body += self.stmt(ctx)
        if self.die:
            # At a top-level statement boundary after the prologue, chosen here: the
            # call's task kills its worker the first time it runs (fz_die).
            bounds = [i for i in range(prologue, len(body) + 1)
                      if i == len(body) or not body[i].startswith(
                          (" ", "elif ", "else:", "except", "finally:"))]
            at = bounds[self.below(len(bounds))]
            body.insert(at, f"{self.pick(INT_VARS)} = fz_die({self.iexpr(ctx, 1)}, DIE)")
        body.append("return (v0, v1, v2, L, D, S, N)")
        return "\n".join([f"def {name}(a, b, xs):"] + self.indent(body)) + "\n"

    def args(self):
        return (self.small(-2, 7), self.small(-1, 6),
                [self.small(0, 6) for _ in range(self.below(5))])


def generate(chooser, max_stmts=18, avoid=None, die=False):
    """(source, args) of one program; ``avoid``: the KNOWN_BUGS keys not to
    trigger (default: from ``PYDRON_FUZZ_KNOWN_BUGS``); ``die``: the variant whose
    ``fz_die`` call kills its worker (run it with ``check(..., die_dir=...)``)."""
    g = Generator(chooser, max_stmts, _avoided_from_env() if avoid is None else avoid, die)
    return g.program(), g.args()


def extra_args(chooser, n):
    g = Generator(chooser)
    return [g.args() for _ in range(n)]


# ---------------------------------------------------------------------------
# Compiling a program
# ---------------------------------------------------------------------------


def build(source, name="fz", die=None):
    """Compile ``source`` into a fresh module-level namespace (whose globals are
    ``NAMESPACE``, with ``DIE`` = ``die``) and return the function ``name``.  The source is registered
    in ``linecache`` so that tracebacks show its lines.

    With ``PYDRON_FUZZ_SAVE_DIR`` set, the source is also written there as
    ``pydron-fuzz-<digest>.py`` first, so that a program that crashes the
    interpreter (whose faulthandler dump names ``<pydron-fuzz-<digest>>``)
    can be found."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<pydron-fuzz-{digest}>"
    save_dir = os.environ.get("PYDRON_FUZZ_SAVE_DIR")
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        with open(os.path.join(save_dir, f"pydron-fuzz-{digest}.py"), "w") as f:
            f.write(source)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = dict(NAMESPACE)
    ns["__name__"] = "fuzzgen_program"
    ns["DIE"] = die
    exec(compile(source, filename, "exec"), ns)
    return ns[name]


class ProgramHung(AssertionError):
    pass


def check(source, args_list, timeout=30.0, die_dir=None):
    """Compare plain vs ``pydron.schedule`` runs of the program ``source`` on each
    argument tuple in ``args_list`` (tests/difftest.py).  Raises AssertionError
    with the source on any difference.

    With ``die_dir``, each scheduled run gets a fresh marker file there for its
    ``fz_die`` call (the first run of that task kills its worker); a program
    whose plain run calls ``fz_die`` must kill a worker in its scheduled run.
    The result is the number of runs in which a worker was killed that way
    (else None).

    Each program runs in a fresh thread, so that a scheduled run that leaves an
    exception set in the thread state (``sys.exc_info()``, which would become
    the ``__context__`` of every later exception) is reported here and cannot
    disturb later programs; a run that does not finish in ``timeout`` seconds
    is reported as hung."""
    import threading

    from difftest import assert_equivalent, get_schedule

    fn = build(source)
    errors = []
    deaths = []

    def run():
        try:
            for args in args_list:
                if die_dir is None:
                    assert_equivalent(fn, *args)
                else:
                    marker = os.path.join(die_dir, f"die-{uuid.uuid4().hex}")
                    assert_equivalent(build(source, die=(marker, os.getpid())), *args)
                    deaths.append(os.path.exists(marker))
                    if os.path.exists(marker + ".reached") and not deaths[-1]:
                        raise AssertionError(f"fz{args!r}: the plain run calls fz_die, but no "
                                             f"worker died in the scheduled run")
                if sys.exc_info()[0] is not None:
                    raise AssertionError(
                        f"fz{args!r}: after the scheduled run, sys.exc_info() is still "
                        f"{sys.exc_info()[1]!r} in the caller")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    get_schedule()  # import pydron in this thread
    t = threading.Thread(target=run, name="pydron-fuzz-program", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise ProgramHung(f"program did not finish in {timeout} s:\n{source}\nargs: {args_list}")
    if errors:
        exc = errors[0]
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}\n--- program (args {args_list}) ---\n{source}") from None
        raise exc
    return sum(deaths) if die_dir is not None else None


def _main(argv):
    import argparse
    import ast

    p = argparse.ArgumentParser(
        prog="python tests/fuzzgen.py",
        description="Print a generated program, or compare its plain and scheduled runs.")
    p.add_argument("index", type=int, nargs="?", default=0,
                   help="program number (of RandomChooser seed SEED)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", help="take the program from this file instead (a def fz(a, b, xs))")
    p.add_argument("--args", help="argument tuple, e.g. '(1, 2, [3])'")
    p.add_argument("--run", action="store_true", help="compare plain vs scheduled runs")
    p.add_argument("--known-bugs", action="store_true",
                   help="also generate the triggers of KNOWN_BUGS")
    p.add_argument("--die", action="store_true",
                   help="the worker-death variant (program INDEX of test_fuzz_worker_deaths)")
    ns = p.parse_args(argv)
    if ns.file:
        with open(ns.file) as f:
            src = f.read()
        args = (0, 0, [])
    else:
        src, args = generate(RandomChooser(f"{ns.seed}:{'die:' if ns.die else ''}{ns.index}"),
                             avoid=set() if ns.known_bugs else None, die=ns.die)
    if ns.args:
        args = ast.literal_eval(ns.args)
    print(src)
    print("# args:", args)
    if ns.run or ns.file:
        if ns.die:
            import tempfile

            with tempfile.TemporaryDirectory() as die_dir:
                deaths = check(src, [args], die_dir=die_dir)
            print(f"# equivalent ({deaths} worker killed)")
        else:
            check(src, [args])
            print("# equivalent")


if __name__ == "__main__":
    _main(sys.argv[1:])
