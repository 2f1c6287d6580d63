"""Neptune's errors in the in-process client: the core's rules (core.neptune_errors) on a
`GremlinServerError`, acted on between attempts of one traversal.

`ConcurrentModificationException` (rolled back): the traversal goes to the writer again after a
jittered exponential backoff, within its attempt limit and the extra-request budget, and
before its deadline. `ReadOnlyViolationException` on a write: with a topology source
(`RoundRobinClientRemoteConnection.refresh_topology`, a callable that reads the cluster and
returns once the host list is updated) the cluster is read at once and the write goes, once, to
the writer it then names, before the deadline. Otherwise Neptune's answer is raised unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from gremlin_python.driver.protocol import GremlinServerError

from gremlinlb.core import AttemptLimit, Balancer, Endpoint, Outcome
from gremlinlb.core.neptune_errors import (
    REROUTE_RECHECK,
    NeptuneVerdict,
    classify,
    conflict_backoff,
    new_writer,
)


def verdict_of(error: BaseException | None) -> NeptuneVerdict | None:
    """Neptune's verdict on a server's error answer; None for anything else."""
    if isinstance(error, GremlinServerError):
        message = error.status_message if isinstance(error.status_message, str) else None
        return classify(error.status_code, message)
    return None


class NeptuneRetry:
    """Decides, and waits, between the attempts of one traversal after Neptune's errors."""

    def __init__(self, balancer: Balancer) -> None:
        self._balancer = balancer
        self._random = random.Random()
        #: Reads the cluster at once and returns once the host list is updated; None: no
        #: topology source, a write refused by a reader raises Neptune's answer.
        self.refresh_topology: Callable[[], object] | None = None

    def again(
        self,
        error: BaseException,
        refused: Endpoint,
        read_only: bool,
        budget: AttemptLimit,
        received: int,
        deadline: float,
        rerouted: bool,
    ) -> bool | None:
        """After a failed attempt on `refused`: None, no Neptune rule (the generic rules
        apply); True, send again now (after a conflict `refused` may be tried again: it is the
        writer); False, raise `error` unchanged."""
        verdict = verdict_of(error)
        if verdict is NeptuneVerdict.CONFLICT:
            return self._after_conflict(budget, received, deadline)
        if verdict is NeptuneVerdict.READ_ONLY and not read_only and not rerouted:
            return self._after_read_only(refused, budget, received, deadline)
        if verdict is NeptuneVerdict.READ_ONLY:
            return False
        return None

    def _after_conflict(self, budget: AttemptLimit, received: int, deadline: float) -> bool:
        if not budget.allows_another(Outcome.OVERLOADED, received):
            return False
        if not self._balancer.try_spend_extra():
            return False
        delay = conflict_backoff(received, self._random.random())
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True

    def _after_read_only(
        self, refused: Endpoint, budget: AttemptLimit, received: int, deadline: float
    ) -> bool:
        refresh = self.refresh_topology
        if refresh is None:
            return False
        if not budget.allows_another(Outcome.OVERLOADED, received):
            return False
        while True:
            refresh()
            if new_writer(refused, self._balancer.endpoints()) is not None:
                return True
            wait = min(REROUTE_RECHECK, deadline - time.monotonic())
            if wait <= 0:
                return False
            time.sleep(wait)
