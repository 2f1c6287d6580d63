"""Neptune's errors in the sidecar: reading them off an answer frame, and acting on them.

The rules are the core's (`gremlinlb.core.neptune_errors`): a `ConcurrentModificationException`
is retried on the writer after a jittered exponential backoff, within the request's attempt
limit and the extra-request budget; a write answered `ReadOnlyViolationException` is held
while the sidecar asks for a new list (`Proxy.refresh_topology`: NeptuneTopology.refresh_now
reads the cluster at once; a sidecar whose list is pushed reports the suspected failover to the
operator and waits for its next push, failover.py) and goes, once, to the writer the new list
names, before the request's deadline. Otherwise the client gets Neptune's own answer, held by
the attempt (`Exchange.held`), unchanged. The
attempt that got the answer already reported it to the core as OVERLOADED: no evidence
against its host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
from typing import TYPE_CHECKING

from gremlinlb.sidecar.frames import GRAPHBINARY_VERSION, Channel, Format
from gremlinlb.sidecar.metrics import NEPTUNE_CONFLICT, NEPTUNE_READ_ONLY

from gremlinlb.core import Outcome
from gremlinlb.core.neptune_errors import (
    REROUTE_RECHECK,
    NeptuneVerdict,
    conflict_backoff,
    new_writer,
)

if TYPE_CHECKING:
    from gremlinlb.sidecar.exchange import Attempt, Exchange
    from gremlinlb.sidecar.proxy import Proxy

log = logging.getLogger(__name__)

_INT32 = struct.Struct(">i")
_MAX_ERROR_FRAME = 64 * 1024  # Neptune's error answers are small; a larger frame is not one


def status_message(frame: bytes | str, channel: Channel) -> str | None:
    """The status message of a final answer frame, read by its published layout (GraphBinary)
    or as JSON (GraphSON); None when it has none or the frame is not an error's size."""
    if len(frame) > _MAX_ERROR_FRAME:
        return None
    try:
        if channel.format is Format.GRAPHBINARY:
            if not isinstance(frame, bytes) or frame[0] != GRAPHBINARY_VERSION:
                return None
            at = 6 if frame[1] == 0x01 else 22  # after the status code (request id null or not)
            if frame[at] != 0x00:
                return None  # null message
            (length,) = _INT32.unpack_from(frame, at + 1)
            return frame[at + 5 : at + 5 + length].decode("utf-8")
        body = json.loads(frame)
        message = body["status"]["message"]
        return message if isinstance(message, str) else None
    except (IndexError, KeyError, TypeError, ValueError, struct.error):
        return None


class NeptuneRetrier:
    """The proxy's retries after Neptune's own errors (see the module's docstring)."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._random = random.Random()

    def handles(self, attempt: Attempt) -> bool:
        """Take over the end of `attempt` if Neptune's answer has a rule here; False: the
        generic retry rules apply."""
        verdict = attempt.neptune
        exchange = attempt.exchange
        if verdict is NeptuneVerdict.CONFLICT:
            self._after_conflict(exchange)
            return True
        if verdict is NeptuneVerdict.READ_ONLY and not exchange.read_only:
            self._after_read_only(exchange, attempt)
            return True
        return False

    def _deadline(self, exchange: Exchange) -> float:
        return exchange.sent_at + self._proxy.balancer.settings.request_timeout

    def _after_conflict(self, exchange: Exchange) -> None:
        proxy = self._proxy
        if (
            not exchange.budget.allows_another(Outcome.OVERLOADED, exchange.received())
            or not proxy.balancer.try_spend_extra()
        ):
            proxy._give_up(exchange, exchange.last_error)  # Neptune's CME, unchanged
            return
        retry = len(exchange.sent_attempts)
        delay = conflict_backoff(retry, self._random.random())
        if time.monotonic() + delay >= self._deadline(exchange):
            proxy._give_up(exchange, exchange.last_error)
            return
        proxy.metrics.retries.labels(NEPTUNE_CONFLICT).inc()
        proxy._spawn(exchange, proxy._guard(exchange, self._resend_after(exchange, delay)))

    async def _resend_after(self, exchange: Exchange, delay: float) -> None:
        await asyncio.sleep(delay)
        if exchange.ended or exchange.replied:
            return
        self._proxy.resender.arm_deadline(exchange)
        self._proxy._continue(exchange)  # the writer again: it is not in `tried`

    def _after_read_only(self, exchange: Exchange, attempt: Attempt) -> None:
        proxy = self._proxy
        refresh = proxy.refresh_topology
        if refresh is None or exchange.rerouted:
            proxy._give_up(exchange, exchange.last_error)  # Neptune's answer, unchanged
            return
        if not exchange.budget.allows_another(Outcome.OVERLOADED, exchange.received()):
            proxy._give_up(exchange, exchange.last_error)
            return
        exchange.rerouted = True
        proxy._spawn(exchange, proxy._guard(exchange, self._reroute(exchange, attempt)))

    async def _reroute(self, exchange: Exchange, attempt: Attempt) -> None:
        """Until the topology names another writer, ask for a new list (read the cluster, or
        wait for a pushed one) and look again; then send the write there. Neptune's answer goes
        back if none is named before the deadline."""
        proxy = self._proxy
        refresh = proxy.refresh_topology
        assert refresh is not None
        refused = attempt.endpoint
        deadline = self._deadline(exchange)
        asked = False  # a new list was asked for since the last look
        while True:
            writer = new_writer(refused, proxy.balancer.endpoints())
            if writer is not None:
                log.info(
                    "a write was refused by %s (ReadOnlyViolationException): re-sent to %s",
                    refused.address,
                    writer.address,
                )
                proxy.metrics.retries.labels(NEPTUNE_READ_ONLY).inc()
                exchange.tried.append(refused)
                proxy.resender.arm_deadline(exchange)
                proxy._continue(exchange)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                proxy._give_up(exchange, exchange.last_error)
                return
            if asked:
                await asyncio.sleep(min(REROUTE_RECHECK, left))
                asked = False
                continue
            try:
                async with asyncio.timeout(left):
                    await refresh()
            except TimeoutError:
                pass  # the deadline: the next look gives up unless a writer was named
            if exchange.ended or exchange.replied:
                return
            asked = True
