"""One GremlinCluster at run time: its watches, its host list, its pushes, its status.

kopf calls :meth:`ClusterController.update` whenever the GremlinCluster changes; everything
else is driven by two server-side-filtered watches (the Service's EndpointSlices and the
selected client pods) and by the push group's results. Host list changes within
``options.debounce`` are coalesced into one generation; status writes are coalesced too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import kopf
from gremlinlb.operator.backoff import Backoff, Pacer
from gremlinlb.operator.client import Kind, Kube, KubeError, Reflector, label_selector
from gremlinlb.operator.discovery import (
    DiscoveredEndpoint,
    PortChoice,
    endpoints_from_slices,
    live,
    ready_addresses,
    with_roles,
)
from gremlinlb.operator.neptune import GremlinClusterNeptune
from gremlinlb.operator.push import (
    BackendHealth,
    HealthReader,
    Payload,
    PushGroup,
    Sender,
    SendOutcome,
    TargetStatus,
)
from gremlinlb.operator.spec import (
    DEFAULT_ADMIN_PORT,
    ClusterSpec,
    SpecError,
    parse_spec,
)
from gremlinlb.operator.status import (
    Observed,
    build_status,
    now_text,
    plain_http_message,
    same_status,
)
from gremlinlb.operator.targets import ClientPods
from gremlinlb.operator.tokens import (
    Write,
    certificate_of,
    plan_token,
    sidecar_server_name,
    token_secret,
)
from gremlinlb.operator.webhook import token_secret_name

from gremlinlb import certificates as certs
from gremlinlb.schema import to_document
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerOptions:
    push_timeout: float = 5.0
    resync_interval: float = 60.0
    debounce: float = 0.05
    status_interval: float = 0.5
    #: How often the token Secret is read again (a 401 from a sidecar reads it at once).
    token_check_interval: float = 30.0
    #: How often each sidecar's view of its backends is read for the status.
    health_interval: float = 15.0
    #: At most one new generation per this many seconds for a change of the client pods per
    #: zone alone: a rollout changes them with every pod, and each would be a push to every
    #: sidecar. Host changes are never held back, and carry the latest counts.
    client_zones_interval: float = 5.0


#: Between attempts at a cluster's own API calls (its token Secret) that failed.
RETRY = Backoff(first=1.0)

#: The ClusterRole a namespace's RoleBinding grants the operator (manifests/10-rbac.yaml).
WORKLOAD_ROLE = "gremlinlb-operator-workload"


def forbidden_message(namespace: str, detail: str) -> str:
    return (
        f"the operator may not work in namespace {namespace} ({detail}): bind the ClusterRole "
        f"{WORKLOAD_ROLE} there: kubectl create rolebinding gremlinlb-operator -n {namespace} "
        f"--clusterrole={WORKLOAD_ROLE} --serviceaccount=gremlinlb-system:gremlinlb-operator"
    )


class NamingSender(Protocol):
    """Pushes and health reads that check an https sidecar's certificate for ``server_name``."""

    async def __call__(
        self,
        url: str,
        token: str | None,
        body: bytes,
        time_limit: float,
        *,
        server_name: str | None = None,
    ) -> SendOutcome: ...

    async def read_health(
        self, url: str, time_limit: float, *, server_name: str | None = None
    ) -> BackendHealth | None: ...


def _verifying(sender: NamingSender, server_name: str) -> tuple[Sender, HealthReader]:
    """The sender and the health reader, told which name an https sidecar's certificate must
    carry."""

    async def send(url: str, token: str | None, body: bytes, time_limit: float) -> SendOutcome:
        return await sender(url, token, body, time_limit, server_name=server_name)

    async def read(url: str, time_limit: float) -> BackendHealth | None:
        return await sender.read_health(url, time_limit, server_name=server_name)

    return send, read


class ClusterController:
    def __init__(
        self,
        api: Kube,
        sender: NamingSender,
        semaphore: asyncio.Semaphore,
        options: ControllerOptions,
        body: Mapping[str, Any],
        authority: certs.Authority | None = None,
        *,
        failing: asyncio.Semaphore | None = None,
    ) -> None:
        meta = body.get("metadata") or {}
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])
        #: Issues the sidecars' admin certificates; pushes to https sidecars verify against it.
        self._authority = authority
        self.server_name = sidecar_server_name(self.namespace, self.name)
        self._api = api
        self._options = options
        self._body: dict[str, Any] = dict(body)
        self.spec: ClusterSpec | None = None
        self.spec_error: str | None = None
        self.access_error: str | None = None
        status = body.get("status") or {}
        self._generation = int(status.get("hostsGeneration") or 0)
        self._restored_hosts = tuple(status.get("hosts") or ())
        self._restored_zones = {
            str(z.get("zone")): int(z.get("ready") or 0)
            for z in (status.get("sidecars") or {}).get("byZone") or ()
            if isinstance(z, Mapping) and z.get("zone")
        }
        #: Ready client pods per zone (Envoy's originating cluster), pushed as client_zones.
        self.client_zones: dict[str, int] = {}
        # When a generation last brought new client_zones: counts-only changes are paced.
        self._zones_pacer = Pacer(options.client_zones_interval)
        self._zones_wait_pending = False
        self._conditions: list[Mapping[str, Any]] = list(status.get("conditions") or [])
        self._written_status: dict[str, Any] = dict(status)
        self.endpoints: list[DiscoveredEndpoint] = []
        self._service_found = True
        self._port_choice: PortChoice | None = None
        #: The selected client pods, indexed per event (O(1) work per pod event).
        self._client_pods = ClientPods(self.namespace, DEFAULT_ADMIN_PORT, False)
        #: Client pods given no push: plain HTTP admin API, not allowed by the cluster.
        self.plain_http_refused: tuple[str, ...] = ()
        send, read_health = _verifying(sender, self.server_name)
        self.group = PushGroup(
            f"{self.namespace}/{self.name}",
            send,
            semaphore,
            timeout=options.push_timeout,
            on_result=self._on_push_result,
            on_conflict=self._on_conflict,
            health_reader=read_health,
            health_interval=options.health_interval,
            on_health=self._on_sidecar_health,
            failing=failing,
        )
        self._slices: Reflector | None = None
        self._writer_slices: Reflector | None = None  # of spec.roles.writerService
        self._pods: Reflector | None = None
        self._pods_listed = False  # whether _on_pods has seen the current pod watch's list
        self._neptune: GremlinClusterNeptune | None = None  # with spec.neptune, instead of slices
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._watching: tuple[Any, ...] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._recompute_pending = False
        self._status_pending = False
        self._status_dirty = asyncio.Event()
        self._token_suspect = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._stopped = False
        #: Called when the spec or the host list changed (the webhook's view is rebuilt).
        self.on_change: Callable[[], None] = lambda: None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def uid(self) -> str | None:
        uid = (self._body.get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    @property
    def hosts(self) -> tuple[str, ...]:
        payload = self.group.payload
        return payload.hosts if payload is not None else ()

    def start(self) -> None:
        self._parse()
        self._main = asyncio.create_task(self._run(), name=f"cluster {self.namespace}/{self.name}")

    def halt(self) -> None:
        """Cancel every task of this cluster now (pushes, status writes, watches); :meth:`stop`
        then waits for them. Synchronous, so a replica that stops leading acts no more."""
        self._stopped = True
        self.group.halt()
        for task in self._all_tasks():
            task.cancel()

    def _all_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [*self._watch_tasks, *self._tasks]
        if self._main is not None:
            tasks.append(self._main)
        return tasks

    async def stop(self) -> None:
        tasks = self._all_tasks()
        self.halt()
        await cancel_and_wait(*tasks)
        await self.group.close()

    def update(self, body: Mapping[str, Any]) -> None:
        """The GremlinCluster changed (kopf saw a new version of it)."""
        self._body = dict(body)
        self._parse()
        self._rewatch()
        self._on_pods()  # spec.sidecar.allowPlainHttpPush or adminPort may have changed
        self._schedule_recompute()

    def _parse(self) -> None:
        try:
            self.spec = parse_spec(self.name, self._body.get("spec") or {})
            self.spec_error = None
            self.on_change()
        except SpecError as error:
            self.spec_error = str(error)
            log.warning("GremlinCluster %s/%s: %s", self.namespace, self.name, error)

    async def _run(self) -> None:
        self._spawn(self._status_writer())
        token = await self._retry("token Secret", self.ensure_token)
        self.group.set_token(token)
        self._rewatch()
        self._spawn(self._keep_token())
        while not self._stopped:
            await asyncio.sleep(self._options.resync_interval)
            self.group.refresh()
            self._schedule_recompute()

    async def _retry(self, what: str, action: Any) -> Any:
        failures = 0
        while True:
            try:
                result = await action()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, KubeError) and error.status == 403:
                    self.access_error = forbidden_message(self.namespace, error.message)
                    self._schedule_status()
                failures += 1
                log.warning("%s/%s: %s: %s", self.namespace, self.name, what, error)
                await asyncio.sleep(RETRY.delay(failures))
            else:
                if self.access_error is not None:
                    self.access_error = None
                    self._schedule_status()
                return result

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the token Secret ----------------------------------------------------------------------

    async def ensure_token(self) -> str:
        """The cluster's admin token, from its Secret: created when missing, repaired when it
        holds no usable token, adopted from an earlier cluster of this name. Bounded: a Secret
        that keeps changing under it is an error for the caller to retry later."""
        name = token_secret_name(self.name)
        uid = self.uid
        for _ in range(5):
            found = await self._api.read(Kind.SECRET, self.namespace, name)
            existing = None if found is None else certificate_of(found)
            good = self._certificate_good(existing) and self._holds_ca(found)
            plan = plan_token(found, uid, secrets.token_urlsafe(32), good)
            if plan.write is Write.NONE:
                return plan.token
            version = None if found is None else found["metadata"].get("resourceVersion")
            certificate = existing
            if self._authority is not None and (plan.new_certificate or existing is None):
                issued = certs.issue(self._authority, [self.server_name])
                certificate = (issued.cert_pem, issued.key_pem)
            ca = None if self._authority is None else self._authority.ca_pem
            body = token_secret(
                self.namespace, self.name, uid, plan.token, version, certificate, ca
            )
            try:
                if plan.write is Write.CREATE:
                    await self._api.create(Kind.SECRET, self.namespace, body)
                else:
                    await self._api.replace(Kind.SECRET, self.namespace, name, body)
            except KubeError as error:
                if error.status in (404, 409):  # changed or deleted meanwhile: look again
                    continue
                raise
            log.info("%s/%s: Secret %s: %s", self.namespace, self.name, name, plan.reason)
            kopf.event(
                self._event_body(),
                type="Normal",
                reason="TokenCreated" if plan.write is Write.CREATE else "TokenRepaired",
                message=f"Secret {name} (the sidecars' admin token): {plan.reason}",
            )
            return plan.token
        raise RuntimeError(f"Secret {name} kept changing while being written; trying again later")

    def _holds_ca(self, found: Mapping[str, Any] | None) -> bool:
        """Whether the Secret carries the push CA as ``ca.crt`` (a watching sidecar's trust)."""
        if self._authority is None or found is None:
            return True
        held = (found.get("data") or {}).get("ca.crt")
        return held == base64.b64encode(self._authority.ca_pem).decode()

    def _certificate_good(self, certificate: tuple[bytes, bytes] | None) -> bool:
        """Whether the admin certificate in the Secret can stay (no push CA: nothing to check)."""
        if self._authority is None:
            return True
        if certificate is None:
            return False
        bundle = certs.CertBundle(self._authority.ca_pem, *certificate)
        return certs.issued_by(certificate[0], self._authority.ca_pem) and certs.still_good(
            bundle, [self.server_name]
        )

    async def _keep_token(self) -> None:
        """Re-read the token Secret now and then, and at once when a sidecar refuses the token:
        a Secret deleted or broken out of band is recreated, and a new token is pushed with."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.token_check_interval):
                    await self._token_suspect.wait()
            self._token_suspect.clear()
            try:
                token = await self.ensure_token()
                if token != self.group.token:
                    self.group.set_token(token)
                    self.on_change()  # the watch takes the new token
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s/%s: token Secret: %s", self.namespace, self.name, error)
            await asyncio.sleep(1.0)  # at most one check a second, however many 401s arrive

    def _event_body(self) -> kopf.Body:
        return kopf.Body(cast(kopf.RawBody, self._body))

    # -- watches -----------------------------------------------------------------------------

    def _slices_of(self, service: str, what: str) -> Reflector:
        """The EndpointSlices of ``service``, filtered by the apiserver; each change
        recomputes the host list."""
        return self._api.reflector(
            Kind.ENDPOINT_SLICE,
            self.namespace,
            f"kubernetes.io/service-name={service}",
            self._schedule_recompute,
            name=f"{self.namespace}/{self.name} EndpointSlices of {what}",
        )

    def _rewatch(self) -> None:
        if self.spec is None or self._main is None or self._stopped:
            return
        spec = self.spec
        service = None if spec.service is None else spec.service.name
        wanted = (service, label_selector(spec.clients), spec.writer_service, spec.neptune)
        if wanted == self._watching:
            return
        for task in self._watch_tasks:
            task.cancel()
        self._watching = wanted
        self._pods_listed = False
        self._pods = self._api.reflector(
            Kind.POD,
            self.namespace,
            wanted[1],
            self._on_pods,
            name=f"{self.namespace}/{self.name} client pods",
            on_event=self._on_pod_event,
        )
        self._slices = self._writer_slices = self._neptune = None
        self._service_found = True  # until a recompute reads the Service (if there is one)
        sources: list[Any] = []
        if spec.neptune is not None:
            self._neptune = GremlinClusterNeptune(spec.neptune, self._on_neptune_read)
            sources.append(self._neptune.run())
        if service is not None:
            self._slices = self._slices_of(service, service)
            sources.append(self._slices.run())
        if spec.writer_service is not None:
            self._writer_slices = self._slices_of(
                spec.writer_service, f"writers {spec.writer_service}"
            )
            sources.append(self._writer_slices.run())
        self._watch_tasks = [asyncio.create_task(c) for c in (*sources, self._pods.run())]

    def _on_neptune_read(self) -> None:
        self._schedule_recompute()
        self._schedule_status()  # the last read time, or the error

    # -- host list -----------------------------------------------------------------------------

    def _schedule_recompute(self) -> None:
        if self._recompute_pending or self._stopped:
            return
        self._recompute_pending = True
        self._spawn(self._recompute_later())

    async def _recompute_later(self) -> None:
        await asyncio.sleep(self._options.debounce)
        self._recompute_pending = False
        try:
            await self._recompute()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s/%s: recomputing the host list failed", self.namespace, self.name)
            self._schedule_status()

    async def _resolve_port(self, spec: ClusterSpec) -> PortChoice:
        assert spec.service is not None
        fallback = PortChoice(spec.service.port_name, spec.service.port)
        try:
            service = await self._api.read(Kind.SERVICE, self.namespace, spec.service.name)
        except (KubeError, OSError, TimeoutError) as error:
            log.info("%s/%s: reading the Service: %s", self.namespace, self.name, error)
            return self._port_choice or fallback
        self._service_found = service is not None
        if service is None:
            return fallback
        ports = (service.get("spec") or {}).get("ports") or []
        for port in ports:
            wanted = spec.service.port_name
            if (wanted and port.get("name") == wanted) or (
                not wanted and port.get("port") == spec.service.port
            ):
                return PortChoice(port.get("name") or "", spec.service.port)
        if len(ports) == 1:
            return PortChoice(ports[0].get("name") or "", spec.service.port)
        return fallback

    async def _discover(
        self, spec: ClusterSpec
    ) -> tuple[list[DiscoveredEndpoint], tuple[str, ...]] | None:
        """The endpoints and the host list, from the Neptune cluster or from the Service's
        EndpointSlices (None until known)."""
        if self._neptune is not None:
            return self._neptune.found()
        slices, writer_slices = self._slices, self._writer_slices
        if slices is None or not slices.synced.is_set():
            return None
        if writer_slices is not None and not writer_slices.synced.is_set():
            return None
        self._port_choice = await self._resolve_port(spec)
        writers = None if writer_slices is None else ready_addresses(writer_slices.objects.values())
        endpoints = with_roles(
            endpoints_from_slices(slices.objects.values(), self._port_choice), writers
        )
        return endpoints, tuple(
            spec.host_address(e.ip, e.port, e.role, e.zone) for e in live(endpoints)
        )

    async def _recompute(self) -> None:
        spec = self.spec
        pods = self._pods  # their first list carries the client zones
        found = None
        if spec is not None and pods is not None and pods.synced.is_set():
            found = await self._discover(spec)
        if spec is None or found is None:
            self._schedule_status()
            return
        endpoints, hosts = found
        settings = to_document(spec.settings)
        zones = self.client_zones
        previous = self.group.payload
        changed_endpoints = endpoints != self.endpoints
        self.endpoints = endpoints
        if previous is None:
            # First list after a (re)start: keep the stored generation when nothing changed, so
            # an operator restart pushes nothing new to the sidecars.
            same = (
                hosts == self._restored_hosts
                and zones == self._restored_zones
                and self._generation > 0
            )
            generation = self._generation if same else self._generation + 1
            self._set_payload(Payload.build(generation, hosts, settings, zones))
            if hosts != self._restored_hosts:
                self._hosts_event(previous_hosts=self._restored_hosts, hosts=hosts)
        elif previous.hosts != hosts or previous.settings != settings:
            self._set_payload(Payload.build(self._generation + 1, hosts, settings, zones))
            self._hosts_event(previous_hosts=previous.hosts, hosts=hosts)
        elif previous.client_zones != zones:
            # Only the client spread changed (a pod added, ready or gone in some zone): the
            # sidecars' spill depends on it, so it is a new generation of the same list, at
            # most one per client_zones_interval.
            wait = self._zones_pacer.wait(time.monotonic())
            if wait > 0:
                self._recompute_after(wait)
            else:
                self._set_payload(Payload.build(self._generation + 1, hosts, settings, zones))
        elif changed_endpoints:
            self._schedule_status()

    def _recompute_after(self, seconds: float) -> None:
        if self._zones_wait_pending or self._stopped:
            return
        self._zones_wait_pending = True

        async def later() -> None:
            await asyncio.sleep(seconds)
            self._zones_wait_pending = False
            self._schedule_recompute()

        self._spawn(later())

    def _set_payload(self, payload: Payload) -> None:
        previous = self.group.payload
        if previous is None or previous.client_zones != payload.client_zones:
            self._zones_pacer.happened(time.monotonic())
        self._generation = payload.generation
        self.group.set_payload(payload)
        self.on_change()
        log.info(
            "%s/%s: host list generation %d: %s; client sidecars per zone: %s",
            self.namespace,
            self.name,
            payload.generation,
            ", ".join(payload.hosts) or "empty",
            ", ".join(f"{z} {n}" for z, n in payload.client_zones.items()) or "none known",
        )
        self._schedule_status()

    def _on_conflict(self, sidecar_generation: int) -> None:
        payload = self.group.payload
        if payload is None or sidecar_generation < payload.generation:
            return
        self._set_payload(payload.next(sidecar_generation + 1))

    def _hosts_event(self, previous_hosts: tuple[str, ...], hosts: tuple[str, ...]) -> None:
        added = [h for h in hosts if h not in previous_hosts]
        removed = [h for h in previous_hosts if h not in hosts]
        draining = [e.address for e in self.endpoints if e.state.value == "draining"]
        parts = [f"generation {self._generation}: {len(hosts)} live"]
        if added:
            parts.append(f"added {', '.join(added)}")
        if removed:
            parts.append(f"removed {', '.join(removed)}")
        if draining:
            parts.append(f"draining {', '.join(draining)}")
        kopf.event(
            self._event_body(), type="Normal", reason="HostsChanged", message="; ".join(parts)
        )

    # -- client pods ---------------------------------------------------------------------------

    def _on_pods(self) -> None:
        """A (re)list of the client pods, or new settings: the index is rebuilt once."""
        if self._pods is None or not self._pods.synced.is_set():
            return  # a new watch not listed yet: its (empty) objects would drop every target
        first_list, self._pods_listed = not self._pods_listed, True
        index = self._client_pods
        if self.spec is not None:
            index.default_port = self.spec.sidecar.admin_port
            index.plain_allowed = self.spec.sidecar.allow_plain_http_push
        pokes = index.reset(self._pods.objects)
        self._refuse_plain_http(index.refused)
        self.group.set_targets(index.targets)
        for key in pokes:
            self.group.poke(key)
        self._client_pods_changed(first_list or index.zones != self.client_zones)

    def _on_pod_event(self, watch_key: str, pod: dict[str, Any] | None) -> None:
        """One client pod added, changed or deleted: O(1) work, whatever the number of pods."""
        if not self._pods_listed:
            return
        change = self._client_pods.apply(watch_key, pod)
        if change.removed is not None:
            self.group.remove_target(change.removed)
        if change.added is not None:
            self.group.set_target(*change.added)
        if change.poke is not None:
            self.group.poke(change.poke)
        if change.refused_changed:
            self._refuse_plain_http(self._client_pods.refused)
        self._client_pods_changed(change.zones_changed)

    def _client_pods_changed(self, zones_changed: bool) -> None:
        # The first list of a new watch: a host list held back for it is computed now.
        if zones_changed or self.group.payload is None:
            self.client_zones = self._client_pods.zones
            self._schedule_recompute()
        self._schedule_status()

    def _refuse_plain_http(self, pods: tuple[str, ...]) -> None:
        """A Warning event for each pod newly refused a push for its plain HTTP admin API: the
        bearer token is only ever sent over TLS to a sidecar whose certificate is verified."""
        for pod in pods:
            if pod not in self.plain_http_refused:
                kopf.event(
                    self._event_body(),
                    type="Warning",
                    reason="PlainHttpPushRefused",
                    message=plain_http_message([pod]),
                )
        if pods != self.plain_http_refused:
            self.plain_http_refused = pods
            self._schedule_status()

    # -- results and status --------------------------------------------------------------------

    def _on_push_result(self, result: TargetStatus) -> None:
        if result.status == 401:
            self._token_suspect.set()
        if not result.in_sync and result.failures == 1:
            kopf.event(
                self._event_body(),
                type="Warning",
                reason="PushFailed",
                message=f"sidecar of pod {result.key.rsplit('/', 1)[-1]} "
                f"({result.url.split('://', 1)[-1]}): {result.error}; retrying",
            )
        self._schedule_status()

    def _on_sidecar_health(
        self, key: str, previous: BackendHealth | None, health: BackendHealth
    ) -> None:
        if self._neptune is not None:  # a suspected failover makes it read the cluster now
            self._neptune.sidecar_health(key, previous, health)

    def _schedule_status(self) -> None:
        self._status_dirty.set()

    async def _status_writer(self) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            try:
                await self._write_status()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.info("%s/%s: status not written: %s", self.namespace, self.name, error)
                self._status_dirty.set()
                await asyncio.sleep(1.0)
            await asyncio.sleep(self._options.status_interval)

    def observed(self) -> Observed:
        meta = self._body.get("metadata") or {}
        payload = self.group.payload
        return Observed(
            generation=meta.get("generation"),
            hosts_generation=self._generation,
            hosts=self.hosts,
            client_zones=payload.client_zones if payload is not None else {},
            endpoints=self.endpoints,
            sidecars=self.group.statuses(),
            service_found=self._service_found,
            spec_error=self.spec_error,
            access_error=self.access_error,
            plain_http_refused=self.plain_http_refused,
            neptune=None if self._neptune is None else self._neptune.status(),
        )

    async def _write_status(self) -> None:
        observed = self.observed()
        failed = self.spec_error or self.access_error or (observed.neptune or {}).get("lastError")
        if self.group.payload is None and not failed:
            return  # nothing known yet: keep the stored status (and its generation)
        status = build_status(observed, self._conditions, now_text())
        if "neptune" in self._written_status and "neptune" not in status:
            status["neptune"] = None  # a merge patch keeps what it does not delete
        if same_status(status, self._written_status):
            return
        log.debug("%s/%s: writing the status", self.namespace, self.name)
        await self._api.patch_cluster_status(self.namespace, self.name, status)
        self._written_status = status
        self._conditions = list(status["conditions"])
