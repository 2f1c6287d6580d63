"""What a sidecar process trusts on its admin API: the token as it is *now* in its mounted file,
and only hosts it may use (no ws:// when it reaches its backends over TLS, none outside
--allowed-hosts). Every host named here is on loopback (a refused one is never contacted)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.operator_support import GREMLINLB, SidecarProcess, free_port, http

pytestmark = pytest.mark.integration


@pytest.fixture
def sidecars(tmp_path: Path) -> Any:
    started: list[SidecarProcess] = []

    def start(token: str, *extra: str) -> SidecarProcess:
        sidecar = SidecarProcess(token, tmp_path / f"sidecar-{len(started)}", *extra).start()
        started.append(sidecar)
        return sidecar

    try:
        yield start
    finally:
        for sidecar in started:
            sidecar.stop()


def put(sidecar: SidecarProcess, generation: int, hosts: list[str], token: str) -> tuple[int, Any]:
    body = {"generation": generation, "hosts": hosts}
    return http("PUT", f"{sidecar.admin}/v1/hosts", body, token=token)


def test_a_token_rotated_in_its_mounted_file_is_in_force_without_a_restart(sidecars: Any) -> None:
    sidecar = sidecars("old-token")
    assert put(sidecar, 1, [f"127.0.0.1:{free_port()}"], "old-token")[0] == 200
    sidecar.project_token("new-token")  # the kubelet swaps ..data to the updated Secret
    status, answer = put(sidecar, 2, [f"127.0.0.1:{free_port()}"], "old-token")
    assert status == 401, answer
    assert put(sidecar, 2, [f"127.0.0.1:{free_port()}"], "new-token")[0] == 200
    assert sidecar.host_list()[0] == 2
    assert sidecar.starts == 1  # the same process throughout


def test_an_emptied_token_file_keeps_the_last_token(sidecars: Any) -> None:
    sidecar = sidecars("the-token")
    sidecar.project_token("")
    assert put(sidecar, 1, [f"127.0.0.1:{free_port()}"], "the-token")[0] == 200


def test_a_ws_host_is_refused_when_the_backends_are_reached_over_tls(sidecars: Any) -> None:
    sidecar = sidecars("t", "--backend-tls", "true")
    port = free_port()
    status, answer = put(sidecar, 1, [f"wss://127.0.0.1:{port}/gremlin", f"127.0.0.1:{port}"], "t")
    assert status == 403
    assert "hosts[1]: ws://127.0.0.1" in answer["error"]
    assert "give wss:// URLs" in answer["error"]
    assert "nothing was changed" in answer["error"]
    assert sidecar.host_list() == (0, [])
    assert put(sidecar, 1, [f"wss://127.0.0.1:{port}/gremlin"], "t")[0] == 200


def test_a_host_outside_the_allowed_hosts_is_refused(sidecars: Any) -> None:
    sidecar = sidecars("t", "--allowed-hosts", "127.0.0.0/8,*.gremlin.test")
    port = free_port()
    status, answer = put(sidecar, 1, [f"127.0.0.1:{port}", "192.0.2.10:8182"], "t")
    assert status == 403
    assert "hosts[1]: 192.0.2.10:8182 is outside the hosts this sidecar may use" in answer["error"]
    assert "--allowed-hosts 127.0.0.0/8,*.gremlin.test" in answer["error"]
    status, answer = put(sidecar, 1, ["gremlin-0.other.test:8182"], "t")
    assert status == 403, answer
    assert sidecar.host_list() == (0, [])
    assert put(sidecar, 1, [f"127.0.0.1:{port}"], "t")[0] == 200


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--backend-tls", "true", "--endpoints", "127.0.0.1:8182"],
            "endpoints[0]: ws://127.0.0.1:8182/gremlin is not wss://",
        ),
        (
            ["--allowed-hosts", "10.0.0.0/8", "--endpoints", "127.0.0.1:8182"],
            "endpoints[0]: 127.0.0.1:8182 is outside the hosts this sidecar may use",
        ),
        (["--allowed-hosts", "10.0.0.0/8,gremlin:8182"], "'gremlin:8182' is neither a CIDR"),
    ],
    ids=["ws-endpoint-with-tls", "endpoint-not-allowed", "bad-pattern"],
)
def test_the_sidecar_does_not_start_with_hosts_it_may_not_use(
    flags: list[str], message: str
) -> None:
    done = subprocess.run(
        [*GREMLINLB, "sidecar", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
