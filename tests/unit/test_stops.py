"""Every stop ends, and a cancelled wait leaves nothing behind.

Most specs cancel the stopper at the one moment that lost it before: from inside a stopped
task's own cancellation, while the stopper waits for that task to end (asyncio hands the
stopper's cancel on to the awaited task, and ``suppress(CancelledError)`` swallowed it with the
task's). Each is bounded, so a regression fails within seconds instead of hanging the suite."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from gremlinlb.operator.app import OperatorApp, OperatorOptions
from gremlinlb.operator.client import Kube
from gremlinlb.operator.controller import ClusterController, ControllerOptions, NamingSender
from gremlinlb.operator.push import Payload, PushGroup, SendOutcome
from gremlinlb.sidecar.admin import AdminApi
from gremlinlb.sidecar.backend import BackendPool, Backends
from gremlinlb.sidecar.backend_connection import BackendConnection
from gremlinlb.sidecar.config import OperatorWatch
from gremlinlb.sidecar.frames import GRAPHBINARY_CHANNEL
from gremlinlb.sidecar.health import HealthLoop
from gremlinlb.sidecar.ids import IdSource
from gremlinlb.sidecar.options import BackendOptions
from gremlinlb.sidecar.watch import PollResult, Watcher

from gremlinlb.core import Balancer, BalancerSettings, Endpoint
from gremlinlb.tasks import cancel_and_wait

BOUND = 5.0  # seconds: far above what any of these takes, far below the suite's timeout


async def ended(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to end, at most BOUND seconds (a stop that hangs fails here)."""
    try:
        async with asyncio.timeout(BOUND):
            await asyncio.wait({task})
    except TimeoutError:
        task.cancel()
        name = getattr(task.get_coro(), "__qualname__", task.get_name())
        raise AssertionError(f"{name} did not end within {BOUND} s") from None


async def hang_then_cancel(stopper: list[asyncio.Task[Any]]) -> Any:
    """Hangs until cancelled, then cancels the task in ``stopper`` as it ends itself."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopper[0].cancel()
        raise
    raise AssertionError("unreachable")


# -- the shared way ------------------------------------------------------------------------------


def test_a_stopper_cancelled_while_its_tasks_end_is_cancelled_once_they_ended() -> None:
    async def scenario() -> None:
        stopper: list[asyncio.Task[Any]] = []
        child = asyncio.create_task(hang_then_cancel(stopper))
        await asyncio.sleep(0)
        stopper.append(asyncio.create_task(cancel_and_wait(child)))
        await ended(stopper[0])
        assert stopper[0].cancelled()
        assert child.cancelled()

    asyncio.run(scenario())


def test_an_error_a_stopped_task_ends_with_is_retrieved_not_raised() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("broke on the way out") from None

    async def scenario() -> None:
        child = asyncio.create_task(fails_when_cancelled())
        await asyncio.sleep(0)
        async with asyncio.timeout(BOUND):
            await cancel_and_wait(child)
        assert isinstance(child.exception(), ValueError)

    asyncio.run(scenario())


# -- the operator ------------------------------------------------------------------------------


def test_a_push_group_cancelled_while_it_closes_ends_cancelled() -> None:
    async def scenario() -> None:
        closer: list[asyncio.Task[Any]] = []
        pushing = asyncio.Event()

        async def send(url: str, token: str | None, body: bytes, time_limit: float) -> SendOutcome:
            pushing.set()
            return cast(SendOutcome, await hang_then_cancel(closer))

        group = PushGroup("ns/c", send, asyncio.Semaphore(1))
        group.set_targets({"ns/p": "http://s"})
        group.set_payload(Payload.build(1, ("10.0.0.1:8182",), {"max_attempts": 3}))
        async with asyncio.timeout(BOUND):
            await pushing.wait()
        closer.append(asyncio.create_task(group.close()))
        await ended(closer[0])
        assert closer[0].cancelled()

    asyncio.run(scenario())


class HangingKube:
    """A Kubernetes API whose reads hang; cancelled, a read cancels the stopper."""

    def __init__(self, stopper: list[asyncio.Task[Any]]) -> None:
        self.stopper = stopper
        self.reading = asyncio.Event()

    async def read(self, *_args: Any, **_kwargs: Any) -> Any:
        self.reading.set()
        return await hang_then_cancel(self.stopper)

    async def close(self) -> None:
        pass


def test_a_cluster_controller_cancelled_while_it_stops_ends_cancelled() -> None:
    """The leader election stops every controller when it stops leading: a cancel lost there
    kept the election's loop running after the operator's stop."""

    async def scenario() -> None:
        stopper: list[asyncio.Task[Any]] = []
        api = HangingKube(stopper)
        controller = ClusterController(
            cast(Kube, api),
            cast(NamingSender, None),
            asyncio.Semaphore(1),
            ControllerOptions(),
            {"metadata": {"namespace": "ns", "name": "c"}, "spec": {}},
        )
        controller.start()
        async with asyncio.timeout(BOUND):
            await api.reading.wait()  # its token Secret
        stopper.append(asyncio.create_task(controller.stop()))
        await ended(stopper[0])
        assert stopper[0].cancelled()

    asyncio.run(scenario())


def test_an_operator_cancelled_while_it_closes_ends_cancelled() -> None:
    async def scenario() -> None:
        closer: list[asyncio.Task[Any]] = []
        api = HangingKube(closer)
        options = OperatorOptions(webhook=None, metrics=None, distribution=None)
        app = OperatorApp(options, cast(Kube, api))
        await app.start_background()  # the leader election: its first read of the Lease hangs
        async with asyncio.timeout(BOUND):
            await api.reading.wait()
        closer.append(asyncio.create_task(app.close()))
        await ended(closer[0])
        assert closer[0].cancelled()

    asyncio.run(scenario())


# -- the sidecar -------------------------------------------------------------------------------


class ChangingBackends:
    """/readyz/backends whose hosts change after the first read: each poll is given up."""

    def __init__(self) -> None:
        self.reads = 0

    def backends(self) -> dict[str, Any]:
        self.reads += 1
        return {"hosts": {"10.0.0.1:8182": "healthy" if self.reads == 1 else "ejected"}}


def test_a_watch_cancelled_as_it_gives_a_poll_up_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        watch: list[asyncio.Task[Any]] = []
        where = OperatorWatch("https://op.example:8444", "shop", "graph", "app-1", None)
        watcher = Watcher(where, cast(AdminApi, ChangingBackends()), lambda: "t", check_every=0.01)

        async def request(_session: Any, _health: dict[str, Any]) -> PollResult:
            return cast(PollResult, await hang_then_cancel(watch))

        monkeypatch.setattr(watcher, "_request", request)
        watch.append(asyncio.create_task(watcher.run()))
        await ended(watch[0])
        assert watch[0].cancelled()

    asyncio.run(scenario())


class StuckHostBalancer:
    """The core as one probe of a host found stuck sees it."""

    settings = BalancerSettings()
    sources = SimpleNamespace(configure=lambda *_args: None)

    def is_deprioritised(self, _endpoint: Endpoint) -> bool:
        return True


def test_a_probe_cancelled_as_it_gives_up_a_hung_host_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        probe: list[asyncio.Task[Any]] = []
        health = HealthLoop(cast(Balancer, StuckHostBalancer()), cast(Backends, None))

        async def traversal(_endpoint: Endpoint, _source: str) -> tuple[str | None, bool]:
            return cast(tuple[str | None, bool], await hang_then_cancel(probe))

        async def no_pong(_endpoint: Endpoint) -> bool:
            return False

        monkeypatch.setattr(health, "_probe_source", traversal)
        monkeypatch.setattr(health, "answers_ping", no_pong)
        probe.append(asyncio.create_task(health._first_probe(Endpoint("ws", "a", 1))))
        await ended(probe[0])
        assert probe[0].cancelled()

    asyncio.run(scenario())


def test_a_probe_of_a_stuck_host_cancelled_cancels_its_traversal_and_its_ping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        health = HealthLoop(cast(Balancer, StuckHostBalancer()), cast(Backends, None))
        started: list[str] = []
        cancelled: list[str] = []
        both = asyncio.Event()
        both_cancelled = asyncio.Event()

        async def hang(what: str) -> Any:
            started.append(what)
            if len(started) == 2:
                both.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(what)
                if len(cancelled) == 2:
                    both_cancelled.set()
                raise

        async def traversal(_endpoint: Endpoint, _source: str) -> tuple[str | None, bool]:
            return cast(tuple[str | None, bool], await hang("traversal"))

        async def ping(_endpoint: Endpoint) -> bool:
            return cast(bool, await hang("ping"))

        monkeypatch.setattr(health, "_probe_source", traversal)
        monkeypatch.setattr(health, "answers_ping", ping)
        probe = asyncio.create_task(health._first_probe(Endpoint("ws", "a", 1)))
        async with asyncio.timeout(BOUND):
            await both.wait()
        probe.cancel()  # the sidecar stops
        await ended(probe)
        try:
            async with asyncio.timeout(BOUND):
                await both_cancelled.wait()
        except TimeoutError:
            raise AssertionError(f"left running after the probe ended: {started}") from None
        assert sorted(cancelled) == ["ping", "traversal"]

    asyncio.run(scenario())


class BusyConnection:
    """A pooled backend connection that carries as many requests as it may, until ``free``."""

    usable = True
    in_flight = 1

    def has_room(self) -> bool:
        return self.in_flight == 0

    def free(self) -> None:
        self.in_flight = 0


def test_a_request_whose_client_leaves_as_it_gets_room_passes_the_room_on() -> None:
    """Room on a busy connection wakes one waiter; that one cancelled before it resumes (its
    client left) must hand the room to the next, which would otherwise wait out max_wait and
    fail with nothing sent."""

    async def scenario() -> None:
        pool = BackendPool(
            Endpoint("ws", "a", 1),
            GRAPHBINARY_CHANNEL,
            BackendOptions(connections_per_host=1),
            cast(aiohttp.ClientSession, None),
            cast(IdSource, None),
        )
        busy = BusyConnection()
        connection = cast(BackendConnection, busy)
        pool._connections.append(connection)  # its only connection
        leaving = asyncio.create_task(pool.lease(1.0, 2 * BOUND))
        staying = asyncio.create_task(pool.lease(1.0, 2 * BOUND))
        await asyncio.sleep(0)  # both wait for room
        busy.free()
        pool._wake_one(connection)  # what the end of a request does
        leaving.cancel()  # its client left before it resumed
        await ended(staying)
        assert staying.result() is connection

    asyncio.run(scenario())
