"""Talk to one Gremlin Server with gremlinpython, with a hard time limit.

gremlinpython blocks without a deadline while connecting (its aiohttp session allows 300 s), and a
paused server accepts TCP connections without ever answering. Each call therefore runs in its own
daemon thread with its own single-connection DriverRemoteConnection; the caller waits at most
``timeout`` seconds. A call that times out keeps its daemon thread until the driver's own read
timeout (or the WebSocket handshake, which gremlinpython does not bound) gives up, then closes its
connection.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A gremlinpython GraphTraversalSource (untyped upstream).
TraversalSource = Any


def ws_url(address: str) -> str:
    """``host:port`` -> the server's WebSocket endpoint."""
    return f"ws://{address}/gremlin"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port (cheap pre-check before a driver)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def with_traversal_source(address: str, work: Callable[[TraversalSource], T], timeout: float) -> T:
    """Run ``work(g)`` against the server at ``address``; raise TimeoutError after ``timeout`` s.

    Any error gremlinpython raises (connection refused, server error) is re-raised as is.
    """
    result: Future[T] = Future()

    def run() -> None:
        connection: Any = None
        try:
            # read/write timeouts bound the driver's executor thread too: it is joined at
            # interpreter exit, so an unbounded read from a paused server would hang the exit.
            connection = DriverRemoteConnection(
                ws_url(address), "g", pool_size=1, read_timeout=timeout, write_timeout=timeout
            )
            g = traversal().with_(connection)
            outcome = work(g)
            if not result.done():
                result.set_result(outcome)
        except BaseException as exc:
            if not result.done():
                result.set_exception(exc)
        finally:
            if connection is not None:
                try:
                    connection.close()
                except Exception:
                    log.debug(
                        "closing gremlinpython connection to %s failed", address, exc_info=True
                    )

    worker = threading.Thread(target=run, name=f"gremlin-probe-{address}", daemon=True)
    worker.start()
    try:
        return result.result(timeout=timeout)
    except FutureTimeout:
        raise TimeoutError(f"{address} did not answer within {timeout:.1f} s") from None


def inject_one(address: str, timeout: float = 5.0) -> list[Any]:
    """``g.inject(1).to_list()``: the smallest traversal proving the server evaluates bytecode."""
    answer: list[Any] = with_traversal_source(address, lambda g: g.inject(1).to_list(), timeout)
    return answer


def answers(address: str, timeout: float = 5.0) -> bool:
    """True when the server at ``address`` answers a traversal within ``timeout`` seconds."""
    try:
        return inject_one(address, timeout) == [1]
    except Exception as exc:
        log.debug("%s does not answer: %s", address, exc)
        return False


def drop_all(address: str, timeout: float = 10.0) -> None:
    """Remove every vertex (and so every edge); sessionless requests auto-commit the drop."""
    with_traversal_source(address, lambda g: g.V().drop().iterate(), timeout)


def vertex_count(address: str, timeout: float = 5.0) -> int:
    count: int = with_traversal_source(address, lambda g: g.V().count().next(), timeout)
    return count
