"""The bearer-token check both ends of a host-list channel make: the sidecar's admin API (a
push) and the operator's watch (a poll). One comparison, in constant time, so neither leaks
how much of a guessed token was right."""

from __future__ import annotations

import hmac


def bearer_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as its bearer token."""
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8"), token.encode("utf-8")
    )
