"""A small asyncio client for the Kubernetes REST API, with kopf's credentials.

kopf watches the GremlinClusters. Every other call goes through :class:`KubeApi`, the
operator's one client: the one-off reads and writes (Secrets, Services, status, the lease, the
webhook configuration) and the two per-cluster watches (:class:`Reflector`): the EndpointSlices
of one Service and the client pods of one selector, each filtered by the apiserver with that
cluster's own label selector. Requests re-login once on 401 (a rotated ServiceAccount token).

Why not kopf handlers or ``kopf.index`` for those two watches (read in kopf 1.45.2):

* kopf opens one watch per resource kind and served namespace, for every handler and index of
  that kind (``kopf/_core/reactor/orchestration.py``, ``spawn_missing_watchers``). The
  operator serves all namespaces (``clusterwide``), so that is one cluster-wide watch of
  ``/api/v1/pods`` (``kopf/_core/reactor/observation.py``, ``namespace_observer``: the
  namespaces are ``{None}``), which needs list/watch on every pod of the cluster: the
  namespaced RBAC (a RoleBinding per namespace, manifests/10-rbac.yaml) cannot grant it. With
  ``--namespace`` globs kopf would instead watch pods in every matching namespace, whether or
  not it holds a GremlinCluster or grants the operator anything.
* The ``labels=`` filters of handlers and indexes are matched in the operator, on objects
  already received (``kopf/_core/intents/registries.py``, ``_matches_labels``): every pod of
  each watched namespace would be streamed and decoded.
* The only apiserver-side filter is ``settings.watching.label_selectors``
  (``kopf/_cogs/clients/watching.py``, ``continuous_watch``): one selector per resource kind,
  fixed for all namespaces and joined by AND. Each GremlinCluster has its own Service name and
  client selector, changed at run time, and Kubernetes selectors cannot say "A or B".

The ``kubernetes`` package is no better for the one-off calls: it blocks the event loop (an
asyncio client would be one more dependency), while this one is a thin layer on aiohttp, which
the operator already uses, and reuses kopf's login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
from gremlinlb.operator.backoff import Backoff

log = logging.getLogger(__name__)

Login = Callable[[], kopf.ConnectionInfo]
#: Between the lists of a Reflector whose list or watch failed.
RELIST = Backoff()


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class WatchExpired(Exception):
    """The resourceVersion is too old (410): list again."""


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    cert, key = info.certificate_path, info.private_key_path
    with contextlib.ExitStack() as stack:
        if info.certificate_data and info.private_key_data:
            files = []
            for data in (info.certificate_data, info.private_key_data):
                handle = stack.enter_context(tempfile.NamedTemporaryFile("wb"))
                handle.write(data if isinstance(data, bytes) else data.encode())
                handle.flush()
                files.append(handle.name)
            cert, key = files
        if cert and key:
            context.load_cert_chain(os.fsdecode(cert), os.fsdecode(key))
    return context


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


class KubeApi:
    def __init__(self, login: Login) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    def login(self) -> kopf.ConnectionInfo:
        """Fresh credentials (kopf asks at start and after a 401)."""
        return self._login()

    def _connect(self, relogin: bool = False) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._info is None or relogin:
            self._info = self._login()
            if self._session is not None:
                old = self._session
                self._session = None
                asyncio.get_running_loop().create_task(old.close())
        if self._session is None:
            info = self._info
            headers: dict[str, str] = {"Accept": "application/json"}
            if info.token:
                headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
            auth = (
                aiohttp.BasicAuth(info.username, info.password or "")
                if info.username and not info.token
                else None
            )
            connector = aiohttp.TCPConnector(ssl=_ssl_context(info), limit=64)
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/") + "/",
                headers=headers,
                auth=auth,
                connector=connector,
                trust_env=False,
            )
        return self._session, self._info

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        time_limit: float = 30.0,
    ) -> Any:
        """JSON in, JSON out; :class:`KubeError` for any status >= 400."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            session, _info = self._connect(relogin=attempt == 1)
            async with session.request(
                method,
                path.lstrip("/"),
                params=params,
                data=data,
                headers={"Content-Type": content_type} if data is not None else None,
                timeout=aiohttp.ClientTimeout(total=time_limit),
            ) as response:
                text = await response.text()
                if response.status == 401 and attempt == 0:
                    continue
                if response.status >= 400:
                    raise KubeError(response.status, _message(text))
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return result

    async def watch(
        self, path: str, params: Mapping[str, str], resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events until the server ends the watch; WatchExpired on 410."""
        session, _info = self._connect()
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": "290",
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=330)
        async with session.get(path.lstrip("/"), params=query, timeout=timeout) as response:
            if response.status == 401:
                self._connect(relogin=True)
            if response.status == 410:
                raise WatchExpired()
            if response.status >= 400:
                raise KubeError(response.status, _message(await response.text()))
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
                yield str(kind), obj


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    return str(data.get("message", text[:300])) if isinstance(data, dict) else text[:300]


def namespaced(group: str, version: str, namespace: str, plural: str, name: str = "") -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


class Reflector:
    """Lists, then watches, one collection; keeps the objects and reports every change.

    ``on_change`` is called (synchronously, on the loop) after the first list and after every
    event. On any error the collection is listed again after a short backoff, so an apiserver
    restart costs a relist, never a stale view.
    """

    def __init__(
        self,
        api: KubeApi,
        path: str,
        selector: str,
        on_change: Callable[[], None],
        *,
        name: str = "",
    ) -> None:
        self._api = api
        self._path = path
        self._params = {"labelSelector": selector} if selector else {}
        self._on_change = on_change
        self._name = name or path
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                listed = await self._api.request("GET", self._path, params=self._params)
                self.objects = {_key(o): o for o in listed.get("items") or ()}
                version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                self.synced.set()
                self._on_change()
                failures = 0
                while True:
                    async for kind, obj in self._api.watch(self._path, self._params, version):
                        version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            self.objects.pop(_key(obj), None)
                        else:
                            self.objects[_key(obj)] = obj
                        self._on_change()
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.debug("%s: watch expired, listing again", self._name)
            except Exception as error:
                failures += 1
                delay = RELIST.delay(failures)
                log.info("%s: %s; listing again in %.1f s", self._name, _describe(error), delay)
                await asyncio.sleep(delay)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
