"""The host lists served to watching sidecars (issue 27): one encoded snapshot per cluster and
generation, for all of them, on its own thread and event loop.

A sidecar long-polls ``POST /v1/watch/<namespace>/<cluster>`` with the cluster's bearer token
(the token of today's push, compared in constant time) and a body telling the generation it
holds, its pod name and its view of its backends. A newer list is answered at once; otherwise
the request is held until the cluster's list changes, or ~30 s (jittered) pass: 204, poll
again. The operator's loop *publishes* an immutable :class:`DistributionView` (a reference
swap, then one wake-up per changed cluster); the server never computes a list. Each poll's
report goes back to the operator's loop: it is the sidecar's health and its acknowledgement
(push.py then neither pushes to it nor reads its health).

Only the leader answers: a standby answers 503 with a jittered ``Retry-After``. Concurrent
watches are capped per cluster and in all (429 with ``Retry-After`` beyond), so a fleet cannot
hold more sockets than the operator's file descriptors allow.

The server's certificate (:class:`WatchCertificate`) is renewed while it runs, and the new one
is presented from the next handshake on: held polls keep their connections.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from gremlinlb.operator.push import BackendHealth
from gremlinlb.operator.sender import backend_health
from gremlinlb.operator.threaded import ThreadedSite

from gremlinlb import certificates as certs
from gremlinlb.core.bearer import bearer_matches
from gremlinlb.core.errors import GremlinLBError

log = logging.getLogger(__name__)

WATCH_PREFIX = "/v1/watch/"
#: How long a poll is held without news, before jitter (a sidecar polls again at once).
HOLD = 30.0
#: What a standby tells sidecars to wait before polling again (jittered by half).
STANDBY_RETRY = 5.0
#: Polls a sidecar may make before the operator counts it as not watching any more.
WATCH_LEASE = 2.5 * HOLD
#: The longest pod name taken (a Kubernetes name is at most 253 characters).
MAX_POD_NAME = 253
MAX_POLL_BYTES = 1024 * 1024


class BadPollError(GremlinLBError, ValueError):
    """A poll body that cannot be read; the message says what to send."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One cluster's current list as served: already encoded, never recomputed per sidecar."""

    generation: int
    body: bytes = field(repr=False)
    #: The bearer token a poll must carry (None: not known yet; polls get 503).
    token: str | None = field(repr=False, default=None)


@dataclass(frozen=True, slots=True)
class DistributionView:
    """What the server serves, as of one moment (never mutated)."""

    leading: bool = False
    clusters: Mapping[tuple[str, str], Snapshot] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WatchReport:
    """What one poll told: who polled, what it holds, how it sees its backends."""

    pod: str
    generation: int
    health: BackendHealth | None
    #: Why the sidecar refused the last list it was given (None: it took it).
    error: str | None = None


def parse_poll(body: bytes) -> WatchReport:
    """The poll's body, ``{generation, pod, health?, error?}``; BadPollError otherwise."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadPollError("the body is not JSON; send {generation, pod, health}") from None
    if not isinstance(document, dict):
        raise BadPollError("the body must be a JSON object {generation, pod, health}")
    generation = document.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise BadPollError(
            f"generation must be the integer >= 0 of the list held, got {generation!r}"
        )
    pod = document.get("pod")
    if not isinstance(pod, str) or not pod or len(pod) > MAX_POD_NAME or not pod.isprintable():
        raise BadPollError(f"pod must be this sidecar's pod name (--pod-name), got {pod!r}")
    health = document.get("health")
    error = document.get("error")
    return WatchReport(
        pod,
        generation,
        None if not isinstance(health, dict) else backend_health(health),
        str(error)[:300] if error else None,
    )


#: A TLS record is at most 16 KiB: reading by records costs nothing for a poll's small body.
TLS_READ_BUFFER = 16 * 1024


def small_tls_buffers() -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer of its own (sslproto's
    ``max_size``, filled at connection): 5,000 held polls would hold 1.25 GiB for nothing
    (bench/operator_scale.py: 146 -> 290 MiB at 500). This process reads by TLS records."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def newer(snapshot: Snapshot, held: int) -> bool:
    """Whether the poller gets ``snapshot`` at once. A sidecar *ahead* of the operator (lists of
    another instance, a lost status write) is held instead: its report moves the operator past
    its generation (push.py's conflict rule), which then answers the poll."""
    return snapshot.generation > held


Reporter = Callable[[tuple[str, str], WatchReport], None]


class WatchCertificate:
    """The watch's serving certificate: issued by the push CA for the host of the sidecars'
    URL, in memory only (each replica issues its own; sidecars trust the CA, not a leaf), and
    re-issued by the webhook certificate's rule (:func:`certs.still_good`: 30 days before it
    expires) while the operator runs. ``now`` is for specs; None: the clock."""

    def __init__(
        self,
        authority: certs.Authority,
        names: Sequence[str],
        now: datetime.datetime | None = None,
    ) -> None:
        self._authority, self.names = authority, tuple(names)
        self.bundle = certs.issue(authority, self.names, now)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.load_into(self.context, self.bundle)

    def renewal(self, now: datetime.datetime | None = None) -> certs.CertBundle | None:
        """A new certificate when this one is due for renewal; None while it is still good."""
        if certs.still_good(self.bundle, self.names, now):
            return None
        return certs.issue(self._authority, self.names, now)

    def serve(self, bundle: certs.CertBundle) -> None:
        """Present ``bundle`` from the next handshake on (on the serving thread)."""
        certs.load_into(self.context, bundle)
        self.bundle = bundle


class DistributionServer:
    """Serves the watch over TLS on its own thread; :meth:`publish` hands it a new view."""

    def __init__(
        self,
        host: str,
        port: int,
        certificate: WatchCertificate | None,
        on_report: Reporter,
        *,
        hold: float = HOLD,
        per_cluster: int = 10_000,
        total: int = 15_000,
    ) -> None:
        self._on_report = on_report
        self._hold = hold
        self._per_cluster, self._total = per_cluster, total
        self.view = DistributionView()
        self._waiting: dict[tuple[str, str], int] = {}
        #: The held polls of each cluster, each a future set (True) when its list changes.
        self._held: dict[tuple[str, str], set[asyncio.Future[bool]]] = {}
        self._main: asyncio.AbstractEventLoop | None = None
        #: Reports not handed to the operator's loop yet: one wake-up of it per batch, not
        #: per poll (a change makes every sidecar poll at once).
        self._reports: list[tuple[tuple[str, str], WatchReport]] = []
        self._delivery_due = False
        self._reports_lock = threading.Lock()
        #: None: plain HTTP (an operator without a push CA).
        self.certificate = certificate
        tls = None if certificate is None else certificate.context
        self._site = ThreadedSite("the sidecars' watch", host, port, tls, self._application)

    def publish(self, view: DistributionView) -> None:
        """Swap in ``view`` (from the operator's loop) and wake the polls whose list changed."""
        previous, self.view = self.view, view
        loop = self._site.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self._wake, previous, view)

    def _wake(self, previous: DistributionView, view: DistributionView) -> None:
        for key in list(self._held):
            if previous.leading != view.leading or previous.clusters.get(key) is not (
                view.clusters.get(key)
            ):
                for waiter in self._held.pop(key):
                    if not waiter.done():
                        waiter.set_result(True)

    def _report(self, key: tuple[str, str], report: WatchReport) -> None:
        """Queue a poll's report for the operator's loop (from the watch thread)."""
        with self._reports_lock:
            self._reports.append((key, report))
            if self._delivery_due:
                return
            self._delivery_due = True
        assert self._main is not None
        self._main.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """Hand the queued reports over, in the order polled (on the operator's loop)."""
        with self._reports_lock:
            reports, self._reports = self._reports, []
            self._delivery_due = False
        for key, report in reports:
            self._on_report(key, report)

    @property
    def port(self) -> int:
        return self._site.port

    async def start(self) -> None:
        self._main = asyncio.get_running_loop()
        small_tls_buffers()
        await self._site.start()

    async def stop(self) -> None:
        await self._site.stop()

    async def renew_certificate(self, now: datetime.datetime | None = None) -> bool:
        """Renew the certificate when it is due, into the live TLS context, on the watch's
        thread between requests: new handshakes get the new one, and held polls keep their
        connections (and the certificate they began with). False: nothing was due."""
        certificate = self.certificate
        if certificate is None:
            return False  # plain HTTP: nothing to renew
        fresh = certificate.renewal(now)
        if fresh is None:
            return False
        await self._site.run_on_thread(certificate.serve, fresh)
        return True

    def _application(self) -> web.Server:
        """A bare server for the one path: aiohttp's router and application machinery cost
        about a tenth of the watch thread's CPU per poll."""
        assert self._site.loop is not None  # called on the site's thread, its loop made
        # A bare server's requests take bodies up to aiohttp's default: MAX_POLL_BYTES.
        return web.Server(self._handle, loop=self._site.loop)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        key = watched_cluster(request.path)
        if key is None:
            return _error(
                404, f"no such path {request.path!r}: poll POST {WATCH_PREFIX}<namespace>/<cluster>"
            )
        if request.method != "POST":
            return _error(405, f"{request.method} is not served here: poll with POST")
        view = self.view
        if not view.leading:
            return _standby()
        snapshot = view.clusters.get(key)
        if snapshot is None:
            return _error(
                404,
                f"this operator follows no GremlinCluster {key[0]}/{key[1]}: check the sidecar's "
                "--operator-cluster (namespace/name) and that the cluster exists",
            )
        if snapshot.token is None:
            return _error(503, "the cluster's token is not ready yet", retry=STANDBY_RETRY)
        if not bearer_matches(request.headers.get("Authorization", ""), snapshot.token):
            return _error(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the "
                f"token of Secret {key[1]}-gremlinlb-token (the sidecar's --token-file)",
            )
        try:
            report = parse_poll(await request.read())
        except BadPollError as error:
            return _error(400, str(error))
        except web.HTTPRequestEntityTooLarge:
            return _error(400, f"the body is larger than {MAX_POLL_BYTES} bytes")
        self._report(key, report)
        if newer(snapshot, report.generation):
            return _list(snapshot)
        waiting = self._waiting.get(key, 0)
        if waiting >= self._per_cluster or sum(self._waiting.values()) >= self._total:
            return _error(
                429,
                "too many sidecars are watching this operator; polling again later "
                "(raise --distribution-max-watches if the fleet is this large)",
                retry=HOLD,
            )
        return await self._hold_until_news(key, report.generation)

    async def _hold_until_news(self, key: tuple[str, str], held: int) -> web.StreamResponse:
        """Held on a bare future and one timer (no task, event or wait_for per poll: at
        thousands of held polls these were much of the watch thread's CPU per change)."""
        self._waiting[key] = self._waiting.get(key, 0) + 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hold * random.uniform(0.8, 1.0)
        try:
            while True:
                waiter: asyncio.Future[bool] = loop.create_future()
                self._held.setdefault(key, set()).add(waiter)
                timer = loop.call_at(deadline, _time_up, waiter)
                try:
                    changed = await waiter
                finally:
                    timer.cancel()
                    held_here = self._held.get(key)
                    if held_here is not None:
                        held_here.discard(waiter)
                if not changed:
                    return web.Response(status=204)
                view = self.view
                if not view.leading:
                    return _standby()
                snapshot = view.clusters.get(key)
                if snapshot is None:
                    return _error(404, f"GremlinCluster {key[0]}/{key[1]} is no longer followed")
                if newer(snapshot, held):
                    return _list(snapshot)
        finally:
            self._waiting[key] -= 1


def _time_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def watched_cluster(path: str) -> tuple[str, str] | None:
    """``(namespace, cluster)`` of a watch path, None when the path is not one."""
    if not path.startswith(WATCH_PREFIX):
        return None
    namespace, slash, cluster = path[len(WATCH_PREFIX) :].partition("/")
    if not namespace or not slash or not cluster or "/" in cluster:
        return None
    return namespace, cluster


def _list(snapshot: Snapshot) -> web.Response:
    return web.Response(body=snapshot.body, content_type="application/json")


def _standby() -> web.Response:
    return _error(
        503,
        "this operator replica is a standby: poll again (the leader answers)",
        retry=STANDBY_RETRY,
    )


def _error(status: int, message: str, *, retry: float | None = None) -> web.Response:
    headers: dict[str, Any] = {}
    if retry is not None:
        headers["Retry-After"] = str(max(1, round(retry * random.uniform(0.5, 1.5))))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gremlinlb-operator"'
    return web.json_response({"error": message}, status=status, headers=headers)
