"""kopf's handlers: thin, each delegating to :class:`~gremlinlb.operator.app.OperatorApp`."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from gremlinlb.operator.app import OperatorApp, kopf_credentials
from gremlinlb.operator.spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


def build_registry(app: OperatorApp) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf_credentials()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def reconcile(body: kopf.Body, **_: Any) -> None:
        app.ensure(dict(body))

    # No on.delete handler: it would put a finalizer on every GremlinCluster that only a running
    # operator removes, hanging the cluster's (and its namespace's) deletion while the operator
    # is down. The token Secret is owned by the cluster, so the garbage collector removes it;
    # the operator only stops its watches when it sees the cluster go.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def gone(
        event: kopf.RawEvent, name: str, namespace: str | None, uid: str | None, **_: Any
    ) -> None:
        if event.get("type") != "DELETED" or namespace is None:
            return
        await app.remove(namespace, name, uid)
        log.info("GremlinCluster %s/%s deleted: stopped following it", namespace, name)

    @kopf.on.probe(id="clusters", registry=registry)
    def clusters(**_: Any) -> int:
        return len(app.controllers)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        await app.start_background()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await app.close()

    return registry
