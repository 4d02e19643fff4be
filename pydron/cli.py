"""The `pydron` command line: `python -m pydron run [OPTIONS] script.py [args...]`, `tx`, ...

Each subcommand is a `(parser, handler)` pair registered in `build_parser`, so more
can be added without touching the others.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Sequence

from pydron.config import (
    RETRIES_VAR, TIMEOUT_VAR, TX_VAR, check_tx_security, parse_tx, retries, timeout, worker_specs,
)
from pydron.errors import ConfigError
from pydron.version import version


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per subcommand (handler in `func`)."""
    parser = argparse.ArgumentParser(
        prog="pydron", description="Run sequential Python in parallel on many workers."
    )
    parser.add_argument("--version", action="version", version=f"pydron {version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a script as __main__ with pydron workers",
        description="Run SCRIPT (or -m MODULE) as __main__, with sys.argv = [SCRIPT, *ARGS], "
        "on the given workers. A traceback shows the script's frames only.",
    )
    run.add_argument(
        "--tx", action="append", default=[], metavar="SPEC",
        help="workers in pytest-xdist --tx syntax, e.g. 4*popen or "
        "ssh=user@host//python=python3 (repeatable; default: PYDRON_TX, "
        "then pydron.conf, then all local cores); socket= specs only with PYDRON_INSECURE=1",
    )
    run.add_argument(
        "--retries", type=int, default=None, metavar="N",
        help="how many workers one task may take down before it fails with WorkerDied "
        "(default: PYDRON_RETRIES, then pydron.conf's retries, then 3)",
    )
    run.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="stop any functional call that runs longer and raise TimeoutError "
        "(default: PYDRON_TIMEOUT, then pydron.conf's timeout, then no limit)",
    )
    run.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log what pydron does on stderr: -v workers starting and stopping, retries and "
        "large transfers (INFO), -vv every task as well (DEBUG)",
    )
    run.add_argument(
        "--progress", action="store_true", default=None,
        help="show the progress line even where stderr is not a terminal "
        "(default: on a terminal, unless PYDRON_PROGRESS=0)",
    )
    run.add_argument(
        "--report", metavar="FILE.html", default=None,
        help="write a run report (timeline per worker, waits, summary, task graph) to this "
        "self-contained HTML file when the script ends, and the task graph's DOT text beside it",
    )
    run.add_argument(
        "-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE [ARGS]",
        help="run a module as __main__ instead of a script, as python -m does (what follows "
        "is the module's sys.argv)",
    )
    run.add_argument("script", nargs="?", help="the Python script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    run.set_defaults(func=_run)

    explain = commands.add_parser(
        "explain",
        help="show where a schedule function still serialises, and why",
        description="Report, line by line, the sync points of MODULE:FUNCTION and which "
        "loops run their functional calls in parallel.",
    )
    explain.add_argument("target", metavar="MODULE:FUNCTION",
                         help="e.g. mypipeline:calibrate or path/to/file.py:calibrate")
    explain.set_defaults(func=_explain)

    tx = commands.add_parser(
        "tx",
        help="print the configured popen and ssh workers as pytest-xdist --tx options",
        description="Print one pytest-xdist --tx option a line for the configured workers "
        "(--tx, PYDRON_TX, then pydron.conf, then all local cores), e.g. for "
        "`pytest -d $(python -m pydron tx)`. ssh entries must use keys, not a password; "
        "cloud entries are skipped (with a message on stderr).",
    )
    tx.add_argument("--tx", action="append", default=[], metavar="SPEC",
                    help="workers as for `run --tx` (default: PYDRON_TX, then pydron.conf)")
    tx.add_argument("--ssh-config-dir", metavar="DIR", default=None,
                    help="where the ssh config files of pydron.conf's ssh entries are kept "
                    "(default: $XDG_CACHE_HOME/pydron/tx or ~/.cache/pydron/tx)")
    tx.set_defaults(func=_tx)

    cloud = commands.add_parser(
        "cloud",
        help="list or terminate the cloud nodes pydron started that are still alive",
        description="For the cloud entries of the configuration (PYDRON_CONF or pydron.conf), "
        "list the nodes pydron created that are not terminated, or terminate them.",
    )
    cloud.add_argument("action", choices=("list", "cleanup"),
                       help="list: show them; cleanup: terminate them")
    cloud.add_argument("--run", metavar="RUN_ID", default=None,
                       help="only the nodes of this run (the id in their name pydron-RUN_ID-K)")
    cloud.set_defaults(func=_cloud)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pydron` and `python -m pydron`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):  # no command: say what there is, and fail like a usage error
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pydron: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    for spec in args.tx:
        parse_tx(spec)  # raises ConfigError naming a malformed spec
        check_tx_security(spec, "--tx")  # socket= only with PYDRON_INSECURE=1
    if args.tx:
        os.environ[TX_VAR] = ";".join(args.tx)
    if args.retries is not None:
        os.environ[RETRIES_VAR] = str(args.retries)
    if args.timeout is not None:
        if not 0 < args.timeout < float("inf"):
            print(f"pydron: error: --timeout: expected a positive number of seconds, "
                  f"got {args.timeout:g}", file=sys.stderr)
            return 2
        os.environ[TIMEOUT_VAR] = str(args.timeout)
    worker_specs()  # report a bad PYDRON_TX or pydron.conf now, not mid-script
    retries()
    timeout()
    if args.report and not args.report.endswith((".html", ".htm")):
        return _error(f"--report {args.report!r}: the report is an HTML file (e.g. --report run.html)")
    if args.module is not None:
        if not args.module:
            return _error("run -m: expected a module name (python -m pydron run -m MODULE [ARGS])")
        module, argv = args.module[0], args.module[1:]
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            found, why = None, f": {exc}"
        else:
            why = ""
        if found is None:
            return _error(f"run -m: no module named {module!r}{why}")
        target, path0 = module, os.getcwd()  # as `python -m`: the current directory comes first
    elif args.script is None:
        return _error("run: expected a script (run SCRIPT [ARGS]) or a module (run -m MODULE [ARGS])")
    elif not os.path.isfile(args.script):
        return _error(f"can't open file {args.script!r}")
    else:
        target, argv = args.script, args.args
        path0 = os.path.dirname(os.path.abspath(args.script))  # as `python script.py`
    if args.verbose:
        from pydron.observe import logs

        logs.enable(args.verbose)
    if args.progress:
        from pydron.observe import progress

        progress.set_default(True)
    recording: contextlib.AbstractContextManager = contextlib.nullcontext()
    if args.report:
        from pydron.observe.report import report

        recording = report(args.report)

    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [target, *argv]
    sys.path.insert(0, path0)
    try:
        with recording:
            if args.module is not None:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - shown as Python shows it, without our frames
        seen: set[int] = set()
        error: BaseException | None = exc
        while error is not None and id(error) not in seen:  # the chain too (raise ... from ...)
            seen.add(id(error))
            error.__traceback__ = _user_traceback(error.__traceback__)
            error = error.__cause__ or error.__context__
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


# Frames that stand between `python -m pydron run` and the user's code.
_LAUNCH_FILES = {os.path.abspath(runpy.__file__), os.path.abspath(contextlib.__file__)}
_PYDRON_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of the CLI, runpy and pydron itself: the user's frames only."""
    kept = []
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        path = os.path.abspath(name)
        if not (path in _LAUNCH_FILES or path.startswith(_PYDRON_DIR) or name.startswith("<frozen ")):
            kept.append(tb)
        tb = tb.tb_next
    result = None
    for entry in reversed(kept):
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result


def _error(message: str) -> int:
    print(f"pydron: error: {message}", file=sys.stderr)
    return 2


def _explain(args: argparse.Namespace) -> int:
    import importlib

    from pydron.tracer.explain import explain

    module_name, _, function_name = args.target.rpartition(":")
    if not module_name or not function_name:
        print(f"pydron: error: expected MODULE:FUNCTION, got {args.target!r}", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())
    try:
        if module_name.endswith(".py"):
            from pydron.scriptload import load

            namespace, notes = load(module_name)
            for note in notes:
                print(f"pydron: note: {note}", file=sys.stderr)
        else:
            namespace = vars(importlib.import_module(module_name))
    except (ImportError, OSError, SyntaxError) as exc:
        print(f"pydron: error: cannot load {module_name}: {exc}", file=sys.stderr)
        return 2
    target: object = namespace
    for part in function_name.split("."):
        target = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
        if target is None:
            print(f"pydron: error: {module_name} has no function {function_name!r}", file=sys.stderr)
            return 2
    try:
        print(explain(target))
    except TypeError as exc:
        print(f"pydron: error: {module_name}:{function_name}: {exc}", file=sys.stderr)
        return 2
    return 0


def _tx(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pydron.txlines import default_ssh_config_dir, tx_lines

    for spec in args.tx:
        parse_tx(spec)  # raises ConfigError naming a malformed spec
    environ = dict(os.environ)
    if args.tx:
        environ[TX_VAR] = ";".join(args.tx)
    directory = Path(args.ssh_config_dir) if args.ssh_config_dir else default_ssh_config_dir()
    lines, skipped = tx_lines(worker_specs(environ), directory)
    for message in skipped:
        print(f"pydron: {message}", file=sys.stderr)
    if not lines:
        print("pydron: error: no popen or ssh workers configured", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _cloud(args: argparse.Namespace) -> int:
    from pydron.config import find_config_file, load_config
    from pydron.remote import cloud

    path = find_config_file()
    if path is None:
        print("pydron: error: no pydron.conf found (set PYDRON_CONF)", file=sys.stderr)
        return 2
    clusters = []
    for spec in load_config(path):
        cluster = getattr(spec, "cluster", None)
        if isinstance(cluster, cloud.Cluster) and cluster not in clusters:
            clusters.append(cluster)
    if not clusters:
        print(f"{path}: no cloud entries")
        return 0
    status = 0
    for cluster in clusters:
        where = f"{cluster.settings.name} ({cluster.settings.provider})"
        try:
            nodes = [node for node in cloud.alive_nodes(cluster)
                     if args.run is None or cloud.node_run(node) == args.run]
        except Exception as exc:  # noqa: BLE001 - one entry's provider failing is reported
            print(f"pydron: error: {where}: cannot list nodes: {cluster.scrub_exception(exc)}",
                  file=sys.stderr)
            status = 1
            continue
        for node in nodes:
            addresses = ",".join(list(node.public_ips or []) + list(node.private_ips or []))
            line = (f"{where}\t{node.id}\t{node.name}\t{node.state}\t"
                    f"run={cloud.node_run(node)}\t{addresses or '-'}")
            if args.action == "list":
                print(line)
                continue
            cause = cloud.terminate_node(cluster.driver(), node, cluster.scrub_exception)
            if cause is None:
                print(f"terminated\t{line}")
            else:
                print(f"pydron: error: {where}: node {node.id} ({node.name}) could not be "
                      f"terminated: {cause}", file=sys.stderr)
                status = 1
        if not nodes:
            print(f"{where}\tno pydron nodes alive")
    return status
