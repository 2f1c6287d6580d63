"""`gremlinlb sidecar`: the command a pod runs next to the application container."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from gremlinlb.sidecar import logs
from gremlinlb.sidecar.config import ConfigError, add_arguments, load_config
from gremlinlb.sidecar.hostlist import BadUpdateError
from gremlinlb.sidecar.server import Sidecar

from gremlinlb.core import GremlinLBError

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    """Add the `sidecar` sub-command to the gremlinlb command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "sidecar",
        help="serve ws://127.0.0.1:8182/gremlin and balance every request over Gremlin Servers",
        description=(
            "A local Gremlin endpoint that picks a backend per request (not per connection), "
            "with health checks, safe retries, an admin API and Prometheus metrics. Every flag "
            "can also come from an environment variable (shown in brackets) or a --config file."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def _run(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """uvloop roughly quarters the sidecar's own CPU per request; plain asyncio works too."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise ConfigError("--event-loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def run(args: argparse.Namespace) -> int:
    flags = {key: value for key, value in vars(args).items() if key not in ("handler", "config")}
    try:
        config = load_config(flags, os.environ, args.config)
    except ConfigError as error:
        print(f"gremlinlb sidecar: {error}", file=sys.stderr)
        return 2
    logs.configure(config.log_format)
    if not config.endpoints and config.state_dir is None:
        print(
            "gremlinlb sidecar: give --endpoints host:port,... (or GREMLINLB_ENDPOINTS), or a "
            "--state-dir holding a host list pushed earlier through PUT /v1/hosts",
            file=sys.stderr,
        )
        return 2
    try:
        sidecar = Sidecar(
            config, announce=lambda text: print(f"gremlinlb sidecar: {text}", flush=True)
        )
        return _run(sidecar.run_until_signalled(), config.event_loop)
    except (BadUpdateError, GremlinLBError, ConfigError) as error:
        print(f"gremlinlb sidecar: {error}", file=sys.stderr)
        return 2
    except PermissionError as error:  # the generated token's directory is not private
        print(f"gremlinlb sidecar: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # typically the port is taken
        print(f"gremlinlb sidecar: cannot start: {error}", file=sys.stderr)
        return 1
