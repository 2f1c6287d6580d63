"""The webhook's and the watch's certificates: when they are renewed, and what a renewed bundle
trusts."""

from __future__ import annotations

import datetime

from cryptography import x509
from gremlinlb.operator.distribution import WatchCertificate

from gremlinlb import certificates as certs

NAMES = ["gremlinlb-operator.gremlinlb-system.svc"]
NOW = datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC)


def test_a_certificate_is_renewed_within_thirty_days_of_its_expiry() -> None:
    bundle = certs.generate(NAMES, NOW)
    assert certs.still_good(bundle, NAMES, NOW + datetime.timedelta(days=300))
    assert not certs.still_good(bundle, NAMES, NOW + datetime.timedelta(days=340))
    assert not certs.still_good(bundle, ["another.name"], NOW)


def test_a_renewed_bundle_trusts_the_new_and_the_previous_ca() -> None:
    old = certs.generate(NAMES, NOW)
    new = certs.renewed(old, NAMES, NOW + datetime.timedelta(days=340))
    cas = x509.load_pem_x509_certificates(new.ca_pem)
    assert len(cas) == 2
    assert cas[1] == x509.load_pem_x509_certificate(old.ca_pem)
    leaf = x509.load_pem_x509_certificate(new.cert_pem)
    assert leaf.issuer == cas[0].subject
    assert certs.still_good(new, NAMES, NOW + datetime.timedelta(days=340))


def test_renewing_again_keeps_at_most_two_cas_and_drops_expired_ones() -> None:
    first = certs.generate(NAMES, NOW)
    second = certs.renewed(first, NAMES, NOW + datetime.timedelta(days=340))
    third = certs.renewed(second, NAMES, NOW + datetime.timedelta(days=680))
    assert len(x509.load_pem_x509_certificates(third.ca_pem)) == 2
    late = certs.renewed(first, NAMES, NOW + datetime.timedelta(days=400))  # first CA expired
    assert len(x509.load_pem_x509_certificates(late.ca_pem)) == 1


def test_a_name_longer_than_a_common_name_may_be_is_still_certified() -> None:
    name = "a-rather-long-cluster-name.t-a-rather-long-namespace-name.gremlinlb-sidecar"
    bundle = certs.issue(certs.new_authority("ca"), [name])
    assert certs.still_good(bundle, [name])


PUSH_CA = certs.new_authority("push-ca", NOW, validity=datetime.timedelta(days=5 * 365))


def test_the_watch_certificate_is_kept_until_thirty_days_before_its_expiry() -> None:
    certificate = WatchCertificate(PUSH_CA, NAMES, NOW)
    assert certificate.renewal(NOW + datetime.timedelta(days=334)) is None


def test_the_watch_certificate_is_reissued_by_the_push_ca_within_thirty_days_of_expiry() -> None:
    certificate = WatchCertificate(PUSH_CA, NAMES, NOW)
    later = NOW + datetime.timedelta(days=336)
    fresh = certificate.renewal(later)
    assert fresh is not None
    assert certs.issued_by(fresh.cert_pem, PUSH_CA.ca_pem)
    assert certs.still_good(fresh, NAMES, later)
    certificate.serve(fresh)
    assert certificate.bundle == fresh
    assert certificate.renewal(later) is None  # the new one is kept in turn
