"""The operator process: shared clients, the cluster controllers, and the webhook's TLS.

kopf owns the event loop, the GremlinCluster watch, finalizers, the admission server and the
liveness endpoint; :class:`OperatorApp` owns what kopf's handlers delegate to.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from gremlinlb.operator.admission import AdmissionServer, AdmissionView
from gremlinlb.operator.client import Kind, Kube, KubeError
from gremlinlb.operator.controller import ClusterController, ControllerOptions
from gremlinlb.operator.distribution import (
    DistributionServer,
    DistributionView,
    Snapshot,
    WatchCertificate,
    WatchReport,
)
from gremlinlb.operator.leader import LeaderElection
from gremlinlb.operator.metrics import OperatorMetrics
from gremlinlb.operator.push import failing_slots
from gremlinlb.operator.sender import HttpSender
from gremlinlb.operator.spec import ClusterSpec, SpecError, parse_spec
from gremlinlb.operator.webhook import (
    PRIVATE_NETWORKS,
    Injection,
    native_sidecars,
    unknown_cluster_message,
)

from gremlinlb import certificates as certs
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/inject-sidecar"
#: The push CA outlives many leaf renewals; replacing it (delete its Secret) re-issues every
#: cluster's admin certificate, and pushes fail until the kubelets deliver the new ones.
PUSH_CA_VALIDITY = datetime.timedelta(days=5 * 365)


@dataclass(frozen=True)
class WebhookOptions:
    listen_host: str = "0.0.0.0"
    listen_port: int = 9443
    #: How the apiserver reaches the webhook: a URL (outside the cluster, tests) or a Service.
    url: str | None = None
    service_namespace: str = "gremlinlb-system"
    service_name: str = "gremlinlb-operator"
    service_port: int = 443
    configuration: str = "gremlinlb-sidecar-injector"
    secret_namespace: str = "gremlinlb-system"
    secret_name: str = "gremlinlb-webhook-tls"
    #: tls.crt, tls.key and ca.crt provisioned by someone else (cert-manager): used as they are.
    cert_dir: Path | None = None

    def names(self) -> list[str]:
        if self.url is not None:
            from urllib.parse import urlsplit

            return [urlsplit(self.url).hostname or "localhost"]
        service, ns = self.service_name, self.service_namespace
        return [f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local", f"{service}.{ns}"]

    def client_config(self, ca_pem: bytes) -> dict[str, Any]:
        bundle = base64.b64encode(ca_pem).decode()
        if self.url is not None:
            return {"url": self.url.rstrip("/") + WEBHOOK_PATH, "caBundle": bundle}
        return {
            "service": {
                "namespace": self.service_namespace,
                "name": self.service_name,
                "port": self.service_port,
                "path": WEBHOOK_PATH,
            },
            "caBundle": bundle,
        }


@dataclass(frozen=True)
class DistributionOptions:
    """Where watching sidecars get their lists (distribution.py)."""

    listen_host: str = "0.0.0.0"
    listen_port: int = 8444
    #: How the sidecars reach it (injected as --operator-url); its host is the certificate's name.
    url: str = "https://gremlinlb-operator.gremlinlb-system.svc:8444"
    #: At most this many polls held at once, in all (each is a socket).
    max_watches: int = 15_000

    @property
    def server_name(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.url).hostname or "localhost"


@dataclass(frozen=True)
class LeaseOptions:
    """The Lease the replicas elect a leader with (only the leader follows the clusters)."""

    namespace: str = "gremlinlb-system"
    name: str = "gremlinlb-operator"
    duration: float = 15.0
    #: A leader that could not renew for this long stops leading (< duration).
    renew_deadline: float = 10.0
    #: How often the leader renews, and a standby tries.
    retry: float = 2.0


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    controller: ControllerOptions = field(default_factory=ControllerOptions)
    push_concurrency: int = 64
    webhook: WebhookOptions | None = field(default_factory=WebhookOptions)
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    #: Where ``GET /metrics`` is served (host, port); None: not served.
    metrics: tuple[str, int] | None = ("0.0.0.0", 8081)
    #: What injected sidecars may be pushed (GREMLINLB_ALLOWED_HOSTS); empty: any host.
    sidecar_allowed_hosts: tuple[str, ...] = PRIVATE_NETWORKS
    #: Injected pods get prometheus.io/scrape|port|path(|scheme) annotations.
    sidecar_scrape_annotations: bool = False
    #: None: this replica always leads (a single replica, or a test).
    lease: LeaseOptions | None = field(default_factory=LeaseOptions)
    #: How often the webhook certificate is checked (renewed near expiry, reloaded if changed).
    cert_check_interval: float = 3600.0
    #: The CA that issues the sidecars' admin certificates (pushes go over TLS); None: plain
    #: HTTP pushes and no admin TLS for injected sidecars.
    push_ca_secret: tuple[str, str] | None = ("gremlinlb-system", "gremlinlb-push-ca")
    #: Serve host lists to watching sidecars; None: pushes only.
    distribution: DistributionOptions | None = field(default_factory=DistributionOptions)


def _stored_bundle(secret: Mapping[str, Any] | None) -> certs.CertBundle | None:
    if secret is None:
        return None
    data = secret.get("data") or {}
    try:
        return certs.CertBundle(
            base64.b64decode(data["ca.crt"]),
            base64.b64decode(data["tls.crt"]),
            base64.b64decode(data["tls.key"]),
        )
    except (KeyError, ValueError):
        return None


def kopf_credentials() -> kopf.ConnectionInfo:
    """kopf's own credentials (for its GremlinCluster watch): a kubeconfig when one is given
    (KUBECONFIG, ~/.kube/config), else the pod's ServiceAccount, as :class:`Kube` finds them."""
    settings = kopf.OperatorSettings()
    info = None
    if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
        info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        info = kopf.login_with_service_account(settings=settings)
    if info is None:
        raise kopf.LoginError(
            "no credentials: give --kubeconfig (or KUBECONFIG) or run in a pod with a "
            "ServiceAccount token"
        )
    return info


class OperatorApp:
    def __init__(self, options: OperatorOptions, api: Kube) -> None:
        self.options = options
        self.api = api
        self.metrics = OperatorMetrics(
            lambda: list(self.controllers.values()), lambda: self.leading
        )
        self.sender = HttpSender(limit=options.push_concurrency, observe=self.metrics.observe_push)
        self._metrics_runner: web.AppRunner | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._failing: asyncio.Semaphore | None = None
        self.controllers: dict[tuple[str, str], ClusterController] = {}
        #: Every GremlinCluster kopf reported, followed or not (a standby follows none).
        self.bodies: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.election: LeaderElection | None = None
        if options.lease is not None:
            lease = options.lease
            self.election = LeaderElection(
                self.api,
                lease.namespace,
                lease.name,
                os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                duration=lease.duration,
                renew_deadline=lease.renew_deadline,
                retry=lease.retry,
                on_started=self._lead,
                on_stopped=self._stand_by,
            )
        self._background: list[asyncio.Task[None]] = []
        self._tls: ssl.SSLContext | None = None
        self._serving: certs.CertBundle | None = None
        self.authority: certs.Authority | None = None
        self.admission: AdmissionServer | None = None
        self.distribution: DistributionServer | None = None
        #: The snapshot last published per cluster (the same object while nothing changed, so
        #: the server wakes only the polls of clusters whose list or token changed).
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self.injection = Injection(
            allowed_hosts=options.sidecar_allowed_hosts,
            scrape_annotations=options.sidecar_scrape_annotations,
        )

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.options.push_concurrency)
        return self._semaphore

    @property
    def failing_slots(self) -> asyncio.Semaphore:
        """The share of the push slots sidecars that failed their last call may hold."""
        if self._failing is None:
            self._failing = failing_slots(self.options.push_concurrency)
        return self._failing

    # -- clusters ------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self.election is None or self.election.leading

    async def start_background(self) -> None:
        """The metrics endpoint, the leader election and the certificate's renewal (kopf's
        startup handler)."""
        if self.options.metrics is not None:
            self._metrics_runner = await self.metrics.serve(*self.options.metrics)
        if self.election is not None:
            self._background.append(asyncio.create_task(self.election.run(), name="lease"))
        if self.options.webhook is not None:
            check = self._every_check("webhook", self._renew_webhook_certificate)
            self._background.append(asyncio.create_task(check, name="cert"))
        if self.distribution is not None and self.distribution.certificate is not None:
            check = self._every_check("watch", self.distribution.renew_certificate)
            self._background.append(asyncio.create_task(check, name="watch-cert"))

    def ensure(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta["namespace"]), str(meta["name"]))
        self.bodies[key] = body
        if not self.leading:
            return
        controller = self.controllers.get(key)
        if controller is None:
            controller = ClusterController(
                self.api,
                self.sender,
                self.semaphore,
                self.options.controller,
                body,
                self.authority,
                failing=self.failing_slots,
            )
            controller.on_change = self._publish
            self.controllers[key] = controller
            controller.start()
        else:
            controller.update(body)

    async def _lead(self) -> None:
        for body in list(self.bodies.values()):
            self.ensure(body)
        self._publish()

    async def _stand_by(self) -> None:
        """Stop every push, status write and watch at once (no await before all are
        cancelled), then wait for them to end."""
        stopping = [self.controllers.pop(key) for key in list(self.controllers)]
        self._publish()
        for controller in stopping:
            controller.halt()
        for controller in stopping:
            await controller.stop()

    async def remove(self, namespace: str, name: str, uid: str | None) -> None:
        """Stop following a deleted cluster (its token Secret goes with it: owner reference).
        A cluster of the same name applied again since (another uid) is left running."""
        key = (namespace, name)
        body = self.bodies.get(key)
        if body is not None and uid in (None, (body.get("metadata") or {}).get("uid")):
            del self.bodies[key]
        controller = self.controllers.get(key)
        if controller is not None and uid in (None, controller.uid):
            del self.controllers[key]
            self._publish()
            await controller.stop()

    async def cluster_for_pod(self, namespace: str, name: str) -> tuple[ClusterSpec, list[str]]:
        """The cluster a pod asks for and its live hosts; kopf.AdmissionError if unusable."""
        controller = self.controllers.get((namespace, name)) if self.leading else None
        if controller is not None and controller.spec is not None:
            return controller.spec, list(controller.hosts)
        body = await self.api.read(Kind.CLUSTER, namespace, name)
        if body is None:
            known = await self.api.cluster_names(namespace)
            raise kopf.AdmissionError(unknown_cluster_message(namespace, name, known), code=400)
        # A standby replica follows no cluster: it injects the hosts the leader last wrote to
        # the status, so the new sidecar can serve before the leader's first push reaches it.
        hosts = (body.get("status") or {}).get("hosts") or []
        try:
            return parse_spec(name, body.get("spec") or {}), [
                h for h in hosts if isinstance(h, str)
            ]
        except SpecError as error:
            raise kopf.AdmissionError(
                f"GremlinCluster {namespace}/{name} cannot be used: {error}", code=400
            ) from None

    async def close(self) -> None:
        await cancel_and_wait(*self._background)
        for key in list(self.controllers):
            controller = self.controllers.pop(key)
            await controller.stop()
        if self.admission is not None:
            await self.admission.stop()
        if self.distribution is not None:
            await self.distribution.stop()
        await self.sender.close()
        await self.api.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    # -- the webhook ---------------------------------------------------------------------------

    async def webhook_server(self) -> AdmissionServer | None:
        """The admission server, on its own thread (and its certificate in place in the
        webhook configuration); not started yet."""
        options = self.options.webhook
        if options is None:
            return None
        await self._check_version()
        bundle = await self._certificate(options)
        # Kept, so that a renewed certificate is loaded into it while the server runs.
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certs.load_into(self._tls, bundle)
        self._serving = bundle
        await self._configure_webhook(options, bundle.ca_pem)
        self.admission = AdmissionServer(
            options.listen_host,
            options.listen_port,
            self._tls,
            WEBHOOK_PATH,
            self.injection,
            self.cluster_for_pod,
        )
        self._publish()
        return self.admission

    def _publish(self) -> None:
        """Hand the admission and distribution threads what they need of the followed
        clusters, as of now."""
        self._publish_lists()
        if self.admission is None:
            return
        clusters = {
            key: (c.spec, c.hosts)
            for key, c in self.controllers.items()
            if c.spec is not None and self.leading
        }
        self.admission.publish(AdmissionView(clusters))

    # -- the watch -------------------------------------------------------------------------

    async def distribution_server(self) -> DistributionServer | None:
        """The server of the sidecars' watch, on its own thread (not started yet): HTTPS with
        a certificate of the push CA for the URL's host (what the sidecars verify), renewed
        while it runs (:meth:`DistributionServer.renew_certificate`)."""
        options = self.options.distribution
        if options is None:
            return None
        certificate = None
        if self.authority is not None:
            certificate = WatchCertificate(self.authority, [options.server_name])
        else:
            log.warning(
                "no push CA (--no-push-tls): host lists are served to watching sidecars over "
                "plain HTTP, and their tokens travel in clear"
            )
        self.injection = dataclasses.replace(self.injection, operator_url=options.url)
        self.distribution = DistributionServer(
            options.listen_host,
            options.listen_port,
            certificate,
            self._watch_report,
            total=options.max_watches,
        )
        self._publish_lists()
        return self.distribution

    def _publish_lists(self) -> None:
        if self.distribution is None:
            return
        snapshots: dict[tuple[str, str], Snapshot] = {}
        for key, controller in self.controllers.items():
            payload, token = controller.group.payload, controller.group.token
            if payload is None:
                continue
            cached = self._snapshots.get(key)
            if cached is None or cached.body is not payload.body or cached.token != token:
                cached = Snapshot(payload.generation, payload.body, token)
            snapshots[key] = cached
        self._snapshots = snapshots
        self.distribution.publish(DistributionView(self.leading, dict(snapshots)))

    def _watch_report(self, key: tuple[str, str], report: WatchReport) -> None:
        """A poll's report, on the operator's loop: the sidecar's acknowledgement and health."""
        controller = self.controllers.get(key)
        if controller is not None:
            controller.group.report(
                f"{key[0]}/{report.pod}", report.generation, report.health, report.error
            )

    async def _every_check(self, what: str, renew: Callable[[], Awaitable[bool]]) -> None:
        """``renew`` the ``what`` certificate every ``cert_check_interval`` for as long as the
        operator runs, so it is renewed before it expires without a restart; a failed check
        is tried again at the next one."""
        while True:
            await asyncio.sleep(self.options.cert_check_interval)
            try:
                if await renew():
                    log.info("%s certificate renewed: now serving the new one", what)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s certificate check failed (trying again later): %s", what, error)

    async def _renew_webhook_certificate(self) -> bool:
        """Renew the webhook's certificate before it expires (or load the one another replica
        renewed, or cert-manager replaced); False: the one served is still good."""
        options = self.options.webhook
        assert options is not None
        bundle = await self._certificate(options)
        if bundle == self._serving or self._tls is None:
            return False
        # The caBundle first: it trusts the old and the new CA during the change.
        await self._configure_webhook(options, bundle.ca_pem)
        if self.admission is not None:  # loaded on the thread that serves with it
            await self.admission.run_on_thread(certs.load_into, self._tls, bundle)
        else:
            certs.load_into(self._tls, bundle)
        self._serving = bundle
        return True

    async def _store_secret(self, secret: dict[str, Any], found: Mapping[str, Any] | None) -> bool:
        """Create ``secret``, or replace ``found`` (the version read) with it; False when
        another replica created, changed or deleted it meanwhile (read it again)."""
        namespace, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        try:
            if found is None:
                await self.api.create(Kind.SECRET, namespace, secret)
            else:
                secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
                await self.api.replace(Kind.SECRET, namespace, name, secret)
        except KubeError as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def push_authority(self) -> None:
        """The push CA, kept in a Secret shared by the replicas (created by the first one)."""
        where = self.options.push_ca_secret
        if where is None:
            return
        path = "/".join(where)
        for _ in range(3):
            found = await self.api.read(Kind.SECRET, *where)
            data = (found or {}).get("data") or {}
            if "ca.crt" in data and "ca.key" in data:
                self.authority = certs.Authority(
                    base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"])
                )
                break
            fresh = certs.new_authority("gremlinlb-push-ca", validity=PUSH_CA_VALIDITY)
            secret: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": where[1],
                    "namespace": where[0],
                    "labels": {"app.kubernetes.io/managed-by": "gremlinlb-operator"},
                },
                "data": {
                    "ca.crt": base64.b64encode(fresh.ca_pem).decode(),
                    "ca.key": base64.b64encode(fresh.key_pem).decode(),
                },
            }
            if not await self._store_secret(secret, found):
                continue  # another replica wrote it first: use theirs
            self.authority = fresh
            log.info("push CA created in Secret %s/%s", *where)
            break
        else:
            raise RuntimeError(f"Secret {path} kept changing while the push CA was written")
        self.sender.trust(self.authority.ca_pem)
        self.injection = dataclasses.replace(self.injection, admin_tls=True)

    async def _check_version(self) -> None:
        """Native sidecars need Kubernetes 1.29: before that, inject a regular container."""
        version = await self.api.version()
        native = native_sidecars(version)
        self.injection = dataclasses.replace(self.injection, native=native)
        if not native:
            log.warning(
                "Kubernetes %s has no native sidecars (they need 1.29 or later): the sidecar is "
                "injected as the first regular container instead. It then starts before the "
                "application but is not awaited, and a Job's pod does not end while it runs. "
                "Upgrade the cluster to 1.29+ for native sidecars.",
                version.get("gitVersion", "?"),
            )

    async def _certificate(self, options: WebhookOptions) -> certs.CertBundle:
        """The serving certificate: provided (cert-manager), or kept in a Secret shared by the
        replicas, generated when absent and renewed when near expiry. Bounded: replicas that
        race each other settle on whichever wrote first."""
        if options.cert_dir is not None:
            d = options.cert_dir
            ca = d / "ca.crt" if (d / "ca.crt").exists() else d / "tls.crt"
            return certs.CertBundle(
                ca.read_bytes(), (d / "tls.crt").read_bytes(), (d / "tls.key").read_bytes()
            )
        names = options.names()
        path = f"{options.secret_namespace}/{options.secret_name}"
        for _ in range(3):
            found = await self.api.read(Kind.SECRET, options.secret_namespace, options.secret_name)
            stored = _stored_bundle(found)
            if stored is not None and certs.still_good(stored, names):
                return stored
            bundle = certs.renewed(stored, names)
            secret: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": options.secret_name,
                    "namespace": options.secret_namespace,
                    "labels": {"app.kubernetes.io/managed-by": "gremlinlb-operator"},
                },
                "data": {
                    "ca.crt": base64.b64encode(bundle.ca_pem).decode(),
                    "tls.crt": base64.b64encode(bundle.cert_pem).decode(),
                    "tls.key": base64.b64encode(bundle.key_pem).decode(),
                },
            }
            if not await self._store_secret(secret, found):
                continue  # another replica wrote it first: use theirs
            log.info("webhook certificate for %s stored in Secret %s", ", ".join(names), path)
            return bundle
        raise RuntimeError(f"Secret {path} kept changing while the certificate was written")

    async def _configure_webhook(self, options: WebhookOptions, ca_pem: bytes) -> None:
        name = options.configuration
        for _ in range(5):
            config = await self.api.read(Kind.WEBHOOK_CONFIGURATION, "", name)
            if config is None:
                log.warning(
                    "MutatingWebhookConfiguration %s does not exist: apply manifests/webhook.yaml"
                    " (until then no pod gets a sidecar injected)",
                    options.configuration,
                )
                return
            wanted = options.client_config(ca_pem)
            webhooks = config.get("webhooks") or []
            if all(w.get("clientConfig") == wanted for w in webhooks):
                return
            for webhook in webhooks:
                webhook["clientConfig"] = wanted
            try:
                await self.api.replace(Kind.WEBHOOK_CONFIGURATION, "", name, config)
                log.info("webhook configuration %s points at this operator", options.configuration)
                return
            except KubeError as error:
                if error.status != 409:
                    raise
        raise RuntimeError(f"MutatingWebhookConfiguration {name} kept changing while being updated")
