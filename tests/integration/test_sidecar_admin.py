"""The admin API of a running sidecar, with real Gremlin Servers behind it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
from gremlin_python.process.anonymous_traversal import traversal
from gremlinlb.sidecar import admin
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import BalancerSettings, HealthCheckSettings, HostState, parse_endpoint
from gremlinlb.devservers import Fleet, GremlinServerProcess
from tests.helpers import held_request, wait_until

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def config_for(servers: Sequence[GremlinServerProcess], token: str | None = TOKEN) -> SidecarConfig:
    return SidecarConfig(
        endpoints=tuple(parse_endpoint(s.address) for s in servers),
        settings=BalancerSettings(
            health=HealthCheckSettings(interval=0.5, timeout=1.5, rise=1, fall=1),
            request_timeout=5.0,
            connect_timeout=1.0,
        ),
        token=token,
    )


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    return list(fleet)


@pytest.fixture
def sidecar(servers: Sequence[GremlinServerProcess]) -> Iterator[SidecarThread]:
    with SidecarThread(config_for(servers[:2])) as running:
        yield running


def call(
    method: str, url: str, body: Any = None, token: str | None = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read(), error.code
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()


def hosts_of(sidecar: SidecarThread) -> tuple[int, list[str]]:
    _, body = call("GET", f"{sidecar.admin_url}/v1/hosts")
    return body["generation"], [h["address"] for h in body["hosts"]]


def put(sidecar: SidecarThread, body: Any, token: str | None = TOKEN) -> tuple[int, Any]:
    return call("PUT", f"{sidecar.admin_url}/v1/hosts", body, token)


def send_requests(sidecar: SidecarThread, count: int) -> None:
    """`count` answered requests through the sidecar, so the hosts have totals to report."""
    gremlin = Client(sidecar.url, "g")
    try:
        for _ in range(count):
            gremlin.submit("1").all().result(10)
    finally:
        gremlin.close()


def test_get_hosts_reports_state_in_flight_totals_and_last_error(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    send_requests(sidecar, 4)
    status, body = call("GET", f"{sidecar.admin_url}/v1/hosts")
    assert status == 200
    assert body["generation"] == 0
    assert [h["address"] for h in body["hosts"]] == [s.address for s in servers[:2]]
    for host in body["hosts"]:
        assert (host["state"], host["in_flight"], host["requests"]) == ("healthy", 0, 2)
        assert host["outcomes"] == {"success": 2}
        assert host["last_error"] is None


def test_put_without_the_token_is_401_and_changes_nothing(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    body = {"generation": 1, "hosts": [servers[2].address]}
    for token in (None, "wrong-token"):
        status, answer = put(sidecar, body, token)
        assert status == 401
        assert "Bearer" in answer["error"]
    assert hosts_of(sidecar) == (0, [s.address for s in servers[:2]])


BAD_BODIES: dict[str, tuple[Any, str]] = {
    "not_an_object": ([1, 2], "JSON object"),
    "no_generation": ({"hosts": []}, "generation"),
    "negative_generation": ({"generation": -1, "hosts": []}, "generation"),
    "hosts_not_a_list": ({"generation": 1, "hosts": "a:1"}, "hosts must be a list"),
    "host_without_port": ({"generation": 1, "hosts": ["gremlin-0"]}, "hosts[0]"),
    "duplicate_host": ({"generation": 1, "hosts": ["h:1", "h:1"]}, "listed twice"),
    "unknown_field": ({"generation": 1, "hosts": [], "extra": 1}, "extra"),
    "nul_in_host_name": ({"generation": 1, "hosts": ["gremlin\u0000x:8182"]}, "'\\x00'"),
    "quote_in_host_name": ({"generation": 1, "hosts": ['gre"mlin:8182']}, "'\"'"),
    "dot_segments_in_path": (
        {"generation": 1, "hosts": ["ws://gremlin:8182/../v1/hosts"]},
        "not a plain path",
    ),
    "unknown_setting": (
        {"generation": 1, "hosts": [], "settings": {"colour": "red"}},
        "settings.colour",
    ),
    "setting_out_of_range": (
        {"generation": 1, "hosts": [], "settings": {"health": {"rise": 0}}},
        "rise",
    ),
    "setting_of_wrong_type": (
        {"generation": 1, "hosts": [], "settings": {"max_attempts": "3"}},
        "settings.max_attempts",
    ),
    "client_zones_not_an_object": (
        {"generation": 1, "hosts": [], "client_zones": ["a"]},
        "client_zones must be an object of zone name -> number of clients",
    ),
    "negative_client_count": (
        {"generation": 1, "hosts": [], "client_zones": {"a": -2}},
        "client_zones: the client count of zone 'a' must be an integer >= 0",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_is_400_saying_what_is_wrong_and_changes_nothing(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess], case: str
) -> None:
    body, complaint = BAD_BODIES[case]
    before = call("GET", f"{sidecar.admin_url}/v1/hosts")[1]
    status, answer = put(sidecar, body)
    assert status == 400
    assert complaint in answer["error"]
    assert "nothing was changed" in answer["error"]
    assert call("GET", f"{sidecar.admin_url}/v1/hosts")[1]["settings"] == before["settings"]
    assert hosts_of(sidecar) == (0, [s.address for s in servers[:2]])


def test_body_that_is_not_json_is_400(sidecar: SidecarThread) -> None:
    status, answer = call("PUT", f"{sidecar.admin_url}/v1/hosts", raw=b"{not json", token=TOKEN)
    assert status == 400
    assert "not JSON" in answer["error"]


def test_stale_generation_is_409_with_the_current_one(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    assert put(sidecar, {"generation": 5, "hosts": [servers[0].address]})[0] == 200
    status, answer = put(sidecar, {"generation": 4, "hosts": [servers[2].address]})
    assert status == 409
    assert answer["generation"] == 5
    assert hosts_of(sidecar) == (5, [servers[0].address])


def test_repeating_the_current_generation_unchanged_is_accepted(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    body = {"generation": 3, "hosts": [servers[0].address]}
    assert put(sidecar, body)[0] == 200
    status, answer = put(sidecar, body)
    assert (status, answer["added"], answer["removed"]) == (200, [], [])


def test_put_replaces_the_hosts_and_new_ones_get_traffic(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    status, answer = put(
        sidecar,
        {"generation": 1, "hosts": [servers[2].address], "settings": {"max_attempts": 2}},
    )
    assert status == 200
    assert answer["added"] == [servers[2].url]
    assert sorted(answer["removed"]) == sorted(s.url for s in servers[:2])
    gremlin = Client(sidecar.url, "g")
    try:
        for _ in range(3):
            gremlin.submit("1").all().result(10)
    finally:
        gremlin.close()
    hosts = {h.endpoint.address: h.requests for h in sidecar.balancer.hosts()}
    assert hosts == {servers[2].address: 3}
    assert sidecar.balancer.settings.max_attempts == 2


def test_removed_host_finishes_its_in_flight_request_and_takes_no_new_ones(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    gremlin = Client(sidecar.url, "g", pool_size=2)
    try:
        with held_request(servers[:1], "finished") as (script, release):
            slow = gremlin.submit(script)  # round-robin: servers[0]
            wait_until(
                lambda: sidecar.balancer.hosts()[0].in_flight == 1, 30, "the slow request in flight"
            )
            assert put(sidecar, {"generation": 1, "hosts": [servers[1].address]})[0] == 200
            assert sidecar.balancer.state_of(servers[0].address) is HostState.DRAINING
            quick = [gremlin.submit("1").all().result(10) for _ in range(4)]
            release()
            assert slow.all().result(30) == ["finished"]
    finally:
        gremlin.close()
    assert quick == [[1]] * 4
    wait_until(lambda: hosts_of(sidecar)[1] == [servers[1].address], 30, "the drain to end")


def test_readyz_stays_ready_while_backends_are_down_and_readyz_backends_follows_them(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with SidecarThread(config_for(servers[:1])) as sidecar:
        # hosts join unprobed: the backends are ready once the host passed its first probe
        wait_until(
            lambda: call("GET", f"{sidecar.admin_url}/readyz/backends")[0] == 200, 10, "ready"
        )
        servers[0].pause()
        try:
            wait_until(
                lambda: call("GET", f"{sidecar.admin_url}/readyz/backends")[0] == 503,
                10,
                "backends not ready",
            )
            status, body = call("GET", f"{sidecar.admin_url}/readyz")
            assert (status, body["ready"], body["reason"]) == (200, True, "serving")
            assert call("GET", f"{sidecar.admin_url}/healthz")[0] == 200
        finally:
            servers[0].resume()
        wait_until(
            lambda: call("GET", f"{sidecar.admin_url}/readyz/backends")[0] == 200,
            10,
            "backends ready again",
        )


def test_readyz_is_503_until_the_sidecar_holds_a_host_list(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with SidecarThread(config_for([])) as sidecar:
        status, body = call("GET", f"{sidecar.admin_url}/readyz")
        assert (status, body["ready"]) == (503, False)
        assert "PUT /v1/hosts" in body["reason"]
        assert put(sidecar, {"generation": 1, "hosts": [servers[0].address]})[0] == 200
        assert call("GET", f"{sidecar.admin_url}/readyz")[0] == 200


def test_metrics_cover_requests_latency_in_flight_buffer_states_and_retries(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    gremlin = Client(sidecar.url, "g")
    try:
        for _ in range(2):
            gremlin.submit("1").all().result(10)
    finally:
        gremlin.close()
    status, text = call("GET", f"{sidecar.admin_url}/metrics")
    assert status == 200
    first = servers[0].address
    expected = [
        f'gremlinlb_sidecar_backend_requests_total{{host="{first}",outcome="success"}} 1.0',
        "gremlinlb_sidecar_request_duration_seconds_count 2.0",
        f'gremlinlb_sidecar_backend_attempt_duration_seconds_count{{host="{first}"}} 1.0',
        f'gremlinlb_sidecar_in_flight{{host="{first}"}} 0.0',
        "gremlinlb_sidecar_buffer_depth 0.0",
        f'gremlinlb_sidecar_host_state{{host="{first}",state="healthy"}} 1.0',
        "# TYPE gremlinlb_sidecar_retries_total counter",
    ]
    for line in expected:
        assert line in text


def test_retries_are_counted_by_their_cause(servers: Sequence[GremlinServerProcess]) -> None:
    settings = BalancerSettings(request_timeout=5.0, health=HealthCheckSettings(interval=60.0))
    config = replace(config_for(servers[:2]), settings=settings)
    with SidecarThread(config) as sidecar:  # both passed their first probe: healthy
        servers[0].kill()  # not noticed yet: the first request finds out and retries
        connection = DriverRemoteConnection(sidecar.url, "g", pool_size=1)
        try:
            assert traversal().with_(connection).inject(1).to_list() == [1]
        finally:
            connection.close()
        text = call("GET", f"{sidecar.admin_url}/metrics")[1]
    assert 'gremlinlb_sidecar_retries_total{reason="not_sent"} 1.0' in text


def test_concurrent_puts_apply_exactly_one_winner_per_generation(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    statuses: list[int] = []

    def writer(index: int) -> None:
        statuses.append(put(sidecar, {"generation": 7, "hosts": [servers[index].address]})[0])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(statuses) == [200, 409, 409]
    generation, hosts = hosts_of(sidecar)
    assert generation == 7
    assert len(hosts) == 1


def test_json_nested_too_deeply_is_400_and_changes_nothing(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    status, answer = call("PUT", f"{sidecar.admin_url}/v1/hosts", raw=deep, token=TOKEN)
    assert status == 400
    assert "nested too deeply" in answer["error"]
    assert hosts_of(sidecar) == (0, [s.address for s in servers[:2]])


def test_the_sidecars_own_ports_are_refused_as_backends(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    for own in (sidecar.sidecar.admin_address, sidecar.sidecar.address):
        port = own.rpartition(":")[2]
        for host in (own, f"localhost:{port}"):
            status, answer = put(sidecar, {"generation": 1, "hosts": [host]})
            assert status == 400
            assert "this sidecar's own port" in answer["error"]
    assert hosts_of(sidecar) == (0, [s.address for s in servers[:2]])


def test_a_list_longer_than_max_hosts_is_400_naming_the_limit(
    servers: Sequence[GremlinServerProcess],
) -> None:
    with SidecarThread(replace(config_for(servers[:1]), max_hosts=3)) as sidecar:
        hosts = [f"gremlin-{i}:8182" for i in range(4)]
        status, answer = put(sidecar, {"generation": 1, "hosts": hosts})
        assert status == 400
        assert "4 entries, more than the limit of 3" in answer["error"]
        assert "--max-hosts" in answer["error"]
        assert hosts_of(sidecar) == (0, [servers[0].address])


def test_a_put_of_20000_hosts_never_stalls_the_requests_served_meanwhile(
    servers: Sequence[GremlinServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests are answered while the sidecar reads and checks a 20,000-host list.

    Shown by order, not by speed: the sidecar's own reading of the list (`admin._parse`, the
    real one, only timed) has a start and an end, and some request sent after that start is
    answered before that end. Were the list read on the event loop (the loop blocked for the
    read's whole duration, as before admin.py ran it with asyncio.to_thread), no request sent
    after the read began could be read, forwarded or answered before the read ended, however
    fast or slow the machine: the spec would fail. Requests go one after another on one
    session, so each one's send and answer bracket its whole trip through the sidecar.
    """
    quiet = BalancerSettings(health=HealthCheckSettings(interval=3600, probe_healthy=False))
    config = replace(config_for(servers[:1]), settings=quiet, max_hosts=20_001)
    many = [servers[0].address] + [
        f"127.{1 + i // 65536}.{i // 256 % 256}.{i % 256}:9" for i in range(20_000)
    ]
    reading: list[float] = []  # the sidecar's read of the list: its start, then its end
    parse = admin._parse

    def timed_parse(*args: Any) -> Any:
        reading.append(time.monotonic())
        try:
            return parse(*args)
        finally:
            reading.append(time.monotonic())

    monkeypatch.setattr(admin, "_parse", timed_parse)
    with SidecarThread(config) as sidecar:
        # A session keeps every request on servers[0] whatever the host list says.
        gremlin = Client(sidecar.url, "g", session="big-put")
        try:
            assert gremlin.submit("1").all().result(10) == [1]
            result: list[tuple[int, Any]] = []
            pusher = threading.Thread(
                target=lambda: result.append(put(sidecar, {"generation": 1, "hosts": many}))
            )
            trips: list[tuple[float, float]] = []  # each request's send and answer
            answers: list[list[Any]] = []
            pusher.start()
            while pusher.is_alive() and len(answers) < 20_000:
                sent = time.monotonic()
                answers.append(gremlin.submit("1").all().result(10))
                trips.append((sent, time.monotonic()))
            pusher.join(120)
        finally:
            gremlin.close()
        assert result[0][0] == 200
        assert len(hosts_of(sidecar)[1]) == 20_001
    assert set(map(tuple, answers)) <= {(1,)}
    began, ended = reading
    during = [(s, a) for s, a in trips if began < s and a < ended]
    print(f"\n{len(during)} of {len(trips)} requests sent and answered during the list's read")
    assert during, f"no request was sent and answered during the read of the list ({len(trips)})"


def test_a_host_that_leaves_the_list_takes_its_metric_series_with_it(
    sidecar: SidecarThread, servers: Sequence[GremlinServerProcess]
) -> None:
    send_requests(sidecar, 4)
    gone = servers[0].address
    assert f'host="{gone}"' in call("GET", f"{sidecar.admin_url}/metrics")[1]
    assert put(sidecar, {"generation": 1, "hosts": [servers[1].address]})[0] == 200
    wait_until(lambda: hosts_of(sidecar)[1] == [servers[1].address], 30, "the host to leave")
    text = call("GET", f"{sidecar.admin_url}/metrics")[1]
    assert f'host="{gone}"' not in text
    assert f'host="{servers[1].address}"' in text


def test_client_zones_pushed_with_the_list_make_an_overloaded_zone_spill_visibly(
    servers: Sequence[GremlinServerProcess],
) -> None:
    # One server in zone a, two in b; two of three clients in a: a keeps (1/3)/(2/3) = 1/2.
    zones = ("a", "b", "b")
    config = replace(config_for(servers), zone="a")
    hosts = [f"{s.address}?zone={z}" for s, z in zip(servers, zones, strict=True)]
    with SidecarThread(config) as sidecar:
        assert put(sidecar, {"generation": 1, "hosts": hosts})[0] == 200
        wait_until(
            lambda: all(h.state is HostState.HEALTHY for h in sidecar.balancer.hosts()),
            10,
            "every host healthy",
        )
        send_requests(sidecar, 20)
        local = {h.endpoint.address: h.requests for h in sidecar.balancer.hosts()}
        assert local == {servers[0].address: 20, servers[1].address: 0, servers[2].address: 0}

        pushed = {"generation": 2, "hosts": hosts, "client_zones": {"a": 2, "b": 1}}
        assert put(sidecar, pushed)[0] == 200
        send_requests(sidecar, 300)
        after = {h.endpoint.address: h.requests for h in sidecar.balancer.hosts()}
        kept = (after[servers[0].address] - 20) / 300
        print(f"\nshare kept in zone a with clients a 2, b 1: {kept:.3f} (planned 0.5)")
        assert 0.35 <= kept <= 0.65
        body = call("GET", f"{sidecar.admin_url}/v1/hosts")[1]
        assert body["client_zones"] == {"a": 2, "b": 1}
        assert body["zone_plans"] == {"all": {"local": 0.5, "spill": {"b": 1.0}}}
        text = call("GET", f"{sidecar.admin_url}/metrics")[1]
    assert 'gremlinlb_sidecar_zone_planned_local_share{kind="all"} 0.5' in text
    assert 'gremlinlb_sidecar_zone_clients{zone="a"} 2.0' in text
    cross = 300 - (after[servers[0].address] - 20)
    assert f'gremlinlb_sidecar_backend_attempts_by_zone_total{{locality="cross"}} {cross}.0' in text
