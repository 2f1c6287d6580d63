"""The `gremlinlb` command: one entry point, one sub-command per component."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from gremlinlb import demo
from gremlinlb.devservers import cli as devservers_cli
from gremlinlb.operator import cli as operator_cli
from gremlinlb.sidecar import cli as sidecar_cli


def build_parser() -> argparse.ArgumentParser:
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    devservers_cli.register(commands)
    demo.register(commands)
    sidecar_cli.register(commands)
    operator_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("gremlinlb").setLevel(args.log_level.upper())
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
