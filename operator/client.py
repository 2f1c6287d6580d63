"""The operator's one Kubernetes client, on kubernetes_asyncio; nothing else imports it.

kopf watches the GremlinClusters. Every other call goes through :class:`Kube`: the one-off
reads and writes (Secrets, Services, status, the Lease, the webhook configuration) and the two
per-cluster watches (:class:`Reflector`): the EndpointSlices of one Service and the client pods
of one selector, each listed and watched in the cluster's namespace only, filtered by the
apiserver with that cluster's own label selector (the namespaced RBAC of manifests/10-rbac.yaml
grants nothing more).

Why not kopf handlers or ``kopf.index`` for those two watches (read in kopf 1.45.2): kopf opens
one watch per resource kind for every served namespace, cluster-wide when it serves all of them
(``clusterwide``), which needs list/watch on every pod of the cluster; its ``labels=`` filters
are matched in the operator on objects already received; and its one apiserver-side filter
(``settings.watching.label_selectors``) is fixed per resource kind, while each GremlinCluster
has its own Service and client selector, changed at run time.

Objects go in and come out as plain dicts in the API's own JSON field names (``podIP``,
``resourceVersion``), so the rest of the operator never sees the client's model classes.
Failures are :class:`KubeError` with the HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from gremlinlb.operator.backoff import Backoff
from gremlinlb.operator.spec import GROUP, PLURAL, VERSION
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from gremlinlb.core.errors import GremlinLBError

log = logging.getLogger(__name__)

#: Between the lists of a Reflector whose list or watch failed.
RELIST = Backoff()
#: Longest a one-off call may take (the leader bounds its own calls tighter).
CALL_TIMEOUT = 30.0
#: The apiserver ends a watch after this long; it is then resumed from the last version.
WATCH_SECONDS = 290


class KubeError(GremlinLBError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Kind(Enum):
    """What the operator reads and writes, each through its typed API."""

    SECRET = "secrets"
    SERVICE = "services"
    LEASE = "leases"
    CLUSTER = "gremlinclusters"
    WEBHOOK_CONFIGURATION = "mutatingwebhookconfigurations"
    POD = "pods"
    ENDPOINT_SLICE = "endpointslices"


def _error(error: ApiException) -> KubeError:
    message = str(error.reason or "")
    raw = error.body
    body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if isinstance(body, str) and body:
        try:
            message = str(json.loads(body).get("message") or message)
        except (ValueError, AttributeError):
            message = body[:300]
    return KubeError(int(error.status or 0), message)


def label_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object as the ``labelSelector`` query string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _kubeconfig() -> str | None:
    """KUBECONFIG, else ~/.kube/config if it exists, else None (in a pod)."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


async def _configuration() -> client.Configuration:
    """A kubeconfig when one is given (KUBECONFIG, ~/.kube/config), else the pod's
    ServiceAccount (its token re-read as the kubelet rotates it)."""
    configuration = client.Configuration()
    kubeconfig = _kubeconfig()
    if kubeconfig is not None:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # Every watch holds a connection for as long as it runs (three per cluster): a bounded
    # pool would leave the one-off calls queued behind them.
    configuration.connection_pool_maxsize = 0
    return configuration


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._coordination = client.CoordinationV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._admission = client.AdmissionregistrationV1Api(api)
        self._discovery = client.DiscoveryV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        return cls(client.ApiClient(await _configuration()))

    async def close(self) -> None:
        await self._api.close()

    def plain(self, model: Any) -> dict[str, Any]:
        """A model as the API's JSON (a dict with its camelCase field names)."""
        found: dict[str, Any] = self._api.sanitize_for_serialization(model)
        return found

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One call of a typed API method, bounded; its ApiException as a KubeError."""
        try:
            return await method(*args, _request_timeout=CALL_TIMEOUT, **kwargs)
        except ApiException as error:
            raise _error(error) from None

    async def read(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            if kind is Kind.CLUSTER:  # custom objects come as dicts already
                found: dict[str, Any] = await self.call(
                    self._custom.get_namespaced_custom_object, *_crd(namespace), name
                )
                return found
            return self.plain(await self.call(self._reader(kind), *_where(kind, namespace, name)))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def _reader(self, kind: Kind) -> Callable[..., Any]:
        readers: dict[Kind, Callable[..., Any]] = {
            Kind.SECRET: self._core.read_namespaced_secret,
            Kind.SERVICE: self._core.read_namespaced_service,
            Kind.LEASE: self._coordination.read_namespaced_lease,
            Kind.WEBHOOK_CONFIGURATION: self._admission.read_mutating_webhook_configuration,
        }
        return readers[kind]

    async def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> None:
        creators: dict[Kind, Callable[..., Any]] = {
            Kind.SECRET: self._core.create_namespaced_secret,
            Kind.LEASE: self._coordination.create_namespaced_lease,
        }
        await self.call(creators[kind], namespace, dict(body))

    async def replace(self, kind: Kind, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Replace the object; a ``metadata.resourceVersion`` in ``body`` makes a change made
        meanwhile a 409."""
        replacers: dict[Kind, Callable[..., Any]] = {
            Kind.SECRET: self._core.replace_namespaced_secret,
            Kind.LEASE: self._coordination.replace_namespaced_lease,
            Kind.WEBHOOK_CONFIGURATION: self._admission.replace_mutating_webhook_configuration,
        }
        await self.call(replacers[kind], *_where(kind, namespace, name), dict(body))

    async def cluster_names(self, namespace: str) -> list[str]:
        listed = await self.call(self._custom.list_namespaced_custom_object, *_crd(namespace))
        return [str(item["metadata"]["name"]) for item in listed.get("items") or ()]

    async def patch_cluster_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """A merge patch of a GremlinCluster's status (lists replaced, keys merged)."""
        await self.call(
            self._custom.patch_namespaced_custom_object_status,
            *_crd(namespace),
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    async def version(self) -> dict[str, Any]:
        return self.plain(await self.call(client.VersionApi(self._api).get_code))

    def reflector(
        self,
        kind: Kind,
        namespace: str,
        selector: str,
        on_change: Callable[[], None],
        *,
        name: str = "",
        on_event: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> Reflector:
        listers: dict[Kind, Callable[..., Any]] = {
            Kind.POD: self._core.list_namespaced_pod,
            Kind.ENDPOINT_SLICE: self._discovery.list_namespaced_endpoint_slice,
        }
        return Reflector(
            self, listers[kind], namespace, selector, on_change, name=name, on_event=on_event
        )


def _crd(namespace: str) -> tuple[str, str, str, str]:
    return (GROUP, VERSION, namespace, PLURAL)


def _where(kind: Kind, namespace: str, name: str) -> tuple[str, ...]:
    """The positional arguments naming one object (cluster-scoped kinds take no namespace)."""
    return (name,) if kind is Kind.WEBHOOK_CONFIGURATION else (name, namespace)


class Reflector:
    """Lists, then watches, one collection of one namespace; keeps the objects and reports
    every change.

    ``on_change`` is called (synchronously, on the loop) after the first list and after every
    event; given ``on_event``, a watch event calls it instead, with the object's key and the
    object (None: deleted), so that the caller can do O(1) work per event. On any error the
    collection is listed again after a short backoff, so an apiserver restart costs a relist,
    never a stale view.
    """

    def __init__(
        self,
        kube: Kube,
        lister: Callable[..., Any],
        namespace: str,
        selector: str,
        on_change: Callable[[], None],
        *,
        name: str = "",
        on_event: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> None:
        self._kube = kube
        self._on_event = on_event
        self._lister = lister
        self._namespace = namespace
        self._selector = selector
        self._on_change = on_change
        self._name = name or namespace
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                listed = self._kube.plain(
                    await self._kube.call(
                        self._lister, self._namespace, label_selector=self._selector
                    )
                )
                self.objects = {_key(o): o for o in listed.get("items") or ()}
                version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                self.synced.set()
                self._on_change()
                failures = 0
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, ApiException):
                    error = _error(error)
                if isinstance(error, KubeError) and error.status == 410:
                    log.debug("%s: watch expired, listing again", self._name)
                    continue
                failures += 1
                delay = RELIST.delay(failures)
                log.info("%s: %s; listing again in %.1f s", self._name, _describe(error), delay)
                await asyncio.sleep(delay)

    async def _watch(self, version: str) -> str:
        """One watch from ``version`` until the apiserver ends it; the last version seen."""
        stream = watch.Watch(return_type="object")
        async with stream:
            async for event in stream.stream(
                self._lister,
                self._namespace,
                label_selector=self._selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=WATCH_SECONDS + 40,
            ):
                kind, obj = event["type"], event["raw_object"]
                version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                if kind == "BOOKMARK":
                    continue
                key = _key(obj)
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = obj
                if self._on_event is not None:
                    self._on_event(key, None if kind == "DELETED" else obj)
                else:
                    self._on_change()
        return version


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
