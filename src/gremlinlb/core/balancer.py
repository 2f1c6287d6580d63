"""The balancing core: which hosts exist, which are healthy, who goes next, who waits.

Free of I/O on purpose: adapters (the in-process client, the sidecar) do the networking and
report what happened; this class decides. Every method is quick and non-blocking under one
lock, so it is safe from many threads and from an asyncio loop alike.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from gremlinlb.core.buffer import PendingBuffer, Waiter
from gremlinlb.core.endpoints import Endpoint, HostState, parse_endpoint
from gremlinlb.core.errors import (
    AllHostsTriedError,
    BalancerClosedError,
    BufferTimeoutError,
    UnknownEndpointError,
)
from gremlinlb.core.health import HealthCounter
from gremlinlb.core.outcomes import Outcome
from gremlinlb.core.picking import LeastInFlight, RoundRobin
from gremlinlb.core.settings import BalancerSettings, Policy

log = logging.getLogger(__name__)


class EventKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    STATE_CHANGED = "state_changed"


@dataclass(frozen=True, slots=True)
class HostEvent:
    kind: EventKind
    endpoint: Endpoint
    state: HostState
    previous: HostState | None = None
    reason: str = ""


Listener = Callable[[HostEvent], None]


@dataclass
class _Host:
    endpoint: Endpoint
    seq: int
    health: HealthCounter
    state: HostState = HostState.HEALTHY
    state_since: float = field(default_factory=time.time)
    in_flight: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A read-only snapshot of one host, for status APIs and metrics."""

    endpoint: Endpoint
    state: HostState
    state_since: float
    in_flight: int
    outcomes: dict[Outcome, int]
    last_error: str | None

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())


Acquired = Endpoint | Waiter


class Balancer:
    def __init__(
        self,
        endpoints: Iterable[Endpoint | str] = (),
        settings: BalancerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings or BalancerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._hosts: dict[Endpoint, _Host] = {}
        self._ring: list[_Host] = []  # sorted by seq
        self._picker = self._make_picker(self._settings.policy)
        self._buffer = PendingBuffer(self._settings.buffer)
        self._listeners: list[Listener] = []
        self._closed = False
        for endpoint in endpoints:
            self.add(endpoint)

    # -- configuration -------------------------------------------------------------------

    @property
    def settings(self) -> BalancerSettings:
        return self._settings

    def subscribe(self, listener: Listener) -> None:
        """Listeners run after the change, outside the lock; they may call back in."""
        self._listeners.append(listener)

    def update_settings(self, settings: BalancerSettings) -> None:
        """Apply new settings; requests already waiting keep their deadline."""
        with self._lock:
            if settings.policy is not self._settings.policy:
                self._picker = self._make_picker(settings.policy)
            self._settings = settings
            for host in self._ring:
                host.health.rise = settings.health.rise
                host.health.fall = settings.health.fall
            self._buffer.settings = settings.buffer

    # -- membership ----------------------------------------------------------------------

    def add(self, endpoint: Endpoint | str) -> bool:
        """Add a host (healthy until proven otherwise); False if it was already present."""
        parsed = _as_endpoint(endpoint)
        with self._lock:
            self._check_open()
            existing = self._hosts.get(parsed)
            if existing is not None and existing.state is not HostState.DRAINING:
                return False
            if existing is not None:  # re-added while draining: it stays, and serves again
                events = [self._set_state(existing, HostState.HEALTHY, "re-added")]
            else:
                host = _Host(
                    endpoint=parsed,
                    seq=next(self._seq),
                    health=HealthCounter(self._settings.health.rise, self._settings.health.fall),
                )
                self._hosts[parsed] = host
                self._ring.append(host)
                events = [HostEvent(EventKind.ADDED, parsed, host.state)]
            self._release_waiters()
        self._emit(events)
        return True

    def remove(self, endpoint: Endpoint | str, *, drain: bool = False) -> None:
        """Remove a host now, or with `drain` once its in-flight requests are done."""
        parsed = _as_endpoint(endpoint)
        with self._lock:
            host = self._hosts.get(parsed)
            if host is None:
                known = ", ".join(h.endpoint.address for h in self._ring) or "none"
                raise UnknownEndpointError(
                    f"cannot remove {parsed.address}: it is not one of the hosts ({known}); "
                    "hosts are matched by their full address, ws://host:port/path"
                )
            if drain and host.in_flight > 0:
                events = [self._set_state(host, HostState.DRAINING, "removed, draining")]
            else:
                events = [self._drop(host)]
        self._emit(events)

    def replace(self, endpoints: Iterable[Endpoint | str]) -> tuple[list[Endpoint], list[Endpoint]]:
        """Make the host list exactly `endpoints`; removed hosts drain. Returns (added, removed)."""
        wanted = [_as_endpoint(e) for e in endpoints]
        keep = set(wanted)  # a set: applying a list stays linear in its size
        with self._lock:
            current = [h.endpoint for h in self._ring if h.state is not HostState.DRAINING]
        removed = [e for e in current if e not in keep]
        added = [e for e in wanted if self.add(e)]
        for endpoint in removed:
            self.remove(endpoint, drain=True)
        return added, removed

    def hosts(self) -> list[HostStatus]:
        with self._lock:
            return [
                HostStatus(
                    endpoint=h.endpoint,
                    state=h.state,
                    state_since=h.state_since,
                    in_flight=h.in_flight,
                    outcomes=dict(h.outcomes),
                    last_error=h.last_error,
                )
                for h in self._ring
            ]

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [h.endpoint for h in self._ring]

    def state_of(self, endpoint: Endpoint | str) -> HostState:
        parsed = _as_endpoint(endpoint)
        with self._lock:
            host = self._hosts.get(parsed)
            if host is None:
                raise UnknownEndpointError(f"{parsed.address} is not one of the hosts")
            return host.state

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        with self._lock:
            return self._buffer.bytes

    # -- requests ------------------------------------------------------------------------

    def acquire(
        self, size: int | Callable[[], int], exclude: Collection[Endpoint] = ()
    ) -> Acquired:
        """Pick a healthy host for a request of `size` bytes, or queue it.

        `size` may be a callable: it is only called when the request has to wait, so adapters
        measure a request only on that rare path.

        Returns the endpoint (the request now counts as in flight there), or a `Waiter` to be
        woken when a host recovers. Raises `BufferFullError` when a bound is hit, and
        `AllHostsTriedError` when healthy hosts exist but all are in `exclude`.
        """
        with self._lock:
            self._check_open()
            host = self._pick(exclude)
            if host is not None:
                host.in_flight += 1
                return host.endpoint
            if exclude and any(h.state is HostState.HEALTHY for h in self._ring):
                raise AllHostsTriedError(
                    "every healthy host already failed this request; not retrying further"
                )
            for waiter in self._buffer.expired(self._clock()):
                waiter.error = _timeout_error(self._buffer.settings.max_wait)
                waiter.notify()
            return self._buffer.admit(size() if callable(size) else size, self._clock())

    def time_out(self, waiter: Waiter) -> None:
        """A waiter's deadline passed: raise BufferTimeoutError if it is still waiting.

        Returns quietly if it was released meanwhile: its endpoint (or error) is then set.
        """
        if self.withdraw(waiter):
            raise _timeout_error(self.settings.buffer.max_wait)

    def withdraw(self, waiter: Waiter) -> bool:
        """A waiter gave up (deadline or cancel). False if it was released meanwhile."""
        with self._lock:
            return self._buffer.remove(waiter)

    def finish(
        self, endpoint: Endpoint, outcome: Outcome, error: BaseException | None = None
    ) -> None:
        """Report how a request acquired on `endpoint` ended; it no longer counts in flight."""
        self._report(endpoint, outcome, error, done=True)

    def release(self, endpoint: Endpoint) -> None:
        """Give back an acquired slot on which nothing was attempted (e.g. the caller gave up)."""
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(endpoint)
            if host is None:
                return
            host.in_flight = max(0, host.in_flight - 1)
            if host.state is HostState.DRAINING and host.in_flight == 0:
                events.append(self._drop(host))
        self._emit(events)

    def observe(
        self, endpoint: Endpoint, outcome: Outcome, error: BaseException | None = None
    ) -> None:
        """Report an outcome on a long-lived lease (a session) that stays in flight."""
        self._report(endpoint, outcome, error, done=False)

    def _report(
        self, endpoint: Endpoint, outcome: Outcome, error: BaseException | None, *, done: bool
    ) -> None:
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(endpoint)
            if host is None:
                return
            if done:
                host.in_flight = max(0, host.in_flight - 1)
            host.outcomes[outcome] += 1
            if error is not None:
                host.last_error = f"{type(error).__name__}: {error}"
            if outcome.marks_host_down and host.state is HostState.HEALTHY:
                host.health.reset()
                events.append(self._set_state(host, HostState.DOWN, f"passive: {outcome.value}"))
            if host.state is HostState.DRAINING and host.in_flight == 0:
                events.append(self._drop(host))
        self._emit(events)

    # -- active health checks ------------------------------------------------------------

    def probe_targets(self) -> list[Endpoint]:
        """Hosts the health loop should probe now: down ones, and healthy ones if configured."""
        with self._lock:
            wanted = {HostState.DOWN}
            if self._settings.health.probe_healthy:
                wanted.add(HostState.HEALTHY)
            return [h.endpoint for h in self._ring if h.state in wanted]

    def record_probe(self, endpoint: Endpoint, ok: bool, error: str | None = None) -> None:
        events: list[HostEvent] = []
        with self._lock:
            host = self._hosts.get(endpoint)
            if host is None or host.state is HostState.DRAINING:
                return
            if not ok and error:
                host.last_error = f"probe: {error}"
            new_state = host.health.record(host.state, ok)
            if new_state is not host.state:
                reason = "probe passed" if ok else f"probe failed: {error or 'no answer'}"
                events.append(self._set_state(host, new_state, reason))
                if new_state is HostState.HEALTHY:
                    self._release_waiters()
        self._emit(events)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new requests and fail everything still waiting."""
        with self._lock:
            self._closed = True
            while len(self._buffer):
                waiter = self._buffer.pop()
                waiter.error = BalancerClosedError(
                    "the balancer was closed while this request waited"
                )
                waiter.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals (lock held) -----------------------------------------------------------

    def _pick(self, exclude: Collection[Endpoint]) -> _Host | None:
        return self._picker.pick(
            self._ring,
            lambda h: h.state is HostState.HEALTHY and h.endpoint not in exclude,
        )

    def _release_waiters(self) -> None:
        """Hand buffered requests, oldest first, to healthy hosts in turn."""
        now = self._clock()
        while (waiter := self._buffer.peek()) is not None:
            if waiter.deadline <= now:
                self._buffer.pop()
                waiter.error = _timeout_error(self._buffer.settings.max_wait)
                waiter.notify()
                continue
            host = self._pick(())
            if host is None:
                return
            self._buffer.pop()
            host.in_flight += 1
            waiter.endpoint = host.endpoint
            waiter.notify()

    def _set_state(self, host: _Host, state: HostState, reason: str) -> HostEvent:
        previous = host.state
        host.state = state
        host.state_since = time.time()
        level = logging.WARNING if state is HostState.DOWN else logging.INFO
        log.log(
            level,
            "host %s: %s -> %s (%s)",
            host.endpoint.address,
            previous.value,
            state.value,
            reason,
        )
        return HostEvent(EventKind.STATE_CHANGED, host.endpoint, state, previous, reason)

    def _drop(self, host: _Host) -> HostEvent:
        del self._hosts[host.endpoint]
        # The ring is sorted by seq: find the host by bisection, not by comparing every host.
        index = bisect.bisect_left(self._ring, host.seq, key=_seq_of)
        assert self._ring[index] is host, "the ring must stay sorted by seq"
        del self._ring[index]
        log.info("host %s removed", host.endpoint.address)
        return HostEvent(EventKind.REMOVED, host.endpoint, host.state)

    def _check_open(self) -> None:
        if self._closed:
            raise BalancerClosedError("the balancer is closed; create a new one")

    def _emit(self, events: list[HostEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("host event listener failed for %s", event)

    @staticmethod
    def _make_picker(policy: Policy) -> RoundRobin | LeastInFlight:
        return RoundRobin() if policy is Policy.ROUND_ROBIN else LeastInFlight()


def _seq_of(host: _Host) -> int:
    return host.seq


def _as_endpoint(endpoint: Endpoint | str) -> Endpoint:
    return endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)


def _timeout_error(max_wait: float) -> BufferTimeoutError:
    return BufferTimeoutError(
        f"no Gremlin Server became healthy within max_wait={max_wait}s; the request was not "
        "sent. Restore a backend or raise max_wait."
    )
