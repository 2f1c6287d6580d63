"""The injection webhook's server, on its own thread and event loop (issue 27).

Admission must never wait behind push work: with ``failurePolicy: Fail`` and a 5 s timeout, a
busy operator loop rejects pod creations cluster-wide. So the webhook is served by its own
aiohttp server on its own thread, and reads only an immutable :class:`AdmissionView` that the
operator's loop swaps in (one reference assignment) whenever a followed cluster's spec or host
list changes. A pod naming a cluster the view does not hold (a standby replica, a cluster not
followed yet) is looked up on the operator's loop, as before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from aiohttp import web
from gremlinlb.operator.spec import ClusterSpec
from gremlinlb.operator.threaded import ThreadedSite
from gremlinlb.operator.webhook import Injection, injection, pod_cluster

log = logging.getLogger(__name__)

#: A cluster's spec and live hosts, looked up on the operator's loop (may raise
#: kopf.AdmissionError for an unknown or unusable cluster).
Lookup = Callable[[str, str], Awaitable[tuple[ClusterSpec, list[str]]]]


@dataclass(frozen=True)
class AdmissionView:
    """What admission needs from the followed clusters, as of one moment (never mutated)."""

    #: (namespace, name) -> the cluster's spec and its live hosts.
    clusters: Mapping[tuple[str, str], tuple[ClusterSpec, tuple[str, ...]]] = field(
        default_factory=dict
    )


def review_response(
    review: Mapping[str, Any], changes: Mapping[str, Any] | None, error: kopf.AdmissionError | None
) -> dict[str, Any]:
    """The AdmissionReview answer: allowed with ``changes`` as a JSON patch of the pod, or
    refused with ``error``'s message and code."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": error is None}
    if error is not None:
        response["status"] = {"message": str(error), "code": error.code or 400}
    elif changes:
        pod = request.get("object") or {}
        ops = kopf.Patch(dict(changes)).as_json_patch(body=cast(kopf.RawBody, pod))
        if ops:
            encoded = base64.b64encode(json.dumps(ops).encode("utf-8")).decode("ascii")
            response["patch"] = encoded
            response["patchType"] = "JSONPatch"
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": response,
    }


class AdmissionServer:
    """Serves ``path`` over TLS on its own thread; :meth:`publish` hands it a new view."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        path: str,
        how: Injection,
        lookup: Lookup,
    ) -> None:
        self._path = path
        self._how = how
        self._lookup = lookup
        self.view = AdmissionView()
        self._main: asyncio.AbstractEventLoop | None = None
        self._site = ThreadedSite("admission webhook", host, port, tls, self.application)

    def bind_main(self) -> None:
        """The running loop is the operator's: lookups of clusters not in the view run there."""
        self._main = asyncio.get_running_loop()

    def publish(self, view: AdmissionView) -> None:
        """Swap in a new view (from the operator's loop; a reference assignment is atomic)."""
        self.view = view

    async def start(self) -> None:
        """Start the thread and wait until it listens (raises what kept it from listening).

        The interpreter hands the GIL over every 1 ms instead of 5 ms, so that a busy push loop
        holds an admission answer back by at most a few milliseconds per step
        (bench/operator_admission.py: p50 21 -> 8 ms with the loop saturated)."""
        sys.setswitchinterval(0.001)
        self.bind_main()
        await self._site.start()

    async def run_on_thread(self, action: Callable[..., object], *args: object) -> None:
        """Run ``action(*args)`` on the server's thread (:meth:`ThreadedSite.run_on_thread`)."""
        await self._site.run_on_thread(action, *args)

    def application(self) -> web.Application:
        """The admission endpoint (served by :meth:`start` on the thread; a benchmark may
        serve it elsewhere to compare)."""
        app = web.Application()
        app.router.add_post(self._path, self._handle)
        return app

    async def stop(self) -> None:
        await self._site.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.Response(status=400, text="expected an AdmissionReview (JSON)")
        if not isinstance(review, dict):
            return web.Response(status=400, text="expected an AdmissionReview (a JSON object)")
        changes, error = None, None
        try:
            changes = await self._changes(review.get("request") or {})
        except kopf.AdmissionError as refused:
            error = refused
        except Exception as failure:  # never a 500 without a reason for the pod's creator
            log.exception("admission failed")
            error = kopf.AdmissionError(f"the sidecar injection failed: {failure}", code=500)
        return web.json_response(review_response(review, changes, error))

    async def _changes(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        pod = request.get("object") or {}
        namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace")
        cluster = pod_cluster(pod)
        if request.get("operation") != "CREATE" or cluster is None or not namespace:
            return None
        known = self.view.clusters.get((str(namespace), cluster))
        if known is not None:
            spec, hosts = known[0], list(known[1])
        else:
            spec, hosts = await self._on_main(self._lookup(str(namespace), cluster))
        return injection(pod, cluster, spec, hosts, self._how)

    async def _on_main(
        self, lookup: Awaitable[tuple[ClusterSpec, list[str]]]
    ) -> tuple[ClusterSpec, list[str]]:
        assert self._main is not None

        async def run() -> tuple[ClusterSpec, list[str]]:
            return await lookup

        future = asyncio.run_coroutine_threadsafe(run(), self._main)
        return await asyncio.wrap_future(future)
