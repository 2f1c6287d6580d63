"""What the operator does with the token Secret it finds: one decision, never a loop."""

from __future__ import annotations

import base64
from typing import Any

from gremlinlb.operator.tokens import Write, plan_token, token_of, token_secret


def secret(data: dict[str, str] | None, owner: str | None = "uid-1") -> dict[str, Any]:
    owners = [{"uid": owner, "kind": "GremlinCluster", "name": "graph"}] if owner else []
    return {
        "metadata": {"name": "graph-gremlinlb-token", "ownerReferences": owners},
        "data": data,
    }


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_an_absent_secret_is_created_with_the_fresh_token() -> None:
    plan = plan_token(None, "uid-1", "fresh")
    assert (plan.token, plan.write) == ("fresh", Write.CREATE)


def test_a_secret_holding_a_token_of_this_cluster_is_used_as_it_is() -> None:
    plan = plan_token(secret({"token": encoded("kept\n")}), "uid-1", "fresh")
    assert (plan.token, plan.write) == ("kept", Write.NONE)


def test_a_secret_without_a_usable_token_is_replaced_with_a_fresh_one() -> None:
    for data in (None, {}, {"other": encoded("x")}, {"token": ""}, {"token": "%%%"}):
        plan = plan_token(secret(data), "uid-1", "fresh")
        assert (plan.token, plan.write) == ("fresh", Write.REPLACE), data
        assert "no usable 'token' key" in plan.reason


def test_a_secret_of_an_earlier_cluster_of_this_name_is_adopted_with_its_token() -> None:
    plan = plan_token(secret({"token": encoded("kept")}, owner="uid-0"), "uid-1", "fresh")
    assert (plan.token, plan.write) == ("kept", Write.REPLACE)
    assert "adopted" in plan.reason


def test_the_written_secret_is_owned_by_the_cluster_and_holds_the_token() -> None:
    body = token_secret("ns", "graph", "uid-1", "t0k", resource_version="7")
    assert token_of(body) == "t0k"
    (owner,) = body["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "gremlinlb.io/v1alpha1",
        "kind": "GremlinCluster",
        "name": "graph",
        "uid": "uid-1",
        "controller": True,
    }
    assert body["metadata"]["resourceVersion"] == "7"
    assert plan_token(body, "uid-1", "fresh").write is Write.NONE


def test_with_a_push_ca_the_token_secret_holds_it_for_watching_sidecars_to_verify_with() -> None:
    body = token_secret("ns", "graph", "uid-1", "t0k", ca_pem=b"-----BEGIN CERTIFICATE-----")
    assert base64.b64decode(body["data"]["ca.crt"]) == b"-----BEGIN CERTIFICATE-----"
    assert "ca.crt" not in token_secret("ns", "graph", "uid-1", "t0k")["data"]
