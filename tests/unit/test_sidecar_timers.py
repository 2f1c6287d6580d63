"""One loop timer for many due times (timers.py): the hedge checks of every read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gremlinlb.sidecar.timers import TimerQueue


def _run(schedule: Callable[[asyncio.AbstractEventLoop, TimerQueue], None]) -> TimerQueue:
    """Run `schedule` on a fresh loop, then the loop for 0.15 s; the queue it filled."""
    timers = TimerQueue()

    async def main() -> None:
        schedule(asyncio.get_running_loop(), timers)
        await asyncio.sleep(0.15)

    asyncio.run(main())
    return timers


def test_callbacks_run_in_due_order_whatever_order_they_were_added() -> None:
    ran: list[str] = []

    def schedule(loop: asyncio.AbstractEventLoop, timers: TimerQueue) -> None:
        timers.call_later(loop, 0.06, ran.append, "late")
        timers.call_later(loop, 0.02, ran.append, "early")
        timers.call_later(loop, 0.04, ran.append, "middle")

    _run(schedule)
    assert ran == ["early", "middle", "late"]


def test_a_failing_callback_does_not_hold_back_the_next() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("a bug")

    def schedule(loop: asyncio.AbstractEventLoop, timers: TimerQueue) -> None:
        timers.call_later(loop, 0.01, fail)
        timers.call_later(loop, 0.01, ran.append, "next")

    _run(schedule)
    assert ran == ["next"]


def test_a_closed_queue_runs_nothing() -> None:
    ran: list[str] = []

    def schedule(loop: asyncio.AbstractEventLoop, timers: TimerQueue) -> None:
        timers.call_later(loop, 0.01, ran.append, "dropped")
        timers.close()

    timers = _run(schedule)
    assert (ran, len(timers)) == ([], 0)
