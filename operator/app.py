"""The operator process: shared clients, the cluster controllers, and the webhook's TLS.

kopf owns the event loop, the GremlinCluster watch, finalizers, the admission server and the
liveness endpoint; :class:`OperatorApp` owns what kopf's handlers delegate to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from gremlinlb.operator.controller import ClusterController, ControllerOptions
from gremlinlb.operator.kube import KubeApi, KubeError, namespaced
from gremlinlb.operator.sender import HttpSender
from gremlinlb.operator.spec import GROUP, PLURAL, VERSION, ClusterSpec, SpecError, parse_spec
from gremlinlb.operator.webhook import token_secret_name, unknown_cluster_message

from gremlinlb import certificates as certs

log = logging.getLogger(__name__)

WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
WEBHOOK_PATH = "/inject-sidecar"


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
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    controller: ControllerOptions = field(default_factory=ControllerOptions)
    push_concurrency: int = 64
    webhook: WebhookOptions | None = field(default_factory=WebhookOptions)
    liveness: str | None = "http://0.0.0.0:8080/healthz"


def login() -> kopf.ConnectionInfo:
    """A kubeconfig when one is given (KUBECONFIG, ~/.kube/config), else the pod's
    ServiceAccount."""
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
    def __init__(self, options: OperatorOptions) -> None:
        self.options = options
        self.api = KubeApi(login)
        self.sender = HttpSender(limit=options.push_concurrency)
        self._semaphore: asyncio.Semaphore | None = None
        self.controllers: dict[tuple[str, str], ClusterController] = {}
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.options.push_concurrency)
        return self._semaphore

    # -- clusters ------------------------------------------------------------------------------

    def ensure(self, body: Mapping[str, Any]) -> ClusterController:
        meta = body.get("metadata") or {}
        key = (str(meta["namespace"]), str(meta["name"]))
        controller = self.controllers.get(key)
        if controller is None:
            controller = ClusterController(
                self.api, self.sender, self.semaphore, self.options.controller, body
            )
            self.controllers[key] = controller
            controller.start()
        else:
            controller.update(body)
        return controller

    async def remove(self, namespace: str, name: str) -> None:
        controller = self.controllers.pop((namespace, name), None)
        if controller is not None:
            await controller.stop()
        path = namespaced("", "v1", namespace, "secrets", token_secret_name(name))
        try:
            await self.api.request("DELETE", path)
        except KubeError as error:
            if error.status != 404:
                raise

    async def cluster_for_pod(self, namespace: str, name: str) -> tuple[ClusterSpec, list[str]]:
        """The cluster a pod asks for and its live hosts; kopf.AdmissionError if unusable."""
        controller = self.controllers.get((namespace, name))
        if controller is not None and controller.spec is not None:
            return controller.spec, list(controller.hosts)
        body = await self.api.get(namespaced(GROUP, VERSION, namespace, PLURAL, name))
        if body is None:
            listed = await self.api.request("GET", namespaced(GROUP, VERSION, namespace, PLURAL))
            known = [str(i["metadata"]["name"]) for i in listed.get("items") or ()]
            raise kopf.AdmissionError(unknown_cluster_message(namespace, name, known), code=400)
        try:
            return parse_spec(name, body.get("spec") or {}), []
        except SpecError as error:
            raise kopf.AdmissionError(
                f"GremlinCluster {namespace}/{name} cannot be used: {error}", code=400
            ) from None

    async def close(self) -> None:
        for key in list(self.controllers):
            controller = self.controllers.pop(key)
            await controller.stop()
        await self.sender.close()
        await self.api.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    # -- the webhook ---------------------------------------------------------------------------

    async def webhook_server(self) -> kopf.WebhookServer | None:
        """The admission server (and its certificate in place in the webhook configuration)."""
        options = self.options.webhook
        if options is None:
            return None
        bundle = await self._certificate(options)
        self._tempdir = tempfile.TemporaryDirectory(prefix="gremlinlb-webhook-")
        directory = Path(self._tempdir.name)
        (directory / "tls.crt").write_bytes(bundle.cert_pem)
        key_path = directory / "tls.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(bundle.key_pem)
        await self._configure_webhook(options, bundle.ca_pem)
        return kopf.WebhookServer(
            addr=options.listen_host,
            port=options.listen_port,
            certfile=str(directory / "tls.crt"),
            pkeyfile=str(key_path),
        )

    async def _certificate(self, options: WebhookOptions) -> certs.CertBundle:
        if options.cert_dir is not None:
            d = options.cert_dir
            ca = d / "ca.crt" if (d / "ca.crt").exists() else d / "tls.crt"
            return certs.CertBundle(
                ca.read_bytes(), (d / "tls.crt").read_bytes(), (d / "tls.key").read_bytes()
            )
        names = options.names()
        path = namespaced("", "v1", options.secret_namespace, "secrets", options.secret_name)
        found = await self.api.get(path)
        if found is not None:
            data = found.get("data") or {}
            with contextlib.suppress(KeyError, ValueError):
                bundle = certs.CertBundle(
                    base64.b64decode(data["ca.crt"]),
                    base64.b64decode(data["tls.crt"]),
                    base64.b64decode(data["tls.key"]),
                )
                if certs.still_good(bundle, names):
                    return bundle
        bundle = certs.generate(names)
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
        if found is None:
            await self.api.request(
                "POST", namespaced("", "v1", options.secret_namespace, "secrets"), body=secret
            )
        else:
            secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
            await self.api.request("PUT", path, body=secret)
        log.info("webhook certificate for %s stored in Secret %s", ", ".join(names), path)
        return bundle

    async def _configure_webhook(self, options: WebhookOptions, ca_pem: bytes) -> None:
        path = f"{WEBHOOK_CONFIGS}/{options.configuration}"
        for _ in range(5):
            config = await self.api.get(path)
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
                await self.api.request("PUT", path, body=config)
                log.info("webhook configuration %s points at this operator", options.configuration)
                return
            except KubeError as error:
                if error.status != 409:
                    raise
        raise RuntimeError(f"{path} kept changing while being updated")
