"""Leader election on a coordination.k8s.io Lease, with client-go's renew deadline.

Every replica serves the admission webhook (so a rollout or a drained node never leaves pods
without one), but only the leader follows GremlinClusters: it alone pushes host lists and writes
statuses. A replica takes the lease when it is free, released, or not renewed for
``duration`` seconds *as observed locally* (clocks of different nodes are never compared); the
leader renews it every ``retry`` seconds.

The leader stops leading once ``renew_deadline`` (< ``duration``) has passed since the start of
its last successful renewal, **whether or not its calls have returned**: every call it makes is
bounded by what is left of the deadline. Another replica can take the lease only ``duration``
after it *saw* that renewal, which is later than the renewal's start, so the old leader has
stopped (pushes, status writes, the webhook's use of its state) ``duration - renew_deadline``
seconds before anyone else can lead. A replica that stops cleanly releases the lease, so the
next one takes over within ``retry`` seconds instead of ``duration``.

Why not kubernetes_asyncio's ``leaderelection`` (read in 36.1.0): its renew loop checks the
deadline only between calls (a call that hangs keeps it leading: the very bug this module
fixes), it leads once and never stands by again, and it measures time on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gremlinlb.operator.client import Kind, Kube, KubeError

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_timings(duration: float, renew_deadline: float, retry: float) -> None:
    """client-go's rules: a leader gives up before another can take over, and retries at
    least once within the deadline."""
    if not 0 < renew_deadline < duration:
        raise ValueError(
            f"the renew deadline ({renew_deadline:g} s) must be shorter than the lease "
            f"duration ({duration:g} s): a leader must stop before another replica can lead"
        )
    if not 0 < retry * 1.2 < renew_deadline:
        raise ValueError(
            f"the renew deadline ({renew_deadline:g} s) must exceed 1.2 x the retry period "
            f"({retry:g} s)"
        )


class LeaderElection:
    def __init__(
        self,
        api: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry: float = 2.0,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        check_timings(duration, renew_deadline, retry)
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._duration = duration
        self._renew_deadline = renew_deadline
        self._retry = retry
        self._on_started = on_started
        self._on_stopped = on_stopped
        self.leading = False
        self._renewed_at = 0.0  # monotonic: start of our last successful renewal
        self._observed: tuple[str, float] | None = None  # (resourceVersion, monotonic seen)

    async def run(self) -> None:
        try:
            while True:
                if self.leading:
                    await self._renew_round()
                else:
                    await self._acquire_round()
        finally:
            if self.leading:
                self.leading = False
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release_within_retry())

    def _deadline(self) -> float:
        return self._renewed_at + self._renew_deadline

    async def _renew_round(self) -> None:
        """Renew within the deadline, or stop leading at the deadline."""
        started = time.monotonic()
        left = self._deadline() - started
        held = await self._bounded(left) if left > 0 else None
        if held:
            self._renewed_at = started
        elif held is False:
            await self._step_down("another replica holds the lease")
            return
        left = self._deadline() - time.monotonic()
        if left <= 0:
            await self._step_down(
                f"the lease was not renewed within the renew deadline ({self._renew_deadline:g} s)"
            )
            return
        await asyncio.sleep(min(self._retry, left))
        if time.monotonic() >= self._deadline():
            await self._step_down(
                f"the lease was not renewed within the renew deadline ({self._renew_deadline:g} s)"
            )

    async def _acquire_round(self) -> None:
        started = time.monotonic()
        if await self._bounded(self._renew_deadline):
            self._renewed_at = started
            if time.monotonic() < self._deadline():
                self.leading = True
                log.info("leading: this replica (%s) follows the clusters", self.identity)
                await self._on_started()
                return
        await asyncio.sleep(self._retry)

    async def _bounded(self, seconds: float) -> bool | None:
        """One round of :meth:`_try`, given up after ``seconds`` (None: no answer, an error or
        a lost race)."""
        try:
            async with asyncio.timeout(seconds):
                return await self._try()
        except TimeoutError:
            log.info("lease %s/%s: no answer within %.1f s", self.namespace, self.name, seconds)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.info("lease %s/%s: %s", self.namespace, self.name, error)
        return None

    async def _step_down(self, why: str) -> None:
        self.leading = False
        log.warning("stopped leading: %s", why)
        await self._on_stopped()

    async def _try(self) -> bool | None:
        """One round: True when this replica holds the lease afterwards, False when another
        live replica does, None when a race was lost (the next round tells)."""
        lease = await self._api.read(Kind.LEASE, self.namespace, self.name)
        now = _now()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            return await self._write(body, create=True)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = str(lease["metadata"].get("resourceVersion"))
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, time.monotonic())
        if holder == self.identity:
            lease["spec"] = {**spec, "renewTime": now, "leaseDurationSeconds": self._seconds}
            return await self._write(lease)
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        expired = time.monotonic() - self._observed[1] > duration
        if holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = self._spec(now, acquired=now, transitions=transitions)
        if await self._write(lease):
            log.info("took the lease from %r", holder or "nobody")
            return True
        return None

    @property
    def _seconds(self) -> int:
        return max(1, math.ceil(self._duration))

    def _spec(self, now: str, *, acquired: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._seconds,
            "acquireTime": acquired,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _write(self, body: dict[str, Any], *, create: bool = False) -> bool | None:
        try:
            if create:
                await self._api.create(Kind.LEASE, self.namespace, body)
            else:
                await self._api.replace(Kind.LEASE, self.namespace, self.name, body)
        except KubeError as error:
            if error.status == 409:  # another replica wrote first
                return None
            raise
        return True

    async def _release_within_retry(self) -> None:
        async with asyncio.timeout(self._retry):
            await self._release()

    async def _release(self) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait it out."""
        lease = await self._api.read(Kind.LEASE, self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": "", "renewTime": _now()}
        await self._api.replace(Kind.LEASE, self.namespace, self.name, lease)
        log.info("released the lease %s/%s", self.namespace, self.name)
