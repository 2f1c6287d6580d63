"""moto in server mode: the Neptune management API on loopback (a real HTTP emulation of AWS's
API in its own process; botocore's `neptune` client reaches it by endpoint URL with fake
credentials). Shared by the Neptune specs of the sidecar, the client and the operator."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from gremlinlb.devservers import Fleet
from gremlinlb.devservers.neptunefront import NeptuneFront
from gremlinlb.devservers.probe import port_open
from gremlinlb.devservers.server import find_free_port
from gremlinlb.neptune import NeptuneSource
from tests.helpers import wait_until

REGION = "us-east-1"
CLUSTER = "graph"


class PortTakenError(RuntimeError):
    """moto_server ended before serving (its port was taken after it was found free)."""


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
        # Serving once *this* process says it bound the port: a free port found may be taken
        # meanwhile by another run's moto_server, which would answer in its place.
        bound = f"Running on {self.url}".encode()
        deadline = time.monotonic() + 60
        while not (port_open("127.0.0.1", port) and bound in log.read_bytes()):
            if self.process.poll() is not None:
                self._log.close()
                raise PortTakenError(log.read_text(errors="replace"))
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
        time.sleep(1.0)  # a port taken meanwhile by another run's moto: ours failed to bind
        assert self.process.poll() is None, f"moto_server exited: {log.read_text()}"
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


def _started(log: Path, attempts: int = 5) -> Moto:
    for _ in range(attempts - 1):
        try:
            return Moto(find_free_port(47100 + random.randrange(800)), log)
        except PortTakenError:
            continue
    return Moto(find_free_port(47100 + random.randrange(800)), log)


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # fake; moto accepts any
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = _started(tmp_path / "moto.log")
    try:
        server.client.create_db_cluster(DBClusterIdentifier=CLUSTER, Engine="neptune")
        server.add("w1", "us-east-1a")  # the first instance of a cluster is its writer
        server.add("r1", "us-east-1a")
        server.add("r2", "us-east-1b")
        yield server
    finally:
        server.stop()


#: The fixture's instances, in the order `fronts` (and the fleet) serve them.
INSTANCES = ("w1", "r1", "r2")


@pytest.fixture
def fronts(moto: Moto, fleet: Fleet) -> Iterator[list[NeptuneFront]]:
    """A Neptune front per instance before the fleet's first servers, each learning its role
    from moto (`gremlinlb.devservers.neptunefront`)."""
    started: list[NeptuneFront] = []
    try:
        for name, server in zip(INSTANCES, fleet, strict=False):
            front = NeptuneFront(
                server.address,
                instance=name,
                cluster=CLUSTER,
                region=REGION,
                endpoint_url=moto.url,
            )
            started.append(front.__enter__())
        yield started
    finally:
        for front in started:
            front.__exit__()


THROTTLING_XML = (
    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    "<Message>Rate exceeded</Message></Error><RequestId>throttled</RequestId></ErrorResponse>"
)


class ThrottlingFront:
    """A loopback HTTP front before moto: the next `throttle` calls are answered as AWS's
    query-protocol API throttles (400, code Throttling), the others are forwarded. moto itself
    never throttles; this is the closest real thing: botocore parses and retries a real answer."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.throttle = 0  # calls still to throttle
        self.throttled = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with front._lock:
                    throttling = front.throttle > 0
                    if throttling:
                        front.throttle -= 1
                        front.throttled += 1
                    else:
                        front.forwarded += 1
                if throttling:
                    self._answer(400, {"Content-Type": "text/xml"}, THROTTLING_XML.encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    front.upstream + self.path, body, headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        self._answer(answer.status, dict(answer.headers), answer.read())
                except urllib.error.HTTPError as error:
                    self._answer(error.code, dict(error.headers), error.read())

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingFront:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


#: A host list as the specs compare it: (address, role, zone).
Listing = set[tuple[str, str, str | None]]


def mapped(fleet: Fleet) -> dict[str, str]:
    """The fixture's instances, each served by one of the fleet's Gremlin Servers."""
    return {"w1": fleet[0].address, "r1": fleet[1].address, "r2": fleet[2].address}


def initial(fleet: Fleet) -> Listing:
    """The fixture's cluster as listed: w1 writes, r1 and r2 read, in two zones."""
    return {
        (fleet[0].address, "writer", "us-east-1a"),
        (fleet[1].address, "reader", "us-east-1a"),
        (fleet[2].address, "reader", "us-east-1b"),
    }


def after_failover(fleet: Fleet) -> Listing:
    """The cluster as listed once `fail_over` made r2 the writer."""
    return {
        (fleet[0].address, "reader", "us-east-1a"),
        (fleet[1].address, "reader", "us-east-1a"),
        (fleet[2].address, "writer", "us-east-1b"),
    }


def fail_over(moto: Moto) -> None:
    moto.client.failover_db_cluster(DBClusterIdentifier=CLUSTER, TargetDBInstanceIdentifier="r2")


def writer_dies(moto: Moto, fleet: Fleet) -> None:
    """The writer's server is killed and the cluster fails over to r2, as Neptune would."""
    fleet[0].kill()
    fail_over(moto)


def neptune_source(fleet: Fleet, api: str, **more: Any) -> NeptuneSource:
    """The fixture's cluster read through `api`, each instance served by the fleet (`more`:
    other fields, e.g. refresh or selectors)."""
    fields: dict[str, Any] = {"refresh": 0.2, "addresses": mapped(fleet), **more}
    return NeptuneSource(cluster=CLUSTER, region=REGION, endpoint_url=api, scheme="ws", **fields)


def await_eager_read(listing: Callable[[], Listing], fleet: Fleet) -> None:
    """Wait until r2 (fleet[2]) is listed as the writer, far sooner than an interval of 600 s:
    only a read at once can have named it."""
    wanted = (fleet[2].address, "writer", "us-east-1b")
    wait_until(lambda: wanted in listing(), 60, "the new writer listed")
