"""The injection webhook's AdmissionReview answer (operator.admission.review_response, pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

import kopf
from gremlinlb.operator.admission import review_response


def review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "CREATE", "namespace": "ns", "object": pod},
    }


def test_changes_are_answered_as_a_json_patch_of_the_pod() -> None:
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web"}]}}
    answer = review_response(review(pod), {"metadata": {"annotations": {"a": "b"}}}, None)
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview"
    assert (response["uid"], response["allowed"]) == ("u-1", True)
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
    ]


def test_no_changes_allow_the_pod_as_it_is() -> None:
    response = review_response(review({"metadata": {"name": "web"}}), None, None)["response"]
    assert response == {"uid": "u-1", "allowed": True}


def test_a_refusal_carries_its_message_and_code() -> None:
    error = kopf.AdmissionError("no GremlinCluster named 'grpah'", code=400)
    response = review_response(review({}), None, error)["response"]
    assert response["allowed"] is False
    assert response["status"] == {"message": "no GremlinCluster named 'grpah'", "code": 400}
