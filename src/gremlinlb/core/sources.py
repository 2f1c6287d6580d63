"""Per-traversal-source availability: "host H does not serve source S", and nothing more.

A Gremlin Server may hold some graphs and not others (JanusGraph's ConfiguredGraphFactory
creates graphs at runtime; a server that has not created one yet answers every request for it
with an error while passing a `g` probe). Taking such a host out of rotation would be wrong for
the sources it does serve, so the core keeps a separate, small map of which hosts are known to
lack which source, and the pick skips those hosts for requests naming that source only.

The sources watched are the configured ones plus those learned from requests' `aliases`:
learned ones are bounded (`MAX_LEARNED`) and forgotten when unused (`FORGET_AFTER`), so a
client's typo cannot grow memory or probes. A source that no healthy host serves is never used
to skip hosts: such a request goes to a host as usual and its client gets the server's own
error (a typo is reported, not hidden, and takes no host out).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable

from gremlinlb.core.endpoints import Endpoint

DEFAULT_SOURCE = "g"
MAX_LEARNED = 16
FORGET_AFTER = 600.0  # seconds without a request naming a learned source

# Gremlin Server 3.x answers a request naming a traversal source it does not hold with 499
# (REQUEST_ERROR_INVALID_REQUEST_ARGUMENTS) and one of these messages: TraversalOpProcessor
# and SessionOpProcessor (bytecode), StandardOpProcessor and SessionOpProcessor (eval aliases).
INVALID_REQUEST_ARGUMENTS = 499
UNKNOWN_SOURCE_MESSAGES = (
    "for alias [g] is not configured on the server",
    "not in the Graph or TraversalSource global bindings",
)


def says_source_unknown(code: int, message: str) -> bool:
    """Whether a server's answer means "I do not have this traversal source"."""
    return code == INVALID_REQUEST_ARGUMENTS and any(m in message for m in UNKNOWN_SOURCE_MESSAGES)


class TraversalSources:
    """Which traversal sources are watched, and on which hosts each one is missing.

    Thread-safe; every method is O(sources + hosts missing one) at most.
    """

    def __init__(
        self,
        default: str = DEFAULT_SOURCE,
        configured: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.default = default
        self._configured: tuple[str, ...] = ()
        self._learned: dict[str, float] = {}  # source -> last request naming it
        self._missing: dict[str, set[Endpoint]] = {}
        self.configure(default, configured)

    def configure(self, default: str, configured: Iterable[str] = ()) -> None:
        """The source used by requests without aliases (and by the health probe), and the
        other sources to watch from the start."""
        sources = tuple(dict.fromkeys(s for s in configured if s and s != default))
        with self._lock:
            self.default = default
            self._configured = sources
            for source in sources:
                self._learned.pop(source, None)

    def seen(self, source: str | None) -> None:
        """A request named `source`: watch it (bounded; the least recently used learned
        source makes room)."""
        if source is None or source == self.default:
            return
        now = self._clock()
        with self._lock:
            if source in self._configured:
                return
            if source not in self._learned and len(self._learned) >= MAX_LEARNED:
                oldest = min(self._learned, key=self._learned.__getitem__)
                self._forget(oldest)
            self._learned[source] = now

    def watched(self) -> list[str]:
        """The sources other than the default to probe on every host; learned ones unused
        for FORGET_AFTER seconds are dropped here."""
        now = self._clock()
        with self._lock:
            for source in [s for s, t in self._learned.items() if now - t > FORGET_AFTER]:
                self._forget(source)
            return [*self._configured, *self._learned]

    def record(self, endpoint: Endpoint, source: str, served: bool) -> None:
        """A probe (or an answer) showed whether `endpoint` serves `source`."""
        with self._lock:
            if served:
                hosts = self._missing.get(source)
                if hosts is not None:
                    hosts.discard(endpoint)
                    if not hosts:
                        del self._missing[source]
            elif source == self.default or source in self._configured or source in self._learned:
                self._missing.setdefault(source, set()).add(endpoint)

    def missing_on(self, source: str | None) -> frozenset[Endpoint]:
        """The hosts known not to serve `source` (None: the default source)."""
        if not self._missing:  # the common case, read without the lock
            return frozenset()
        with self._lock:
            hosts = self._missing.get(self.default if source is None else source)
            return frozenset(hosts) if hosts else frozenset()

    def snapshot(self) -> dict[str, object]:
        """What is watched and where each source is missing, for an admin API."""
        with self._lock:
            return {
                "default": self.default,
                "configured": list(self._configured),
                "learned": list(self._learned),
                "missing": {
                    s: sorted(e.address for e in hosts) for s, hosts in self._missing.items()
                },
            }

    def forget_host(self, endpoint: Endpoint) -> None:
        """A host left the list: its marks go with it."""
        with self._lock:
            for source in [s for s, hosts in self._missing.items() if endpoint in hosts]:
                self._missing[source].discard(endpoint)
                if not self._missing[source]:
                    del self._missing[source]

    def _forget(self, source: str) -> None:
        self._learned.pop(source, None)
        self._missing.pop(source, None)


def skip_for_source(
    missing: frozenset[Endpoint],
    candidates: Collection[Endpoint],
    exclude: Collection[Endpoint],
) -> Collection[Endpoint]:
    """`exclude` plus the hosts missing the request's source, if some candidate (a healthy
    host not excluded) still serves it; otherwise `exclude` alone, so the request goes to a
    host as usual and its client gets the server's own error."""
    if not missing:
        return exclude
    if any(c not in missing and c not in exclude for c in candidates):
        return {*exclude, *missing}
    return exclude
