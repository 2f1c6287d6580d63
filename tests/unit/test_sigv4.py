"""SigV4 on the upgrade: the verifying test front checked against AWS's published vector, and
the headers gremlinlb.sigv4 makes (botocore's signer) accepted or refused by it."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest

from gremlinlb import sigv4
from gremlinlb.core import (
    BalancerSettings,
    NotSentError,
    SigV4Settings,
    UpgradeBusyError,
    may_retry,
    parse_endpoint,
)
from gremlinlb.core.recycling import past_max_age
from gremlinlb.devservers.sigv4front import Secret, verify
from tests.helpers import fake_aws_credentials

# AWS's SigV4 test suite, case get-vanilla (aws-sig-v4-test-suite/get-vanilla).
VANILLA_KEY = "AKIDEXAMPLE"
VANILLA_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
VANILLA_HEADERS = {
    "host": "example.amazonaws.com",
    "x-amz-date": "20150830T123600Z",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
    "aws4_request, SignedHeaders=host;x-amz-date, "
    "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
}
VANILLA_NOW = datetime.datetime(2015, 8, 30, 12, 36, tzinfo=datetime.UTC)
SECRETS = {VANILLA_KEY: Secret(VANILLA_SECRET)}


def test_front_accepts_the_published_get_vanilla_signature() -> None:
    assert verify("GET", "/", VANILLA_HEADERS, SECRETS, "us-east-1", "service", VANILLA_NOW) is None


def test_front_refuses_get_vanilla_with_one_signature_digit_changed() -> None:
    headers = dict(VANILLA_HEADERS, authorization=VANILLA_HEADERS["authorization"][:-1] + "0")
    why = verify("GET", "/", headers, SECRETS, "us-east-1", "service", VANILLA_NOW)
    assert why == "signature does not match"


def test_front_refuses_get_vanilla_six_minutes_later() -> None:
    later = VANILLA_NOW + datetime.timedelta(minutes=6)
    why = verify("GET", "/", VANILLA_HEADERS, SECRETS, "us-east-1", "service", later)
    assert why is not None
    assert "more than 5 minutes" in why


def test_front_refuses_get_vanilla_for_another_region() -> None:
    why = verify("GET", "/", VANILLA_HEADERS, SECRETS, "eu-west-1", "service", VANILLA_NOW)
    assert why is not None
    assert "us-east-1" in why


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_aws_credentials(monkeypatch, "AKIDGREMLINLB", "not-a-real-secret", "token-1")
    yield
    sigv4.reset()


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_upgrade_headers_pass_the_front(fake_credentials: None) -> None:
    settings = SigV4Settings(enabled=True, region="us-east-1")
    headers = _lower(sigv4.upgrade_headers(settings, parse_endpoint("127.0.0.1:8182")))
    secrets = {"AKIDGREMLINLB": Secret("not-a-real-secret", "token-1")}
    now = datetime.datetime.now(datetime.UTC)
    assert verify("GET", "/gremlin", headers, secrets, "us-east-1", "neptune-db", now) is None


def test_upgrade_headers_sign_the_configured_host_not_the_address(fake_credentials: None) -> None:
    settings = SigV4Settings(enabled=True, region="us-east-1", host="db.cluster-x.neptune:8182")
    headers = sigv4.upgrade_headers(settings, parse_endpoint("127.0.0.1:9999"))
    assert headers["Host"] == "db.cluster-x.neptune:8182"


def test_an_endpoints_own_signed_host_wins_over_the_setting(fake_credentials: None) -> None:
    settings = SigV4Settings(enabled=True, region="us-east-1", host="proxy-wide.example:8182")
    endpoint = parse_endpoint("127.0.0.1:9999?sigv4_host=db-2.cluster-x.neptune:8182")
    assert sigv4.upgrade_headers(settings, endpoint)["Host"] == "db-2.cluster-x.neptune:8182"


def test_upgrade_headers_are_none_when_sigv4_is_off() -> None:
    assert sigv4.upgrade_headers(SigV4Settings(), parse_endpoint("127.0.0.1:8182")) == {}


def test_upgrade_headers_without_a_region_say_so(
    fake_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(sigv4.SigV4Error, match="region"):
        sigv4.upgrade_headers(SigV4Settings(enabled=True), parse_endpoint("127.0.0.1:8182"))


def test_with_sigv4_on_connections_are_replaced_before_neptunes_ten_days() -> None:
    settings = BalancerSettings(sigv4=SigV4Settings(enabled=True, region="us-east-1"))
    assert not past_max_age(settings, 0.0, 8 * 24 * 3600.0)
    assert past_max_age(settings, 0.0, 9 * 24 * 3600.0)


def test_without_sigv4_connections_have_no_age_limit_by_default() -> None:
    assert not past_max_age(BalancerSettings(), 0.0, 365 * 24 * 3600.0)


def test_keepalive_default_is_below_neptunes_idle_timeout() -> None:
    assert 0 < BalancerSettings().keepalive_interval < 20 * 60  # Neptune: 20-25 minutes


def test_a_429_on_the_upgrade_is_busy_not_down_and_may_go_elsewhere() -> None:
    error = UpgradeBusyError("429 on the upgrade")
    assert isinstance(error, NotSentError)
    assert not error.outcome.marks_host_down
    assert may_retry(error.outcome, read_only=False)
