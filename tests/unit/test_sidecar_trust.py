"""Which hosts a pushed list may name (the admin API's HostPolicy)."""

from __future__ import annotations

import pytest
from gremlinlb.sidecar.trust import HostPolicy, parse_allowed_hosts

from gremlinlb.core import Endpoint, parse_endpoint


def hosts(*texts: str) -> list[Endpoint]:
    return [parse_endpoint(t) for t in texts]


def test_cidrs_match_addresses_of_their_family_only() -> None:
    policy = HostPolicy(allowed=parse_allowed_hosts("10.0.0.0/8,fd00::/8"))
    assert policy.allows("10.1.2.3")
    assert policy.allows("fd00::1")
    assert not policy.allows("11.0.0.1")
    assert not policy.allows("::ffff:11.0.0.1")
    assert not policy.allows("fe00::1")
    assert not policy.allows("gremlin-0.gremlin")  # a name never matches a CIDR


def test_globs_match_host_names_case_insensitively_and_never_addresses() -> None:
    policy = HostPolicy(allowed=parse_allowed_hosts("*.gremlin.svc.cluster.local,10.*"))
    assert policy.allows("Gremlin-0.gremlin.svc.cluster.local")
    assert not policy.allows("gremlin.svc.cluster.local.evil.example")
    assert not policy.allows("10.0.0.1")


def test_the_first_offending_host_is_named() -> None:
    policy = HostPolicy(require_tls=True, allowed=("10.0.0.0/8",))
    refusal = policy.refusal(hosts("wss://10.0.0.1:8182", "wss://192.0.2.1:8182"))
    assert refusal is not None
    assert refusal.startswith("hosts[1]: 192.0.2.1:8182 is outside")
    assert policy.refusal(hosts("wss://10.0.0.1:8182")) is None


def test_no_policy_allows_anything() -> None:
    assert HostPolicy().refusal(hosts("ws://192.0.2.1:8182")) is None


@pytest.mark.parametrize("pattern", ["10.0.0.0/33", "gremlin:8182", "a/b", "ws://x"])
def test_a_bad_pattern_is_refused_with_what_is_allowed(pattern: str) -> None:
    with pytest.raises(ValueError, match="neither a CIDR"):
        parse_allowed_hosts(pattern)
