"""The status probe both adapters send: `GET /status` on a host, Amazon Neptune's instance status.

Asked after a probe's traversal passed, when `health.status_probe` is on (the rule, what its
answer makes of the probe: `gremlinlb.core.instancestatus`). Over https for a wss host, with the
host's TLS settings; signed fresh with SigV4 when sigv4 is on (Neptune with IAM auth checks
every HTTP request, not only the WebSocket upgrade), for the same host name as the upgrade.
Shared like `gremlinlb.ping`: the sidecar calls `status_problem` on its loop, the in-process
client `status_problem_now` from its probe threads.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp

from gremlinlb import sigv4
from gremlinlb.core import BalancerSettings, Endpoint
from gremlinlb.core.instancestatus import (
    MAX_BODY,
    status_failed_error,
    status_timeout_error,
    status_url,
    status_verdict,
)
from gremlinlb.oneshot import on_own_session, ssl_option

__all__ = ["status_problem", "status_problem_now"]


async def status_problem(
    http: aiohttp.ClientSession,
    endpoint: Endpoint,
    settings: BalancerSettings,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> str | None:
    """None when `endpoint`'s status answer says healthy within the status timeout; else the
    probe's error, naming the status probe and what it met."""
    health = settings.health
    path = health.status_path
    url = status_url(endpoint, path)
    try:
        signed = await sigv4.upgrade_headers_off_loop(settings.sigv4, endpoint, path)
    except sigv4.SigV4Error as error:
        return status_failed_error(path, str(error))
    sent = {**(headers or {}), **(signed or {})}
    try:
        async with (
            asyncio.timeout(health.status_timeout),
            http.get(
                url,
                headers=sent,
                ssl=ssl_option(ssl_context),
                allow_redirects=False,
            ) as response,
        ):
            body = await response.content.read(MAX_BODY)
            return status_verdict(path, response.status, body)
    except TimeoutError:
        return status_timeout_error(path, health.status_timeout)
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return status_failed_error(path, f"{type(error).__name__}: {error}")


def status_problem_now(
    endpoint: Endpoint,
    settings: BalancerSettings,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> str | None:
    """`status_problem` from a thread without an event loop (the in-process client's probe
    threads): on a loop and an HTTP session of its own, closed afterwards."""
    return on_own_session(
        lambda http: status_problem(
            http, endpoint, settings, ssl_context=ssl_context, headers=headers
        )
    )
