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
* a Secret whose admin TLS certificate is missing, near its expiry or not issued by the
  operator's current push CA: issue a new one, keeping the token;
* otherwise: use it as it is.

The same Secret carries ``tls.crt`` and ``tls.key``: the certificate the sidecars' admin API
serves, issued for :func:`sidecar_server_name` by the operator's push CA, so the operator pushes
the token over TLS to a sidecar it can verify.
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
    #: Issue a new admin certificate (else keep the Secret's).
    new_certificate: bool = False


def sidecar_server_name(namespace: str, cluster: str) -> str:
    """The name in every admin certificate of a cluster's sidecars (the operator connects to
    pod IPs and checks this name, not the address)."""
    return f"{cluster}.{namespace}.gremlinlb-sidecar"


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


def plan_token(
    found: Mapping[str, Any] | None,
    owner_uid: str | None,
    fresh: str,
    certificate_good: bool = True,
) -> TokenPlan:
    """What to do with the Secret ``found`` (None: absent); ``fresh`` is the token to use if a
    new one is needed; ``certificate_good``: its admin certificate needs no renewal."""
    if found is None:
        return TokenPlan(fresh, Write.CREATE, "created it with a new token", True)
    token = token_of(found)
    if token is None:
        reason = f"it had no usable {TOKEN_KEY!r} key: replaced it with a new token"
        return TokenPlan(fresh, Write.REPLACE, reason, True)
    if owner_uid and not owned_by(found, owner_uid):
        reason = "it belonged to an earlier GremlinCluster: adopted it, token kept"
        return TokenPlan(token, Write.REPLACE, reason, not certificate_good)
    if not certificate_good:
        reason = "its admin certificate was missing, near expiry or from another CA: issued anew"
        return TokenPlan(token, Write.REPLACE, reason, True)
    return TokenPlan(token, Write.NONE)


def certificate_of(secret: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """(tls.crt, tls.key) PEM of a Secret, or None."""
    data = secret.get("data") or {}
    try:
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])
    except (KeyError, TypeError, binascii.Error):
        return None


def token_secret(
    namespace: str,
    cluster: str,
    uid: str | None,
    token: str,
    resource_version: str | None = None,
    certificate: tuple[bytes, bytes] | None = None,
    ca_pem: bytes | None = None,
) -> dict[str, Any]:
    """The Secret object, owned by the cluster (no blockOwnerDeletion: that would need rights
    on the cluster's finalizers, and foreground deletion is not needed here). With ``ca_pem``
    (the push CA) it holds ``ca.crt``, what a watching sidecar verifies the operator with."""
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
    data = {TOKEN_KEY: base64.b64encode(token.encode()).decode()}
    if certificate is not None:
        data["tls.crt"] = base64.b64encode(certificate[0]).decode()
        data["tls.key"] = base64.b64encode(certificate[1]).decode()
    if ca_pem is not None:
        data["ca.crt"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": data,
    }
