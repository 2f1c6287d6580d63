"""`gremlinlb sidecar` as a real process: signals, the state directory, flags and environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import GremlinServerError

from gremlinlb.devservers import Fleet, GremlinServerProcess
from gremlinlb.devservers.faults import FaultProxy
from tests.helpers import held_request, name_servers, wait_until

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SidecarProcess:
    """`python -m gremlinlb.cli sidecar ...` on free loopback ports, waited for until alive."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, flags: bool = True):
        self.port, self.admin_port = free_port(), free_port()
        command = [sys.executable, "-m", "gremlinlb.cli", "sidecar"]
        if flags:  # first, so that a test's own --listen/--admin win
            command += ["--listen", f"127.0.0.1:{self.port}"]
            command += ["--admin", f"127.0.0.1:{self.admin_port}"]
        command += args
        # Without --token-file the sidecar writes the token it generates here.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-run-"))
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "XDG_RUNTIME_DIR": str(self.runtime_dir), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gremlin"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def token(self) -> str:
        """The token the sidecar generated (started without --token-file)."""
        found = sorted(self.runtime_dir.glob("gremlinlb/sidecar-*.token"))
        assert found, f"no generated token in {self.runtime_dir}"
        return found[0].read_text().strip()

    def wait_alive(self, timeout: float = 30.0) -> SidecarProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sidecar exited {self.process.returncode}: {self.stderr()}")
            try:
                if get(f"{self.admin}/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("sidecar did not come up")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def get(url: str) -> tuple[int, Any]:
    return request("GET", url)


def request(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    message = urllib.request.Request(url, data=data, method=method)
    if token:
        message.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(message, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def servers(fleet: Fleet) -> Sequence[GremlinServerProcess]:
    return list(fleet)


@pytest.fixture
def spawn() -> Iterator[Any]:
    started: list[SidecarProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, flags: bool = True) -> SidecarProcess:
        process = SidecarProcess(*args, env=env, flags=flags)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def endpoints(servers: Sequence[GremlinServerProcess]) -> str:
    return ",".join(s.address for s in servers)


def wait_in_flight(sidecar: SidecarProcess, count: int, timeout: float = 10.0) -> None:
    wait_until(
        lambda: sum(h["in_flight"] for h in get(f"{sidecar.admin}/v1/hosts")[1]["hosts"]) >= count,
        timeout,
        f"{count} requests in flight",
    )


def ready(sidecar: SidecarProcess) -> bool:
    """Whether the sidecar answers its readiness probe with 200 (not yet listening: False)."""
    try:
        return get(f"{sidecar.admin}/readyz")[0] == 200
    except OSError:
        return False


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_stops_accepting_and_lets_in_flight_requests_finish(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    sidecar = spawn("--endpoints", endpoints(servers), "--grace-period", "20").wait_alive()
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        with held_request(servers, "finished") as (script, release):
            slow = gremlin.submit(script)
            wait_in_flight(sidecar, 1)
            sidecar.terminate()  # the signal is handled asynchronously: poll, bounded
            wait_until(lambda: refused(sidecar.port), 10, "the listener to close")
            release()
            assert slow.all().result(30) == ["finished"]
    finally:
        gremlin.close()
    assert sidecar.wait() == 0


def test_after_sigterm_readiness_fails_and_requests_on_open_connections_are_still_served(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    sidecar = spawn("--endpoints", endpoints(servers), "--grace-period", "60").wait_alive()
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        with held_request(servers, "finished") as (script, release):
            slow = gremlin.submit(script)
            wait_in_flight(sidecar, 1)
            sidecar.terminate()  # the signal is handled asynchronously: poll, bounded
            wait_until(lambda: get(f"{sidecar.admin}/readyz")[0] == 503, 10, "readiness to fail")
            status, body = get(f"{sidecar.admin}/readyz")
            assert (status, body["reason"]) == (503, "shutting down")
            assert refused(sidecar.port)
            release()
            assert slow.all().result(30) == ["finished"]
            answers = [gremlin.submit("[1]").all().result(10) for _ in range(20)]
    finally:
        gremlin.close()
    assert answers == [[1]] * 20
    assert sidecar.wait() == 0


def test_after_sigterm_an_idle_connection_is_closed_and_the_sidecar_exits_before_the_grace_period(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    sidecar = spawn("--endpoints", endpoints(servers), "--grace-period", "120").wait_alive()
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        assert gremlin.submit("[1]").all().result(10) == [1]
        sidecar.terminate()
        assert sidecar.wait(timeout=60) == 0  # the connection stays open on the client's side
    finally:
        gremlin.close()


def test_sigterm_answers_what_is_left_after_the_grace_period_with_a_final_error(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    sidecar = spawn("--endpoints", endpoints(servers), "--grace-period", "0.5").wait_alive()
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        slow = gremlin.submit("Thread.sleep(5000); 'too late'")
        wait_in_flight(sidecar, 1)
        sidecar.terminate()
        with pytest.raises(GremlinServerError) as raised:
            slow.all().result(15)
    finally:
        gremlin.close()
    assert raised.value.status_code == 500
    assert "stopped before the backend answered" in raised.value.status_message
    assert sidecar.wait() == 0


def test_fresh_sidecar_process_spreads_its_first_requests_evenly_in_strict_rotation(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    """Used as soon as its readiness probe passes (what a Service waits for), a sidecar started
    with --endpoints sends the first 3 x 10 requests 10 to each server, in the listed order.
    The first server answers through a 0.3 s delay, so its first probe ends after the others',
    as a cold JVM's does: the first requests come before every first probe is in."""
    name_servers(servers)
    with FaultProxy(servers[0].address, answer_delay=0.3) as late:
        listed = ",".join([late.address, *(s.address for s in servers[1:])])
        sidecar = spawn("--endpoints", listed)
        wait_until(lambda: ready(sidecar), 30, "the sidecar's readiness")
        gremlin = Client(sidecar.url, "g", pool_size=1)
        try:
            who = "g.V().hasLabel('server').values('name')"
            order = [gremlin.submit(who).all().result(30)[0] for _ in range(30)]
        finally:
            gremlin.close()
    assert order == [s.address for s in servers] * 10


def test_state_dir_keeps_the_last_accepted_host_list_across_a_restart(
    spawn: Any, servers: Sequence[GremlinServerProcess], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    state = tmp_path / "state"
    args = (
        "--endpoints",
        servers[0].address,
        "--state-dir",
        str(state),
        "--token-file",
        str(token),
    )
    first = spawn(*args).wait_alive()
    pushed = {"generation": 4, "hosts": [s.address for s in servers[1:]]}
    assert request("PUT", f"{first.admin}/v1/hosts", pushed, token="t0ken")[0] == 200
    first.terminate()
    assert first.wait() == 0

    second = spawn(*args).wait_alive()
    body = get(f"{second.admin}/v1/hosts")[1]
    assert body["generation"] == 4
    assert [h["address"] for h in body["hosts"]] == pushed["hosts"]
    gremlin = Client(second.url, "g")
    try:
        assert gremlin.submit("[1]").all().result(10) == [1]
    finally:
        gremlin.close()


def test_state_dir_keeps_the_client_zones_across_a_restart(
    spawn: Any, servers: Sequence[GremlinServerProcess], tmp_path: Path
) -> None:
    args = ("--zone", "a", "--state-dir", str(tmp_path / "state"))
    first = spawn(*args).wait_alive()
    zoned = [f"{servers[0].address}?zone=a", f"{servers[1].address}?zone=b"]
    pushed = {"generation": 2, "hosts": zoned, "client_zones": {"a": 3, "b": 1}}
    assert request("PUT", f"{first.admin}/v1/hosts", pushed, token=first.token)[0] == 200
    first.terminate()
    assert first.wait() == 0

    second = spawn(*args).wait_alive()
    body = get(f"{second.admin}/v1/hosts")[1]
    assert (body["generation"], body["client_zones"]) == (2, {"a": 3, "b": 1})


def test_settings_come_from_environment_variables_and_logs_can_be_json(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    listen, admin = free_port(), free_port()
    env = {
        "GREMLINLB_LISTEN": f"127.0.0.1:{listen}",
        "GREMLINLB_ADMIN": f"127.0.0.1:{admin}",
        "GREMLINLB_ENDPOINTS": endpoints(servers[:1]),
        "GREMLINLB_MAX_ATTEMPTS": "2",
        "GREMLINLB_LOG_FORMAT": "json",
    }
    sidecar = spawn(env=env, flags=False)
    sidecar.port, sidecar.admin_port = listen, admin
    sidecar.wait_alive()
    body = get(f"{sidecar.admin}/v1/hosts")[1]
    assert [h["address"] for h in body["hosts"]] == [servers[0].address]
    assert body["settings"]["max_attempts"] == 2
    sidecar.terminate()
    assert sidecar.wait() == 0
    lines = [line for line in sidecar.stderr().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert any("sidecar serving" in r["message"] for r in records)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--endpoints", "h:1", "--rise", "often"), "--rise: must be an integer"),
        (("--endpoints", "h:1", "--listen", "8182"), "--listen: expected host:port"),
        (("--endpoints", "h"), "has no port"),
        (("--endpoints", "h:1", "--policy", "random"), "must be one of round_robin"),
        (("--endpoints", "h:1", "--token-file", "/nonexistent/token"), "cannot read"),
        ((), "give --endpoints"),
    ],
)
def test_bad_configuration_exits_2_saying_what_is_wrong(
    spawn: Any, args: tuple[str, ...], complaint: str
) -> None:
    sidecar = spawn(*args)
    assert sidecar.wait() == 2
    assert complaint in sidecar.stderr()


# Loaded only by the flags that need them (SigV4, Neptune) or by the in-process client: a plain
# sidecar in every pod would carry them in its RSS for nothing (issue 26: 57 MiB against 45).
NOT_FOR_A_PLAIN_SIDECAR = ("botocore", "boto3", "gremlin_python", "kopf", "kubernetes")


def test_a_plain_sidecar_probing_and_serving_imports_neither_botocore_nor_gremlinpython(
    spawn: Any, servers: Sequence[GremlinServerProcess]
) -> None:
    # PYTHONPROFILEIMPORTTIME: the process writes every module it imports, whenever, to stderr.
    sidecar = spawn("--endpoints", endpoints(servers), env={"PYTHONPROFILEIMPORTTIME": "1"})
    sidecar.wait_alive()
    wait_until(
        lambda: len(get(f"{sidecar.admin}/readyz/backends")[1]["healthy"]) == len(servers),
        30,
        "every backend probed healthy",
    )
    gremlin = Client(sidecar.url, "g", pool_size=1)
    try:
        assert gremlin.submit("g.inject(1)").all().result(15) == [1]
    finally:
        gremlin.close()
    sidecar.terminate()
    assert sidecar.wait() == 0
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in sidecar.stderr().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "aiohttp" in imported  # the import log was written
    assert imported.isdisjoint(NOT_FOR_A_PLAIN_SIDECAR), sorted(
        imported & set(NOT_FOR_A_PLAIN_SIDECAR)
    )


@pytest.fixture
def operator_stand_in() -> Iterator[socket.socket]:
    """A loopback listener where an operator's watch would be: what reaches it is what the
    sidecar sent (a connection stays in its queue even after the sidecar has exited)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener


def watch_flags(listener: socket.socket, tmp_path: Path) -> tuple[str, ...]:
    token = tmp_path / "token"
    token.write_text("cluster-token\n")
    return (
        *("--state-dir", str(tmp_path / "state"), "--token-file", str(token)),
        *("--operator-url", f"http://127.0.0.1:{listener.getsockname()[1]}"),
        *("--operator-cluster", "shop/graph", "--pod-name", "app-1"),
    )


def test_a_plain_http_operator_url_stops_the_sidecar_at_start_before_anything_is_sent(
    spawn: Any, operator_stand_in: socket.socket, tmp_path: Path
) -> None:
    sidecar = spawn(*watch_flags(operator_stand_in, tmp_path))
    assert sidecar.wait() == 2
    complaint = sidecar.stderr()
    assert "--operator-url: http://127.0.0.1:" in complaint
    assert "is plain HTTP" in complaint
    assert "--allow-plain-http-watch true" in complaint
    operator_stand_in.setblocking(False)
    with pytest.raises(BlockingIOError):  # no connection was ever made
        operator_stand_in.accept()


def test_with_the_opt_in_a_sidecar_watches_a_plain_http_operator_sending_its_token(
    spawn: Any, operator_stand_in: socket.socket, tmp_path: Path
) -> None:
    sidecar = spawn(*watch_flags(operator_stand_in, tmp_path), "--allow-plain-http-watch", "true")
    operator_stand_in.settimeout(30)
    connection, _ = operator_stand_in.accept()
    with connection:
        connection.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            head += chunk
    assert head.startswith(b"POST /v1/watch/shop/graph HTTP/1.1\r\n"), head
    assert b"\r\nAuthorization: Bearer cluster-token\r\n" in head
    assert sidecar.process.poll() is None
