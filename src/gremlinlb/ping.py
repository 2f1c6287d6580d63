"""The ping that tells a busy Gremlin Server from a hung one, for the sidecar and the client.

A WebSocket ping on a fresh connection of its own: Gremlin Server answers pings on its I/O
threads, so a server whose workers all run slow queries still does; a paused or dead one does
not (the rule: `gremlinlb.core.liveness`). Not a pooled or probe connection: those ping for
keepalive themselves and consume their pongs, and one busy with a request would not be read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp

from gremlinlb.oneshot import on_own_session, ssl_option

_ENDED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


async def answers_ping(
    http: aiohttp.ClientSession,
    url: str,
    budget: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """Whether the server at `url` upgrades a fresh connection and answers a ping within
    `budget` seconds (handshake included)."""
    try:
        async with (
            asyncio.timeout(budget),
            http.ws_connect(
                url,
                autoping=False,
                ssl=ssl_option(ssl_context),
                compress=0,
                headers=headers,
            ) as ws,
        ):
            await ws.ping(b"gremlinlb")
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.PONG:
                    return True
                if message.type in _ENDED:
                    return False
    except Exception:  # refused, no upgrade in time, reset: not alive
        return False


def answers_ping_now(
    url: str,
    budget: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> bool:
    """`answers_ping` from a thread without an event loop (the in-process client's probe and
    ping threads): on a loop and an HTTP session of its own, closed afterwards."""
    return on_own_session(
        lambda http: answers_ping(http, url, budget, ssl_context=ssl_context, headers=headers)
    )
