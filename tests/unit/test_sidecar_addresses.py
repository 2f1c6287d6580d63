"""What an address is, whatever its spelling: the normalisation every host rule asks first,
and the admin API's Host check built on it (pure logic, no sockets)."""

from __future__ import annotations

import ipaddress

import pytest
from gremlinlb.sidecar.addresses import address_of, canonical_name, identity, is_loopback_name
from gremlinlb.sidecar.hostcheck import HostCheck, split_host_header
from gremlinlb.sidecar.hostlist import BadUpdateError, HostRules, parse_update

from gremlinlb.core import BalancerSettings

LOOPBACK = ipaddress.ip_address("127.0.0.1")

SPELLINGS_OF_LOOPBACK = [
    "127.0.0.1",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "127.1",
    "127.0.1",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.0.0.1.",
]


@pytest.mark.parametrize("spelling", SPELLINGS_OF_LOOPBACK)
def test_every_spelling_of_127_0_0_1_is_read_as_127_0_0_1(spelling: str) -> None:
    assert address_of(spelling) == LOOPBACK


def test_zero_is_the_unspecified_address() -> None:
    assert address_of("0") == ipaddress.ip_address("0.0.0.0")


def test_an_ipv6_zone_and_brackets_are_not_part_of_the_address() -> None:
    assert address_of("[fe80::1%eth0]") == ipaddress.ip_address("fe80::1")


@pytest.mark.parametrize(
    "name", ["gremlin-0", "a.b.example", "256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1..2", ""]
)
def test_names_and_impossible_numbers_are_no_address(name: str) -> None:
    assert address_of(name) is None


def test_0x_alone_is_zero_as_inet_aton_reads_it() -> None:
    assert address_of("0x") == ipaddress.ip_address("0.0.0.0")


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "ip6-localhost", "app.localhost"])
def test_loopback_names_are_loopback_whatever_their_case_or_trailing_dot(name: str) -> None:
    assert is_loopback_name(name)


def test_a_name_is_compared_lower_case_without_its_trailing_dot() -> None:
    assert canonical_name("Gremlin.Example.") == "gremlin.example"
    assert identity("Gremlin.Example.") == identity("gremlin.example")
    assert identity("10.0.0.1") == identity("::ffff:10.0.0.1")


RULES = HostRules(own_ports=frozenset({8182, 9901}))


@pytest.mark.parametrize(
    "host",
    [
        "[::ffff:127.0.0.1]:9901",
        "0x7f000001:9901",
        "2130706433:8182",
        "127.1:8182",
        "0:9901",
        "localhost.:8182",
        "127.0.0.1.:9901",
        "ip6-localhost:8182",
        "[::1]:9901",
    ],
)
def test_a_list_naming_an_own_port_in_any_spelling_is_refused_naming_the_address(
    host: str,
) -> None:
    with pytest.raises(BadUpdateError, match=r"hosts\[0\]: .* own port") as refused:
        parse_update({"generation": 1, "hosts": [host]}, BalancerSettings(), RULES)
    assert host.rsplit(":", 1)[0].strip("[]").rstrip(".") in str(refused.value)


def test_an_address_the_sidecar_listens_on_counts_as_its_own() -> None:
    rules = HostRules(own_ports=frozenset({9901}), own_addresses={ipaddress.ip_address("10.1.1.1")})
    with pytest.raises(BadUpdateError, match=r"that is 10\.1\.1\.1"):
        parse_update({"generation": 1, "hosts": ["0x0a010101:9901"]}, BalancerSettings(), rules)
    assert parse_update({"generation": 1, "hosts": ["10.1.1.2:9901"]}, BalancerSettings(), rules)


def test_two_spellings_of_one_server_are_listed_twice() -> None:
    body = {"generation": 1, "hosts": ["10.0.0.1:8182", "[::ffff:10.0.0.1]:8182"]}
    with pytest.raises(BadUpdateError, match="listed twice"):
        parse_update(body, BalancerSettings(), RULES)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:9901", "127.0.0.1"),
        ("[::1]:9901", "::1"),
        ("[::1]", "::1"),
        ("example.com", "example.com"),
        ("::1", None),
        ("a:b", None),
        ("[::1]x", None),
        ("", None),
    ],
)
def test_the_host_part_of_a_host_header(header: str, host: str | None) -> None:
    assert split_host_header(header) == host


CHECK = HostCheck(["gremlinlb.test", "*.pods.example", "10.9.0.0/16"], hostname="pod-7")


@pytest.mark.parametrize(
    "header",
    [
        "127.0.0.1:9901",
        "127.0.0.1",
        "[::ffff:127.0.0.1]:9901",
        "2130706433:9901",
        "localhost:19901",
        "localhost.",
        "pod-7:9901",
        "GremlinLB.test.:9901",
        "a.pods.example",
        "10.9.3.4:9901",
    ],
)
def test_host_headers_naming_the_sidecar_are_served(header: str) -> None:
    assert CHECK.allows(header, LOOPBACK)


@pytest.mark.parametrize(
    "header", [None, "evil.example", "evil.example:9901", "10.0.0.9:9901", "127.0.0.2", "a:b"]
)
def test_other_host_headers_are_refused(header: str | None) -> None:
    assert not CHECK.allows(header, LOOPBACK)


def test_localhost_is_served_only_on_a_loopback_connection() -> None:
    assert not CHECK.allows("localhost:9901", ipaddress.ip_address("10.1.1.1"))
    assert CHECK.allows("10.1.1.1:9901", ipaddress.ip_address("10.1.1.1"))


def test_a_star_serves_any_host() -> None:
    assert HostCheck(["*"], hostname="x").allows("evil.example", LOOPBACK)


def test_a_refusal_says_what_is_served_and_how_to_add_a_name() -> None:
    message = CHECK.refusal("evil.example:9901", LOOPBACK)
    assert "'evil.example:9901'" in message
    assert "127.0.0.1, localhost, pod-7" in message
    assert "--admin-allowed-host evil.example" in message
