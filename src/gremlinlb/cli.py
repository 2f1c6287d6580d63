"""The `gremlinlb` command: one entry point, one sub-command per component.

Each sub-command's module is imported only when that sub-command runs: the sidecar, which every
pod runs, must not carry the operator's kopf and kubernetes (or the PKI's cryptography) in its
memory. The others are listed in `gremlinlb --help` from the table below.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

# name -> (module with register(commands), one-line help shown when it is not the one running)
COMMANDS: dict[str, tuple[str, str]] = {
    "dev-servers": (
        "gremlinlb.devservers.cli",
        "run local Apache TinkerPop Gremlin Servers for demos and tests",
    ),
    "demo": (
        "gremlinlb.demo",
        "show balancing, failover, recovery, scale-out and a hung server on local servers",
    ),
    "sidecar": (
        "gremlinlb.sidecar.cli",
        "serve ws://127.0.0.1:8182/gremlin and balance every request over Gremlin Servers",
    ),
    "operator": (
        "gremlinlb.operator.cli",
        "run the Kubernetes operator (GremlinCluster CRD, host list pushes, injection)",
    ),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line, if any (global options come first)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(list(argv))
    command: str | None = known.command
    return command


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the sub-command named in `argv` is imported (all of them if None)."""
    parser = argparse.ArgumentParser(
        prog="gremlinlb",
        description="Per-request load balancing for Apache TinkerPop Gremlin Servers.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="level of gremlinlb's own log lines (DEBUG, INFO, WARNING, ERROR); "
        "libraries log at WARNING and above",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        help="print the version and which build runs: compiled with mypyc (which modules) or "
        "pure Python (GREMLINLB_PURE=1 forces pure)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else _chosen(argv)
    for name, (module, summary) in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(module).register(commands)
        else:
            commands.add_parser(name, help=summary, add_help=False)
    return parser


class _Version(argparse.Action):
    """`--version`: imports the compiled modules only when asked (not for every command)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from gremlinlb import __version__, native

        print(f"gremlinlb {__version__}, {native.describe()}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("gremlinlb").setLevel(args.log_level.upper())
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
