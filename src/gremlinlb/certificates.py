"""Serving certificates from a private CA: the operator's webhook and watch, and the test
apiserver.

Generated with ``cryptography`` (kopf's own self-signed path needs oscrypto, which cannot find
libcrypto on some distributions). The operator keeps its pair in a Secret, so a restart reuses
it and the apiserver's caBundle stays valid; it is renewed when names change or expiry nears,
while running. A renewed bundle's CA PEM also holds the previous CA while that is valid, so
the caBundle trusts replicas still serving the old certificate until they load the new one.
The watch's certificate is issued by the push CA and kept in memory only, renewed by the same
rule (:func:`still_good`).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertBundle:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


@dataclass(frozen=True)
class Authority:
    """A CA that can issue (the push CA: the operator signs each cluster's sidecar certificate)."""

    ca_pem: bytes
    key_pem: bytes


def new_authority(
    common_name: str,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = VALIDITY,
) -> Authority:
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(ca.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    authority: Authority,
    names: Sequence[str],
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = VALIDITY,
) -> CertBundle:
    """A server certificate for `names` (DNS names or IP addresses) signed by `authority`.

    Every name is a subject alternative name (what clients check); the common name is
    `names[0]` when it fits the 64 characters X.509 allows.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    common_name = names[0] if len(names[0]) <= 64 else "gremlinlb"
    ca = x509.load_pem_x509_certificate(authority.ca_pem)
    ca_key = serialization.load_pem_private_key(authority.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        authority.ca_pem, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate(
    names: Sequence[str],
    now: datetime.datetime | None = None,
    *,
    ca_common_name: str = "gremlinlb-webhook-ca",
    validity: datetime.timedelta = VALIDITY,
) -> CertBundle:
    """A fresh CA and a server certificate for `names` (DNS names or IP addresses)."""
    authority = new_authority(ca_common_name, now, validity)
    return issue(authority, names, now, validity)


def renewed(
    old: CertBundle | None, names: Sequence[str], now: datetime.datetime | None = None
) -> CertBundle:
    """A fresh bundle for `names`; its CA PEM is the new CA followed by `old`'s first CA while
    that one is still valid (at most two CAs: a bundle never grows)."""
    now = now or datetime.datetime.now(datetime.UTC)
    fresh = generate(names, now)
    if old is None:
        return fresh
    try:
        previous = x509.load_pem_x509_certificates(old.ca_pem)[0]
    except (ValueError, IndexError):
        return fresh
    if previous.not_valid_after_utc <= now:
        return fresh
    kept = previous.public_bytes(serialization.Encoding.PEM)
    return CertBundle(fresh.ca_pem + kept, fresh.cert_pem, fresh.key_pem)


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether the certificate is signed by (the first CA of) `ca_pem`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificates(ca_pem)[0]
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, IndexError, InvalidSignature):
        return False
    return True


def still_good(
    bundle: CertBundle, names: Sequence[str], now: datetime.datetime | None = None
) -> bool:
    """The leaf covers every name and stays valid for longer than RENEW_BEFORE."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        x509.load_pem_x509_certificates(bundle.ca_pem)
        serialization.load_pem_private_key(bundle.key_pem, password=None)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    have = set(sans)
    return all(name in have for name in _general_names(names))


def load_into(context: ssl.SSLContext, bundle: CertBundle) -> None:
    """Serve ``bundle`` from ``context``. ssl reads a certificate and its key only from files:
    they go through an owner-only temporary directory, removed at once. On the context of a
    running server this changes the handshakes to come; open connections keep theirs."""
    with tempfile.TemporaryDirectory(prefix="gremlinlb-tls-") as directory:
        cert_path, key_path = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        cert_path.write_bytes(bundle.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(bundle.key_pem)
        context.load_cert_chain(cert_path, key_path)
