"""Small helpers for specs of the core: a clock the test moves, and hosts that serve."""

from __future__ import annotations

from collections.abc import Iterable

from gremlinlb.core import Balancer, BalancerSettings, Endpoint, Lease, Outcome


class Clock:
    """The balancer's clock, moved by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def serving(
    endpoints: Iterable[Endpoint | str],
    settings: BalancerSettings | None = None,
    clock: Clock | None = None,
) -> Balancer:
    """A balancer whose hosts all passed their first probe (new hosts join unprobed)."""
    balancer = Balancer(endpoints, settings, clock=clock or Clock())
    for endpoint in balancer.endpoints():
        balancer.record_probe(endpoint, ok=True)
    return balancer


def lease_on(balancer: Balancer, endpoint: Endpoint, *, write: bool = True) -> Lease:
    """A lease on exactly `endpoint` (the other hosts excluded); `write=False` for a read."""
    others = [e for e in balancer.endpoints() if e != endpoint]
    lease = balancer.acquire(0, exclude=others, write=write)
    assert isinstance(lease, Lease), f"{endpoint} took no request"
    assert lease.endpoint == endpoint
    return lease


def attempt_on(balancer: Balancer, endpoint: Endpoint, outcome: Outcome) -> Lease:
    """One attempt on `endpoint` that ended with `outcome`."""
    lease = lease_on(balancer, endpoint)
    balancer.finish(lease, outcome)
    return lease
