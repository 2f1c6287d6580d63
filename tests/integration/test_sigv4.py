"""SigV4 on the upgrade, end to end: real Gremlin Servers behind the verifying front
(gremlinlb.devservers.sigv4front, Neptune's IAM check: 403 for a wrong or stale signature),
reached by the real sidecar and the real in-process client signing with botocore.

Credentials come through botocore's own chain: a shared config file whose profile runs a
`credential_process` (temporary credentials with a session token and an expiry), so replacing
the file is what rotation looks like to the process. No AWS endpoint is ever contacted
(instance metadata is turned off; everything is on loopback).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb import RoundRobinClientRemoteConnection, sigv4
from gremlinlb.core import (
    BalancerSettings,
    BufferSettings,
    HealthCheckSettings,
    HostState,
    SigV4Settings,
    parse_endpoint,
)
from gremlinlb.devservers import Fleet
from gremlinlb.devservers.faults import FaultProxy
from gremlinlb.devservers.sigv4front import Secret, SigV4Front
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

REGION = "us-east-1"
FIRST = ("ASIAFIRSTKEY", "first-secret", "first-token")
SECOND = ("ASIASECONDKEY", "second-secret", "second-token")
NEPTUNE_NAME = "db-1.cluster-test.us-east-1.neptune.amazonaws.com:8182"  # signed, never resolved


class Credentials:
    """Temporary credentials served by a credential_process from a file the test replaces."""

    def __init__(self, directory: Path) -> None:
        self.file = directory / "credentials.json"
        self.config = directory / "config"
        self.config.write_text(
            f"[default]\ncredential_process = /bin/cat {self.file}\nregion = {REGION}\n"
        )

    def use(self, key: tuple[str, str, str]) -> None:
        # Expiring within botocore's mandatory refresh window (10 min): every signature runs
        # the process again, as near the end of a real session's life.
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        document = {
            "Version": 1,
            "AccessKeyId": key[0],
            "SecretAccessKey": key[1],
            "SessionToken": key[2],
            "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        temporary = self.file.with_suffix(".new")
        temporary.write_text(json.dumps(document))
        temporary.replace(self.file)


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Credentials]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    made = Credentials(tmp_path)
    made.use(FIRST)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(made.config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sigv4.reset()
    yield made
    sigv4.reset()


def _secret(key: tuple[str, str, str]) -> dict[str, Secret]:
    return {key[0]: Secret(key[1], key[2])}


def _running(made: list[SigV4Front]) -> Iterator[list[SigV4Front]]:
    for front in made:
        front.__enter__()
    try:
        yield made
    finally:
        for front in made:
            front.__exit__()


@pytest.fixture
def fronts(fleet: Fleet) -> Iterator[list[SigV4Front]]:
    yield from _running(
        [SigV4Front(server.address, _secret(FIRST) | _secret(SECOND)) for server in fleet[:2]]
    )


def _settings(signing: SigV4Settings, **more: object) -> BalancerSettings:
    return BalancerSettings(
        health=HealthCheckSettings(interval=0.5, timeout=2.0, rise=1, fall=1),
        buffer=BufferSettings(max_wait=1.0),
        request_timeout=5.0,
        connect_timeout=2.0,
        sigv4=signing,
        **more,  # type: ignore[arg-type]
    )


def _sidecar(addresses: list[str], signing: SigV4Settings, **more: object) -> SidecarThread:
    return SidecarThread(
        SidecarConfig(
            endpoints=tuple(parse_endpoint(a) for a in addresses),
            settings=_settings(signing, **more),
        )
    )


SIGNED = SigV4Settings(enabled=True, region=REGION)


def _ask(url: str, count: int) -> list[object]:
    client = Client(url, "g", pool_size=2)
    try:
        return [client.submit(f"[{i}]").all().result(20) for i in range(count)]
    finally:
        client.close()


def _last_errors(sidecar: SidecarThread) -> list[str]:
    return [h.last_error or "" for h in sidecar.balancer.hosts()]


def test_sidecar_with_sigv4_is_served_through_the_verifying_front(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    with _sidecar([f.address for f in fronts], SIGNED) as sidecar:
        assert _ask(sidecar.url, 20) == [[i] for i in range(20)]
    assert all(front.accepted[FIRST[0]] > 0 for front in fronts)
    assert [sum(front.refused.values()) for front in fronts] == [0, 0]


def test_sidecar_without_sigv4_is_refused_and_marks_the_host_down_naming_the_403(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    with _sidecar([fronts[0].address], SigV4Settings()) as sidecar:
        with pytest.raises(GremlinServerError):
            _ask(sidecar.url, 1)
        assert sidecar.balancer.hosts()[0].state is HostState.DOWN
        assert "403" in _last_errors(sidecar)[0]
        assert "IAM auth refused" in _last_errors(sidecar)[0]
    assert fronts[0].refused["no SigV4 Authorization header"] > 0


def _served_by_client(addresses: list[str]) -> None:
    """Ten traversals answered through the client with SigV4 on, once both hosts passed."""
    rr = RoundRobinClientRemoteConnection(addresses, settings=_settings(SIGNED))
    try:
        wait_until(lambda: all(rr.get_available().values()), 15, "both hosts probed")
        g = traversal().with_(rr)
        assert [g.inject(i).next() for i in range(10)] == list(range(10))
    finally:
        rr.close()


def test_client_with_sigv4_is_served_through_the_verifying_front(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    _served_by_client([f.address for f in fronts])
    assert all(front.accepted[FIRST[0]] > 0 for front in fronts)
    assert [sum(front.refused.values()) for front in fronts] == [0, 0]


def test_client_without_sigv4_is_refused_with_the_403_named(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    rr = RoundRobinClientRemoteConnection([fronts[0].address], settings=_settings(SigV4Settings()))
    try:
        wait_until(
            lambda: "403" in (rr.hosts()[0].last_error or ""), 15, "the probe's 403 recorded"
        )
        assert rr.hosts()[0].state is HostState.DOWN
    finally:
        rr.close()


def test_rotated_temporary_credentials_sign_new_connections_and_nothing_fails(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    # Pooled connections are replaced every second, so new upgrades keep being signed.
    with _sidecar([f.address for f in fronts], SIGNED, max_connection_age=1.0) as sidecar:
        client = Client(sidecar.url, "g", pool_size=2)
        try:
            answers = [client.submit(f"[{i}]").all().result(20) for i in range(20)]
            credentials.use(SECOND)
            i = 20
            while not all(front.accepted[SECOND[0]] > 0 for front in fronts):
                answers.append(client.submit(f"[{i}]").all().result(20))
                i += 1
                assert i < 2000, "no upgrade was signed with the new credentials"
            for front in fronts:  # the old ones are revoked: only new signatures may pass now
                front.secrets.pop(FIRST[0])
            more = i + 2000
            while i < more:
                answers.append(client.submit(f"[{i}]").all().result(20))
                i += 1
                if sum(front.accepted[SECOND[0]] for front in fronts) >= 8:
                    break
        finally:
            client.close()
        assert answers == [[n] for n in range(i)]
    assert sum(front.accepted[SECOND[0]] for front in fronts) >= 8
    assert [sum(front.refused.values()) for front in fronts] == [0, 0]


def test_client_signs_new_connections_with_rotated_credentials_and_nothing_fails(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    rr = RoundRobinClientRemoteConnection(
        [f.address for f in fronts], settings=_settings(SIGNED, max_connection_age=1.0)
    )
    try:
        g = traversal().with_(rr)
        answers = [g.inject(i).to_list() for i in range(20)]
        credentials.use(SECOND)
        i = 20
        while not all(front.accepted[SECOND[0]] > 0 for front in fronts):
            answers.append(g.inject(i).to_list())
            i += 1
            assert i < 2000, "no upgrade was signed with the new credentials"
        for front in fronts:  # the old ones are revoked: only new signatures may pass now
            front.secrets.pop(FIRST[0])
        for _ in range(20):
            answers.append(g.inject(i).to_list())
            i += 1
    finally:
        rr.close()
    assert answers == [[n] for n in range(i)]
    assert [sum(front.refused.values()) for front in fronts] == [0, 0]


def test_client_through_a_proxy_signs_the_endpoint_name_not_the_proxy_address(
    credentials: Credentials, fleet: Fleet
) -> None:
    with (
        SigV4Front(fleet[0].address, _secret(FIRST), name=NEPTUNE_NAME) as front,
        FaultProxy(front.address) as proxy,
    ):
        through = SigV4Settings(enabled=True, region=REGION, host=NEPTUNE_NAME)
        rr = RoundRobinClientRemoteConnection([proxy.address], settings=_settings(through))
        try:
            assert traversal().with_(rr).inject(1, 2).to_list() == [1, 2]
        finally:
            rr.close()
        assert set(front.hosts_signed) == {NEPTUNE_NAME}


def test_a_signature_for_another_region_is_refused(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    with _sidecar([fronts[0].address], SigV4Settings(enabled=True, region="eu-west-1")) as sc:
        assert sc.balancer.hosts()[0].state is HostState.DOWN
        assert "403" in _last_errors(sc)[0]
    assert any("eu-west-1" in why for why in fronts[0].refused)


def test_a_signature_older_than_five_minutes_is_refused(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    fronts[0].clock_offset = datetime.timedelta(minutes=5, seconds=30)  # it reaches it late
    with _sidecar([fronts[0].address], SIGNED) as sidecar:
        assert sidecar.balancer.hosts()[0].state is HostState.DOWN
        assert "403" in _last_errors(sidecar)[0]
    assert any("more than 5 minutes" in why for why in fronts[0].refused)
    assert fronts[0].accepted.total() == 0


def test_through_a_proxy_the_endpoint_name_is_signed_not_the_proxy_address(
    credentials: Credentials, fleet: Fleet
) -> None:
    with (
        SigV4Front(fleet[0].address, _secret(FIRST), name=NEPTUNE_NAME) as front,
        FaultProxy(front.address) as proxy,
    ):
        with _sidecar([proxy.address], SIGNED) as plain:  # Host: the proxy's address
            assert plain.balancer.hosts()[0].state is HostState.DOWN
        assert front.accepted.total() == 0
        through = SigV4Settings(enabled=True, region=REGION, host=NEPTUNE_NAME)
        with _sidecar([proxy.address], through) as sidecar:
            assert _ask(sidecar.url, 5) == [[i] for i in range(5)]
        assert set(front.hosts_signed) == {NEPTUNE_NAME}


NAMES = [f"db-{i}.cluster-test.us-east-1.neptune.amazonaws.com:8182" for i in (1, 2)]


@pytest.fixture
def named_fronts(fleet: Fleet) -> Iterator[list[SigV4Front]]:
    """Two fronts, each admitting only upgrades signed for its own Neptune name."""
    yield from _running(
        [
            SigV4Front(server.address, _secret(FIRST), name=name)
            for server, name in zip(fleet[:2], NAMES, strict=True)
        ]
    )


def _named(fronts: list[SigV4Front]) -> list[str]:
    return [f"{f.address}?sigv4_host={name}" for f, name in zip(fronts, NAMES, strict=True)]


def test_sidecar_signs_each_listed_host_for_its_own_sigv4_host(
    credentials: Credentials, named_fronts: list[SigV4Front]
) -> None:
    with _sidecar(_named(named_fronts), SIGNED) as sidecar:
        assert _ask(sidecar.url, 10) == [[i] for i in range(10)]
        shown = sorted(h.endpoint.text for h in sidecar.balancer.hosts())
    assert shown == sorted(f"ws://{a}".replace("?", "/gremlin?") for a in _named(named_fronts))
    assert [set(f.hosts_signed) for f in named_fronts] == [{NAMES[0]}, {NAMES[1]}]
    assert all(f.accepted[FIRST[0]] > 0 for f in named_fronts)
    assert [sum(f.refused.values()) for f in named_fronts] == [0, 0]


def test_client_signs_each_listed_host_for_its_own_sigv4_host(
    credentials: Credentials, named_fronts: list[SigV4Front]
) -> None:
    _served_by_client(_named(named_fronts))
    assert [set(f.hosts_signed) for f in named_fronts] == [{NAMES[0]}, {NAMES[1]}]
    assert [sum(f.refused.values()) for f in named_fronts] == [0, 0]


def test_a_429_on_the_upgrade_leaves_the_host_in_rotation_and_the_request_goes_elsewhere(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    with _sidecar([f.address for f in fronts], SIGNED) as sidecar:
        busy = sidecar.balancer.hosts()[0].endpoint
        # Only its probe's connection is open (pooled ones open with the first request): every
        # further upgrade there is answered 429, as Neptune does over its connection limit.
        fronts[0].max_connections = fronts[0].open_connections
        assert _ask(sidecar.url, 20) == [[i] for i in range(20)]
        assert sidecar.balancer.state_of(busy) is HostState.HEALTHY
    assert any("over the limit" in why for why in fronts[0].refused)


def test_client_keeps_a_host_answering_429_on_the_upgrade_in_rotation(
    credentials: Credentials, fronts: list[SigV4Front]
) -> None:
    rr = RoundRobinClientRemoteConnection([f.address for f in fronts], settings=_settings(SIGNED))
    try:
        wait_until(lambda: all(rr.get_available().values()), 15, "both hosts probed")
        fronts[0].max_connections = 0  # every new upgrade there is answered 429 from now on
        g = traversal().with_(rr)
        assert [g.inject(i).next() for i in range(10)] == list(range(10))
        probed = fronts[0].refused.total()
        wait_until(lambda: fronts[0].refused.total() > probed, 15, "a later probe's 429")
        assert rr.hosts()[0].state is HostState.HEALTHY
    finally:
        rr.close()
    assert any("over the limit" in why for why in fronts[0].refused)
