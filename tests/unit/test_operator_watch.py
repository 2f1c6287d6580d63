"""Watching sidecars, operator side: what a poll says and what it gets, and what a watching
sidecar no longer gets (pushes, health reads, the periodic re-push)."""

from __future__ import annotations

import asyncio
import json

import pytest
from gremlinlb.operator.distribution import (
    BadPollError,
    Snapshot,
    WatchReport,
    newer,
    parse_poll,
    watched_cluster,
)
from gremlinlb.operator.push import BackendHealth, PushGroup, TargetStatus

from gremlinlb.core.bearer import bearer_matches
from tests.unit.test_operator_metrics import operator_options
from tests.unit.test_operator_push import (
    FAST,
    FakeHealth,
    FakeSidecars,
    closed,
    payload,
    wait_until,
)

HEALTH = {"ready": True, "generation": 3, "hosts": {"10.0.0.1:8182": "ejected"}, "roles_out": []}


def poll(**fields: object) -> bytes:
    return json.dumps({"generation": 3, "pod": "app-1", "health": HEALTH, **fields}).encode()


def test_a_poll_tells_the_pod_its_generation_and_its_backends() -> None:
    assert parse_poll(poll()) == WatchReport(
        "app-1", 3, BackendHealth(3, {"10.0.0.1:8182": "ejected"})
    )


def test_a_poll_carries_why_the_sidecar_refused_its_last_list() -> None:
    assert parse_poll(poll(error="403: host not allowed")).error == "403: host not allowed"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (poll(generation=-1), "generation must be"),
        (poll(generation=True), "generation must be"),
        (poll(pod=""), "pod must be"),
        (poll(pod="a\nb"), "pod must be"),
    ],
)
def test_a_poll_that_cannot_be_read_is_refused_saying_what_to_send(
    body: bytes, message: str
) -> None:
    with pytest.raises(BadPollError, match=message):
        parse_poll(body)


def test_only_a_newer_list_is_answered_at_once() -> None:
    snapshot = Snapshot(5, b"{}", "t")
    assert newer(snapshot, 4)
    assert not newer(snapshot, 5)
    assert not newer(snapshot, 9)  # a sidecar ahead waits: its report moves the operator on


def test_a_watch_path_names_the_namespace_and_the_cluster_and_nothing_else() -> None:
    assert watched_cluster("/v1/watch/shop/graph") == ("shop", "graph")
    assert watched_cluster("/v1/watch/shop") is None
    assert watched_cluster("/v1/watch/shop/") is None
    assert watched_cluster("/v1/watch//graph") is None
    assert watched_cluster("/v1/watch/shop/graph/more") is None
    assert watched_cluster("/v1/hosts") is None


def test_the_token_must_be_presented_as_a_bearer_token_exactly() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret", "s3cret")
    assert not bearer_matches("Bearer s3cre", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches("", "s3cret")


def group_of(sidecars: FakeSidecars, **kwargs: object) -> PushGroup:
    return PushGroup("ns/c", sidecars, asyncio.Semaphore(4), backoff=FAST, **kwargs)  # type: ignore[arg-type]


def test_a_watching_sidecar_gets_no_push_and_counts_as_in_sync_by_its_report() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = group_of(sidecars)
        group.set_targets({"ns/p": "http://s"})
        group.report("ns/p", 0, None, None)
        group.set_payload(payload(1))
        await asyncio.sleep(0.1)
        assert sidecars.received["http://s"] == []
        assert not group.statuses()[0].in_sync
        group.report("ns/p", 1, None, None)
        status = group.statuses()[0]
        assert status.in_sync
        assert status.watching
        await closed(group)

    asyncio.run(scenario())


def test_a_watching_sidecar_is_not_pushed_to_by_the_periodic_refresh() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = group_of(sidecars)
        group.set_targets({"ns/p": "http://s", "ns/q": "http://q"})
        group.set_payload(payload(1))
        await wait_until(lambda: sidecars.received["http://q"] == [1])
        group.report("ns/p", 1, None, None)
        group.refresh()
        await wait_until(lambda: sidecars.received["http://q"] == [1, 1])
        assert group.statuses()[0].in_sync
        assert sidecars.received["http://s"] in ([], [1])  # at most the push before it watched
        pushed = list(sidecars.received["http://s"])
        group.refresh()
        await wait_until(lambda: sidecars.received["http://q"] == [1, 1, 1])
        assert sidecars.received["http://s"] == pushed
        await closed(group)

    asyncio.run(scenario())


def test_a_sidecar_that_stops_watching_is_pushed_to_again_after_the_lease() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = group_of(sidecars, watch_lease=0.2)
        group.set_targets({"ns/p": "http://s"})
        group.report("ns/p", 0, None, None)
        group.set_payload(payload(1))
        await wait_until(lambda: sidecars.received["http://s"] == [1])
        assert not group.statuses()[0].watching
        await closed(group)

    asyncio.run(scenario())


def test_a_watching_sidecars_health_comes_from_its_polls_not_from_reads() -> None:
    async def scenario() -> None:
        health = FakeHealth()
        seen: list[tuple[str, BackendHealth | None, BackendHealth]] = []
        group = group_of(
            FakeSidecars(),
            health_reader=health,
            health_interval=0.01,
            on_health=lambda key, before, now: seen.append((key, before, now)),
        )
        group.set_targets({"ns/p": "http://s"})
        view = BackendHealth(1, {"10.0.0.1:8182": "down"})
        group.report("ns/p", 1, view, None)
        group.set_payload(payload(1))
        await asyncio.sleep(0.1)
        assert health.reads == []
        assert group.statuses()[0].health == view
        assert seen == [("ns/p", None, view)]
        await closed(group)

    asyncio.run(scenario())


def test_a_watching_sidecar_ahead_of_the_operator_moves_its_generation_on() -> None:
    async def scenario() -> None:
        conflicts: list[int] = []
        group = group_of(FakeSidecars(), on_conflict=conflicts.append)
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        group.report("ns/p", 7, None, None)
        group.report("ns/p", 10**9, None, None)  # not believable: ignored
        assert conflicts == [7]
        await closed(group)

    asyncio.run(scenario())


def test_a_watching_sidecar_that_refused_its_list_shows_why() -> None:
    async def scenario() -> None:
        results: list[TargetStatus] = []
        group = group_of(FakeSidecars(), on_result=results.append)
        group.set_targets({"ns/p": "http://s"})
        group.report("ns/p", 0, None, None)
        group.set_payload(payload(1))
        group.report("ns/p", 0, None, "403: 10.0.0.1:8182 is not allowed")
        assert results[-1].error == "403: 10.0.0.1:8182 is not allowed"
        assert not results[-1].in_sync
        await closed(group)

    asyncio.run(scenario())


def test_a_report_of_a_pod_not_followed_changes_nothing() -> None:
    async def scenario() -> None:
        group = group_of(FakeSidecars())
        group.report("ns/stranger", 1, None, None)
        assert group.statuses() == []
        await closed(group)

    asyncio.run(scenario())


def test_a_sidecar_that_polled_before_its_pod_was_seen_is_never_pushed_to() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = group_of(sidecars)
        group.set_payload(payload(1))
        group.report("ns/p", 1, None, None)  # the new pod's sidecar polls first
        group.set_targets({"ns/p": "http://s", "ns/q": "http://q"})
        await wait_until(lambda: sidecars.received["http://q"] == [1])
        assert sidecars.received["http://s"] == []
        assert group.statuses()[0].watching
        await closed(group)

    asyncio.run(scenario())


def test_a_plain_http_watch_url_is_refused_when_the_watch_serves_https() -> None:
    with pytest.raises(ValueError, match=r"--distribution-url: http://op:8444 is plain HTTP"):
        operator_options("--distribution-url", "http://op:8444")


def test_without_push_tls_the_watch_url_must_be_plain_http() -> None:
    with pytest.raises(ValueError, match=r"with --no-push-tls the watch has no certificate"):
        operator_options("--no-push-tls")
    plain = operator_options("--no-push-tls", "--distribution-url", "http://op:8444")
    assert plain.distribution is not None
    assert plain.distribution.url == "http://op:8444"
    assert operator_options("--no-push-tls", "--distribution-listen", "").distribution is None
