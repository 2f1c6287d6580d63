"""A sidecar that does not answer: retried on a growing, capped, jittered schedule, holding no
more than its share of the push slots, and back to normal as soon as it answers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gremlinlb.operator.backoff import Backoff
from gremlinlb.operator.push import (
    HEALTH_BACKOFF,
    BackendHealth,
    Payload,
    PushGroup,
    SendOutcome,
    failing_slots,
)

from tests.unit.test_operator_push import closed, wait_until

FAST = Backoff(first=0.01, maximum=0.02, jitter=0.0)


def payload(generation: int) -> Payload:
    return Payload.build(generation, ("10.0.0.1:8182",), {})


def test_health_reads_back_off_exponentially_up_to_a_cap() -> None:
    bases = [HEALTH_BACKOFF.delay(n, random.Random(0)) for n in range(1, 12)]
    quiet = Backoff(HEALTH_BACKOFF.first, HEALTH_BACKOFF.factor, HEALTH_BACKOFF.maximum, 0.0)
    assert [quiet.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert all(d <= HEALTH_BACKOFF.maximum * (1 + HEALTH_BACKOFF.jitter) for d in bases)


def test_the_schedule_is_jittered_so_failing_sidecars_do_not_retry_in_step() -> None:
    delays = {round(HEALTH_BACKOFF.delay(3, random.Random(seed)), 6) for seed in range(20)}
    assert len(delays) > 1
    assert all(4.0 * 0.8 <= d <= 4.0 * 1.2 for d in delays)


def test_failing_sidecars_hold_a_quarter_of_the_push_slots_at_most() -> None:
    async def scenario() -> None:
        assert failing_slots(64)._value == 16
        assert failing_slots(2)._value == 1

    asyncio.run(scenario())


class HungAndHealthy:
    """``hung`` URLs answer nothing until the time limit; the others take every list."""

    def __init__(self, hung: set[str]) -> None:
        self.hung = hung
        self.attempts: Counter[str] = Counter()
        self.retrying = 0  # hung sidecars being retried right now (a failure behind them)
        self.most_retrying = 0
        self.received: dict[str, list[int]] = {}

    async def __call__(
        self, url: str, token: str | None, body: bytes, time_limit: float
    ) -> SendOutcome:
        self.attempts[url] += 1
        if url not in self.hung:
            self.received.setdefault(url, []).append(int(body.split(b'"generation":')[1][:1]))
            return SendOutcome(True, 200)
        retry = self.attempts[url] > 1
        self.retrying += retry
        self.most_retrying = max(self.most_retrying, self.retrying)
        try:
            await asyncio.sleep(time_limit)
            return SendOutcome(False, error="timed out")
        finally:
            self.retrying -= retry


def test_retries_to_hung_sidecars_hold_no_more_than_the_failing_slots() -> None:
    async def scenario() -> None:
        hung = {f"http://hung-{i}" for i in range(4)}
        sidecars = HungAndHealthy(hung)
        group = PushGroup(
            "ns/c",
            sidecars,
            asyncio.Semaphore(6),
            timeout=0.03,
            backoff=FAST,
            failing=asyncio.Semaphore(1),
        )
        group.set_targets({url: url for url in (*hung, "http://ok")})
        group.set_payload(payload(1))
        await wait_until(lambda: all(sidecars.attempts[url] >= 4 for url in hung))
        assert sidecars.most_retrying == 1
        group.set_payload(payload(2))
        await wait_until(lambda: sidecars.received["http://ok"][-1:] == [2])
        assert all(s.failures > 0 for s in group.statuses() if s.key in hung)
        await closed(group)

    asyncio.run(scenario())


def test_a_sidecar_answering_again_no_longer_waits_for_a_failing_slot() -> None:
    async def scenario() -> None:
        sidecars = HungAndHealthy({"http://s"})
        failing = asyncio.Semaphore(1)
        group = PushGroup(
            "ns/c", sidecars, asyncio.Semaphore(2), timeout=0.02, backoff=FAST, failing=failing
        )
        group.set_targets({"http://s": "http://s"})
        group.set_payload(payload(1))
        await wait_until(lambda: group.statuses()[0].failures >= 2)
        sidecars.hung.clear()  # it answers again
        await wait_until(lambda: group.statuses()[0].in_sync)
        async with failing:  # every failing slot taken: a sidecar still failing would wait
            group.set_payload(payload(2))
            await wait_until(lambda: group.statuses()[0].acked_generation == 2)
        assert group.statuses()[0].failures == 0
        await closed(group)

    asyncio.run(scenario())


class FlakyHealth:
    """No usable answer for the first ``silent`` reads, then a view."""

    def __init__(self, silent: int) -> None:
        self.silent = silent
        self.reads = 0

    async def __call__(self, url: str, time_limit: float) -> BackendHealth | None:
        self.reads += 1
        return None if self.reads <= self.silent else BackendHealth(1, {"10.0.0.1:8182": "up"})


def reading(health: FlakyHealth, **options: Any) -> PushGroup:
    """A group of one sidecar (it takes every list), its health read every ~5 ms when it
    answers, holding generation 1."""
    group = PushGroup(
        "ns/c",
        HungAndHealthy(set()),
        asyncio.Semaphore(1),
        health_reader=health,
        health_interval=0.005,
        **options,
    )
    group.set_targets({"http://s": "http://s"})
    group.set_payload(payload(1))
    return group


def test_a_sidecar_without_a_health_answer_is_read_less_and_less_often() -> None:
    async def scenario() -> None:
        health = FlakyHealth(silent=1000)
        group = reading(health, health_backoff=Backoff(first=0.02, maximum=0.08, jitter=0.0))
        await wait_until(lambda: health.reads >= 1)
        # Something must NOT happen (a read every 5 ms), so time must pass: 0.3 s holds 60
        # answered reads; the backoff (20, 40, 80, 80 ... ms) allows at most 6.
        await asyncio.sleep(0.3)
        assert health.reads <= 7
        await closed(group)

    asyncio.run(scenario())


@dataclass(frozen=True)
class CountedBackoff(Backoff):
    """A 1 ms backoff that notes each failure count it is asked to wait for."""

    asked: list[int] = field(default_factory=list)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        self.asked.append(failures)
        return 0.001


def test_a_sidecar_whose_health_answers_again_is_read_on_the_normal_schedule() -> None:
    async def scenario() -> None:
        health = FlakyHealth(silent=2)
        backoff = CountedBackoff()
        group = reading(health, health_backoff=backoff)
        await wait_until(lambda: group.statuses()[0].health is not None)
        answered = health.reads
        # Every ~5 ms again, 20 reads, and not one of them waited by the backoff.
        await wait_until(lambda: health.reads >= answered + 20)
        await closed(group)
        assert backoff.asked == [1, 2]

    asyncio.run(scenario())


def test_a_sidecar_without_a_health_answer_still_gets_its_lists_at_full_speed() -> None:
    async def scenario() -> None:
        health = FlakyHealth(silent=1000)  # an image without GET /readyz/backends, say
        failing = asyncio.Semaphore(1)
        group = reading(health, failing=failing)
        await wait_until(lambda: health.reads >= 1)
        async with failing:  # every failing slot taken: its push must not need one
            group.set_payload(payload(2))
            await wait_until(lambda: group.statuses()[0].acked_generation == 2)
        await closed(group)

    asyncio.run(scenario())
