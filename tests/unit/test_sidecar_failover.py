"""A sidecar whose list is pushed: a write refused by a reader reports a suspected failover
and waits for the next list (sidecar/failover.py)."""

from __future__ import annotations

import asyncio

from gremlinlb.sidecar.failover import PushedTopology


def test_a_refused_write_is_counted_and_waits_until_the_next_list_is_applied() -> None:
    async def scenario() -> None:
        pushed = PushedTopology()
        waiting = [asyncio.ensure_future(pushed.refresh()) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert pushed.read_only_violations == 2
        assert not any(w.done() for w in waiting)  # no list yet: still held
        pushed.list_applied()
        assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [True, True]

    asyncio.run(scenario())


def test_a_list_applied_before_a_write_was_refused_does_not_release_it() -> None:
    async def scenario() -> None:
        pushed = PushedTopology()
        pushed.list_applied()  # an older list: it cannot name the writer after this refusal
        waiting = asyncio.ensure_future(pushed.refresh())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        pushed.list_applied()
        assert await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


def test_a_write_held_with_no_list_coming_asks_again_and_is_counted_again() -> None:
    async def scenario() -> None:
        pushed = PushedTopology(ask_again=0.01)
        assert not await asyncio.wait_for(pushed.refresh(), 1)  # no list: ask again
        assert not await asyncio.wait_for(pushed.refresh(), 1)
        assert pushed.read_only_violations == 2  # the operator sees the count grow

    asyncio.run(scenario())
