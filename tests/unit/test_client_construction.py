"""The in-process client refuses bad configuration before it opens any connection."""

import pytest
from gremlin_python.driver.remote_connection import RemoteConnection

from gremlinlb import InvalidEndpointError, RoundRobinClientRemoteConnection


@pytest.mark.parametrize(
    ("endpoints", "error", "reason"),
    [
        (["localhost"], InvalidEndpointError, "no port"),
        (["localhost:8182", "http://x:1"], InvalidEndpointError, "use ws:// or wss://"),
        ([], ValueError, "at least one endpoint"),
        ("localhost:8182", TypeError, "list of addresses"),
    ],
)
def test_bad_endpoints_are_refused_at_construction(
    endpoints: object, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        RoundRobinClientRemoteConnection(endpoints)  # type: ignore[arg-type]


def test_it_is_a_gremlinpython_remote_connection() -> None:
    rr = RoundRobinClientRemoteConnection(["127.0.0.1:1"], health_check_interval=60)
    try:
        assert isinstance(rr, RemoteConnection)
        assert rr.traversal_source == "g"
        # a host takes no request before its first probe passes (port 1 never will)
        assert rr.get_available() == {"ws://127.0.0.1:1/gremlin": False}
    finally:
        rr.close()
    assert rr.is_closed()


def test_a_bad_client_zone_count_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="zone 'a' must be an integer >= 0, got -3"):
        RoundRobinClientRemoteConnection(["127.0.0.1:1"], zone="a", client_zones={"a": -3})


def test_the_client_zones_given_reach_the_balancer_and_can_be_changed() -> None:
    rr = RoundRobinClientRemoteConnection(
        ["127.0.0.1:1?zone=a"], health_check_interval=60, zone="a", client_zones={"a": 3, "b": 1}
    )
    try:
        assert rr.balancer.client_zones == {"a": 3, "b": 1}
        rr.set_client_zones({"a": 1, "b": 1})
        assert rr.balancer.client_zones == {"a": 1, "b": 1}
    finally:
        rr.close()
