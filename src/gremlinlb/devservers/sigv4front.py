"""A loopback front that checks SigV4 on WebSocket upgrades as Neptune does (tests only).

No Neptune is reachable from the tests, so this front stands in for its IAM check in front of
a real Gremlin Server: it reads each connection's upgrade request, recomputes its signature
with botocore (`SigV4Auth`) from the credentials it was given for the access key the request
names, the front's region and service, the request's own Host, date and signed headers, and
answers 403 (Neptune's answer) when the signature differs, is missing, names another region or
service, is dated more than 5 minutes from the front's clock, or (with `name`) the signed Host
is not the endpoint's own name. An upgrade that passes is
relayed unchanged to the server, and so is everything after it, both ways.

`verify()` is the check alone (the unit tests run it on AWS's published `get-vanilla` vector,
so the front itself is known to be right). `clock_offset` moves the front's clock (a signature
that reaches it "late"); `max_connections` answers upgrades past that many open connections
429, as Neptune does over its limit; `accepted` and `refused` count upgrades by access key and
reason.

`GET /status` is answered like a Neptune instance's status endpoint (`status_body`), checked
like an upgrade (403 when the signature is wrong); `instance_status` sets what it says
("healthy", "recovery", ...) and `status_asked` / `status_refused` count the requests.
`verifying=False` is a Neptune without IAM auth: nothing is checked, upgrades and `/status`
alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import ssl
import threading
from collections import Counter
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from gremlinlb.devservers.faults import LOOPBACK, parse_loopback_address

log = logging.getLogger(__name__)

MAX_SKEW = datetime.timedelta(minutes=5)  # Neptune refuses a signature older than this
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<sig>[0-9a-f]+)"
)


@dataclass(frozen=True)
class Secret:
    """What the front knows of one access key (IAM's side of it)."""

    secret_key: str
    token: str | None = None


def verify(
    method: str,
    path: str,
    headers: dict[str, str],
    secrets: dict[str, Secret],
    region: str,
    service: str,
    now: datetime.datetime,
) -> str | None:
    """None when the request's SigV4 signature is right and fresh, else why not.

    `headers` keys are lower case. The signature is recomputed by botocore over the signed
    headers only, with the request's own timestamp."""
    authorization = headers.get("authorization", "")
    match = _AUTH.fullmatch(authorization.strip())
    if match is None:
        return "no SigV4 Authorization header"
    key = match["key"]
    if key not in secrets:
        return f"unknown access key {key}"
    if (match["region"], match["service"]) != (region, service):
        return f"signed for {match['region']}/{match['service']}, not {region}/{service}"
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "no valid X-Amz-Date"
    if abs(now - signed_at) > MAX_SKEW:
        return f"signature dated {stamp} is more than 5 minutes from now"
    secret = secrets[key]
    if secret.token is not None and headers.get("x-amz-security-token") != secret.token:
        return "missing or wrong X-Amz-Security-Token"
    signed = match["signed"].split(";")
    if "host" not in signed:
        return "host is not signed"
    request = AWSRequest(
        method=method,
        url=f"https://{headers.get('host', '')}{path}",
        headers={name: headers.get(name, "") for name in signed},
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(ReadOnlyCredentials(key, secret.secret_key, secret.token), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != match["sig"]:
        return "signature does not match"
    return None


STATUS_PATH = "/status"


def status_body(status: str, role: str, started: datetime.datetime) -> bytes:
    """The JSON a Neptune instance answers `GET /status` with (the fields of Neptune's docs,
    with this front's values: a TinkerPop server behind it)."""
    document = {
        "status": status,
        "startTime": started.strftime("%a %b %d %H:%M:%S UTC %Y"),
        "dbEngineVersion": "gremlinlb-devservers",
        "role": role,
        "dfeQueryEngine": "viaQueryHint",
        "gremlin": {"version": "tinkerpop-3.8.0"},
        "sparql": {"version": "sparql-1.1"},
        "opencypher": {"version": "Neptune-9.0.20190305-1.0"},
        "labMode": {},
        "features": {},
        "settings": {},
    }
    return json.dumps(document).encode()


class SigV4Front:
    """An asyncio front on 127.0.0.1 in front of ``upstream`` (a loopback Gremlin Server)."""

    def __init__(
        self,
        upstream: str,
        secrets: dict[str, Secret],
        *,
        region: str = "us-east-1",
        service: str = "neptune-db",
        port: int = 0,
        name: str | None = None,
        verifying: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`name`: the host:port an upgrade must name in Host (Neptune requires its own
        endpoint's name there, signed); None admits any. `verifying=False`: no IAM auth.
        `ssl_context`: serve TLS only, as Neptune does (wss:// and https://)."""
        self.ssl_context = ssl_context
        self.upstream = upstream
        self._upstream_host, self._upstream_port = parse_loopback_address(upstream)
        self.secrets = dict(secrets)  # replace or extend it while running (rotation)
        self.region = region
        self.service = service
        self.name = name
        #: Upgrades past this many open connections are answered 429 (Neptune's connection
        #: limit); None: no limit.
        self.max_connections: int | None = None
        self.open_connections = 0
        self.clock_offset = datetime.timedelta(0)
        self.accepted: Counter[str] = Counter()  # upgrades let through, by access key
        self.refused: Counter[str] = Counter()  # upgrades refused, by reason
        self.hosts_signed: Counter[str] = Counter()  # Host of each accepted upgrade
        self.verifying = verifying
        #: What GET /status says ("healthy", "recovery", ...), and the instance's role there.
        self.instance_status = "healthy"
        self.role = "writer"
        self.started = datetime.datetime.now(datetime.UTC)
        self.status_asked: Counter[str] = Counter()  # GET /status answered, by what it said
        self.status_refused: Counter[str] = Counter()  # GET /status refused, by reason
        self._port = port
        self._server: asyncio.Server | None = None
        self._thread: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, LOOPBACK, self._port, ssl=self.ssl_context
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        why = self._check(method, path, headers)
        if method == "GET" and path == STATUS_PATH:
            await self._answer_status(writer, why)
            return
        status, code = "403 Forbidden", "AccessDeniedException"
        limit = self.max_connections
        if why is None and limit is not None and self.open_connections >= limit:
            why = f"over the limit of {limit} connections"
            status, code = "429 Too Many Requests", "TooManyRequestsException"
        if why is not None:
            self.refused[why] += 1
            await _respond(writer, status, _refusal(code, why))
            return
        self.accepted[_access_key(headers)] += 1
        self.hosts_signed[headers.get("host", "")] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._upstream_host, self._upstream_port
            )
        except OSError:
            writer.close()
            return
        up_writer.write(head)
        self.open_connections += 1
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.open_connections -= 1

    def _check(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        """Why IAM auth refuses this request (None: it passes, or nothing is verified)."""
        if not self.verifying:
            return None
        now = datetime.datetime.now(datetime.UTC) + self.clock_offset
        why = verify(method, path, headers, self.secrets, self.region, self.service, now)
        if why is None and self.name is not None and headers.get("host") != self.name:
            why = f"Host {headers.get('host')!r} is not this endpoint's name {self.name!r}"
        return why

    async def _answer_status(self, writer: asyncio.StreamWriter, why: str | None) -> None:
        if why is not None:
            self.status_refused[why] += 1
            await _respond(writer, "403 Forbidden", _refusal("AccessDeniedException", why))
            return
        self.status_asked[self.instance_status] += 1
        await _respond(writer, "200 OK", status_body(self.instance_status, self.role, self.started))

    # -- on a thread of its own, for synchronous tests --------------------------------------

    def __enter__(self) -> SigV4Front:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="sigv4-front", daemon=True)
        thread.start()
        self._thread = (loop, thread)
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._thread is None:
            return
        loop, thread = self._thread
        self._thread = None
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _refusal(code: str, why: str) -> bytes:
    """Neptune's error body: its code and a detailed message."""
    return json.dumps({"code": code, "detailedMessage": why}).encode()


async def _respond(writer: asyncio.StreamWriter, status: str, body: bytes) -> None:
    """One JSON answer, then the connection is closed."""
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(Exception):
        await writer.drain()
    writer.close()


def _access_key(headers: dict[str, str]) -> str:
    """The access key a request is signed with ("unsigned" when it is not)."""
    match = _AUTH.fullmatch(headers.get("authorization", "").strip())
    return match["key"] if match is not None else "unsigned"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
