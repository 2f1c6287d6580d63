"""The status probe's rule: what a host's `GET /status` answer makes of its probe (issue 24).

Amazon Neptune answers `GET /status` on each instance with a JSON object whose `status` is
"healthy" when the instance has no problem ("recovery" while it rolls back transactions after
a crash or a restart), as the Java client's health filter reads it. With
`health.status_probe` on, a host passes a probe only when its traversal passed *and* this
answer says healthy; anything else fails the probe like a failed traversal (rise/fall count
it), with an error that begins with STATUS_PROBE so logs, events and `last_error` name the
cause. The request itself is I/O, in `gremlinlb.status`, for both adapters.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from gremlinlb.core.endpoints import Endpoint

#: Every status probe error starts with this: the cause, apart from the traversal's.
STATUS_PROBE = "status probe"

#: Bytes of the answer read at most (Neptune's body is well under 2 KiB).
MAX_BODY = 64 * 1024

HEALTHY = "healthy"

# Answers of a server that has no such endpoint (bad request, not found, method not allowed).
_NO_STATUS = (400, 404, 405)


def status_url(endpoint: Endpoint, path: str) -> str:
    """The status URL of `endpoint`: https for a wss host, http for a ws one, same host:port."""
    parts = urlsplit(endpoint.url)
    scheme = "https" if endpoint.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def status_verdict(path: str, code: int, body: bytes) -> str | None:
    """None when the answer says the host is healthy (200, JSON, status "healthy"); else why
    not, for the probe's error."""
    if code != 200:
        hint = ""
        if code == 403:
            hint = (
                ": IAM auth refused it (check --sigv4-enabled, --sigv4-region and the credentials)"
            )
        elif code in _NO_STATUS:  # Gremlin Server answers 400 to a plain GET
            hint = ": the server has no status endpoint (not Neptune? turn health.status_probe off)"
        return f"{STATUS_PROBE}: GET {path} answered HTTP {code}{hint}"
    try:
        document = json.loads(body)
    except ValueError:
        return f"{STATUS_PROBE}: GET {path} answered 200 with a body that is not JSON"
    status = document.get("status") if isinstance(document, dict) else None
    if status != HEALTHY:
        return f"{STATUS_PROBE}: GET {path} says status {status!r}, not {HEALTHY!r}"
    return None


def status_timeout_error(path: str, timeout: float) -> str:
    return f"{STATUS_PROBE}: GET {path} got no answer within {timeout:g}s"


def status_failed_error(path: str, error: str) -> str:
    """A status request that could not be made (refused, reset, TLS, no credentials to sign)."""
    return f"{STATUS_PROBE}: GET {path} failed: {error}"
