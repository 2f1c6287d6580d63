"""The token Secret of a GremlinCluster: what to do with what the apiserver holds (pure, no I/O).

The Secret ``<cluster>-gremlinlb-token`` holds the bearer token of the cluster's sidecars'
admin API. It is owned by the GremlinCluster (a controller owner reference), so the garbage
collector removes it with the cluster and the operator never needs ``delete`` on Secrets.

Whatever the operator finds, one decision, never a retry loop that can spin:

* no Secret: create one with a new token;
* a Secret without a usable ``token`` key: replace it with a new token (sidecars pick the new
  file up when the kubelet updates the mounted volume);
* a Secret owned by an earlier GremlinCluster of the same name (deleted and applied again, as
  GitOps does): adopt it, keeping its token, so the running sidecars stay in sync;
* otherwise: use its token.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gremlinlb.operator.spec import GROUP, KIND, TOKEN_KEY, VERSION
from gremlinlb.operator.webhook import token_secret_name

MANAGED_BY = {"app.kubernetes.io/managed-by": "gremlinlb-operator"}


class Write(enum.Enum):
    NONE = "none"
    CREATE = "create"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class TokenPlan:
    token: str
    write: Write
    #: For the event and the log: what was found and done.
    reason: str = ""


def token_of(secret: Mapping[str, Any]) -> str | None:
    """The token a Secret holds, or None when the key is missing, empty or not base64 text."""
    data = (secret.get("data") or {}).get(TOKEN_KEY)
    if not isinstance(data, str) or not data:
        return None
    try:
        token = base64.b64decode(data, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return token or None


def owned_by(secret: Mapping[str, Any], uid: str) -> bool:
    owners = (secret.get("metadata") or {}).get("ownerReferences") or ()
    return any(o.get("uid") == uid for o in owners)


def plan_token(found: Mapping[str, Any] | None, owner_uid: str | None, fresh: str) -> TokenPlan:
    """What to do with the Secret ``found`` (None: absent); ``fresh`` is the token to use if a
    new one is needed."""
    if found is None:
        return TokenPlan(fresh, Write.CREATE, "created it with a new token")
    token = token_of(found)
    if token is None:
        return TokenPlan(
            fresh,
            Write.REPLACE,
            f"it had no usable {TOKEN_KEY!r} key: replaced it with a new token",
        )
    if owner_uid and not owned_by(found, owner_uid):
        return TokenPlan(
            token, Write.REPLACE, "it belonged to an earlier GremlinCluster: adopted it, token kept"
        )
    return TokenPlan(token, Write.NONE)


def token_secret(
    namespace: str,
    cluster: str,
    uid: str | None,
    token: str,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The Secret object, owned by the cluster (no blockOwnerDeletion: that would need rights
    on the cluster's finalizers, and foreground deletion is not needed here)."""
    metadata: dict[str, Any] = {
        "name": token_secret_name(cluster),
        "namespace": namespace,
        "labels": {**MANAGED_BY, f"{GROUP}/cluster": cluster},
    }
    if uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": cluster,
                "uid": uid,
                "controller": True,
            }
        ]
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }
