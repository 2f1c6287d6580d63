"""One loop timer for many due times (timers.py): the hedge checks of every read."""

from __future__ import annotations

import asyncio

from gremlinlb.sidecar.timers import TimerQueue


def test_callbacks_run_in_due_order_whatever_order_they_were_added() -> None:
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = TimerQueue()
        timers.call_later(loop, 0.06, ran.append, "late")
        timers.call_later(loop, 0.02, ran.append, "early")
        timers.call_later(loop, 0.04, ran.append, "middle")
        await asyncio.sleep(0.15)

    asyncio.run(main())
    assert ran == ["early", "middle", "late"]


def test_a_failing_callback_does_not_hold_back_the_next() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("a bug")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = TimerQueue()
        timers.call_later(loop, 0.01, fail)
        timers.call_later(loop, 0.01, ran.append, "next")
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert ran == ["next"]


def test_closed_queue_runs_nothing() -> None:
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        timers = TimerQueue()
        timers.call_later(loop, 0.01, ran.append, "dropped")
        timers.close()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert (ran, len(TimerQueue())) == ([], 0)
