"""kopf's handlers: thin, each delegating to :class:`~gremlinlb.operator.app.OperatorApp`."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from gremlinlb.operator.app import OperatorApp
from gremlinlb.operator.spec import GROUP, INJECT_LABEL, PLURAL, VERSION
from gremlinlb.operator.webhook import injection, pod_cluster

log = logging.getLogger(__name__)

INJECT_HANDLER_ID = "inject-sidecar"  # also the webhook URL's path: /inject-sidecar


def build_registry(app: OperatorApp) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return app.api.login()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def reconcile(body: kopf.Body, **_: Any) -> None:
        app.ensure(dict(body))

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def delete(name: str, namespace: str | None, **_: Any) -> None:
        if namespace is None:
            return
        await app.remove(namespace, name)
        log.info("GremlinCluster %s/%s deleted: its token Secret is gone", namespace, name)

    @kopf.on.mutate(
        "pods",
        id=INJECT_HANDLER_ID,
        operations=["CREATE"],
        labels={INJECT_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def inject(body: kopf.Body, patch: kopf.Patch, namespace: str | None, **_: Any) -> None:
        pod = dict(body)
        cluster = pod_cluster(pod)
        if cluster is None or namespace is None:
            return
        spec, hosts = await app.cluster_for_pod(namespace, cluster)
        changes = injection(pod, cluster, spec, hosts)
        if changes is not None:
            patch.update(changes)

    @kopf.on.probe(id="clusters", registry=registry)
    def clusters(**_: Any) -> int:
        return len(app.controllers)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await app.close()

    return registry
