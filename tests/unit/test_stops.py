"""Every stop ends: a task cancelled while it waits for the tasks it stops ends cancelled.

Each spec cancels the stopper at the one moment that lost it before: from inside a stopped
task's own cancellation, while the stopper waits for that task to end (asyncio hands the
stopper's cancel on to the awaited task, and ``suppress(CancelledError)`` swallowed it with the
task's). Each is bounded, so a regression fails within seconds instead of hanging the suite."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from gremlinlb.operator.client import Kube
from gremlinlb.operator.controller import ClusterController, ControllerOptions, NamingSender
from gremlinlb.operator.push import Payload, PushGroup, SendOutcome
from gremlinlb.sidecar.admin import AdminApi
from gremlinlb.sidecar.backend import Backends
from gremlinlb.sidecar.config import OperatorWatch
from gremlinlb.sidecar.health import HealthLoop
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
        raise AssertionError(f"{task.get_name()} did not end within {BOUND} s") from None


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
