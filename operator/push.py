"""Delivering host lists to sidecars: concurrent, bounded, coalescing, retrying, never stuck.

Each sidecar (a *target*) has its own small task that converges on the group's latest payload:

* **bounded**: every PUT holds a slot of one semaphore shared by all groups, so a burst to
  thousands of sidecars never opens thousands of sockets at once;
* **coalescing**: a target pushes only the newest payload; generations that came and went
  while a push was in flight are never sent;
* **retrying**: a failed push is retried after an exponential, jittered backoff; a poke (the
  sidecar restarted, its pod turned ready) retries at once;
* **isolated**: a target waiting on a dead or hung sidecar holds nothing the others need (its
  semaphore slot is bounded by the request timeout and released while it backs off); a target
  whose last push or health read failed first takes one of the few *failing slots*, so failing
  sidecars together never hold more than that share of the slots; one that answers again is
  back among the others at once.

A sidecar that watches the operator (distribution.py) is neither pushed to nor read: each of its
polls is :meth:`PushGroup.report`ed, and for ``WATCH_LEASE`` seconds after one the target only
records what the sidecar said (its generation, its health). One that stops polling is pushed to
again (an old image during an upgrade, a hand-written sidecar, a watch that broke).

Between pushes, a target in sync reads the sidecar's view of its backends now and then
(:class:`HealthReader`, ``GET /readyz/backends``), so the GremlinCluster status shows what the
sidecars see, not only what the EndpointSlices say: a server can be "ready" to Kubernetes and
still be down, ejected or unreachable for every client.

The HTTP calls are injected (:class:`Sender`, :class:`HealthReader`), so this module is tested
without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gremlinlb.operator.backoff import Backoff

from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: Between reads of a sidecar's backend health that got no usable answer: growing, capped and
#: jittered, instead of a read every second forever (a reply resets it).
HEALTH_BACKOFF = Backoff(first=1.0, maximum=60.0)

#: Polls kept for pods not known yet, at most (the oldest go first).
MAX_EARLY = 20_000

#: The share of the push slots that targets whose last call failed may hold together.
FAILING_SHARE = 0.25


def failing_slots(push_slots: int) -> asyncio.Semaphore:
    """The semaphore of the slots failing targets may hold, for ``push_slots`` in all."""
    return asyncio.Semaphore(max(1, int(push_slots * FAILING_SHARE)))


#: How far past the operator's own generation a sidecar's 409 may claim to be and be believed.
#: Legitimately a sidecar is ahead by the generations whose status write was lost (a restart
#: right after pushes) or that another operator instance pushed: a few, never thousands.
GENERATION_WINDOW = 1000


def believable_generation(claimed: int, ours: int, window: int = GENERATION_WINDOW) -> bool:
    """Whether a generation a sidecar claims to hold (its 409) is one the operator may move
    past: a broken or hostile sidecar must not push every sidecar's generation to 2**63."""
    return 0 <= claimed <= ours + window


@dataclass(frozen=True, slots=True)
class Payload:
    """One host list, serialized once and shared by every push."""

    generation: int
    hosts: tuple[str, ...]
    settings: Mapping[str, Any]
    #: Client sidecars per zone (``client_zones``; sent only when some are known).
    client_zones: Mapping[str, int]
    body: bytes = field(repr=False, compare=False)
    #: The same list without ``client_zones``, for sidecars older than that field.
    body_without_zones: bytes = field(repr=False, compare=False, default=b"")

    @classmethod
    def build(
        cls,
        generation: int,
        hosts: tuple[str, ...],
        settings: Mapping[str, Any],
        client_zones: Mapping[str, int] | None = None,
    ) -> Payload:
        zones = dict(sorted((client_zones or {}).items()))
        document: dict[str, Any] = {
            "generation": generation,
            "hosts": list(hosts),
            "settings": settings,
        }
        without = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        if not zones:
            return cls(generation, hosts, settings, zones, without, without)
        document["client_zones"] = zones
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return cls(generation, hosts, settings, zones, body, without)

    def next(self, generation: int) -> Payload:
        """The same list under another generation."""
        return Payload.build(generation, self.hosts, self.settings, self.client_zones)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    status: int | None = None
    #: From a 409: the generation the sidecar holds (newer than or equal to ours).
    current_generation: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """One sidecar's view of its backends."""

    #: The host list generation the sidecar held when it answered.
    generation: int | None
    #: Backend address -> state as the sidecar sees it (healthy, down, ejected, joining, ...).
    states: Mapping[str, str]
    #: Times a write refused by a reader (ReadOnlyViolationException) asked for a new list.
    read_only_violations: int = 0
    #: The roles (writer, reader) listed with no host in service.
    roles_out: tuple[str, ...] = ()


class HealthReader(Protocol):
    """Reads one sidecar's backend health; None when it cannot be read (no answer, bad JSON)."""

    async def __call__(self, url: str, time_limit: float) -> BackendHealth | None: ...


class Sender(Protocol):
    async def __call__(
        self, url: str, token: str | None, body: bytes, time_limit: float
    ) -> SendOutcome: ...


@dataclass(frozen=True, slots=True)
class TargetStatus:
    key: str
    url: str
    acked_generation: int | None
    in_sync: bool
    failures: int
    error: str | None
    #: The HTTP status of the last answer (None: no answer, or none yet).
    status: int | None = None
    #: The sidecar's view of its backends at the last read (None: not read, or unreadable).
    health: BackendHealth | None = None
    #: The sidecar watches the operator (it polled within the watch lease): no pushes.
    watching: bool = False


class _Target:
    def __init__(self, key: str, url: str) -> None:
        self.key = key
        self.url = url
        self.acked: int | None = None
        self.failures = 0
        self.error: str | None = None
        self.status: int | None = None
        self.health: BackendHealth | None = None
        #: Health reads in a row that got no usable answer.
        self.health_failures = 0
        # The sidecar refused ``client_zones`` as an unknown field: an image older than the
        # operator's (a rolling upgrade). It gets its lists without them until its pod is new.
        self.without_zones = False
        #: Until when (monotonic) the sidecar counts as watching: its last poll + the lease.
        self.watched_until = 0.0
        self.wake = asyncio.Event()
        self.poked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class PushGroup:
    """The sidecars of one GremlinCluster; each converges on :meth:`set_payload`'s latest."""

    def __init__(
        self,
        name: str,
        sender: Sender,
        semaphore: asyncio.Semaphore,
        *,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        on_result: Callable[[TargetStatus], None] = lambda _status: None,
        on_conflict: Callable[[int], None] = lambda _generation: None,
        health_reader: HealthReader | None = None,
        health_interval: float = 15.0,
        on_health: Callable[[str, BackendHealth | None, BackendHealth], None] = (
            lambda _key, _previous, _health: None
        ),
        failing: asyncio.Semaphore | None = None,
        health_backoff: Backoff = HEALTH_BACKOFF,
        watch_lease: float = 75.0,
    ) -> None:
        """``on_health``: told every health answer read (changed or not): the target's key, its
        previous answer (None: none kept) and the new one."""
        self.name = name
        self._watch_lease = watch_lease
        self._health_backoff = health_backoff
        #: Taken (before a slot of ``semaphore``) by a target whose last call failed.
        self._failing = failing
        self._send = sender
        self._semaphore = semaphore
        self._timeout = timeout
        self._backoff = backoff or Backoff()
        self._on_result = on_result
        self._on_conflict = on_conflict
        self._read_health = health_reader
        self._health_interval = health_interval
        self._on_health = on_health
        self._payload: Payload | None = None
        self._token: str | None = None
        self._targets: dict[str, _Target] = {}
        #: Polls of sidecars whose pod is not a target yet (a new pod's sidecar polls before
        #: the pod watch brings it): applied when it becomes one, so it is never pushed to.
        self._early: dict[str, tuple[float, int, BackendHealth | None, str | None]] = {}
        self._closed = False
        #: Tasks cancelled by :meth:`halt`, for :meth:`close` to wait for.
        self._halted: list[asyncio.Task[None]] = []

    # -- inputs ------------------------------------------------------------------------------

    @property
    def payload(self) -> Payload | None:
        return self._payload

    @property
    def token(self) -> str | None:
        return self._token

    def set_token(self, token: str | None) -> None:
        if token != self._token:
            self._token = token
            self.refresh()

    def set_payload(self, payload: Payload) -> None:
        """Make ``payload`` the one every target converges on (a no-op when unchanged)."""
        if self._payload == payload:
            return
        self._payload = payload
        for target in self._targets.values():
            target.wake.set()

    def set_targets(self, targets: Mapping[str, str]) -> None:
        """The current sidecars, ``key -> admin base URL``; others stop being pushed to."""
        for key in list(self._targets):
            if key not in targets:
                self._drop(key)
        for key, url in targets.items():
            self.set_target(key, url)

    def set_target(self, key: str, url: str) -> None:
        """One sidecar new, or at a new URL (pushed to afresh); the same URL: nothing to do."""
        current = self._targets.get(key)
        if current is not None and current.url == url:
            return
        if current is not None:
            self._drop(key)
        if not self._closed:
            target = _Target(key, url)
            self._targets[key] = target
            early = self._early.pop(key, None)
            if early is not None and early[0] + self._watch_lease > time.monotonic():
                target.watched_until = early[0] + self._watch_lease
                target.acked, target.health, target.error = early[1], early[2], early[3]
            target.task = asyncio.create_task(self._run(target), name=f"push {key}")

    def remove_target(self, key: str) -> None:
        """One sidecar no longer pushed to (unknown keys are ignored)."""
        if key in self._targets:
            self._drop(key)

    def poke(self, key: str) -> None:
        """The sidecar may have restarted: push again now, even if it had the list."""
        target = self._targets.get(key)
        if target is not None and not _watching(target):  # a watcher polls on its own
            target.acked = None
            target.failures = 0
            target.wake.set()
            target.poked.set()

    def refresh(self) -> None:
        """Push the current payload to every target again (a periodic safety net)."""
        for key in list(self._targets):
            self.poke(key)

    def report(
        self, key: str, generation: int, health: BackendHealth | None, error: str | None
    ) -> None:
        """A watching sidecar polled: it holds ``generation`` and sees its backends so. A key
        not pushed to yet is kept for a while (at most ``MAX_EARLY``): its pod may come next."""
        target = self._targets.get(key)
        if target is None:
            self._early.pop(key, None)
            self._early[key] = (time.monotonic(), generation, health, error)
            if len(self._early) > MAX_EARLY:
                del self._early[next(iter(self._early))]  # the oldest
            return
        before = self._state(target)
        previous = target.health
        target.watched_until = time.monotonic() + self._watch_lease
        target.acked = generation
        target.error = error
        target.failures = 0 if error is None else max(1, target.failures)
        target.status = None
        if health is not None:
            target.health = health
            self._on_health(key, previous, health)
        payload = self._payload
        if (
            payload is not None
            and generation > payload.generation
            and believable_generation(generation, payload.generation)
        ):
            self._on_conflict(generation)
        if self._state(target) != before:
            self._on_result(self._status(target))

    # -- outputs -----------------------------------------------------------------------------

    def statuses(self) -> list[TargetStatus]:
        return [self._status(t) for t in sorted(self._targets.values(), key=lambda t: t.key)]

    def _state(self, target: _Target) -> tuple[object, ...]:
        """What :meth:`_status` tells beyond key and URL, cheaply compared: every poll of
        every watching sidecar compares it, and most change nothing."""
        payload = self._payload
        return (
            target.acked,
            payload is not None and target.acked == payload.generation,
            target.failures,
            target.error,
            target.status,
            target.health,
            _watching(target),
        )

    def _status(self, target: _Target) -> TargetStatus:
        payload = self._payload
        in_sync = payload is not None and target.acked == payload.generation
        return TargetStatus(
            target.key,
            target.url,
            target.acked,
            in_sync,
            target.failures,
            target.error,
            target.status,
            target.health,
            _watching(target),
        )

    def halt(self) -> None:
        """Cancel every target's task now (no more pushes); :meth:`close` waits for them."""
        self._closed = True
        for key in list(self._targets):
            self._drop(key)

    async def close(self) -> None:
        self.halt()
        tasks, self._halted = self._halted, []
        await cancel_and_wait(*tasks)

    # -- the per-target loop -------------------------------------------------------------------

    def _drop(self, key: str) -> None:
        target = self._targets.pop(key)
        if target.task is not None:
            target.task.cancel()
            if self._closed:
                self._halted.append(target.task)

    async def _run(self, target: _Target) -> None:
        while True:
            target.wake.clear()
            left = target.watched_until - time.monotonic()
            if left > 0:  # it watches: its polls bring it the list and report its health
                await asyncio.sleep(left)
                continue
            payload = self._payload
            if payload is None or target.acked == payload.generation:
                if payload is None or self._read_health is None:
                    await target.wake.wait()
                elif not await _woken(target.wake, self._health_delay(target)):
                    await self._refresh_health(target)
                continue
            target.poked.clear()
            outcome = await self._attempt(target, payload)
            target.status = outcome.status
            if outcome.ok:
                target.acked = payload.generation
                target.failures = 0
                target.error = None
                self._on_result(self._status(target))
                continue
            claimed = outcome.current_generation
            if claimed is not None and believable_generation(claimed, payload.generation):
                # The sidecar holds a newer generation (another operator instance, or a status
                # write that was lost): the group moves past it and pushes again at once.
                self._on_conflict(claimed)
                if self._payload is not payload:
                    continue
            elif claimed is not None:
                outcome = SendOutcome(
                    False,
                    outcome.status,
                    error=f"409: the sidecar claims generation {claimed}, more than "
                    f"{GENERATION_WINDOW} past this list's {payload.generation}: not believed "
                    "(restart the sidecar if it is broken; its pod may be compromised)",
                )
            target.failures += 1
            target.error = outcome.error or f"HTTP {outcome.status}"
            target.health = None  # a sidecar that takes no list has no view worth showing
            self._on_result(self._status(target))
            await _woken(target.poked, self._backoff.delay(target.failures))

    def _health_delay(self, target: _Target) -> float:
        """Soon after a new list (the sidecar probes new hosts at once), then every interval,
        jittered so that thousands of sidecars are not read in lockstep."""
        if target.health_failures:
            return self._health_backoff.delay(target.health_failures)
        fresh = target.health is not None and target.health.generation == target.acked
        interval = self._health_interval if fresh else min(1.0, self._health_interval)
        return interval * random.uniform(0.8, 1.2)

    async def _refresh_health(self, target: _Target) -> None:
        assert self._read_health is not None
        async with self._slot(target.failures > 0 or target.health_failures > 0):
            try:
                health = await self._read_health(target.url, self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # the reader should not raise; never let a target die
                log.exception("reading the backend health of %s failed unexpectedly", target.key)
                health = None
        target.health_failures = 0 if health is not None else target.health_failures + 1
        if health is not None:
            self._on_health(target.key, target.health, health)
        if health != target.health:
            target.health = health
            self._on_result(self._status(target))

    async def _attempt(self, target: _Target, payload: Payload) -> SendOutcome:
        outcome = await self._put(target, payload)
        if not target.without_zones and _refuses_client_zones(outcome, payload):
            target.without_zones = True
            log.warning(
                "sidecar %s does not take client_zones (its image is older than the "
                "operator's): it gets its host lists without them, so its zone preference "
                "follows the hosts' health only; upgrade its image for the overload spill",
                target.key,
            )
            outcome = await self._put(target, payload)
        return outcome

    async def _put(self, target: _Target, payload: Payload) -> SendOutcome:
        body = payload.body_without_zones if target.without_zones else payload.body
        async with self._slot(target.failures > 0):
            log.debug("%s: pushing generation %d to %s", self.name, payload.generation, target.key)
            try:
                return await self._send(target.url, self._token, body, self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the sender should not raise; never let a target die
                log.exception("push to %s failed unexpectedly", target.key)
                return SendOutcome(False, error=f"{type(error).__name__}: {error}")

    @contextlib.asynccontextmanager
    async def _slot(self, failing: bool) -> AsyncIterator[None]:
        """A push slot; for a call to a sidecar whose last call of that kind failed, one of the
        failing slots first (a sidecar that takes lists but has no health answer, an image
        without ``/readyz/backends``, still gets its pushes at full speed)."""
        async with contextlib.AsyncExitStack() as stack:
            if failing and self._failing is not None:
                await stack.enter_async_context(self._failing)
            await stack.enter_async_context(self._semaphore)
            yield


def _watching(target: _Target) -> bool:
    return target.watched_until > time.monotonic()


def _refuses_client_zones(outcome: SendOutcome, payload: Payload) -> bool:
    """A 400 listing client_zones among the unknown fields ("unknown field(s) client_zones;
    expected ..."): what a sidecar from before the field answers."""
    if not payload.client_zones or outcome.status != 400 or outcome.error is None:
        return False
    _, found, rest = outcome.error.partition("unknown field(s) ")
    return bool(found) and "client_zones" in rest.partition(";")[0].split(", ")


async def _woken(event: asyncio.Event, delay: float) -> bool:
    """Wait for ``event`` at most ``delay`` seconds; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await event.wait()
    return event.is_set()
