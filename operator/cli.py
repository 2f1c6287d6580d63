"""`gremlinlb operator`: run the Kubernetes operator (or print the manifests it generates)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import kopf
import yaml
from gremlinlb.operator.app import (
    DistributionOptions,
    LeaseOptions,
    OperatorApp,
    OperatorOptions,
    WebhookOptions,
)
from gremlinlb.operator.client import Kube
from gremlinlb.operator.controller import ControllerOptions
from gremlinlb.operator.crd import crd_yaml
from gremlinlb.operator.handlers import build_registry
from gremlinlb.operator.leader import check_timings
from gremlinlb.operator.webhook import PRIVATE_NETWORKS, webhook_configuration
from gremlinlb.sidecar.options import parse_allowed_hosts

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "operator",
        help="run the Kubernetes operator (GremlinCluster CRD, host list pushes, injection)",
        description=(
            "Watches GremlinClusters, turns their Service's EndpointSlices into host lists, "
            "pushes them to every selected sidecar, and injects sidecars into labelled pods."
        ),
    )
    where = parser.add_argument_group("cluster access")
    where.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, then in-cluster)"
    )
    where.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; globs allowed); default: all namespaces",
    )
    run = parser.add_argument_group("behaviour")
    run.add_argument(
        "--push-timeout",
        type=float,
        default=5.0,
        metavar="SEC",
        help="longest a PUT /v1/hosts to one sidecar may take (default 5)",
    )
    run.add_argument(
        "--push-concurrency",
        type=int,
        default=64,
        metavar="N",
        help="pushes in flight at once, over all sidecars (default 64)",
    )
    run.add_argument(
        "--resync-interval",
        type=float,
        default=60.0,
        metavar="SEC",
        help="push the current list to every sidecar again this often (default 60)",
    )
    run.add_argument(
        "--debounce",
        type=float,
        default=0.05,
        metavar="SEC",
        help="coalesce EndpointSlice changes within this window (default 0.05)",
    )
    run.add_argument(
        "--client-zones-interval",
        type=float,
        default=5.0,
        metavar="SEC",
        help="at most one new host list generation this often when only the client pods per "
        "zone changed (a rollout changes them with every pod; default 5)",
    )
    run.add_argument(
        "--token-check-interval",
        type=float,
        default=30.0,
        metavar="SEC",
        help="read each cluster's token Secret again this often, recreating a missing or "
        "broken one (a sidecar refusing the token triggers it at once; default 30)",
    )
    run.add_argument(
        "--health-interval",
        type=float,
        default=15.0,
        metavar="SEC",
        help="read each sidecar's view of its backends this often, for the GremlinCluster "
        "status and a spec.neptune cluster's suspected failovers (default 15)",
    )
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        metavar="URL",
        help="liveness endpoint served by kopf ('' to disable)",
    )
    run.add_argument(
        "--metrics-listen",
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at GET /metrics here ('' to disable; default 0.0.0.0:8081)",
    )
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    ha = parser.add_argument_group("several replicas")
    ha.add_argument(
        "--lease",
        default="gremlinlb-system/gremlinlb-operator",
        metavar="NS/NAME",
        help="the Lease replicas elect a leader with; only the leader follows the clusters, "
        "every replica serves the webhook",
    )
    ha.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        metavar="SEC",
        help="a leader not renewing for this long is replaced (default 15)",
    )
    ha.add_argument(
        "--renew-deadline",
        type=float,
        metavar="SEC",
        help="a leader that could not renew its Lease for this long stops leading, even while "
        "its calls hang; shorter than --lease-duration, so it stops before another replica "
        "can take over (default: 2/3 of --lease-duration, 10 of 15)",
    )
    ha.add_argument(
        "--no-leader-election",
        action="store_true",
        help="lead without a Lease (one replica only)",
    )
    watch = parser.add_argument_group("host lists for watching sidecars")
    watch.add_argument(
        "--distribution-listen",
        default="0.0.0.0:8444",
        metavar="HOST:PORT",
        help="serve the sidecars' watch here ('' for none: pushes only; default 0.0.0.0:8444)",
    )
    watch.add_argument(
        "--distribution-url",
        default="https://gremlinlb-operator.gremlinlb-system.svc:8444",
        metavar="URL",
        help="how sidecars reach the watch (injected as their --operator-url; its host is the "
        "name on the operator's certificate)",
    )
    watch.add_argument(
        "--distribution-max-watches",
        type=int,
        default=15_000,
        metavar="N",
        help="at most this many polls held at once (each is a socket; default 15000)",
    )
    hook = parser.add_argument_group("sidecar injection webhook")
    hook.add_argument("--no-webhook", action="store_true", help="do not serve the webhook")
    hook.add_argument("--webhook-listen", default="0.0.0.0:9443", metavar="HOST:PORT")
    hook.add_argument(
        "--webhook-url",
        metavar="URL",
        help="how the apiserver reaches the webhook when not through the Service "
        "(e.g. https://127.0.0.1:9443 for an operator outside the cluster)",
    )
    hook.add_argument(
        "--webhook-service",
        default="gremlinlb-system/gremlinlb-operator:443",
        metavar="NS/NAME:PORT",
        help="the Service in front of the operator",
    )
    hook.add_argument(
        "--webhook-configuration",
        default="gremlinlb-sidecar-injector",
        metavar="NAME",
        help="MutatingWebhookConfiguration to keep pointed at us",
    )
    hook.add_argument(
        "--webhook-secret",
        default="gremlinlb-system/gremlinlb-webhook-tls",
        metavar="NS/NAME",
        help="Secret keeping the generated serving certificate",
    )
    hook.add_argument(
        "--webhook-cert-check-interval",
        type=float,
        default=3600.0,
        metavar="SEC",
        help="check the serving certificates this often: renewed 30 days before they expire "
        "(the webhook's and the watch's), the webhook's reloaded when another replica or "
        "cert-manager replaced it (default 3600)",
    )
    hook.add_argument(
        "--no-push-tls",
        action="store_true",
        help="no push CA: inject sidecars without admin TLS; their pods get pushes (token "
        "included, in clear) only from clusters with spec.sidecar.allowPlainHttpPush",
    )
    hook.add_argument(
        "--sidecar-allowed-hosts",
        default=",".join(PRIVATE_NETWORKS),
        metavar="LIST",
        help="CIDRs and host name globs injected sidecars may be pushed (their "
        "--allowed-hosts); default: the private networks; '' allows any host",
    )
    hook.add_argument(
        "--sidecar-scrape-annotations",
        action="store_true",
        help="annotate injected pods prometheus.io/scrape|port|path (the sidecar's /metrics; "
        "prometheus.io/scheme https with admin TLS) unless they have prometheus.io annotations",
    )
    hook.add_argument(
        "--webhook-cert-dir",
        type=Path,
        metavar="DIR",
        help="use tls.crt, tls.key, ca.crt from here (e.g. cert-manager) instead",
    )
    parser.add_argument(
        "--print",
        choices=("crd", "webhook"),
        dest="print_manifest",
        help="print a generated manifest and exit",
    )
    parser.set_defaults(handler=run_operator)


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _metrics_listen(text: str) -> tuple[str, int] | None:
    if not text:
        return None
    try:
        host, port = _split_host_port(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"--metrics-listen: expected HOST:PORT (or '' for none), got {text!r}")
    return host, port


def _allowed_hosts(text: str) -> tuple[str, ...]:
    try:
        return parse_allowed_hosts(text)
    except ValueError as error:
        raise ValueError(f"--sidecar-allowed-hosts: {error}") from None


def options_from_args(args: argparse.Namespace) -> OperatorOptions:
    webhook = None
    if not args.no_webhook:
        listen_host, listen_port = _split_host_port(args.webhook_listen)
        service, _, port = args.webhook_service.rpartition(":")
        service_ns, _, service_name = service.partition("/")
        secret_ns, _, secret_name = args.webhook_secret.partition("/")
        webhook = WebhookOptions(
            listen_host=listen_host,
            listen_port=listen_port,
            url=args.webhook_url,
            service_namespace=service_ns,
            service_name=service_name,
            service_port=int(port),
            configuration=args.webhook_configuration,
            secret_namespace=secret_ns,
            secret_name=secret_name,
            cert_dir=args.webhook_cert_dir,
        )
    lease = None
    if not args.no_leader_election:
        lease_ns, _, lease_name = args.lease.partition("/")
        if not lease_ns or not lease_name:
            raise ValueError(f"--lease: expected NAMESPACE/NAME, got {args.lease!r}")
        if args.lease_duration < 3:
            raise ValueError(f"--lease-duration: must be >= 3 seconds, got {args.lease_duration}")
        deadline = args.renew_deadline
        if deadline is None:
            deadline = args.lease_duration * 2 / 3  # client-go's 10 s of 15
        retry = min(2.0, deadline / 3)
        try:
            check_timings(args.lease_duration, deadline, retry)
        except ValueError as error:
            raise ValueError(f"--renew-deadline: {error}") from None
        lease = LeaseOptions(lease_ns, lease_name, args.lease_duration, deadline, retry)
    return OperatorOptions(
        namespaces=tuple(args.namespace),
        controller=ControllerOptions(
            push_timeout=args.push_timeout,
            resync_interval=args.resync_interval,
            debounce=args.debounce,
            client_zones_interval=args.client_zones_interval,
            token_check_interval=args.token_check_interval,
            health_interval=args.health_interval,
        ),
        push_concurrency=args.push_concurrency,
        webhook=webhook,
        liveness=args.liveness or None,
        metrics=_metrics_listen(args.metrics_listen),
        sidecar_allowed_hosts=_allowed_hosts(args.sidecar_allowed_hosts),
        sidecar_scrape_annotations=args.sidecar_scrape_annotations,
        lease=lease,
        push_ca_secret=None if args.no_push_tls else ("gremlinlb-system", "gremlinlb-push-ca"),
        cert_check_interval=args.webhook_cert_check_interval,
        distribution=_distribution(args),
    )


def _distribution(args: argparse.Namespace) -> DistributionOptions | None:
    if not args.distribution_listen:
        return None
    host, port = _split_host_port(args.distribution_listen)
    url = args.distribution_url
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"--distribution-url: expected an https:// URL, got {url!r}")
    # The watch serves HTTPS exactly when there is a push CA to issue its certificate.
    if args.no_push_tls and url.startswith("https://"):
        raise ValueError(
            f"--distribution-url: {url} is https://, but with --no-push-tls the watch has no "
            "certificate and serves plain HTTP. Drop --no-push-tls, give an http:// URL (its "
            "sidecars then send their token in clear; only clusters with "
            "spec.sidecar.allowPlainHttpPush are injected with it), or --distribution-listen '' "
            "(pushes only)"
        )
    if not args.no_push_tls and url.startswith("http://"):
        raise ValueError(
            f"--distribution-url: {url} is plain HTTP, but the watch serves HTTPS (a "
            "certificate of the push CA): give its https:// URL"
        )
    if args.distribution_max_watches < 1:
        raise ValueError(
            f"--distribution-max-watches: must be >= 1, got {args.distribution_max_watches}"
        )
    return DistributionOptions(host, port, url, args.distribution_max_watches)


def settings_for() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's bookkeeping goes into annotations and a finalizer under our own prefix; the status
    # belongs to the operator's own status writer alone.
    settings.persistence.finalizer = "gremlinlb.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gremlinlb.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="gremlinlb.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # events: our own, plus kopf's warnings
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.watching.server_timeout = 300
    # The admission webhook is served by the operator's own thread (operator/admission.py), not
    # by kopf; manifests/webhook.yaml owns the selectors and policy.
    settings.admission.server = None
    settings.admission.managed = None
    return settings


def configure_logging(log_format: str, level: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = []
    kopf.configure(log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger("gremlinlb").setLevel(level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


async def _main(options: OperatorOptions) -> None:
    app = OperatorApp(options, await Kube.connect())
    try:
        await app.push_authority()
        # Before the webhook: injected sidecars are told where to watch.
        distribution = await app.distribution_server()
        if distribution is not None:
            await distribution.start()  # its own thread: polls never wait behind pushes
        webhook = await app.webhook_server()
        if webhook is not None:
            await webhook.start()  # its own thread: admission never waits behind pushes
    except BaseException:
        await app.close()
        raise
    await kopf.operator(
        registry=build_registry(app),
        settings=settings_for(),
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        liveness_endpoint=options.liveness,
    )


def run_operator(args: argparse.Namespace) -> int:
    if args.print_manifest == "crd":
        sys.stdout.write(crd_yaml())
        return 0
    if args.print_manifest == "webhook":
        config = webhook_configuration(
            args.webhook_configuration,
            {
                "service": {
                    "namespace": "gremlinlb-system",
                    "name": "gremlinlb-operator",
                    "port": 443,
                }
            },
        )
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return 0
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).resolve())
    configure_logging(args.log_format, args.log_level.upper())
    try:
        options = options_from_args(args)
    except ValueError as error:
        print(f"gremlinlb operator: {error}", file=sys.stderr)
        return 2
    asyncio.run(_main(options))
    return 0
