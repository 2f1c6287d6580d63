"""The fault proxy relays only to this machine and refuses settings it cannot honour."""

from __future__ import annotations

import pytest

from gremlinlb.devservers.faults import FaultProxy, FaultProxyError, parse_loopback_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8182", ("127.0.0.1", 8182)),
        ("127.3.4.5:1", ("127.3.4.5", 1)),
        ("localhost:8182", ("localhost", 8182)),
        ("[::1]:8182", ("::1", 8182)),
    ],
)
def test_loopback_upstreams_are_accepted(address: str, expected: tuple[str, int]) -> None:
    assert parse_loopback_address(address) == expected


@pytest.mark.parametrize("address", ["10.0.0.1:8182", "example.org:8182", "[2001:db8::1]:8182"])
def test_an_upstream_off_this_machine_is_refused_with_the_reason(address: str) -> None:
    with pytest.raises(FaultProxyError, match="not a loopback address"):
        parse_loopback_address(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", ":8182", "127.0.0.1:99999"])
def test_an_upstream_that_is_not_host_and_port_is_refused_with_an_example(address: str) -> None:
    with pytest.raises(FaultProxyError, match=r"not host:port.*e\.g\. 127\.0\.0\.1:8182"):
        parse_loopback_address(address)


def test_a_negative_answer_delay_is_refused() -> None:
    with pytest.raises(FaultProxyError, match="answer_delay must be >= 0"):
        FaultProxy("127.0.0.1:8182", answer_delay=-0.1)


def test_an_idle_close_of_zero_is_refused() -> None:
    with pytest.raises(FaultProxyError, match="idle_close must be > 0"):
        FaultProxy("127.0.0.1:8182", idle_close=0)
