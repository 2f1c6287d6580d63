"""Sending a read again: hedges, re-dispatches, and the deadline of a request sent more
than once.

A read still unanswered after the core's hedge delay may also go to a second host (a hedge),
and one stranded on a host that left rotation goes to another at once (a re-dispatch); the
first attempt to answer owns the request, the others are orphans (see exchange.py). Both ask
the core whether the read may be sent again (`should_hedge`, `may_resend`: never a slow query
running normally, never a write or a session) and go only to a host that answers (the core's
hedge pick), within the request's attempt budget and the extra-request budget. A request sent
more than once is answered by request_timeout from its first send (`arm_deadline`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gremlinlb.sidecar import answers
from gremlinlb.sidecar.backend import OUT_OF_ROTATION
from gremlinlb.sidecar.exchange import Exchange
from gremlinlb.sidecar.timers import TimerQueue

from gremlinlb.core import (
    BalancerClosedError,
    Endpoint,
    EventKind,
    HostEvent,
    Lease,
    NoHealthyEndpointError,
)
from gremlinlb.core.liveness import HEDGE_RECHECK_MAX

if TYPE_CHECKING:
    from gremlinlb.sidecar.proxy import Proxy

log = logging.getLogger(__name__)


class Resender:
    """The proxy's hedges and re-dispatches: when a read is sent again, and where."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._balancer = proxy.balancer
        self.hedges = TimerQueue()  # every read's hedge check; an answered read's does nothing

    def arm_hedge(self, exchange: Exchange) -> None:
        """After the hedge delay, maybe a second attempt: an entry in the one timer queue
        of every read's hedge (timers.py), not a loop timer per read."""
        if not exchange.read_only or exchange.hedge_armed or exchange.replied:
            return
        if not self._balancer.settings.hedge.enabled:
            return
        delay = self._balancer.hedge_delay()
        exchange.hedge_armed = True
        self.hedges.call_later(exchange.client.loop, delay, self._hedge_due, exchange, delay)

    def _hedge_due(self, exchange: Exchange, waited: float) -> None:
        """The read has no answer frame after the hedge delay: send it to a second host if
        the core says its host is not serving and the budgets allow. Not yet: asked again
        after twice the wait (the core judges a quiet host by its probe, seconds later), at
        most every HEDGE_RECHECK_MAX seconds."""
        if exchange.ended or exchange.forwarded or len(exchange.live) != 1:
            return
        if exchange.client.closed:
            return  # nobody to answer faster
        first = exchange.live[0]
        if not exchange.budget.allows_resend(exchange.received()):
            return
        check_alive = self._proxy.check_alive
        if not self._balancer.should_hedge(first.lease, pings=check_alive is not None):
            if check_alive is not None and self._balancer.is_quiet(first.lease):
                check_alive(first.endpoint)  # hung or busy: its answer tells
            later = min(2 * waited, HEDGE_RECHECK_MAX)
            self.hedges.call_later(exchange.client.loop, later, self._hedge_due, exchange, later)
            return
        if not self._balancer.try_spend_extra():
            return
        exclude = [first.endpoint, *exchange.tried]
        try:
            lease = self._balancer.acquire(
                len(exchange.request.frame),
                exclude,
                hedge=True,
                source=exchange.source,
                write=False,
            )
        except (NoHealthyEndpointError, BalancerClosedError):
            return
        assert isinstance(lease, Lease)  # a hedge never waits
        exchange.budget.resend()
        self.arm_deadline(exchange)
        log.debug("hedging a read of %s away from %s", exchange.client.peer, first.endpoint)
        self._proxy.send_again(exchange, lease)

    def on_host_event(self, event: HostEvent) -> None:
        """A host left rotation (ejected or down): reads stranded there that forwarded nothing
        go to another host at once; the old attempt's answer is dropped when it arrives. Only
        within the request's attempt budget (once per read, see AttemptLimit) and the
        extra-request budget, and never a read that ran normally there (a slow query: see
        Balancer.may_resend)."""
        if event.kind is not EventKind.STATE_CHANGED or event.state not in OUT_OF_ROTATION:
            return
        for exchange in list(self._proxy.exchanges):
            if not exchange.read_only or exchange.forwarded or exchange.replied:
                continue
            if exchange.client.closed:
                continue  # nobody to answer: the attempt there ends on its own
            # An attempt that just ended (its failure is what changed the host's state) is
            # retried by its own end, under the retry rules.
            going = [a for a in exchange.live if not a.ended]
            if not going or any(a.endpoint != event.endpoint for a in going):
                continue  # nothing stranded there, or a hedge elsewhere carries it already
            if not exchange.budget.allows_resend(exchange.received()):
                continue  # re-sent once already, or out of attempts: the attempt there goes on
            if not all(self._balancer.may_resend(a.lease) for a in going):
                continue  # a slow query running there: re-sent, it would run twice
            acquired = self._redispatch_host(exchange, [event.endpoint, *exchange.tried])
            if acquired is None:
                continue  # no other host now: the old attempt goes on
            if not self._balancer.try_spend_extra():
                self._balancer.release(acquired)
                continue
            for stranded in exchange.live:
                stranded.orphaned = True
            exchange.live.clear()
            exchange.tried.append(event.endpoint)
            exchange.budget.resend()
            self.arm_deadline(exchange)
            self._proxy.metrics.redispatched.inc()
            self._proxy.send_again(exchange, acquired)

    def _redispatch_host(self, exchange: Exchange, exclude: list[Endpoint]) -> Lease | None:
        """Where a read stranded on a host that left rotation goes: to a host that answers,
        picked as a hedge is (and counted with the hedges), as the in-process client's
        `_redispatch` does; only when none answers, to the next in turn. With two servers
        hung, a read taken off the first one found out must not land on the second, where it
        would wait until that one is found out too. None: no other host can take it now."""
        size = len(exchange.request.frame)
        try:
            answering = self._balancer.acquire(
                size, exclude, hedge=True, source=exchange.source, write=False
            )
        except BalancerClosedError:
            return None
        except NoHealthyEndpointError:
            pass  # no host answers now: the next in turn, as a retry would
        else:
            assert isinstance(answering, Lease)  # a hedge's pick never waits
            return answering
        try:
            acquired = self._balancer.acquire(size, exclude, source=exchange.source, write=False)
        except (NoHealthyEndpointError, BalancerClosedError):
            return None
        if not isinstance(acquired, Lease):
            if not self._balancer.withdraw(acquired) and acquired.lease is not None:
                self._balancer.release(acquired.lease)
            return None
        return acquired

    def arm_deadline(self, exchange: Exchange) -> None:
        """A request re-sent (retried, hedged, re-dispatched) is answered by request_timeout
        from its first send: a new attempt's own timeout would start over, and a caller with
        a 30 s timeout got its 598 after 54.9 s (issue 20). A lone first attempt needs no
        timer: its own timeout is the request's."""
        if exchange.deadline_timer is not None or not exchange.sent_attempts:
            return
        timeout = self._balancer.settings.request_timeout
        delay = max(0.0, exchange.sent_at + timeout - time.monotonic())
        exchange.deadline_timer = exchange.client.loop.call_later(
            delay, self._deadline_due, exchange
        )

    def _deadline_due(self, exchange: Exchange) -> None:
        """request_timeout passed since the first send and nothing reached the client: answer
        598 now. Attempts still waiting for a host or a connection are never sent; those on a
        server end on their own, their answers dropped."""
        if exchange.ended or exchange.replied or exchange.forwarded:
            return
        for attempt in exchange.live:
            if attempt.written:
                attempt.orphaned = True  # `end` gives back the leases of the others
        timeout = self._balancer.settings.request_timeout
        where = ", ".join(dict.fromkeys(a.endpoint.address for a in exchange.sent_attempts))
        self._proxy.fail(exchange, *answers.past_deadline(timeout, where, exchange.received()))
        exchange.live.clear()
