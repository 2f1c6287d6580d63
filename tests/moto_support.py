"""moto in server mode: the Neptune management API on loopback (a real HTTP emulation of AWS's
API in its own process; botocore's `neptune` client reaches it by endpoint URL with fake
credentials). Shared by the Neptune specs of the sidecar, the client and the operator."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest

from gremlinlb.devservers.probe import port_open
from gremlinlb.devservers.server import find_free_port

REGION = "us-east-1"
CLUSTER = "graph"


class Moto:
    """moto_server on 127.0.0.1 and a botocore `neptune` client of it."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log  # its request log: one line per API call answered
        moto_server = Path(sys.executable).with_name("moto_server")
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert self.process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
        self.client = botocore.session.Session().create_client(
            "neptune", region_name=REGION, endpoint_url=self.url
        )

    def add(self, name: str, zone: str) -> None:
        self.client.create_db_instance(
            DBInstanceIdentifier=name,
            DBInstanceClass="db.r5.large",
            Engine="neptune",
            DBClusterIdentifier=CLUSTER,
            AvailabilityZone=zone,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # fake; moto accepts any
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = Moto(find_free_port(47100), tmp_path / "moto.log")
    try:
        server.client.create_db_cluster(DBClusterIdentifier=CLUSTER, Engine="neptune")
        server.add("w1", "us-east-1a")  # the first instance of a cluster is its writer
        server.add("r1", "us-east-1a")
        server.add("r2", "us-east-1b")
        yield server
    finally:
        server.stop()
