"""A pod worker's volumes and mounts: Secrets, ConfigMaps, emptyDirs, the projected
ServiceAccount token and the downward API, written under the pod's directory and bind-mounted
in each container's mount namespace; the environment and command line that reference them."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from tests.devcluster.containers import (
    _DEFAULT_PATH,
    _MOUNT_HELPER,
    _VAR_REF,
    Container,
    PodFailure,
)
from tests.devcluster.pod_status import PodState

log = logging.getLogger("tests.devcluster.agent")


class PodVolumes(PodState):
    """Materialises a pod's volumes and the environment, arguments and mounts of its
    containers."""

    def _prepare_volumes(self) -> bool:
        """Write every volume; False (retry later) while a Secret or ConfigMap is missing."""
        volumes_dir = self.directory / "volumes"
        for volume in self.pod["spec"].get("volumes") or ():
            name = volume["name"]
            if name in self._mounts:
                continue
            target = volumes_dir / name
            try:
                self._write_volume(volume, target)
            except ApiException as exc:
                if exc.status == 404:
                    self._event("FailedMount", f"volume {name}: {exc.reason} (retrying)")
                    return False
                raise
            self._mounts[name] = target
        return True

    def _write_volume(self, volume: Mapping[str, Any], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return
        if "secret" in volume:
            source = volume["secret"]
            data = self._secret_data(source["secretName"], optional=bool(source.get("optional")))
            self._write_items(target, data, source.get("items"), source.get("defaultMode", 0o644))
            return
        if "configMap" in volume:
            source = volume["configMap"]
            data = self._config_map_data(source["name"], optional=bool(source.get("optional")))
            self._write_items(target, data, source.get("items"), source.get("defaultMode", 0o644))
            return
        if "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources") or ():
                if "serviceAccountToken" in source:
                    token = self._service_account_token(source["serviceAccountToken"])
                    self._write_file(target / source["serviceAccountToken"]["path"], token, mode)
                elif "configMap" in source:
                    data = self._config_map_data(source["configMap"]["name"])
                    self._write_items(target, data, source["configMap"].get("items"), mode)
                elif "secret" in source:
                    data = self._secret_data(source["secret"]["name"])
                    self._write_items(target, data, source["secret"].get("items"), mode)
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items") or ():
                        value = self._field_ref(item.get("fieldRef") or {})
                        self._write_file(target / item["path"], value.encode(), mode)
                else:
                    raise PodFailure(f"unsupported projected volume source {sorted(source)}")
            return
        raise PodFailure(
            f"volume {volume['name']}: unsupported type {sorted(k for k in volume if k != 'name')} "
            "(the node agent knows emptyDir, secret, configMap and projected)"
        )

    def _secret_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _config_map_data(self, name: str, optional: bool = False) -> dict[str, bytes]:
        try:
            found = self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: v.encode() for k, v in (found.data or {}).items()}

    def _service_account_token(self, source: Mapping[str, Any]) -> bytes:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        else:
            spec["audiences"] = []
        response: Any = self.core.create_namespaced_service_account_token(
            account, self.namespace, cast(Any, {"spec": spec})
        )
        return str(response.status.token).encode()

    @staticmethod
    def _write_file(path: Path, data: bytes, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)

    def _write_items(
        self,
        target: Path,
        data: Mapping[str, bytes],
        items: Sequence[Mapping[str, Any]] | None,
        mode: int,
    ) -> None:
        if items:
            for item in items:
                if item["key"] in data:
                    self._write_file(
                        target / item["path"], data[item["key"]], item.get("mode", mode)
                    )
        else:
            for key, value in data.items():
                self._write_file(target / key, value, mode)

    def _field_ref(self, ref: Mapping[str, Any]) -> str:
        path = str(ref.get("fieldPath", ""))
        pod = self.pod
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
            "status.hostIP": (pod.get("status") or {}).get("hostIP", ""),
        }
        if path in simple:
            return str(simple[path])
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return str((pod["metadata"].get(match.group(1)) or {}).get(match.group(2), ""))
        raise PodFailure(f"unsupported fieldRef {path!r}")

    def _env(self, container: Container) -> dict[str, str]:
        catalog = self.agent.images
        env: dict[str, str] = {
            "PATH": f"{catalog.bin_dir}:{_DEFAULT_PATH}",
            "HOSTNAME": self.name,
            "HOME": "/",
            **dict(catalog.image_env),
        }
        if self.agent.service is not None:  # a kubelet sets these whatever enableServiceLinks says
            service_ip, port = self.agent.service
            env.update(
                {
                    "KUBERNETES_SERVICE_HOST": service_ip,
                    "KUBERNETES_SERVICE_PORT": str(port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                    "KUBERNETES_PORT": f"tcp://{service_ip}:{port}",
                }
            )
        for source in container.spec.get("envFrom") or ():
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_map_data(
                    source["configMapRef"]["name"], bool(source["configMapRef"].get("optional"))
                )
            else:
                data = self._secret_data(
                    source["secretRef"]["name"], bool(source["secretRef"].get("optional"))
                )
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.spec.get("env") or ():
            name = item["name"]
            if "value" in item:
                env[name] = _VAR_REF.sub(
                    lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
                )
                continue
            value_from = item.get("valueFrom") or {}
            if "fieldRef" in value_from:
                env[name] = self._field_ref(value_from["fieldRef"])
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                secret = "secretKeyRef" in value_from
                ref = value_from["secretKeyRef" if secret else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                read = self._secret_data if secret else self._config_map_data
                data = read(ref["name"], optional)
                if ref["key"] not in data and not optional:
                    kind = "Secret" if secret else "ConfigMap"
                    raise PodFailure(
                        f"env {name}: {kind} {ref['name']!r} has no key {ref['key']!r}"
                    )
                env[name] = data.get(ref["key"], b"").decode()
            else:
                raise PodFailure(
                    f"env {name}: unsupported valueFrom {sorted(value_from)} (the node agent "
                    "knows fieldRef, secretKeyRef and configMapKeyRef)"
                )
        return env

    def _argv(self, container: Container, env: Mapping[str, str]) -> list[str]:
        catalog = self.agent.images
        spec = container.spec
        command = list(spec.get("command") or ())
        args = list(spec.get("args") or ())

        def expand(text: str) -> str:
            return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)

        argv = [
            expand(a)
            for a in (
                command + args
                if command
                else [*catalog.entrypoint, *(args or catalog.default_args)]
            )
        ]
        if not argv:
            raise PodFailure(f"container {container.name}: nothing to run")
        found = shutil.which(argv[0], path=env.get("PATH"))
        if found is None:
            raise PodFailure(
                f"container {container.name}: {argv[0]!r} not found in the image's PATH"
            )
        return [found, *argv[1:]]

    def _mounts_of(self, container: Container) -> list[list[Any]]:
        """[source, target, read-only] of each volume mount, parents before children."""
        mounts: list[list[Any]] = []
        for mount in container.spec.get("volumeMounts") or ():
            source = self._mounts.get(mount["name"])
            if source is None:
                raise PodFailure(f"container {container.name}: no volume named {mount['name']!r}")
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append([str(source), str(mount["mountPath"]), bool(mount.get("readOnly"))])
        # The pod's /etc/hosts, as a kubelet mounts it into every container.
        mounts.append([str(self.directory / "etc-hosts"), "/etc/hosts", True])
        return sorted(mounts, key=lambda m: len(Path(m[1]).parts))

    def _write_hosts_file(self) -> None:
        """The pod's own name at its IP and, standing in for cluster DNS, the ``kubernetes``
        Service's names at its cluster IP (in-cluster clients such as kopf use the name)."""
        assert self.host is not None
        lines = [
            "127.0.0.1\tlocalhost",
            f"{self.host.address}\t{self.name}",
        ]
        if self.agent.service is not None:
            names = "kubernetes kubernetes.default kubernetes.default.svc"
            names += " kubernetes.default.svc.cluster.local"
            lines.append(f"{self.agent.service[0]}\t{names}")
        (self.directory / "etc-hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def container_command(self, container: Container, argv: Sequence[str]) -> list[str]:
        """``argv`` as it runs in ``container``: the pod's network namespace and its volumes
        bind-mounted at their mount paths (in the mount namespace ``ip netns exec`` makes)."""
        assert self.host is not None
        spec = {
            "mounts": self._mounts_of(container),
            "keep": [str(p) for p in (*self.agent.images.image_paths(), self.agent.workdir)],
        }
        helper = [sys.executable, "-S", str(_MOUNT_HELPER), json.dumps(spec)]
        return self.host.argv([*helper, *argv])
