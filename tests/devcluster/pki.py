"""Certificates, keys and tokens for the test control plane, generated fresh for every start.

* a CA (EC P-256) and a serving certificate for kube-apiserver on 127.0.0.1 / localhost (plus the
  in-cluster names, so clients that insist on ``kubernetes.default.svc`` also verify);
* an RSA key pair for signing and verifying ServiceAccount tokens;
* a static token file: an admin in ``system:masters`` and a ServiceAccount-shaped user for the
  operator, whose RBAC is therefore exactly what the manifests grant that ServiceAccount.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gremlinlb import certificates

_VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class TokenUser:
    """One line of the apiserver's ``--token-auth-file``."""

    name: str
    token: str = field(repr=False)
    uid: str
    groups: tuple[str, ...] = ()

    @classmethod
    def create(cls, name: str, groups: tuple[str, ...] = (), uid: str | None = None) -> TokenUser:
        return cls(name=name, token=secrets.token_urlsafe(32), uid=uid or name, groups=groups)

    @classmethod
    def service_account(cls, namespace: str, name: str) -> TokenUser:
        """A user named and grouped exactly like ServiceAccount ``namespace/name``.

        RBAC subjects of ``kind: ServiceAccount`` match it, so the operator's manifests apply
        unchanged. (It is authenticated by the token file, not by a signed token: the
        ServiceAccount object need not exist.)
        """
        return cls.create(
            f"system:serviceaccount:{namespace}:{name}",
            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
            uid=f"sa-{namespace}-{name}",
        )


def token_file_text(users: list[TokenUser]) -> str:
    """The CSV the apiserver reads: ``token,user,uid,"group1,group2"``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    for user in users:
        row = [user.token, user.name, user.uid]
        if user.groups:
            row.append(",".join(user.groups))
        writer.writerow(row)
    return buffer.getvalue()


@dataclass(frozen=True)
class ControlPlaneCerts:
    """Paths of the generated PKI files (all PEM)."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_public_key: Path
    sa_private_key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_certs(
    directory: Path,
    *,
    ip_sans: tuple[str, ...] = ("127.0.0.1",),
    dns_sans: tuple[str, ...] = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ),
) -> ControlPlaneCerts:
    """Write a fresh CA, apiserver serving pair and ServiceAccount key pair into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    serving = certificates.generate(
        ["kube-apiserver", *dns_sans, *ip_sans],
        ca_common_name="gremlinlb-test-ca",
        validity=_VALIDITY,
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    certs = ControlPlaneCerts(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_public_key=directory / "sa.pub",
        sa_private_key=directory / "sa.key",
    )
    certs.ca_cert.write_bytes(serving.ca_pem)
    certs.serving_cert.write_bytes(serving.cert_pem)
    _write_private(certs.serving_key, serving.key_pem)
    certs.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _write_private(certs.sa_private_key, _key_pem(sa_key))
    return certs
