"""Who may change a running sidecar's host list, and to what: only requests addressed to the
sidecar by a name it knows (DNS rebinding), only with a token (one is generated when none is
given), never a list that names the sidecar itself in any spelling, only UTF-8 JSON, and only
settings above their floors. Real sidecars (in process and as a process), loopback only; the
hosts pushed here are never contacted (each is refused)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from gremlinlb.sidecar.config import SidecarConfig
from gremlinlb.sidecar.testing import SidecarThread

from gremlinlb.core import parse_endpoint
from tests.helpers import wait_until
from tests.operator_support import free_port

pytestmark = pytest.mark.integration

#: A port nothing listens on: the sidecar's initial backend, never reached by these specs.
NOWHERE = "127.0.0.1:1"


@pytest.fixture
def sidecar() -> Iterator[SidecarThread]:
    config = SidecarConfig(endpoints=(parse_endpoint(NOWHERE),))
    running = SidecarThread(config).start(settle=False)
    try:
        yield running
    finally:
        running.stop()


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    host: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if host is not None:
        request.add_header("Host", host)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text.decode(errors="replace")


def put(sidecar: SidecarThread, body: Any, **options: Any) -> tuple[int, Any]:
    options.setdefault("token", sidecar.token)
    return call("PUT", f"{sidecar.admin_url}/v1/hosts", body, **options)


@contextlib.contextmanager
def sidecar_process(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, wrapper: Sequence[str] = ()
) -> Iterator[subprocess.Popen[str]]:
    """`gremlinlb sidecar` as a process (run through `wrapper`), its backend NOWHERE, killed
    at the end if it has not ended."""
    process = subprocess.Popen(
        [
            *wrapper,
            *(sys.executable, "-m", "gremlinlb.cli", "sidecar", "--endpoints", NOWHERE),
            *("--listen", f"127.0.0.1:{free_port()}", *args),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def answers(url: str) -> bool:
    """Whether a GET of `url` is answered at all (a refused connection: not yet)."""
    try:
        call("GET", url)
    except OSError:
        return False
    return True


def hosts_of(sidecar: SidecarThread) -> tuple[int, list[str]]:
    body = call("GET", f"{sidecar.admin_url}/v1/hosts")[1]
    return body["generation"], [h["address"] for h in body["hosts"]]


# -- Host header (DNS rebinding) -------------------------------------------------------------


def test_a_put_through_a_foreign_host_name_is_421_and_changes_nothing(
    sidecar: SidecarThread,
) -> None:
    status, answer = put(sidecar, {"generation": 1, "hosts": ["127.0.0.1:2"]}, host="evil.example")
    assert status == 421
    assert "'evil.example'" in answer["error"]
    assert "--admin-allowed-host evil.example" in answer["error"]
    assert hosts_of(sidecar) == (0, [NOWHERE])


def test_a_read_through_a_foreign_host_name_is_421(sidecar: SidecarThread) -> None:
    status, answer = call("GET", f"{sidecar.admin_url}/v1/hosts", host="evil.example:9901")
    assert status == 421
    assert answer["host"] == "evil.example:9901"


def test_the_address_it_was_reached_at_and_localhost_are_served(sidecar: SidecarThread) -> None:
    port = sidecar.sidecar.admin_address.rpartition(":")[2]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", "localhost", f"[::ffff:127.0.0.1]:{port}"):
        assert call("GET", f"{sidecar.admin_url}/healthz", host=host)[0] == 200, host


def test_a_name_given_with_admin_allowed_host_is_served() -> None:
    config = SidecarConfig(
        endpoints=(parse_endpoint(NOWHERE),), admin_allowed_hosts=("gremlinlb.test",)
    )
    sidecar = SidecarThread(config).start(settle=False)
    try:
        status, _ = put(
            sidecar, {"generation": 1, "hosts": ["127.0.0.1:2"]}, host="gremlinlb.test:9901"
        )
        assert status == 200
        assert call("GET", f"{sidecar.admin_url}/healthz", host="other.test")[0] == 421
    finally:
        sidecar.stop()


# -- the sidecar itself, in any spelling -----------------------------------------------------

ALIASES = [
    "[::ffff:127.0.0.1]",
    "0x7f000001",
    "2130706433",
    "127.1",
    "0",
    "localhost.",
    "127.0.0.1.",
    "ip6-localhost",
]


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("which", ["admin", "gremlin"])
def test_a_list_naming_the_sidecar_in_any_spelling_is_400_naming_the_address(
    sidecar: SidecarThread, alias: str, which: str
) -> None:
    own = sidecar.sidecar.admin_address if which == "admin" else sidecar.sidecar.address
    port = own.rpartition(":")[2]
    status, answer = put(sidecar, {"generation": 1, "hosts": [f"{alias}:{port}"]})
    assert status == 400, answer
    assert "this sidecar's own port" in answer["error"]
    assert alias.strip("[]").rstrip(".") in answer["error"]
    assert hosts_of(sidecar) == (0, [NOWHERE])


#: A name only the sidecar of the spec below resolves (to loopback, from an /etc/hosts of its
#: own), so the spec depends on no name this machine happens to have.
SELF_NAME = "gremlinlb-self.test"


def test_a_name_that_resolves_to_the_sidecar_is_400_naming_the_address(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{Path('/etc/hosts').read_text()}\n127.0.0.1 {SELF_NAME}\n")
    token = tmp_path / "token"
    token.write_text("s3cret")
    admin_port = free_port()
    # A mount namespace of its own, where its /etc/hosts is the file above (as the dev
    # cluster's pods get theirs); the system resolver reads it, no network is asked.
    own_hosts = [*("unshare", "--mount", "--propagation", "private", "sh", "-c")]
    own_hosts += ['mount --bind "$0" /etc/hosts && exec "$@"', str(hosts)]
    with sidecar_process(
        ("--admin", f"127.0.0.1:{admin_port}", "--token-file", str(token)), wrapper=own_hosts
    ):
        admin = f"http://127.0.0.1:{admin_port}"
        wait_until(lambda: answers(f"{admin}/healthz"), 30, "the sidecar's admin API")
        body = {"generation": 1, "hosts": [f"{SELF_NAME}:{admin_port}"]}
        status, answer = call("PUT", f"{admin}/v1/hosts", body, token="s3cret")
        assert status == 400, answer
        assert f"{SELF_NAME}:{admin_port} (that is 127.0.0.1" in answer["error"]
        assert "this sidecar's own port" in answer["error"]
        listed = call("GET", f"{admin}/v1/hosts")[1]
        assert (listed["generation"], [h["address"] for h in listed["hosts"]]) == (0, [NOWHERE])


# -- bodies ----------------------------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_400_saying_so(sidecar: SidecarThread) -> None:
    body = json.dumps({"generation": 1, "hosts": ["127.0.0.1:2"]}).encode("utf-16")
    status, answer = put(sidecar, None, raw=body)
    assert status == 400
    assert "not UTF-8" in answer["error"]
    assert hosts_of(sidecar) == (0, [NOWHERE])


# -- floors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"health": {"interval": 1e-6}}, "settings.health.interval: must be a number >= 0.1"),
        ({"keepalive_interval": 1e-9}, "settings.keepalive_interval: must be a number 0 (off)"),
    ],
)
def test_a_setting_below_its_floor_is_400_naming_it(
    sidecar: SidecarThread, settings: dict[str, Any], named: str
) -> None:
    status, answer = put(sidecar, {"generation": 1, "hosts": [NOWHERE], "settings": settings})
    assert status == 400
    assert named in answer["error"]
    assert call("GET", f"{sidecar.admin_url}/v1/hosts")[1]["settings"]["health"]["interval"] == 10


# -- no anonymous admin ----------------------------------------------------------------------


def test_a_sidecar_started_without_a_token_writes_one_owner_only_and_refuses_anonymous_puts(
    tmp_path: Path,
) -> None:
    admin_port = free_port()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    with sidecar_process(("--admin", f"127.0.0.1:{admin_port}"), env=env) as process:
        assert process.stdout is not None
        # Printed once the admin API listens; waited for at most 30 s.
        assert select.select([process.stdout], [], [], 30)[0], "nothing printed at start"
        announced = process.stdout.readline()
        token_file = tmp_path / "gremlinlb" / f"sidecar-{admin_port}.token"
        assert str(token_file) in announced
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        admin = f"http://127.0.0.1:{admin_port}/v1/hosts"
        body = {"generation": 1, "hosts": ["127.0.0.1:2"]}
        status, answer = call("PUT", admin, body)
        assert status == 401
        assert "Bearer" in answer["error"]
        token = token_file.read_text().strip()
        assert call("PUT", admin, body, token=token)[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert not token_file.exists()  # the token dies with the process


def test_an_in_process_sidecar_without_a_token_requires_the_one_it_generated(
    sidecar: SidecarThread,
) -> None:
    assert put(sidecar, {"generation": 1, "hosts": ["127.0.0.1:2"]}, token=None)[0] == 401
    assert sidecar.sidecar.token_path is not None
    assert sidecar.sidecar.token_path.read_text().strip() == sidecar.token
    assert put(sidecar, {"generation": 1, "hosts": ["127.0.0.1:2"]})[0] == 200
    wait_until(lambda: hosts_of(sidecar) == (1, ["127.0.0.1:2"]), 30, "the pushed list")
