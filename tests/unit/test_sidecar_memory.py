"""The sidecar's memory budget: what it counts, and when it gives memory back."""

from __future__ import annotations

import pytest
from gremlinlb.sidecar.memory import MemoryBudget, MemoryLimits, MiB


def test_the_budget_is_over_only_past_its_limit() -> None:
    budget = MemoryBudget(10)
    budget.charge(10)
    assert not budget.over
    budget.charge(1)
    assert budget.over
    budget.discharge(1)
    assert (budget.over, budget.used, budget.peak) == (False, 10, 11)


def test_memory_is_trimmed_once_a_big_burst_has_passed() -> None:
    budget = MemoryBudget(100 * MiB)
    budget.charge(20 * MiB)
    budget.trim_after_burst()
    assert budget.peak == 20 * MiB  # still holding it: nothing to give back yet
    budget.discharge(19 * MiB)
    budget.trim_after_burst()
    assert budget.peak == MiB  # trimmed: the next burst is measured from here


def test_a_small_burst_is_not_worth_a_trim() -> None:
    budget = MemoryBudget(100 * MiB)
    budget.charge(MiB)
    budget.discharge(MiB)
    assert budget.trim_after_burst() is False


@pytest.mark.parametrize(
    ("limits", "complaint"),
    [
        ({"client_pause_bytes": 0}, "client_pause_bytes must be >= 1"),
        ({"client_pause_bytes": 2 * MiB, "client_max_queued_bytes": MiB}, "must be >="),
        ({"budget_bytes": MiB}, "memory_budget_bytes"),
        ({"max_requests_per_client": 0}, "max_requests_per_client"),
    ],
)
def test_limits_that_cannot_work_together_are_refused(
    limits: dict[str, int], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        MemoryLimits(**limits)
