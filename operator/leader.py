"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Every replica serves the admission webhook (so a rollout or a drained node never leaves pods
without one), but only the leader follows GremlinClusters: it alone pushes host lists and writes
statuses. A replica takes the lease when it is free, released, or not renewed for
``duration`` seconds *as observed locally* (clocks of different nodes are never compared); the
leader renews it every ``renew`` seconds and steps down when it could not renew for
``duration``. A replica that stops cleanly releases the lease, so the next one takes over
within ``renew`` seconds instead of ``duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gremlinlb.operator.kube import KubeApi, KubeError, namespaced

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: float = 15.0,
        renew: float = 2.0,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        self._api = api
        self._path = namespaced("coordination.k8s.io", "v1", namespace, "leases", name)
        self._collection = namespaced("coordination.k8s.io", "v1", namespace, "leases")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._duration = duration
        self._renew = renew
        self._on_started = on_started
        self._on_stopped = on_stopped
        self.leading = False
        self._renewed_at = 0.0  # monotonic: our last successful renewal
        self._observed: tuple[str, float] | None = None  # (resourceVersion, monotonic seen)

    async def run(self) -> None:
        try:
            while True:
                held: bool | None
                try:
                    held = await self._try()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.info("lease %s/%s: %s", self.namespace, self.name, error)
                    held = None
                if held:
                    self._renewed_at = time.monotonic()
                    if not self.leading:
                        self.leading = True
                        log.info("leading: this replica (%s) follows the clusters", self.identity)
                        await self._on_started()
                elif self.leading and held is False:
                    await self._step_down("another replica holds the lease")
                elif self.leading and time.monotonic() - self._renewed_at > self._duration:
                    await self._step_down("the lease could not be renewed")
                await asyncio.sleep(self._renew)
        finally:
            if self.leading:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release())

    async def _step_down(self, why: str) -> None:
        self.leading = False
        log.warning("standing by: %s", why)
        await self._on_stopped()

    async def _try(self) -> bool | None:
        """One round: True when this replica holds the lease afterwards, False when another
        live replica does, None when a race was lost (the next round tells)."""
        lease = await self._api.get(self._path)
        now = _now()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            return await self._write("POST", self._collection, body)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = str(lease["metadata"].get("resourceVersion"))
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, time.monotonic())
        if holder == self.identity:
            lease["spec"] = {**spec, "renewTime": now, "leaseDurationSeconds": self._seconds}
            return await self._write("PUT", self._path, lease)
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        expired = time.monotonic() - self._observed[1] > duration
        if holder and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = self._spec(now, acquired=now, transitions=transitions)
        if await self._write("PUT", self._path, lease):
            log.info("took the lease from %r", holder or "nobody")
            return True
        return None

    @property
    def _seconds(self) -> int:
        return max(1, round(self._duration))

    def _spec(self, now: str, *, acquired: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._seconds,
            "acquireTime": acquired,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> bool | None:
        try:
            await self._api.request(method, path, body=body)
        except KubeError as error:
            if error.status == 409:  # another replica wrote first
                return None
            raise
        return True

    async def _release(self) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait it out."""
        lease = await self._api.get(self._path)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": "", "renewTime": _now()}
        await self._api.request("PUT", self._path, body=lease)
        log.info("released the lease %s/%s", self.namespace, self.name)
