"""Every dashboard query and every PromQL line of the docs, evaluated by a real Prometheus.

Prometheus (Debian's package, `make prometheus`) scrapes, every second on loopback, a live
sidecar and the live operator that pushes its host list on a real apiserver. The sidecar
carries a few seconds of real gremlinpython load to three real Gremlin Servers (each in its own
network namespace); one server is killed in the middle of it. Then each query, read from the
dashboard JSON or the docs (tests/monitoring_support.py), must answer with series carrying the
labels its legend or its `by (...)` names. The alert rules are checked by promtool.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from gremlinlb.devservers import GremlinServerProcess, ServerRuntime, with_traversal_source
from hack.monitoring.manifests import RULES
from tests.devcluster import (
    ControlPlane,
    EndpointSpec,
    NetnsNetwork,
    apply_endpoint_slice,
    create_namespace,
    create_service,
    purge_namespace,
)
from tests.monitoring_support import (
    RULE_TESTS,
    Query,
    dashboard_queries,
    docs_queries,
    prometheus_bin,
)
from tests.operator_support import (
    GREMLIN_PORT,
    REPO,
    OperatorProcess,
    SidecarProcess,
    applied_manifests,
    create_client_pod,
    free_port,
    netns_servers,
    running_operator,
    token_files,
    wait_for,
)

pytestmark = pytest.mark.integration

ZONE = "zone-a"
LOAD_SECONDS = 3.0  # before and after the kill, each
LOAD_CLIENTS = 4
QUERIES = dashboard_queries() + docs_queries()


def promtool(*args: str | Path) -> None:
    result = subprocess.run(
        [prometheus_bin("promtool"), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_finds_the_alert_rules_valid() -> None:
    promtool("check", "rules", RULES)


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    promtool("test", "rules", RULE_TESTS)


# -- the live scene ------------------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(address, timeout=10) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read())
        if answer.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {answer.get('error')}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


@contextlib.contextmanager
def running_prometheus(work: Path, targets: dict[str, tuple[str, str]]) -> Iterator[Prometheus]:
    """Prometheus on loopback scraping ``job -> (scheme, host:port)`` every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "scheme": scheme,
                "tls_config": {"insecure_skip_verify": True},
                "static_configs": [{"targets": [target]}],
            }
            for job, (scheme, target) in targets.items()
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            prometheus_bin("prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    prometheus = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def scraping() -> bool:
            if process.poll() is not None:
                tail = (work / "prometheus.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"prometheus exited {process.returncode}: {tail}")
            up = prometheus.query("up == 1")
            return {s["metric"]["job"] for s in up} == set(targets)

        wait_for(scraping, 60, "Prometheus scraping every target", interval=0.5)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def load(address: str, until: float) -> int:
    """Reads through the sidecar until ``until`` (bounded: at most 100,000); how many ran."""

    def work(g: Any) -> int:
        done = 0
        while time.monotonic() < until and done < 100_000:
            g.inject(1).next()
            done += 1
        return done

    return with_traversal_source(address, work, timeout=LOAD_SECONDS * 4 + 30)


@pytest.fixture(scope="module")
def scraped(
    control_plane: ControlPlane,
    kube_admin: k8s.ApiClient,
    netns_network: NetnsNetwork,
    gremlin_runtime: ServerRuntime,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    """The scene after the load and the kill, as Prometheus scraped it."""
    work = tmp_path_factory.mktemp("monitoring")
    with contextlib.ExitStack() as stack:
        applied = stack.enter_context(applied_manifests(control_plane))
        operator: OperatorProcess = stack.enter_context(
            running_operator(
                applied,
                work / "operator.log",
                *("--health-interval", "1", "--lease-duration", "3"),
            )
        )
        started = stack.enter_context(netns_servers(netns_network, gremlin_runtime, work, 3))
        processes: list[GremlinServerProcess] = [p for _, p in started]
        namespace = create_namespace(kube_admin, prefix="t-monitoring-")
        stack.callback(purge_namespace, kube_admin, namespace)
        service = create_service(kube_admin, namespace, "gremlin", GREMLIN_PORT)
        apply_endpoint_slice(
            kube_admin,
            namespace,
            "gremlin",
            [
                EndpointSpec(host.ip, pod_name=f"gremlin-{i}", zone=ZONE)
                for i, (host, _) in enumerate(started)
            ],
            port=GREMLIN_PORT,
            owner=service,
        )
        example = REPO / "manifests" / "examples" / "gremlincluster.yaml"
        control_plane.kubectl("apply", "-n", namespace, "-f", str(example))

        def admin_files() -> dict[str, str] | None:
            found = token_files(kube_admin, namespace)
            return found if "tls.crt" in found else None

        files = wait_for(admin_files, 30, "the cluster's token Secret with its admin certificate")
        sidecar = SidecarProcess(files["token"], work / "app-0", "--zone", ZONE, files=files)
        sidecar.start()
        stack.callback(sidecar.stop)
        create_client_pod(
            kube_admin, namespace, "app-0", sidecar.admin_port, admin_tls=True, zone=ZONE
        )
        wanted = sorted(f"{host.ip}:{GREMLIN_PORT}" for host, _ in started)
        wait_for(lambda: sidecar.host_list()[1] == wanted, 30, f"the sidecar holding {wanted}")
        prometheus = stack.enter_context(
            running_prometheus(
                work,
                {
                    "sidecar": ("https", f"127.0.0.1:{sidecar.admin_port}"),
                    "operator": ("http", f"127.0.0.1:{operator.metrics_port}"),
                },
            )
        )
        until = time.monotonic() + 2 * LOAD_SECONDS
        counts: list[int] = []
        clients = [
            threading.Thread(target=lambda: counts.append(load(sidecar.address, until)))
            for _ in range(LOAD_CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(LOAD_SECONDS)
        processes[0].kill()
        for client in clients:
            client.join()
        print(f"monitoring load: {sum(counts)} reads by {len(counts)} clients")
        assert len(counts) == LOAD_CLIENTS, "a load client failed (see the log above)"
        yield prometheus


@pytest.mark.parametrize("query", QUERIES, ids=[q.where for q in QUERIES])
def test_the_query_answers_with_series_and_labels(scraped: Prometheus, query: Query) -> None:
    """Polled for a while: the last scrapes of the load may still be on their way."""
    expr = query.resolved()

    def answered() -> list[dict[str, Any]] | None:
        series = scraped.query(expr)
        complete = [s for s in series if query.labels <= set(s["metric"])]
        return series if series and len(complete) == len(series) else None

    series = wait_for(answered, 20, f"series with labels {sorted(query.labels)} for {expr}", 0.5)
    assert all(query.labels <= set(s["metric"]) for s in series)
