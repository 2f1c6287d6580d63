"""Which backend pools close for lack of use (issue 20, point 5): pure logic over stand-ins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL, TEXT_CHANNEL, Channel, FrameType
from gremlinlb.sidecar.idle_pools import close_idle_pools

from gremlinlb.core import parse_endpoint

GRAPHSON = Channel("application/vnd.gremlin-v3.0+json", FrameType.BINARY)
HOST = parse_endpoint("127.0.0.1:8182")


@dataclass
class Pool:
    last_used: float
    busy: bool = False
    connections: list[Any] = field(default_factory=list)
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def test_an_idle_pool_of_another_mime_is_closed_and_forgotten() -> None:
    pool = Pool(last_used=0.0)
    pools: dict[Any, Any] = {(HOST, GRAPHSON): pool}
    assert close_idle_pools(pools, 60.0, now=60.0) == 1
    assert pool.closed
    assert not pools


def test_the_default_mimes_pool_stays_however_long_it_is_idle() -> None:
    pools: dict[Any, Any] = {(HOST, GRAPHBINARY_CHANNEL): Pool(last_used=0.0)}
    assert close_idle_pools(pools, 60.0, now=10_000.0) == 0
    assert pools


def test_a_pool_used_within_the_idle_period_stays() -> None:
    pools: dict[Any, Any] = {(HOST, TEXT_CHANNEL): Pool(last_used=30.0)}
    assert close_idle_pools(pools, 60.0, now=89.0) == 0


def test_a_pool_with_a_request_in_flight_stays_however_old_its_last_lease() -> None:
    pools: dict[Any, Any] = {(HOST, GRAPHSON): Pool(last_used=0.0, busy=True)}
    assert close_idle_pools(pools, 60.0, now=600.0) == 0
