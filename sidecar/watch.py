"""The sidecar's long-lived watch on the operator (issue 27): lists come to it, not pushed in.

``POST <operator>/v1/watch/<namespace>/<cluster>`` with the cluster's bearer token carries the
generation this sidecar holds and its view of its backends; the operator answers at once with
a newer list, or holds the request until one comes (or ~30 s pass: 204, poll again). A list is
applied through the very path and checks of ``PUT /v1/hosts`` (:meth:`AdminApi.apply`), so a
watched list is refused for exactly what a pushed one would be.

* The operator is verified: HTTPS against ``--operator-ca-file`` (the operator's push CA); the
  token is never sent in clear (an ``http://`` URL stops the sidecar at start, unless
  ``--allow-plain-http-watch`` says nobody else can read this pod's traffic).
* Health travels on the same channel: when the backends' states change, the poll in flight is
  given up and a new one carries the new view (checked every ``check_every`` seconds).
* The last good list stays while the operator is away (a restart, a standby's 503, a network
  split); the watch retries with capped, jittered backoff, and a 503's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from gremlinlb.sidecar.admin import AdminApi
from gremlinlb.sidecar.config import OperatorWatch

from gremlinlb.core.backoff import Backoff
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: Between failed polls: growing to 30 s at most, jittered so a fleet does not poll in step.
WATCH_BACKOFF = Backoff(first=0.5, maximum=30.0, jitter=0.5)
#: A poll the operator holds answers within ~30 s; past this the connection is given up.
POLL_TIMEOUT = 60.0
#: The health fields that make a new poll at once when they change (not ``buffered``, which
#: moves with every request).
HEALTH_FIELDS = ("ready", "generation", "hosts", "read_only_violations", "roles_out")


def health_report(backends: dict[str, Any]) -> dict[str, Any]:
    """What of ``/readyz/backends`` travels with a poll."""
    return {key: backends.get(key) for key in HEALTH_FIELDS}


def poll_body(generation: int, pod: str, health: dict[str, Any], error: str | None) -> bytes:
    document = {"generation": generation, "pod": pod, "health": health, "error": error}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def retry_after(value: str | None, cap: float) -> float | None:
    """A ``Retry-After`` in seconds, capped (None when absent or not a number)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else min(seconds, cap)


@dataclass(frozen=True, slots=True)
class PollResult:
    """One poll's end: ``retry`` False means poll again at once."""

    retry: bool
    delay: float | None = None  # the operator's Retry-After, when it gave one
    error: str | None = None


class Watcher:
    """Runs the watch until cancelled (``run``); the list it applies shows in ``GET /v1/hosts``."""

    def __init__(
        self,
        where: OperatorWatch,
        admin: AdminApi,
        token: Callable[[], str],
        *,
        backoff: Backoff = WATCH_BACKOFF,
        check_every: float = 1.0,
    ) -> None:
        self.where = where
        self._admin = admin
        self._token = token
        self._backoff = backoff
        self._check_every = check_every
        #: Why the last list was refused, told to the operator with the next poll.
        self._refusal: str | None = None
        self.failures = 0

    def _tls(self) -> ssl.SSLContext:
        if self.where.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.where.ca_file))

    async def run(self) -> None:
        if not self.where.url.startswith("https://"):  # config.py took it: the opt-in is set
            log.warning(
                "--operator-url %s is plain HTTP (--allow-plain-http-watch): every poll sends "
                "the cluster's token in clear",
                self.where.url,
            )
        connector = aiohttp.TCPConnector(limit=2, ssl=self._tls())
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            while True:
                result = await self._poll(session)
                if not result.retry:
                    self.failures = 0
                    continue
                self.failures += 1
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning(
                        "watching the operator at %s: %s (the current list stays; retrying)",
                        self.where.endpoint,
                        result.error,
                    )
                delay = result.delay
                await asyncio.sleep(self._backoff.delay(self.failures) if delay is None else delay)

    async def _poll(self, session: aiohttp.ClientSession) -> PollResult:
        """One poll, given up for a new one when the backends' states change meanwhile."""
        health = health_report(self._admin.backends())
        request = asyncio.create_task(self._request(session, health))
        try:
            while True:
                done, _ = await asyncio.wait({request}, timeout=self._check_every)
                if done:
                    return request.result()
                if health_report(self._admin.backends()) != health:
                    return PollResult(retry=False)  # the finally gives the old poll up
        finally:
            await cancel_and_wait(request)

    async def _request(self, session: aiohttp.ClientSession, health: dict[str, Any]) -> PollResult:
        body = poll_body(self._admin.current.generation, self.where.pod, health, self._refusal)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._token()}"}
        try:
            async with session.post(
                self.where.endpoint,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT, connect=5.0),
            ) as response:
                status = response.status
                answer = await response.read()
                wait = retry_after(response.headers.get("Retry-After"), self._backoff.maximum)
                if status == 503:  # a standby: dial anew, so a Service may pick the leader
                    response.close()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            return PollResult(True, error=f"{type(error).__name__}: {error}".rstrip(": "))
        if status == 204:
            return PollResult(retry=False)
        if status != 200:
            return PollResult(True, wait, f"HTTP {status}: {_error_text(answer)}")
        applied, result = await self._admin.apply(answer, self._admin.host_rules())
        if applied in (200, 409):  # 409: this sidecar holds a newer one (the poll says which)
            self._refusal = None
            return PollResult(retry=False)
        self._refusal = f"{applied}: {result.get('error')}"
        return PollResult(True, error=f"the operator's list was refused: {self._refusal}")


def _error_text(answer: bytes) -> str:
    try:
        document = json.loads(answer)
    except ValueError:
        return answer[:200].decode("utf-8", "replace")
    error = document.get("error") if isinstance(document, dict) else None
    return str(error)[:300] if error else answer[:200].decode("utf-8", "replace")
