"""A pod worker's probes: startup, readiness and liveness (exec, HTTP, TCP), run against
the pod IP with their thresholds, and the kill of a container whose liveness fails."""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from tests.devcluster.containers import Container, PodFailure
from tests.devcluster.pod_volumes import PodVolumes

log = logging.getLogger("tests.devcluster.agent")


class PodProbes(PodVolumes):
    """Runs a pod's probes and acts on their results."""

    def _port(self, container: Container, port: Any) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for item in container.spec.get("ports") or ():
            if item.get("name") == port:
                return int(item["containerPort"])
        raise PodFailure(f"container {container.name}: no port named {port!r}")

    def _probe_once(self, container: Container, spec: Mapping[str, Any]) -> bool:
        assert self.host is not None
        timeout = float(spec.get("timeoutSeconds", 1))
        ip = str(self.host.address)
        try:
            if "tcpSocket" in spec:
                port = self._port(container, spec["tcpSocket"]["port"])
                with socket.create_connection((ip, port), timeout=timeout):
                    return True
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = self._port(container, get["port"])
                conn: http.client.HTTPConnection
                if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
                    # As the kubelet does: TLS without verifying the certificate.
                    conn = http.client.HTTPSConnection(
                        ip, port, timeout=timeout, context=ssl._create_unverified_context()
                    )
                else:
                    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
                try:
                    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or ()}
                    conn.request("GET", get.get("path", "/"), headers=headers)
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "exec" in spec:
                done = subprocess.run(
                    self.container_command(container, spec["exec"]["command"]),
                    env=self._env(container),
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                return done.returncode == 0
        except (OSError, subprocess.TimeoutExpired, http.client.HTTPException):
            return False
        raise PodFailure(f"container {container.name}: unsupported probe {sorted(spec)}")

    def _run_probes(self, container: Container, now: float) -> None:
        for kind in ("startup", "readiness", "liveness"):
            state = container.probes.get(kind)
            if state is None or now < state.next_due:
                continue
            if kind != "startup" and not container.started:
                continue
            if kind == "startup" and container.started:
                continue
            spec = state.spec
            state.next_due = now + float(spec.get("periodSeconds", 10))
            ok = self._probe_once(container, spec)
            if ok:
                state.successes, state.failures = state.successes + 1, 0
                if state.successes >= int(spec.get("successThreshold", 1)):
                    state.result = True
            else:
                state.failures, state.successes = state.failures + 1, 0
                if state.failures >= int(spec.get("failureThreshold", 3)):
                    state.result = False
            if kind == "startup" and state.result:
                container.started = True
                for other in ("readiness", "liveness"):
                    if other in container.probes:
                        container.probes[other].next_due = now
            elif (
                kind == "liveness"
                and not ok
                and state.failures >= int(spec.get("failureThreshold", 3))
            ):
                if not self._deleting():
                    self._event(
                        "Unhealthy",
                        f"Liveness probe failed: container {container.name}; restarting",
                    )
                    self._kill_container(
                        container,
                        grace_s=float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
                    )
                    return
            elif (
                kind == "startup"
                and not ok
                and state.failures >= int(spec.get("failureThreshold", 3))
            ):
                self._event(
                    "Unhealthy", f"Startup probe failed: container {container.name}; restarting"
                )
                self._kill_container(container, grace_s=2.0)
                return
        if "readiness" in container.probes:
            container.ready = container.started and container.probes["readiness"].result
        else:
            container.ready = container.started

    def _kill_container(self, container: Container, grace_s: float) -> None:
        process = container.process
        if process is None:
            return
        process.send(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.send(signal.SIGKILL)
            while process.poll() is None and time.monotonic() < deadline + 5:
                time.sleep(0.05)
