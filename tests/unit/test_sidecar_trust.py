"""Which hosts a pushed list may name (the admin API's HostPolicy)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from gremlinlb.sidecar.trust import (
    HostPolicy,
    default_token_path,
    parse_allowed_hosts,
    write_token_file,
)

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


def test_a_generated_token_is_written_owner_only_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "run" / "sidecar-9901.token"
    write_token_file(path, "t0ken")
    assert path.read_text().strip() == "t0ken"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_token_is_not_written_where_other_users_may_replace_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all, not sticky
    with pytest.raises(PermissionError, match="others may replace files in it"):
        write_token_file(shared / "token", "t0ken")
    assert list(shared.iterdir()) == []


def test_the_default_token_path_is_in_the_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_token_path(9901) == tmp_path / "gremlinlb" / "sidecar-9901.token"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_token_path(9901).parent.name == f"gremlinlb-{os.getuid()}"
