"""Where the control-plane binaries built by ``hack/k8s/build.sh`` (``make k8s-bins``) live."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from gremlinlb.devservers.fetch import cache_dir, find_repo_root
from tests.devcluster.errors import BinariesMissingError

#: Set by ``hack/k8s/k8s.mk``; overrides the lookup below.
BIN_DIR_ENV = "GREMLINLB_K8S_BIN"
VERSIONS_FILE = Path("hack") / "k8s" / "versions.env"
_NAMES = ("etcd", "kube-apiserver", "kubectl")


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    #: Only the full cluster (:mod:`tests.devcluster.cluster`) needs these three.
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    #: The chart's specs, and the cluster end-to-end test's install through the chart.
    helm: Path

    @classmethod
    def in_dir(cls, directory: Path) -> Binaries:
        return cls(
            etcd=directory / "etcd",
            kube_apiserver=directory / "kube-apiserver",
            kubectl=directory / "kubectl",
            kube_controller_manager=directory / "kube-controller-manager",
            kube_scheduler=directory / "kube-scheduler",
            kwok=directory / "kwok",
            helm=directory / "helm",
        )

    def missing(self) -> list[Path]:
        """The missing ones of etcd, kube-apiserver and kubectl."""
        return [
            p for p in (self.etcd, self.kube_apiserver, self.kubectl) if not os.access(p, os.X_OK)
        ]

    def missing_for_cluster(self) -> list[Path]:
        """The missing ones of all seven (the full cluster, and its install through the chart,
        need every one)."""
        extra = (self.kube_controller_manager, self.kube_scheduler, self.kwok, self.helm)
        return [*self.missing(), *(p for p in extra if not os.access(p, os.X_OK))]


def pinned_versions(repo_root: Path | None = None) -> dict[str, str]:
    """``KEY=value`` pairs of ``hack/k8s/versions.env`` (empty if not in a checkout)."""
    root = repo_root or find_repo_root()
    if root is None:
        return {}
    path = root / VERSIONS_FILE
    if not path.is_file():
        return {}
    versions: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Z_][A-Z0-9_]*)\s*=\s*(\S+)\s*$", line)
        if match:
            versions[match.group(1)] = match.group(2)
    return versions


def find_binaries() -> Binaries:
    """The built etcd, kube-apiserver and kubectl, or :class:`BinariesMissingError`.

    Order: ``$GREMLINLB_K8S_BIN``; else ``<cache>/k8s/<KUBERNETES_VERSION>/bin`` for the version
    pinned in ``hack/k8s/versions.env``; else the newest complete ``<cache>/k8s/*/bin``.
    """
    configured = os.environ.get(BIN_DIR_ENV)
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured).expanduser())
    else:
        version = pinned_versions().get("KUBERNETES_VERSION")
        base = cache_dir() / "k8s"
        if version:
            candidates.append(base / version / "bin")
        elif base.is_dir():
            candidates += sorted(
                (p / "bin" for p in base.iterdir()),
                key=lambda p: p.stat().st_mtime if p.exists() else 0.0,
                reverse=True,
            )
    for directory in candidates:
        binaries = Binaries.in_dir(directory)
        if not binaries.missing():
            return binaries
    where = ", ".join(str(c) for c in candidates) or str(cache_dir() / "k8s")
    raise BinariesMissingError(
        f"{', '.join(_NAMES)} not found in {where}: build them once with `make k8s-bins` "
        "(hack/k8s/build.sh; a cold build takes several minutes) or point "
        f"${BIN_DIR_ENV} at a directory holding them"
    )
