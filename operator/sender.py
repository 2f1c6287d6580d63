"""The real :class:`~gremlinlb.operator.push.Sender` (``PUT /v1/hosts``) and
:class:`~gremlinlb.operator.push.HealthReader` (``GET /readyz/backends``), over aiohttp."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from gremlinlb.operator.push import BackendHealth, SendOutcome


class HttpSender:
    """One connection pool for every sidecar; keep-alive makes repeated pushes cheap.

    An ``https://`` sidecar must present a certificate issued by the operator's push CA for
    the ``server_name`` given (never its IP address: pod IPs are reused); otherwise nothing,
    not even the token, is sent."""

    def __init__(
        self,
        limit: int = 128,
        observe: Callable[[float, SendOutcome], None] = lambda _seconds, _outcome: None,
    ) -> None:
        """``observe``: told each PUT's duration and outcome (the push latency metric)."""
        self._limit = limit
        self._observe = observe
        self._session: aiohttp.ClientSession | None = None
        self._tls: ssl.SSLContext | None = None

    def trust(self, ca_pem: bytes) -> None:
        """Verify https sidecars against these CAs (PEM)."""
        context = ssl.create_default_context(cadata=ca_pem.decode())
        self._tls = context

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def __call__(
        self,
        url: str,
        token: str | None,
        body: bytes,
        time_limit: float,
        *,
        server_name: str | None = None,
    ) -> SendOutcome:
        tls = self._tls_for(url, server_name)
        if tls is None:
            return SendOutcome(False, error="no push CA to verify an https sidecar with")
        started = time.monotonic()
        outcome = await self._put(url, token, body, time_limit, tls)
        self._observe(time.monotonic() - started, outcome)
        return outcome

    async def _put(
        self, url: str, token: str | None, body: bytes, time_limit: float, tls: dict[str, Any]
    ) -> SendOutcome:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        client_timeout = aiohttp.ClientTimeout(total=time_limit, connect=min(time_limit, 3.0))
        try:
            async with self._client().put(
                f"{url}/v1/hosts", data=body, headers=headers, timeout=client_timeout, **tls
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            return SendOutcome(False, error=f"no answer within {time_limit:g} s")
        except aiohttp.ClientError as error:
            return SendOutcome(False, error=f"{type(error).__name__}: {error}".rstrip(": "))
        except OSError as error:
            return SendOutcome(False, error=f"{type(error).__name__}: {error}")
        if status == 200:
            return SendOutcome(True, status)
        detail = _error_text(text)
        if status == 409:
            return SendOutcome(
                False, status, current_generation=_generation(text), error=f"409: {detail}"
            )
        if status == 401:
            return SendOutcome(
                False,
                status,
                error="401: the sidecar refused the token (is its token file the cluster's "
                "token Secret?)",
            )
        return SendOutcome(False, status, error=f"{status}: {detail}")

    async def read_health(
        self, url: str, time_limit: float, *, server_name: str | None = None
    ) -> BackendHealth | None:
        """The sidecar's backend states (its 503, "no healthy backend", carries them too)."""
        tls = self._tls_for(url, server_name)
        if tls is None:
            return None
        client_timeout = aiohttp.ClientTimeout(total=time_limit, connect=min(time_limit, 3.0))
        try:
            async with self._client().get(
                f"{url}/readyz/backends", timeout=client_timeout, **tls
            ) as response:
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
        return _backend_health(text)

    def _tls_for(self, url: str, server_name: str | None) -> dict[str, Any] | None:
        """Request options for ``url``; None when an https sidecar cannot be verified."""
        if not url.startswith("https://"):
            return {}
        if self._tls is None or server_name is None:
            return None
        return {"ssl": self._tls, "server_hostname": server_name}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json_object(text: str) -> dict[str, Any]:
    """The answer's JSON object ({} when it is not one)."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_text(text: str) -> str:
    error = _json_object(text).get("error")
    return error[:300] if isinstance(error, str) else text[:200]


def _generation(text: str) -> int | None:
    return _integer(_json_object(text).get("generation"))


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _backend_health(text: str) -> BackendHealth | None:
    return backend_health(_json_object(text))


def backend_health(data: dict[str, Any]) -> BackendHealth | None:
    """A sidecar's view of its backends, as /readyz/backends and a watch poll give it."""
    hosts = data.get("hosts")
    if not isinstance(hosts, dict):
        return None
    roles = data.get("roles_out")
    return BackendHealth(
        _integer(data.get("generation")),
        {str(address): str(state) for address, state in hosts.items()},
        read_only_violations=_integer(data.get("read_only_violations")) or 0,
        roles_out=tuple(str(r) for r in roles) if isinstance(roles, list) else (),
    )
