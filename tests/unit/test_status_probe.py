"""The status probe's rule (core.instancestatus), its setting, and the body the verifying front
answers GET /status with (it must read as a Neptune instance's)."""

from __future__ import annotations

import datetime
import json

import pytest

from gremlinlb.core import BalancerSettings, HealthCheckSettings, InvalidSettingError
from gremlinlb.core.endpoints import parse_endpoint
from gremlinlb.core.instancestatus import (
    STATUS_PROBE,
    status_timeout_error,
    status_url,
    status_verdict,
)
from gremlinlb.core.probing import probe_lost_after
from gremlinlb.devservers.sigv4front import status_body
from gremlinlb.schema import SettingsError, from_document

HEALTHY = b'{"status": "healthy", "role": "writer"}'


def test_200_with_status_healthy_passes() -> None:
    assert status_verdict("/status", 200, HEALTHY) is None


def test_a_status_other_than_healthy_fails_naming_it() -> None:
    why = status_verdict("/status", 200, b'{"status": "recovery", "role": "reader"}')
    assert why == f"{STATUS_PROBE}: GET /status says status 'recovery', not 'healthy'"


def test_a_body_without_status_fails() -> None:
    assert status_verdict("/status", 200, b'{"role": "writer"}') is not None
    assert status_verdict("/status", 200, b'["healthy"]') is not None


def test_a_body_that_is_not_json_fails_saying_so() -> None:
    why = status_verdict("/status", 200, b"<html>ok</html>")
    assert why == f"{STATUS_PROBE}: GET /status answered 200 with a body that is not JSON"


def test_a_non_200_answer_fails_with_its_code_even_with_a_healthy_body() -> None:
    why = status_verdict("/status", 503, HEALTHY)
    assert why == f"{STATUS_PROBE}: GET /status answered HTTP 503"


def test_a_403_is_named_as_iam_auth_refusing_it() -> None:
    why = status_verdict("/status", 403, b"{}")
    assert why is not None
    assert "IAM auth refused it" in why
    assert "--sigv4-enabled" in why


@pytest.mark.parametrize("code", [400, 404, 405])
def test_a_400_404_or_405_says_the_server_has_no_status_endpoint(code: int) -> None:
    why = status_verdict("/status", code, b"")
    assert why is not None
    assert "no status endpoint" in why


def test_a_timeout_is_named_with_its_bound() -> None:
    assert status_timeout_error("/status", 2.0) == (
        f"{STATUS_PROBE}: GET /status got no answer within 2s"
    )


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("ws://db-1:8182/gremlin", "http://db-1:8182/status"),
        (
            "wss://db-1.neptune.amazonaws.com:8182/gremlin",
            "https://db-1.neptune.amazonaws.com:8182/status",
        ),
        ("[::1]:8182", "http://[::1]:8182/status"),
    ],
)
def test_the_status_url_is_the_hosts_own_over_http_or_https_for_wss(
    endpoint: str, url: str
) -> None:
    assert status_url(parse_endpoint(endpoint), "/status") == url


def test_the_status_probe_is_off_by_default_on_status_with_its_own_timeout() -> None:
    health = HealthCheckSettings()
    assert (health.status_probe, health.status_path, health.status_timeout) == (
        False,
        "/status",
        2.0,
    )


@pytest.mark.parametrize("path", ["status", "/status?x=1", "/sta tus", ""])
def test_a_status_path_that_is_not_an_absolute_path_is_refused_naming_it(path: str) -> None:
    with pytest.raises(InvalidSettingError, match="status_path must be an absolute path"):
        HealthCheckSettings(status_path=path)


def test_a_probe_with_the_status_probe_on_is_lost_only_after_its_timeout_too() -> None:
    off = BalancerSettings(health=HealthCheckSettings(timeout=1.0), connect_timeout=2.0)
    on = BalancerSettings(
        health=HealthCheckSettings(timeout=1.0, status_probe=True, status_timeout=3.0),
        connect_timeout=2.0,
    )
    assert (probe_lost_after(off), probe_lost_after(on)) == (4.0, 7.0)


def test_the_fronts_status_body_is_a_neptune_status_the_probe_reads() -> None:
    started = datetime.datetime(2026, 12, 5, 20, 0, tzinfo=datetime.UTC)
    body = status_body("healthy", "reader", started)
    document = json.loads(body)
    assert (document["status"], document["role"]) == ("healthy", "reader")
    assert {"startTime", "dbEngineVersion", "gremlin", "dfeQueryEngine"} <= set(document)
    assert status_verdict("/status", 200, body) is None


def test_the_fronts_status_body_when_recovering_fails_the_probe() -> None:
    body = status_body("recovery", "writer", datetime.datetime.now(datetime.UTC))
    assert status_verdict("/status", 200, body) is not None


@pytest.mark.parametrize("cr", [False, True], ids=["admin-json", "gremlincluster-spec"])
def test_a_bad_status_path_in_a_settings_document_is_refused_naming_it(cr: bool) -> None:
    document = {
        ("healthCheck" if cr else "health"): {("statusPath" if cr else "status_path"): "status"}
    }
    with pytest.raises(SettingsError, match="status_path must be an absolute path"):
        from_document(document, BalancerSettings(), cr=cr)
