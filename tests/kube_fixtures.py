"""Pytest fixtures for tests on a real control plane (etcd + kube-apiserver) and pod networks.

Load with ``pytest_plugins = ["tests.kube_fixtures"]`` in tests/conftest.py (or ``-p
tests.kube_fixtures``). The binaries come from ``make k8s-bins``; without them the fixtures fail
with that instruction.

* ``control_plane`` (session): a started :class:`ControlPlane`.
* ``kube_admin`` / ``kube_operator`` (session): ``kubernetes.client.ApiClient`` as the admin
  (``system:masters``) and as the operator's ServiceAccount identity (only what RBAC grants it).
* ``namespace`` (function): a fresh namespace, purged after the test.
* ``netns_network`` (session): the test bridge; ``netns_hosts`` (function): a factory
  ``netns_hosts(count=1) -> list[NetnsHost]`` whose namespaces are removed after the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.devcluster import (
    ControlPlane,
    DevClusterError,
    NetnsHost,
    NetnsNetwork,
    create_namespace,
    purge_namespace,
)

NetnsHostFactory = Callable[..., list[NetnsHost]]

#: Keep the control plane's workdir (logs, kubeconfigs) after the run: set to a directory path.
KEEP_ENV = "GREMLINLB_CONTROL_PLANE_DIR"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    keep = os.environ.get(KEEP_ENV)
    plane = ControlPlane(Path(keep) if keep else None)
    try:
        plane.start()
    except DevClusterError as exc:
        pytest.fail(f"test control plane did not start: {exc}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube_admin(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    api = control_plane.api_client("admin")
    with api:  # closes its connection pool
        yield api


@pytest.fixture(scope="session")
def kube_operator(control_plane: ControlPlane) -> Iterator[k8s.ApiClient]:
    api = control_plane.api_client("operator")
    with api:  # closes its connection pool
        yield api


@pytest.fixture
def namespace(kube_admin: k8s.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    # Namespace names are DNS labels: a short, readable prefix from the test name.
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    prefix = f"t-{stem.strip('-')[:40].rstrip('-')}-"
    name = create_namespace(kube_admin, prefix=prefix)
    try:
        yield name
    finally:
        purge_namespace(kube_admin, name)


@pytest.fixture(scope="session")
def netns_network() -> Iterator[NetnsNetwork]:
    network = NetnsNetwork()
    try:
        network.open()
    except DevClusterError as exc:
        pytest.fail(f"test network namespaces unavailable: {exc}", pytrace=False)
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def netns_hosts(netns_network: NetnsNetwork) -> Iterator[NetnsHostFactory]:
    created: list[NetnsHost] = []

    def make(count: int = 1, *, addresses: list[str] | None = None) -> list[NetnsHost]:
        wanted: list[str | None] = list(addresses) if addresses else [None] * count
        hosts = [netns_network.add_host(address) for address in wanted]
        created.extend(hosts)
        return hosts

    try:
        yield make
    finally:
        for host in reversed(created):
            netns_network.remove_host(host)
