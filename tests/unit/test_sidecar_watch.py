"""Watching the operator, sidecar side: what a poll sends, how long it waits, what it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gremlinlb.sidecar.config import ConfigError, OperatorWatch, load_config
from gremlinlb.sidecar.watch import health_report, poll_body, retry_after

BACKENDS = {
    "ready": True,
    "generation": 4,
    "healthy": ["10.0.0.1:8182"],
    "hosts": {"10.0.0.1:8182": "healthy"},
    "buffered": 3,
    "read_only_violations": 0,
    "roles_out": [],
}


def test_a_poll_carries_the_generation_held_the_pod_and_the_backends() -> None:
    sent = json.loads(poll_body(4, "app-1", health_report(BACKENDS), None))
    assert sent["generation"] == 4
    assert sent["pod"] == "app-1"
    assert sent["error"] is None
    assert sent["health"]["hosts"] == {"10.0.0.1:8182": "healthy"}


def test_requests_waiting_in_the_buffer_do_not_count_as_a_health_change() -> None:
    assert health_report(BACKENDS) == health_report({**BACKENDS, "buffered": 9})
    assert health_report(BACKENDS) != health_report(
        {**BACKENDS, "hosts": {"10.0.0.1:8182": "ejected"}}
    )


def test_the_operators_retry_after_is_taken_within_the_cap() -> None:
    assert retry_after("4", cap=30.0) == 4.0
    assert retry_after("600", cap=30.0) == 30.0
    assert retry_after(None, cap=30.0) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", cap=30.0) is None
    assert retry_after("-1", cap=30.0) is None


WATCH = {
    "operator_url": "https://op.example:8444",
    "operator_cluster": "shop/graph",
    "pod_name": "app-1",
}


def load(tmp_path: Path, **flags: Any) -> Any:
    token = tmp_path / "token"
    token.write_text("t")
    return load_config({"token_file": str(token), **WATCH, **flags}, {})


def test_the_watch_is_configured_from_url_cluster_pod_and_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    config = load(tmp_path, operator_ca_file=str(ca))
    assert config.operator == OperatorWatch("https://op.example:8444", "shop", "graph", "app-1", ca)
    assert config.operator.endpoint == "https://op.example:8444/v1/watch/shop/graph"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"operator_cluster": "graph"}, "namespace/name"),
        ({"pod_name": ""}, "this pod's name"),
        ({"operator_url": "op:8444"}, "https:// URL"),
        ({"operator_ca_file": "/nowhere/ca.crt"}, "no such file"),
    ],
)
def test_a_watch_missing_what_it_needs_is_refused_at_start(
    tmp_path: Path, flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, **flags)


def test_a_plain_http_operator_url_is_refused_at_start_saying_what_to_do(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, operator_url="http://op.example:8444")
    message = str(refused.value)
    assert message.startswith("--operator-url: http://op.example:8444 is plain HTTP")
    assert "token in clear" in message
    assert "https:// URL" in message
    assert "--allow-plain-http-watch true" in message


def test_the_plain_http_refusal_names_where_the_url_came_from(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    env = {"GREMLINLB_OPERATOR_URL": "http://op.example:8444"}
    with pytest.raises(ConfigError, match=r"^GREMLINLB_OPERATOR_URL: .* is plain HTTP"):
        load_config({"token_file": str(token), **WATCH, "operator_url": None}, env)


def test_a_plain_http_operator_url_is_taken_with_the_explicit_opt_in(tmp_path: Path) -> None:
    config = load(tmp_path, operator_url="http://op.example:8444", allow_plain_http_watch="true")
    assert config.operator.endpoint == "http://op.example:8444/v1/watch/shop/graph"


def test_the_plain_http_opt_in_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-plain-http-watch"):
        load(tmp_path, operator_url="http://op.example:8444", allow_plain_http_watch="maybe")


def test_a_watch_needs_the_clusters_token() -> None:
    with pytest.raises(ConfigError, match="--token-file"):
        load_config(WATCH, {})
