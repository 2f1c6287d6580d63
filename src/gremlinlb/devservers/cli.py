"""``gremlinlb dev-servers ...``: fetch, start, inspect and stop local Gremlin Servers.

stdout carries only machine-readable results (one ``host:port`` per line for ``up``); progress
and errors go to the log on stderr, so ``$(gremlinlb dev-servers up --detach)`` just works.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from gremlinlb.devservers.errors import DevServerError
from gremlinlb.devservers.faults import FaultProxy, FaultProxyError
from gremlinlb.devservers.fetch import DEFAULT_TINKERPOP_VERSION, fetch_runtime
from gremlinlb.devservers.fleet import DEFAULT_BASE_PORT, DEFAULT_START_TIMEOUT, Fleet
from gremlinlb.devservers.janusgraph import DEFAULT_JANUSGRAPH_VERSION, fetch_janusgraph
from gremlinlb.devservers.server import build_class_archive, ensure_runtime
from gremlinlb.devservers.state import (
    RecordedServer,
    clear_state,
    default_state_file,
    read_state,
    write_state,
)

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``dev-servers`` command group to the top-level ``gremlinlb`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dev-servers",
        help="run local Apache TinkerPop Gremlin Servers for demos and tests",
        description="Fetch, start, inspect and stop local Gremlin Servers (127.0.0.1 only).",
    )
    commands = parser.add_subparsers(dest="dev_servers_command", required=True, metavar="ACTION")

    fetch = commands.add_parser("fetch", help="download Gremlin Server jars into the cache")
    fetch.add_argument(
        "--version",
        default=None,
        help=f"TinkerPop version (default {DEFAULT_TINKERPOP_VERSION}); with --janusgraph, "
        f"the JanusGraph version (default {DEFAULT_JANUSGRAPH_VERSION})",
    )
    fetch.add_argument(
        "--janusgraph",
        action="store_true",
        help="fetch JanusGraph Server (in-memory storage, Lucene) instead, as the tests run it",
    )
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    fetch.add_argument(
        "--no-class-archive",
        dest="class_archive",
        action="store_false",
        help="skip building the class-data archive that speeds up JVM start-up",
    )
    fetch.set_defaults(handler=run_fetch)

    up = commands.add_parser("up", help="start N servers; print one host:port per line")
    up.add_argument("--count", type=int, default=3, help="number of servers (default 3)")
    up.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"port of the first server; the others follow (default {DEFAULT_BASE_PORT})",
    )
    up.add_argument(
        "--detach",
        action="store_true",
        help="leave the servers running and exit (stop them with `dev-servers down`)",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help="seconds to wait for all servers to answer",
    )
    _add_state_file(up)
    up.set_defaults(handler=run_up)

    down = commands.add_parser("down", help="stop the servers started with `up --detach`")
    _add_state_file(down)
    down.set_defaults(handler=run_down)

    status = commands.add_parser("status", help="show the detached servers and whether they answer")
    _add_state_file(status)
    status.set_defaults(handler=run_status)

    proxy = commands.add_parser(
        "fault-proxy",
        help="a TCP proxy in front of one local server that makes it slow or a black hole",
        description="Relay 127.0.0.1:PORT to UPSTREAM (a loopback host:port) with a gray failure: "
        "answers delayed, connections swallowed, or idle connections closed. Prints its "
        "address, runs until Ctrl-C.",
    )
    proxy.add_argument("upstream", help="the Gremlin Server's host:port (loopback only)")
    proxy.add_argument("--port", type=int, default=0, help="port to listen on (default: any)")
    proxy.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="SEC",
        help="pass the server's bytes on this many seconds late (probes pass, just slowly)",
    )
    proxy.add_argument(
        "--black-hole",
        action="store_true",
        help="accept connections and never answer (the WebSocket upgrade never completes)",
    )
    proxy.add_argument(
        "--idle-close",
        type=float,
        default=None,
        metavar="SEC",
        help="close connections with no traffic either way for this many seconds",
    )
    proxy.set_defaults(handler=run_fault_proxy)


def _add_state_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="where detached servers are recorded "
        "(default $GREMLINLB_CACHE/dev-servers/state.json)",
    )


def _state_file(args: argparse.Namespace) -> Path:
    path: Path | None = args.state_file
    return path.resolve() if path is not None else default_state_file()


def _quiet_driver_logs() -> None:
    """gremlinpython logs every connection at INFO; readiness polling would flood stderr."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("gremlin_python").setLevel(logging.WARNING)


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_fetch(args: argparse.Namespace) -> int:
    _quiet_driver_logs()
    try:
        if args.janusgraph:
            runtime = fetch_janusgraph(args.version or DEFAULT_JANUSGRAPH_VERSION, force=args.force)
            _emit(str(runtime.lib_dir))
            return 0
        runtime = fetch_runtime(args.version or DEFAULT_TINKERPOP_VERSION, force=args.force)
        if args.class_archive:
            if args.force:
                shutil.rmtree(runtime.home / "cds", ignore_errors=True)
            build_class_archive(runtime)
    except DevServerError as exc:
        log.error("%s", exc)
        return 1
    _emit(str(runtime.lib_dir))
    return 0


def run_up(args: argparse.Namespace) -> int:
    _quiet_driver_logs()
    if args.count < 1:
        log.error("--count must be at least 1")
        return 2
    state_file = _state_file(args)
    if args.detach:
        running = [r for r in read_state(state_file) if r.handle().is_running()]
        if running:
            log.error(
                "detached servers are already running (%s); run `gremlinlb dev-servers down` first",
                ", ".join(r.address for r in running),
            )
            return 1
    run_dir = state_file.parent / "run" if args.detach else None
    try:
        fleet = Fleet(
            args.count,
            base_port=args.base_port,
            run_dir=run_dir,
            runtime=ensure_runtime(),
            start_timeout=args.timeout,
        )
        fleet.start()
    except DevServerError as exc:
        log.error("%s", exc)
        return 1
    if args.detach:
        write_state(state_file, [RecordedServer.of(server) for server in fleet])
        for address in fleet.addresses:
            _emit(address)
        log.info("servers left running; stop them with `gremlinlb dev-servers down`")
        return 0
    for address in fleet.addresses:
        _emit(address)
    _serve_until_signalled(fleet)
    return 0


def _serve_until_signalled(fleet: Fleet) -> None:
    """Keep the fleet up until SIGINT/SIGTERM, then stop every server."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    reported: set[str] = set()
    try:
        log.info("serving %d Gremlin Servers; Ctrl-C stops them", len(fleet))
        while not stop.wait(1.0):
            for server in fleet:
                if not server.is_running() and server.address not in reported:
                    reported.add(server.address)
                    log.warning("%s exited; log tail:\n%s", server.address, server.log_tail())
    finally:
        log.info("stopping %d Gremlin Servers", len(fleet))
        fleet.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _recorded_servers(args: argparse.Namespace) -> tuple[Path, list[RecordedServer], int | None]:
    """The detached servers on record, or the exit code when there is nothing to act on."""
    _quiet_driver_logs()
    state_file = _state_file(args)
    try:
        recorded = read_state(state_file)
    except ValueError as exc:
        log.error("%s", exc)
        return state_file, [], 1
    if not recorded:
        log.info("no detached dev servers recorded in %s", state_file)
        return state_file, [], 0
    return state_file, recorded, None


def run_down(args: argparse.Namespace) -> int:
    state_file, recorded, code = _recorded_servers(args)
    if code is not None:
        return code
    handles = [(entry, entry.handle()) for entry in recorded]
    running = [(entry, server) for entry, server in handles if server.is_running()]
    for _, server in running:  # SIGTERM all first: they shut down in parallel
        server.terminate()
    for entry, server in running:
        server.wait_stopped()
        _emit(f"stopped {entry.address} (pid {entry.pid})")
    for entry, server in handles:
        if (entry, server) not in running:
            _emit(f"{entry.address} was not running (pid {entry.pid})")
    clear_state(state_file)
    return 0


def run_status(args: argparse.Namespace) -> int:
    _, recorded, code = _recorded_servers(args)
    if code is not None:
        return code
    healthy = True
    for entry in recorded:
        server = entry.handle()
        if not server.is_running():
            condition = "stopped"
        elif server.is_paused():
            condition = "paused"
        elif server.answers(timeout=5.0):
            condition = "answering"
        else:
            condition = "running-not-answering"
        healthy = healthy and condition == "answering"
        _emit(f"{entry.address} pid={entry.pid} {condition} log={entry.log}")
    return 0 if healthy else 1


def run_fault_proxy(args: argparse.Namespace) -> int:
    try:
        proxy = FaultProxy(
            args.upstream,
            port=args.port,
            answer_delay=args.answer_delay,
            black_hole=args.black_hole,
            idle_close=args.idle_close,
        )
        proxy.start_in_thread()
    except (FaultProxyError, OSError) as exc:
        log.error("%s", exc)
        return 1
    _emit(proxy.address)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("relaying %s -> %s; Ctrl-C stops it", proxy.address, args.upstream)
        stop.wait()
    finally:
        proxy.stop_thread()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
