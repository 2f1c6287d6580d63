"""Endpoint strings: what is accepted, and that every refusal says why."""

import pytest

from gremlinlb.core import Endpoint, InvalidEndpointError, parse_endpoint


def test_host_port_becomes_a_ws_url_with_the_gremlin_path() -> None:
    assert parse_endpoint("localhost:8182").url == "ws://localhost:8182/gremlin"


def test_full_wss_url_keeps_scheme_and_path() -> None:
    endpoint = parse_endpoint("wss://db.example:443/custom")
    assert (endpoint.scheme, endpoint.host, endpoint.port, endpoint.path) == (
        "wss",
        "db.example",
        443,
        "/custom",
    )


def test_ipv6_literal_round_trips() -> None:
    assert parse_endpoint("[::1]:8182").url == "ws://[::1]:8182/gremlin"


def test_same_server_written_two_ways_is_one_endpoint() -> None:
    assert parse_endpoint("localhost:8182") == parse_endpoint("ws://localhost:8182/gremlin")


def test_surrounding_white_space_is_ignored() -> None:
    assert parse_endpoint("  localhost:8182 ") == Endpoint("ws", "localhost", 8182)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("localhost", "no port"),
        ("localhost:notaport", "invalid port"),
        ("localhost:70000", "invalid port"),
        ("localhost:0", "port 0"),
        ("http://localhost:8182/gremlin", "use ws:// or wss://"),
        ("ws://user:pw@localhost:8182", "credentials"),
        ("ws://localhost:8182/gremlin?x=1", "query"),
        ("local host:8182", "white space"),
        ("ws://:8182", "no host"),
    ],
)
def test_bad_endpoint_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidEndpointError, match=reason):
        parse_endpoint(text)


def test_non_string_endpoint_is_refused() -> None:
    with pytest.raises(InvalidEndpointError, match="give a string"):
        parse_endpoint(8182)  # type: ignore[arg-type]
