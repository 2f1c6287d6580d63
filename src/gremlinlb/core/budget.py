"""The extra-request budget shared by hedges and by retries that cost a server work.

Finagle's RetryBudget, same name and meaning: every request deposits; an extra request may be
sent when, counting it, extra requests in the last `window` seconds stay within ratio x
requests in that window plus a reserve of min_per_second x window. So hedging and retrying can
never more than (1 + ratio) the load on a fleet that is already struggling.
"""

from __future__ import annotations

from collections import deque

from gremlinlb.core.settings import BudgetSettings

# Requests are counted in time slots of window / _SLOTS (requests are many; a timestamp each
# would cost memory at 10k req/s). Counting only slots entirely inside the window undercounts
# requests, never overcounts them, so the bound holds exactly for the window ending at each spend.
_SLOTS = 50


class RetryBudget:
    """Not thread-safe: the balancer calls it under its lock."""

    def __init__(self, settings: BudgetSettings) -> None:
        self._settings = settings
        self._deposits: deque[list[float]] = deque()  # [slot start, count], oldest first
        self._spent: deque[float] = deque()  # time of each extra request in the window

    @property
    def settings(self) -> BudgetSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: BudgetSettings) -> None:
        self._settings = settings

    def deposit(self, now: float) -> None:
        last = self._deposits[-1] if self._deposits else None
        if last is not None and now - last[0] < self._settings.window / _SLOTS:
            last[1] += 1  # the hot path: same slot as the last request
            return
        slot = self._settings.window / _SLOTS
        self._deposits.append([now - now % slot, 1.0])
        self._forget(now)

    def try_spend(self, now: float) -> bool:
        """Spend one extra request if the budget allows it now."""
        self._forget(now)  # what is left: slots that started inside the window, spends in it
        settings = self._settings
        requests = sum(count for _, count in self._deposits)
        allowed = settings.ratio * requests + settings.min_per_second * settings.window
        if len(self._spent) + 1 > allowed:
            return False
        self._spent.append(now)
        return True

    def _forget(self, now: float) -> None:
        horizon = now - self._settings.window
        while self._deposits and self._deposits[0][0] <= horizon:
            self._deposits.popleft()
        while self._spent and self._spent[0] <= horizon:
            self._spent.popleft()
