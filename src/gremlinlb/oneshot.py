"""What the ping (`gremlinlb.ping`) and the status probe (`gremlinlb.status`) share.

Both are sent by the sidecar on its loop with its session and by the in-process client from
threads that have no loop (its probe and ping threads): `on_own_session` runs one such call on
a loop and an HTTP session of its own, closed afterwards. An aiohttp module, so outside the core.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")


def ssl_option(context: ssl.SSLContext | None) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=` for a host: its own TLS settings, else the default verification."""
    return context if context is not None else True


def on_own_session(call: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """`call`'s answer, from a thread without an event loop."""

    async def run() -> T:
        async with aiohttp.ClientSession() as http:
            return await call(http)

    return asyncio.run(run())
