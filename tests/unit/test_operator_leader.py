"""Leader election: a leader whose calls hang stops leading at its renew deadline."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from gremlinlb.operator.leader import LeaderElection, check_timings


class FakeLeases:
    """One Lease in memory; ``hang`` makes every call wait forever (an apiserver that stalls)."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.hang = False
        self.hanging = 0
        self.on_next_read: Callable[[], object] | None = None  # run once, as a read returns

    async def _maybe_hang(self) -> None:
        if self.hang:
            self.hanging += 1
            await asyncio.Event().wait()

    async def read(self, _kind: Any, _namespace: str, _name: str) -> dict[str, Any] | None:
        await self._maybe_hang()
        if self.on_next_read is not None:
            action, self.on_next_read = self.on_next_read, None
            action()
        return copy.deepcopy(self.lease)

    async def create(self, _kind: Any, _namespace: str, body: dict[str, Any]) -> None:
        await self._write(body)

    async def replace(self, _kind: Any, _ns: str, _name: str, body: dict[str, Any]) -> None:
        await self._write(body)

    async def _write(self, body: dict[str, Any]) -> None:
        await self._maybe_hang()
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)


def election(api: FakeLeases, events: list[str]) -> LeaderElection:
    async def started() -> None:
        events.append("started")

    async def stopped() -> None:
        events.append("stopped")

    return LeaderElection(
        api,  # type: ignore[arg-type]
        "ns",
        "lease",
        "me",
        duration=0.9,
        renew_deadline=0.6,
        retry=0.1,
        on_started=started,
        on_stopped=stopped,
    )


async def wait_for(check: Any, limit: float = 10.0) -> None:
    for _ in range(int(limit / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {limit} s")


@contextlib.asynccontextmanager
async def leading(api: FakeLeases, events: list[str]) -> AsyncIterator[LeaderElection]:
    """An election run as a task, once it leads; the task cancelled on the way out."""
    leader = election(api, events)
    task = asyncio.create_task(leader.run())
    await wait_for(lambda: leader.leading)
    yield leader
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):  # a stop that hangs fails in seconds
            await task


def test_a_leader_whose_renewal_hangs_stops_leading_while_the_call_still_hangs() -> None:
    async def scenario() -> None:
        api, events = FakeLeases(), list[str]()
        async with leading(api, events) as leader:
            api.hang = True
            await wait_for(lambda: not leader.leading)
            assert events == ["started", "stopped"]
            assert api.hanging >= 1  # stopped without any call having returned

    asyncio.run(scenario())


def test_a_replica_that_stopped_leading_leads_again_once_it_can_renew() -> None:
    async def scenario() -> None:
        api, events = FakeLeases(), list[str]()
        async with leading(api, events) as leader:
            api.hang = True
            await wait_for(lambda: not leader.leading)
            api.hang = False
            await wait_for(lambda: leader.leading)
            assert events == ["started", "stopped", "started"]

    asyncio.run(scenario())


def test_a_leader_that_sees_another_holder_stops_leading() -> None:
    async def scenario() -> None:
        api, events = FakeLeases(), list[str]()
        async with leading(api, events) as leader:
            assert api.lease is not None
            api.lease["spec"]["holderIdentity"] = "other"
            api.version += 1
            api.lease["metadata"]["resourceVersion"] = str(api.version)
            await wait_for(lambda: not leader.leading)
            assert events == ["started", "stopped"]

    asyncio.run(scenario())


def test_a_leader_cancelled_as_a_lease_call_returns_stops_and_releases_the_lease() -> None:
    """asyncio.wait_for on Python 3.11 returns the inner result and drops a cancellation that
    arrives as the inner call finishes: the operator's stop then waited forever."""

    async def scenario() -> None:
        api, events = FakeLeases(), list[str]()
        leader = election(api, events)
        task = asyncio.create_task(leader.run())
        await wait_for(lambda: leader.leading)
        api.on_next_read = task.cancel
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await asyncio.shield(task)
        assert task.cancelled()
        assert not leader.leading
        assert api.lease is not None
        assert api.lease["spec"]["holderIdentity"] == ""

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("duration", "deadline", "retry", "message"),
    [
        (15, 15, 2, "must be shorter than the lease duration"),
        (15, 20, 2, "must be shorter than the lease duration"),
        (15, 2, 2, "must exceed 1.2 x the retry period"),
    ],
)
def test_timings_that_could_leave_two_leaders_are_refused(
    duration: float, deadline: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_timings(duration, deadline, retry)
