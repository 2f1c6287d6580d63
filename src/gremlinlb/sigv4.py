"""SigV4 headers for a backend's WebSocket upgrade (Amazon Neptune's IAM auth), for both adapters.

Neptune checks a signature only on the upgrade (`GET /gremlin`), so each new backend connection
is signed just before it opens, never reused: a signature is good for 5 minutes, and a
connection opened later with an old one would be refused. The signer and the credential chain
are botocore's own (`SigV4Auth`; environment, shared config and profiles, credential_process,
web identity / IRSA, container and instance credentials), refreshed as botocore refreshes them:
temporary credentials replaced meanwhile are picked up by the next connection, and connections
already open are not touched. Shared by the sidecar and the in-process client like
`gremlinlb.ping`; the core only holds the settings (`core.settings.SigV4Settings`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from gremlinlb.core import Endpoint, GremlinLBError, SigV4Settings

if TYPE_CHECKING:  # botocore itself is imported at the first signature
    import botocore.session
    from botocore.credentials import Credentials

__all__ = ["SigV4Error", "signed_host", "upgrade_headers", "upgrade_headers_off_loop"]


class SigV4Error(GremlinLBError, RuntimeError):
    """SigV4 is on but cannot sign: no credentials or no region found."""


_lock = threading.Lock()
_session: botocore.session.Session | None = None
_credentials: Credentials | None = None


def _session_and_credentials() -> tuple[botocore.session.Session, Credentials | None]:
    """One botocore session per process: its credentials object refreshes itself (temporary
    credentials), so it is kept, and asked for a frozen copy at every signature. botocore is
    imported here, not with the module: some 9 MiB a sidecar without SigV4 never loads."""
    global _session, _credentials
    import botocore.session

    with _lock:
        if _session is None:
            _session = botocore.session.Session()
        if _credentials is None:
            _credentials = _session.get_credentials()
        return _session, _credentials


def reset() -> None:
    """Forget the session and credentials (the next signature runs the credential chain again)."""
    global _session, _credentials
    with _lock:
        _session = _credentials = None


def signed_host(settings: SigV4Settings, endpoint: Endpoint) -> str:
    """The host:port signed and sent as Host: the endpoint's own `sigv4_host` (a host reached
    at another address, e.g. an instance through a tunnel), else the setting's (one name for
    every backend, behind one proxy), else the backend's own address."""
    return endpoint.sigv4_host or settings.host or endpoint.address


def upgrade_headers(
    settings: SigV4Settings, endpoint: Endpoint, path: str | None = None
) -> dict[str, str]:
    """The headers that sign an upgrade to `endpoint` now (none when SigV4 is off); `path`: a
    GET of another path on it, signed the same way (the status probe's `/status`)."""
    if not settings.enabled:
        return {}
    session, credentials = _session_and_credentials()
    region = settings.region or session.get_config_variable("region")
    if not region:
        raise SigV4Error("SigV4 is on but no region is set: give --sigv4-region (or AWS_REGION)")
    if credentials is None:
        raise SigV4Error(
            "SigV4 is on but botocore found no AWS credentials (environment, profile, web "
            "identity, container or instance)"
        )
    from botocore.auth import SigV4Auth  # loaded by _session_and_credentials already
    from botocore.awsrequest import AWSRequest

    frozen = credentials.get_frozen_credentials()
    host = signed_host(settings, endpoint)
    request = AWSRequest(
        method="GET", url=f"https://{host}{path or endpoint.path or '/'}", headers={"host": host}
    )
    SigV4Auth(frozen, settings.service, region).add_auth(request)
    headers = {"Host": host}
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        value = request.headers.get(name)
        if value is not None:
            headers[name] = str(value)
    return headers


async def upgrade_headers_off_loop(
    settings: SigV4Settings | None, endpoint: Endpoint, path: str | None = None
) -> dict[str, str] | None:
    """`upgrade_headers` on a worker thread (None when SigV4 is off): a credential refresh may
    run a process or call STS, which must not hold up an event loop carrying traffic."""
    if settings is None or not settings.enabled:
        return None
    return await asyncio.to_thread(upgrade_headers, settings, endpoint, path)
