"""A suspected failover in a sidecar whose host list is pushed (no topology source of its own).

A sidecar that follows a Neptune cluster itself (`--neptune-cluster`) reads the cluster at once
when a write meets `ReadOnlyViolationException` (`NeptuneTopology.refresh_now`). One whose list
is pushed (the operator's GremlinCluster spec.neptune, or a script) cannot read anything: it
counts the suspicion instead, which `GET /readyz/backends` reports as `read_only_violations`,
and waits for the next list. The operator reads that answer every health interval and, seeing
the count grow (or a role with no host in service, `roles_out`), reads the cluster at once and
pushes the new list; the held write then goes to the writer it names (`neptune_retry.py`). A
write still held asks again (the count grows) every ASK_AGAIN seconds, until its request's
deadline: with nobody pushing (a list given by hand), the client then gets Neptune's answer
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib

#: A write still held asks again this often (seconds): the operator's read may have come before
#: the management API named the new writer, and then nothing new is pushed.
ASK_AGAIN = 5.0


class PushedTopology:
    """`refresh` for `Proxy.refresh_topology` in a sidecar without its own topology source;
    `list_applied` is told each host list the admin API applies."""

    def __init__(self, ask_again: float = ASK_AGAIN) -> None:
        #: Times a write refused by a reader asked for a new list (reported to the operator).
        self.read_only_violations = 0
        self._ask_again = ask_again
        self._next_list: asyncio.Event | None = None  # set by the next list applied

    def list_applied(self) -> None:
        """A new host list is in force: wake every write waiting for one."""
        if self._next_list is not None:
            self._next_list.set()
            self._next_list = None

    async def refresh(self) -> bool:
        """Report the suspected failover and wait for the next list, at most `ask_again`
        seconds (the caller asks again until its request's deadline); False: none came."""
        self.read_only_violations += 1
        if self._next_list is None:
            self._next_list = asyncio.Event()
        applied = self._next_list
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._ask_again):
                await applied.wait()
        return applied.is_set()
