"""Pushing host lists: bounded, coalescing, retrying, never held up by one sidecar."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable

from gremlinlb.operator.backoff import Backoff, Pacer
from gremlinlb.operator.push import (
    BackendHealth,
    Payload,
    PushGroup,
    Sender,
    SendOutcome,
    TargetStatus,
    _refuses_client_zones,
    believable_generation,
)
from gremlinlb.operator.sender import _backend_health

FAST = Backoff(first=0.01, maximum=0.05, jitter=0.0)


def payload(generation: int, *hosts: str) -> Payload:
    return Payload.build(generation, hosts or ("10.0.0.1:8182",), {"max_attempts": 3})


class FakeSidecars:
    """Records every PUT; ``behaviour[url]`` decides the answer (default: 200)."""

    def __init__(self) -> None:
        self.received: dict[str, list[int]] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.behaviour: dict[str, Callable[[int], Awaitable[SendOutcome]]] = {}
        #: Answers from the whole request, for a sidecar that judges the body.
        self.overrides: dict[str, Sender] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(
        self, url: str, token: str | None, body: bytes, time_limit: float
    ) -> SendOutcome:
        override = self.overrides.get(url)
        if override is not None:
            return await override(url, token, body, time_limit)
        self.bodies[url].append(body)
        generation = int(json.loads(body)["generation"])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            behaviour = self.behaviour.get(url)
            if behaviour is not None:
                return await behaviour(generation)
            await asyncio.sleep(0.001)
            self.received[url].append(generation)
            return SendOutcome(True, 200)
        finally:
            self.in_flight -= 1


async def wait_until(check: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll `check` until it holds. The limit only ends a spec whose condition never comes:
    generous, so that a busy machine (fewer loop turns a second) never fails a spec."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, f"timed out after {limit:g} s waiting for {check}"
        await asyncio.sleep(0.002)


async def closed(group: PushGroup, limit: float = 5.0) -> None:
    """Close ``group`` within ``limit`` seconds: a close that hangs fails here, in seconds."""
    try:
        async with asyncio.timeout(limit):
            await group.close()
    except TimeoutError:
        raise AssertionError(f"closing push group {group.name} took over {limit} s") from None


async def settle(group: PushGroup, generation: int, keys: list[str], limit: float = 30.0) -> None:
    def synced() -> bool:
        statuses = {s.key: s for s in group.statuses()}
        return all(statuses[k].acked_generation == generation for k in keys)

    await wait_until(synced, limit)


def test_every_target_converges_and_pushes_are_bounded() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(5), backoff=FAST)
        targets = {f"ns/p{i}": f"http://s{i}" for i in range(50)}
        group.set_targets(targets)
        group.set_payload(payload(1))
        await settle(group, 1, list(targets))
        assert sidecars.max_in_flight <= 5
        assert all(group.statuses()[i].in_sync for i in range(50))
        await closed(group)

    asyncio.run(scenario())


def test_a_burst_of_changes_is_coalesced_into_the_latest_list() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        sidecars = FakeSidecars()
        seen: list[int] = []

        async def slow(generation: int) -> SendOutcome:
            seen.append(generation)
            await gate.wait()
            return SendOutcome(True, 200)

        sidecars.behaviour["http://s"] = slow
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(4), backoff=FAST)
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await wait_until(lambda: seen == [1])  # generation 1 is in flight
        for generation in range(2, 10):
            group.set_payload(payload(generation, f"10.0.0.{generation}:8182"))
        gate.set()
        await settle(group, 9, ["ns/p"])
        assert seen == [1, 9]  # 2..8 were never sent
        await closed(group)

    asyncio.run(scenario())


def test_a_hung_sidecar_does_not_delay_the_others() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        never = asyncio.Event()

        async def hang(_generation: int) -> SendOutcome:
            await never.wait()
            return SendOutcome(True, 200)

        sidecars.behaviour["http://hung"] = hang
        # The hung push holds one of the two slots; every other push goes through the other.
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(2), backoff=FAST)
        targets = {"ns/hung": "http://hung", **{f"ns/p{i}": f"http://s{i}" for i in range(20)}}
        group.set_targets(targets)
        group.set_payload(payload(1))
        await settle(group, 1, [k for k in targets if k != "ns/hung"])
        hung = next(s for s in group.statuses() if s.key == "ns/hung")
        assert not hung.in_sync
        await closed(group)

    asyncio.run(scenario())


def test_a_failing_sidecar_is_retried_with_backoff_until_it_answers() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        attempts: list[float] = []
        loop = asyncio.get_running_loop()

        async def flaky(_generation: int) -> SendOutcome:
            attempts.append(loop.time())
            if len(attempts) < 4:
                return SendOutcome(False, error="connection refused")
            return SendOutcome(True, 200)

        sidecars.behaviour["http://s"] = flaky
        results: list[TargetStatus] = []
        group = PushGroup(
            "ns/c", sidecars, asyncio.Semaphore(1), backoff=FAST, on_result=results.append
        )
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await settle(group, 1, ["ns/p"])
        assert len(attempts) == 4
        assert [r.failures for r in results] == [1, 2, 3, 0]
        assert results[0].error == "connection refused"
        await closed(group)

    asyncio.run(scenario())


def test_a_poke_pushes_again_to_a_sidecar_that_had_the_list() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(1), backoff=FAST)
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await settle(group, 1, ["ns/p"])
        group.poke("ns/p")  # e.g. its sidecar container restarted
        await wait_until(lambda: sidecars.received["http://s"] == [1, 1])
        await closed(group)

    asyncio.run(scenario())


def test_a_conflict_moves_the_generation_past_the_sidecars() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group: PushGroup

        async def newer(generation: int) -> SendOutcome:
            if generation <= 40:
                return SendOutcome(False, 409, current_generation=40, error="409: stale")
            sidecars.received["http://s"].append(generation)
            return SendOutcome(True, 200)

        def bump(current: int) -> None:
            old = group.payload
            assert old is not None
            group.set_payload(Payload.build(current + 1, old.hosts, old.settings))

        sidecars.behaviour["http://s"] = newer
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(1), backoff=FAST, on_conflict=bump)
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(3))
        await settle(group, 41, ["ns/p"])
        assert sidecars.received["http://s"] == [41]
        await closed(group)

    asyncio.run(scenario())


def test_a_claimed_generation_is_believed_only_within_the_window_past_ours() -> None:
    assert believable_generation(40, 3, window=1000)
    assert believable_generation(1003, 3, window=1000)
    assert not believable_generation(1004, 3, window=1000)
    assert not believable_generation(2**63, 3)
    assert not believable_generation(-1, 3)


def test_an_absurd_generation_in_a_409_moves_nothing_and_reports_the_sidecar() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        conflicts: list[int] = []

        async def hostile(_generation: int) -> SendOutcome:
            return SendOutcome(False, 409, current_generation=2**63, error="409: stale")

        sidecars.behaviour["http://evil"] = hostile
        group = PushGroup(
            "ns/c", sidecars, asyncio.Semaphore(2), backoff=FAST, on_conflict=conflicts.append
        )
        group.set_targets({"ns/evil": "http://evil", "ns/good": "http://good"})
        group.set_payload(payload(3))
        await settle(group, 3, ["ns/good"])
        await wait_until(lambda: group.statuses()[0].failures >= 2)
        evil = group.statuses()[0]
        assert conflicts == []
        assert group.payload is not None
        assert group.payload.generation == 3
        assert evil.error is not None
        assert "not believed" in evil.error
        await closed(group)

    asyncio.run(scenario())


def test_a_halted_group_cancels_a_push_in_flight_at_once() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        started = asyncio.Event()

        async def hang(_generation: int) -> SendOutcome:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        sidecars.behaviour["http://s"] = hang
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(1), backoff=FAST)
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await asyncio.wait_for(started.wait(), 5)
        group.halt()
        group.set_targets({"ns/q": "http://q"})  # a halted group starts nothing new
        await asyncio.sleep(0)
        assert sidecars.in_flight == 0
        assert group.statuses() == []
        await closed(group)

    asyncio.run(scenario())


def test_removed_targets_stop_being_pushed_to() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(2), backoff=FAST)
        group.set_targets({"ns/a": "http://a", "ns/b": "http://b"})
        group.set_payload(payload(1))
        await settle(group, 1, ["ns/a", "ns/b"])
        group.set_targets({"ns/a": "http://a"})
        group.set_payload(payload(2))
        await settle(group, 2, ["ns/a"])
        assert sidecars.received["http://b"] == [1]
        assert [s.key for s in group.statuses()] == ["ns/a"]
        await closed(group)

    asyncio.run(scenario())


def test_backoff_grows_to_its_cap() -> None:
    backoff = Backoff(first=0.2, factor=2, maximum=10, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 10)] == [0.2, 0.4, 0.8, 10]


class FakeHealth:
    """Answers health reads from ``views[url]`` (None: the sidecar cannot be read)."""

    def __init__(self) -> None:
        self.views: dict[str, BackendHealth | None] = {}
        self.reads: list[str] = []

    async def __call__(self, url: str, time_limit: float) -> BackendHealth | None:
        self.reads.append(url)
        return self.views.get(url)


def test_a_sidecar_in_sync_has_its_backend_health_read_and_reported() -> None:
    async def scenario() -> None:
        health = FakeHealth()
        view = BackendHealth(1, {"10.0.0.1:8182": "ejected"})
        health.views["http://s"] = view
        results: list[TargetStatus] = []
        group = PushGroup(
            "ns/c",
            FakeSidecars(),
            asyncio.Semaphore(1),
            on_result=results.append,
            health_reader=health,
            health_interval=0.01,
        )
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await wait_until(lambda: group.statuses()[0].health == view)
        assert results[-1].health == view
        reports = len(results)
        await wait_until(lambda: len(health.reads) >= 5)
        assert len(results) == reports  # an unchanged view is not reported again
        await closed(group)

    asyncio.run(scenario())


def test_a_sidecar_that_stops_taking_the_list_loses_its_health_view() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        health = FakeHealth()
        health.views["http://s"] = BackendHealth(1, {"10.0.0.1:8182": "healthy"})
        group = PushGroup(
            "ns/c",
            sidecars,
            asyncio.Semaphore(1),
            backoff=FAST,
            health_reader=health,
            health_interval=0.01,
        )
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await wait_until(lambda: group.statuses()[0].health is not None)

        async def refuse(_generation: int) -> SendOutcome:
            return SendOutcome(False, error="connection refused")

        sidecars.behaviour["http://s"] = refuse
        group.set_payload(payload(2))
        await wait_until(lambda: group.statuses()[0].failures > 0)
        assert group.statuses()[0].health is None
        await closed(group)

    asyncio.run(scenario())


def test_every_health_answer_is_told_with_the_previous_one_even_unchanged() -> None:
    async def scenario() -> None:
        health = FakeHealth()
        view = BackendHealth(1, {"10.0.0.1:8182": "down"}, 2, ("writer",))
        health.views["http://s"] = view
        told: list[tuple[str, BackendHealth | None, BackendHealth]] = []
        group = PushGroup(
            "ns/c",
            FakeSidecars(),
            asyncio.Semaphore(1),
            health_reader=health,
            health_interval=0.01,
            on_health=lambda *answer: told.append(answer),
        )
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await wait_until(lambda: len(told) >= 3)
        await closed(group)
        assert told[0] == ("ns/p", None, view)
        assert told[1:3] == [("ns/p", view, view)] * 2  # the same answer, told each time

    asyncio.run(scenario())


def test_a_sidecars_health_answer_carries_its_suspicions_and_an_older_ones_none() -> None:
    states = {"10.0.0.1:8182": "down", "10.0.0.2:8182": "healthy"}
    answer = {"generation": 4, "hosts": states, "read_only_violations": 3, "roles_out": ["writer"]}
    assert _backend_health(json.dumps(answer)) == BackendHealth(
        4, states, read_only_violations=3, roles_out=("writer",)
    )
    older = {"generation": 4, "hosts": states}  # a sidecar from before these fields
    assert _backend_health(json.dumps(older)) == BackendHealth(4, states)


def test_without_a_health_reader_a_synced_sidecar_is_left_alone() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(1))
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(payload(1))
        await settle(group, 1, ["ns/p"])
        # Something must NOT happen (a second push), so time must pass: there is no event to
        # wait on. 0.05 s is many turns of the event loop, in which a re-push would be sent.
        await asyncio.sleep(0.05)
        assert sidecars.received["http://s"] == [1]
        assert group.statuses()[0].health is None
        await closed(group)

    asyncio.run(scenario())


def old_sidecar(sidecars: FakeSidecars, url: str) -> list[bytes]:
    """A sidecar from before client_zones: refuses the field as the old image does."""
    bodies: list[bytes] = []

    async def answer(url: str, token: str | None, body: bytes, time_limit: float) -> SendOutcome:
        bodies.append(body)
        if "client_zones" in json.loads(body):
            return SendOutcome(
                False,
                400,
                error="400: unknown field(s) client_zones; expected generation, hosts and settings",
            )
        return SendOutcome(True, 200)

    sidecars.overrides[url] = answer
    return bodies


def zoned(generation: int) -> Payload:
    return Payload.build(generation, ("10.0.0.1:8182",), {}, {"a": 3, "b": 1})


def test_a_sidecar_older_than_client_zones_gets_its_lists_without_them() -> None:
    async def scenario() -> None:
        sidecars = FakeSidecars()
        bodies = old_sidecar(sidecars, "http://old")
        group = PushGroup("ns/c", sidecars, asyncio.Semaphore(5), backoff=FAST)
        group.set_targets({"ns/old": "http://old", "ns/new": "http://new"})
        group.set_payload(zoned(1))
        await settle(group, 1, ["ns/old", "ns/new"])
        group.set_payload(zoned(2))
        await settle(group, 2, ["ns/old", "ns/new"])
        assert [("client_zones" in json.loads(b)) for b in bodies] == [True, False, False]
        zones = [json.loads(b)["client_zones"] for b in sidecars.bodies["http://new"]]
        assert zones == [{"a": 3, "b": 1}, {"a": 3, "b": 1}]
        await closed(group)

    asyncio.run(scenario())


def test_another_unknown_field_is_not_taken_for_an_old_sidecar() -> None:
    outcome = SendOutcome(
        False,
        400,
        error="400: unknown field(s) extra; expected generation, hosts, settings and client_zones",
    )
    assert not _refuses_client_zones(outcome, zoned(1))
    assert _refuses_client_zones(
        SendOutcome(False, 400, error="400: unknown field(s) client_zones, x; expected ..."),
        zoned(1),
    )
    assert not _refuses_client_zones(
        SendOutcome(False, 400, error="400: unknown field(s) client_zones; expected ..."),
        payload(1),  # nothing about zones was sent
    )


def test_the_pacer_lets_a_change_through_and_holds_the_next_for_the_rest_of_the_interval() -> None:
    pacer = Pacer(5.0)
    assert pacer.wait(100.0) == 0.0
    pacer.happened(100.0)
    assert pacer.wait(101.5) == 3.5
    assert pacer.wait(105.0) == 0.0
    pacer.happened(106.0)
    assert pacer.wait(110.0) == 1.0
