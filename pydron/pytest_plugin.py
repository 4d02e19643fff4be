"""pytest plugin (entry point ``pytest11: pydron``): pydron's workers inside a test run.

Options ``--pydron-tx``, ``--pydron-conf``, ini ``pydron_tx`` choose the workers;
``--pydron=sequential|check`` how schedule calls run. Under pytest-xdist the workers
are the whole run's: the controller shares them out among its xdist workers through
``workerinput``. Fixtures ``pydron_pool`` and ``pydron_tx``, marker ``pydron``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pydron import pytest_check, pytest_share, scheduling
from pydron.config import CONF_VAR, SHARE_VAR, TX_VAR, retries, worker_specs
from pydron.errors import ConfigError
from pydron.remote import pool as pool_module

_INPUT_KEY = "pydron"   # workerinput: this xdist worker's variables; workeroutput: its counts
_MARKER_ARGS = ("tx", "mode")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pydron", "pydron workers")
    group.addoption(
        "--pydron-tx", action="append", default=[], metavar="SPEC", dest="pydron_tx",
        help="pydron workers in pytest-xdist --tx syntax, e.g. 2*popen or "
        "ssh=user@host//python=python3 (repeatable; as `python -m pydron run --tx`)")
    group.addoption(
        "--pydron-conf", default=None, metavar="PATH", dest="pydron_conf",
        help="the pydron.conf to use (instead of PYDRON_CONF and the usual search)")
    group.addoption(
        "--pydron", default="parallel", choices=pytest_check.MODES, dest="pydron_mode",
        help="parallel: schedule functions run as usual; sequential: plainly; check: both "
        "ways, and a test fails where they differ (default: parallel)")
    parser.addini("pydron_tx", type="linelist", default=[],
                  help="pydron workers, one --tx spec a line (when no --pydron-tx or "
                  "--pydron-conf is given and PYDRON_TX and PYDRON_CONF are not set)")


class _State:
    """What pytest_configure decided for this process, undone in pytest_unconfigure."""

    def __init__(self) -> None:
        self.source: pytest_share.Source | None = None
        self.gateways: list[Any] = []
        self.nodes = 0                      # xdist workers sharing the gateways (0: no xdist)
        self.shares: list[list[int]] = []
        self.saved_environ: dict[str, str | None] = {}
        self.saved_runner: Any = None
        self.remote_counts: dict[str, Any] = {"deaths": [], "retried": [], "checked": 0, "differed": 0}


_state_key = pytest.StashKey[_State]()


def _set_environ(state: _State, changes: dict[str, str | None]) -> None:
    for name, value in changes.items():
        state.saved_environ.setdefault(name, os.environ.get(name))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _runner(mode: str) -> Callable[..., Any] | None:
    return {"sequential": pytest_check.run_sequential, "check": pytest_check.run_check}.get(mode)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pydron(tx=SPEC, mode=MODE): run this test with its own pydron workers "
        "(SPEC as --pydron-tx, shut down after the test) and/or in --pydron MODE")
    state = _State()
    config.stash[_state_key] = state
    state.saved_runner = scheduling.top_level_runner
    scheduling.top_level_runner = _runner(config.getoption("pydron_mode"))

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller chose our share
        if _INPUT_KEY in workerinput:
            _set_environ(state, {TX_VAR: None, CONF_VAR: None, SHARE_VAR: None})
            _set_environ(state, workerinput[_INPUT_KEY])
        return
    try:
        state.source = pytest_share.resolve(
            config.getoption("pydron_tx"), config.getoption("pydron_conf"),
            config.getini("pydron_tx"), os.environ, os.getcwd())
        pytest_share.check_tx(state.source.tx)
        state.gateways = state.source.gateways(os.environ)
    except ConfigError as exc:
        raise pytest.UsageError(f"pydron: {exc}") from None
    if state.source.explicit:
        _set_environ(state, {TX_VAR: None, CONF_VAR: None, SHARE_VAR: None})
        _set_environ(state, state.source.environ({}))
    if config.pluginmanager.hasplugin("xdist") and _distributed(config):
        from xdist.workermanage import parse_tx_spec_config

        state.nodes = len(parse_tx_spec_config(config))
        try:
            state.shares = pytest_share.share_out(state.gateways, state.nodes)
        except ValueError as exc:
            raise pytest.UsageError(f"pydron: {state.source.origin}: {exc}") from None
        config.pluginmanager.register(_XdistHooks(state), "pydron-xdist")


def _distributed(config: pytest.Config) -> bool:
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


class _XdistHooks:
    """Registered on the xdist controller only (xdist's hook names are unknown without it)."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.given = 0

    def pytest_configure_node(self, node: Any) -> None:
        specs = node.nodemanager.specs
        spec = node.gateway.spec
        index = next((k for k, s in enumerate(specs) if s is spec), None)
        if index is None:  # not one of the starting specs: share by order of arrival
            index = self.given
        self.given += 1
        share = self.state.shares[index % len(self.state.shares)]
        assert self.state.source is not None
        node.workerinput[_INPUT_KEY] = pytest_share.share_environ(
            self.state.source, self.state.gateways, share, os.environ)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        counts = getattr(node, "workeroutput", {}).get(_INPUT_KEY)
        if counts:
            mine = self.state.remote_counts
            mine["deaths"] += [f"{node.gateway.id}: {label}" for label in counts["deaths"]]
            mine["retried"] += counts["retried"]
            mine["checked"] += counts["checked"]
            mine["differed"] += counts["differed"]


def _local_counts() -> dict[str, Any]:
    return {"deaths": list(pool_module.DEATHS), "retried": list(pool_module.RETRIED),
            "checked": pytest_check.Counts.checked, "differed": pytest_check.Counts.differed}


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_INPUT_KEY] = _local_counts()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_state_key, None)
    if state is None:
        return
    pool_module.shutdown()
    scheduling.top_level_runner = state.saved_runner
    for name, value in state.saved_environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# ---------------------------------------------------------------- reporting


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(_state_key, None)
    if state is None or state.source is None:
        return []
    gateways = state.gateways
    lines = [f"pydron: {len(gateways)} worker(s) from {state.source.origin}: "
             f"{pytest_share.summary(gateways)}"]
    if state.nodes:
        total = sum(len(share) for share in state.shares)
        if len(gateways) < state.nodes:
            lines.append(
                f"pydron: fewer workers ({len(gateways)}) than xdist workers ({state.nodes}): "
                f"each xdist worker gets one, {total} pydron workers in total")
        else:
            lines.append(f"pydron: shared among {state.nodes} xdist workers: " + "; ".join(
                f"gw{k}: {pytest_share.summary(gateways, share)}"
                for k, share in enumerate(state.shares)))
    mode = config.getoption("pydron_mode")
    if mode != "parallel":
        lines.append(f"pydron: --pydron={mode}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(_state_key, None)
    if state is None:
        return
    counts = _local_counts()
    remote = state.remote_counts
    deaths = counts["deaths"] + remote["deaths"]
    retried = counts["retried"] + remote["retried"]
    checked = counts["checked"] + remote["checked"]
    differed = counts["differed"] + remote["differed"]
    if deaths or retried:
        terminalreporter.write_sep("-", "pydron workers")
        terminalreporter.write_line(f"pydron: {len(deaths)} worker death(s): {', '.join(deaths)}")
        names = sorted(set(retried))
        terminalreporter.write_line(
            f"pydron: {len(retried)} task(s) run again after a death"
            + (f" ({', '.join(names)})" if names else ""))
    if config.getoption("pydron_mode") == "check":
        terminalreporter.write_line(
            f"pydron check: {checked} schedule call(s) compared, {differed} differed")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pydron_pool() -> pool_module.Pool:
    """The process's pydron pool (this xdist worker's share of the run's workers)."""
    return pool_module.get_pool()


class _OwnPools:
    """One test's own pools: each replaces the process's pool until the test ends."""

    def __init__(self) -> None:
        self.previous: pool_module.Pool | None = None
        self.current: pool_module.Pool | None = None

    def start(self, spec: str) -> pool_module.Pool:
        environ = {k: v for k, v in os.environ.items() if k not in (TX_VAR, CONF_VAR, SHARE_VAR)}
        environ[TX_VAR] = spec
        new = pool_module.Pool(worker_specs(environ), retries=retries())
        replaced = pool_module.swap_pool(new)
        if self.current is None:
            self.previous = replaced  # the run's pool (None if not started yet)
        else:
            self.current.shutdown()
        self.current = new
        return new

    def close(self) -> None:
        if self.current is None:
            return
        leftover = pool_module.swap_pool(self.previous)
        self.current.shutdown()
        if leftover is not None and leftover is not self.current:
            leftover.shutdown()  # started by get_pool() after every worker of ours died


@pytest.fixture
def pydron_tx() -> Iterator[Callable[[str], pool_module.Pool]]:
    """``pydron_tx("2*popen")`` starts workers for this test alone (the spec as --pydron-tx)
    and returns their pool; at the end of the test they stop and the run's pool is back."""
    pools = _OwnPools()
    try:
        yield pools.start
    finally:
        pools.close()


@pytest.fixture(autouse=True)
def _pydron_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Applies ``@pytest.mark.pydron(tx=..., mode=...)`` around the test."""
    marker = request.node.get_closest_marker("pydron")
    if marker is None:
        yield
        return
    where = f"@pytest.mark.pydron on {request.node.nodeid}"
    if marker.args:
        pytest.fail(f"{where}: takes keyword arguments only ({', '.join(_MARKER_ARGS)})", pytrace=False)
    unknown = [key for key in marker.kwargs if key not in _MARKER_ARGS]
    if unknown:
        pytest.fail(f"{where}: unknown argument {unknown[0]!r} (known: {', '.join(_MARKER_ARGS)})",
                    pytrace=False)
    mode = marker.kwargs.get("mode")
    if mode is not None and mode not in pytest_check.MODES:
        pytest.fail(f"{where}: mode={mode!r}, expected one of {', '.join(pytest_check.MODES)}",
                    pytrace=False)
    pools = _OwnPools()
    saved_runner = scheduling.top_level_runner
    try:
        if mode is not None:
            scheduling.top_level_runner = _runner(mode)
        if marker.kwargs.get("tx") is not None:
            try:
                pools.start(marker.kwargs["tx"])
            except ConfigError as exc:
                pytest.fail(f"{where}: {exc}", pytrace=False)
        yield
    finally:
        scheduling.top_level_runner = saved_runner
        pools.close()
