"""Queueing: what waits, for how long, and who is handed out when a host can take it.

linkerd's PoolQueue apart from its balancer: the first round (the constructor's hosts join
together, so round-robin holds from the first request), admission to the bounded wait buffer
(or fail-fast: every healthy host already failed this request), and releasing buffered
requests oldest first, at most release_per_host per host, to the router's picks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection

from gremlinlb.core.budget import RetryBudget
from gremlinlb.core.buffer import PendingBuffer, Waiter
from gremlinlb.core.endpoints import Endpoint, HostState
from gremlinlb.core.errors import AllHostsTriedError, BalancerClosedError, BufferFullError
from gremlinlb.core.hosts import Host
from gremlinlb.core.routing import Candidates, Router
from gremlinlb.core.settings import BalancerSettings

# The balancer's logger: host news under one name (the demo quiets it as a whole).
log = logging.getLogger("gremlinlb.core.balancer")

Size = int | Callable[[], int]


class Admission:
    """The first round and the wait buffer, in front of the router.

    The first round: round-robin from the first request, so the constructor's hosts join
    together. While any of them has no first probe result (passed or failed), a new request
    waits (with the buffered ones, oldest first) instead of going to whichever host passed
    first; when the last result is in, the waiting requests are handed out in turn over the
    hosts that passed, in the order given. The wait is bounded by connect_timeout (and by the
    buffer's max_wait, so no request times out for it) from construction: a host that does
    not answer its first probe by then does not hold up the others, and joins when its probe
    passes, as hosts added later do."""

    def __init__(
        self,
        settings: BalancerSettings,
        healthy_ring: list[Host],
        *,
        budget: RetryBudget,
        router: Router,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.buffer = PendingBuffer(settings.buffer)
        self._healthy_ring = healthy_ring  # the balancer's list, sorted by seq
        self._budget = budget
        self._router = router
        # The first round: the constructor's hosts whose first probe result is not in yet,
        # and until when requests wait for them (see Balancer.first_round).
        self.first_round: set[Endpoint] = set()
        self.first_round_opened = -math.inf
        self.first_round_until = -math.inf

    def update(self, settings: BalancerSettings) -> None:
        self.settings = settings
        self.buffer.settings = settings.buffer

    def open_first_round(self, ring: list[Host], now: float) -> None:
        """The constructor's hosts form the first round, bounded by connect_timeout and by
        max_wait (no request times out for it); none with health checks or the buffer off."""
        if not self.settings.health.enabled:
            return
        joining = {h.endpoint for h in ring if h.state is HostState.JOINING}
        bound = min(self.settings.connect_timeout, self.settings.buffer.max_wait)
        if joining and bound > 0:
            self.first_round = joining
            self.first_round_opened = now
            self.first_round_until = now + bound

    def hold(self, size: Size, now: float, *, session: bool, write: bool) -> Waiter | None:
        """A new request while the first round is open waits for it, with the buffered ones;
        None when the round is over (its bound passed: what it held is handed out first) or
        the buffer cannot take the request (it is then picked for at once, as before)."""
        if now >= self.first_round_until:
            self.release()
            self.first_round.clear()
            return None
        try:
            waiter = self.buffer.admit(
                size() if callable(size) else size, now, session=session, write=write
            )
        except BufferFullError:
            return None
        self._budget.deposit(now)
        return waiter

    def admit(
        self, size: Size, exclude: Collection[Endpoint], now: float, *, session: bool, write: bool
    ) -> Waiter:
        """No host can take the request now: it waits, unless every healthy host of its kind
        already failed it (and no verdict on a suspect one is on its way: its connection just
        broke, a probe is on its way, so in a total outage a retried read waits for a server
        rather than failing)."""
        healthy = [h for h in self._healthy_ring if self._router.may_serve(h, write)]
        if exclude and healthy:
            verdict_pending = self.settings.health.enabled and any(
                h.evidence.suspect for h in healthy
            )
            if not verdict_pending:
                raise AllHostsTriedError(
                    "every healthy host already failed this request; not retrying further"
                )
        for waiter in self.buffer.expired(now):
            waiter.error = self._router.wait_timeout_error(waiter, self.buffer.settings.max_wait)
            waiter.notify()
        waiter = self.buffer.admit(
            size() if callable(size) else size, now, session=session, write=write
        )
        if not exclude:
            self._budget.deposit(now)
        return waiter

    def release(self) -> None:
        """Hand buffered requests, oldest first, to healthy hosts of their kind in turn, at
        most release_per_host unfinished ones per host (the rest follow as those finish). A
        request whose kind has no healthy host keeps waiting without holding up the others."""
        buffer = self.buffer
        if not len(buffer):
            return
        now = self._clock()
        expire = True
        if self.first_round:
            if now < self.first_round_until:
                return  # nothing expires meanwhile: the round's bound is within max_wait
            late = ", ".join(sorted(e.address for e in self.first_round))
            log.info("first round over: no first probe result from %s in time", late)
            self.first_round.clear()
            expire = False  # they waited for the round, not for a healthy host
        for waiter in buffer.expired(now) if expire else ():
            waiter.error = self._router.wait_timeout_error(waiter, buffer.settings.max_wait)
            waiter.notify()
        blocked: set[bool] = set()  # kinds (write or not) with no host for now
        released: list[Waiter] = []
        for waiter in buffer:
            if waiter.write in blocked:
                continue
            host = self._router.pick(Candidates(write=waiter.write, buffered=True), now)
            if host is None:
                blocked.add(waiter.write)
                if len(blocked) == 2:
                    break
                continue
            lease = self._router.lease(host, now, session=waiter.session, write=waiter.write)
            host.from_buffer.add(lease)
            waiter.lease = lease
            released.append(waiter)
        buffer.discard(released)
        for waiter in released:
            waiter.notify()

    def close(self) -> None:
        """Fail everything still waiting."""
        while len(self.buffer):
            waiter = self.buffer.pop()
            waiter.error = BalancerClosedError("the balancer was closed while this request waited")
            waiter.notify()
