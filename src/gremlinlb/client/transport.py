"""A gremlinpython transport that says *when* it failed, and heals itself.

gremlinpython's own transport cannot tell "never sent" from "sent, then lost", has no connect
timeout (a stopped server hangs the WebSocket handshake for minutes), and a connection whose
server went away stays dead in its pool forever. Worse, when `connect()` raises, gremlinpython
never returns that connection to its pool, so later callers can block on the pool for good.

Plugged in through gremlinpython's `transport_factory` hook, this transport:
- connects lazily inside `write()` (where gremlinpython does return the connection to its pool
  on failure), so a failed connect costs nothing but an error;
- drops the socket after any read failure or timeout, so the next request reconnects and a late
  answer to an abandoned request can never be mistaken for the next one's;
- reopens a pooled socket found dead before anything was written on it (the server restarted
  while it sat idle): nothing left this process, so sending on a fresh socket is safe, and a
  server that is back is not marked down again for a socket of its previous life. Its event
  loop runs only while a request is written or read, so a close that arrived while the socket
  sat idle is looked for before writing (`_peer_closed`): otherwise the request would be
  written into a dead socket and fail as a lost connection, which counts as a reception in the
  request's attempt budget (issue 20) although no server received it;
- bounds every phase and raises errors tagged with the core's `Outcome`, which is what safe
  retries need. An answer over the size limit is the request's own problem
  (`AnswerNotReadableError`, Outcome.CLIENT_ERROR), not a lost connection.

Keepalive (`keepalive`): the transport registers with the client's keepalive thread, which
pings it while it sits idle (see keepalive.py); a pooled socket older than
`max_connection_age` is closed and reopened when the next request is about to be written on it,
so it is replaced between requests and never fails one. A session's socket is never recycled
(its session lives on it), only pinged.

Sessions (`keep_waiting`): a statement without an answer after `read_timeout` is waited for
again as long as `keep_waiting()` says its host is still in service: a long statement inside a
transaction must not close the session (closing the socket would roll the transaction back).
The server's own evaluationTimeout ends such a statement with an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import select
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
from gremlin_python.driver.transport import AbstractBaseTransport

from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.client.keepalive import Keepalive
from gremlinlb.core import (
    BalancerSettings,
    ConnectionLostError,
    NotSentError,
    ResponseTimeoutError,
    UpgradeBusyError,
)
from gremlinlb.core.recycling import keepalive_due, past_max_age
from gremlinlb.oneshot import ssl_option

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # Gremlin Server's maxContentLength
# Seconds an idle socket found readable is read before a write: a close or a reset is there
# at once; only a pong (answered and dropped by aiohttp) makes the read wait this long.
_IDLE_READ = 0.01


class PhaseTaggedTransport(AbstractBaseTransport):  # type: ignore[misc]
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        write_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        reconnect: bool = True,
        keep_waiting: Callable[[], bool] | None = None,
        keepalive: Keepalive | None = None,
        sign: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        """`reconnect=False` is for sessions: their state lives on the first socket, and a new
        one would silently start an empty session on the server. `sign()` gives headers
        made afresh for each socket it opens (SigV4, gremlinlb.sigv4)."""
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._ssl = ssl_context
        self._max_message_bytes = max_message_bytes
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._websocket: aiohttp.ClientWebSocketResponse | None = None
        self._fileno = -1  # the socket's descriptor, for the idle check before a write
        self._url = ""
        self._headers: dict[str, str] | None = None
        self._reconnect = reconnect
        self._opened_once = False
        self._keep_waiting = keep_waiting
        self._keepalive = keepalive
        self._sign = sign
        # Held while this transport runs its loop (write, read, ping): the keepalive thread
        # pings only a socket nobody else is using.
        self._guard = threading.Lock()
        self._opened_at = 0.0
        self._last_activity = 0.0
        if keepalive is not None:
            keepalive.register(self)
        #: close() was called; done by whichever thread holds the guard last (see close()).
        self._close_asked = False

    def connect(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        """Remember where to connect; the socket opens on the first write."""
        self._url = url
        self._headers = dict(headers) if headers else None

    def write(self, message: bytes) -> None:
        with self._in_use():
            self._write(message)

    def _write(self, message: bytes) -> None:
        reused = self._websocket is not None and not self._websocket.closed
        if reused and (self._too_old() or self._peer_closed()):
            self._drop_socket()  # between requests: nothing is in flight on it
            reused = False
        if not reused:
            self._ensure_open()
        try:
            self._send(message)
        except NotSentError:
            if not (reused and self._reconnect):
                raise
            # A pooled socket of a server that went away while it sat idle: open a fresh one.
            self._ensure_open()
            self._send(message)

    def _too_old(self) -> bool:
        if self._keepalive is None or not self._reconnect:
            return False  # a session's socket holds the session: never recycled
        return past_max_age(self._keepalive.settings(), self._opened_at, time.monotonic())

    def _peer_closed(self) -> bool:
        """Whether the idle socket's peer closed it (or sent what no idle socket should get).

        The usual case costs one poll: nothing arrived since the last request. Something did:
        a close, a reset, a pong to a keepalive ping. It is read, briefly: a pong alone leaves
        the socket in use; anything else means it is not."""
        if self._fileno < 0:
            return False
        poller = select.poll()
        poller.register(self._fileno, select.POLLIN)
        if not poller.poll(0):
            return False
        websocket = self._websocket
        assert websocket is not None
        try:
            message = self._run(websocket.receive(), _IDLE_READ)
        except TimeoutError:
            return False  # only pongs were waiting (aiohttp answers and drops them)
        except Exception:
            return True
        log.debug("an idle socket to %s got %s: it is not used again", self._url, message.type)
        return True  # a close, or an answer nobody waits for

    def ping_if_idle(self, settings: BalancerSettings, now: float) -> bool:
        """A WebSocket ping if the socket sat idle for the keepalive interval and no request
        is using it; a socket whose ping fails is dropped (the next write reopens it)."""
        if not self._guard.acquire(blocking=False):
            return False  # a request is being written or read on it: that is traffic
        try:
            websocket = self._websocket
            if websocket is None or websocket.closed or self._loop.is_closed():
                return False
            if not keepalive_due(settings, self._last_activity, now):
                return False
            try:
                self._run(websocket.ping(), self._write_timeout)
            except Exception:
                self._drop_socket()
                return False
            self._last_activity = time.monotonic()
            return True
        finally:
            self._guard.release()
            self._close_if_asked()

    def _ensure_open(self) -> None:
        if self._opened_once and not self._reconnect:
            raise ConnectionLostError(f"the session's connection to {self._url} is gone")
        self._open()
        self._opened_once = True

    def _send(self, message: bytes) -> None:
        websocket = self._websocket
        assert websocket is not None
        try:
            self._run(websocket.send_bytes(message), self._write_timeout)
            self._last_activity = time.monotonic()
        except Exception as error:
            self._drop_socket()
            if _refused_before_writing(error):  # the peer was already gone: nothing left us
                raise NotSentError(
                    f"connection to {self._url} had closed: {_describe(error)}"
                ) from error
            raise ConnectionLostError(
                f"sending to {self._url} failed: {_describe(error)}"
            ) from error

    def read(self) -> bytes:
        with self._in_use():
            data = self._read()
            self._last_activity = time.monotonic()
            return data

    def _read(self) -> bytes:
        websocket = self._websocket
        if websocket is None:
            raise ConnectionLostError(f"connection to {self._url} is not open")
        waited = 0.0
        while True:
            try:
                message = self._run(websocket.receive(), self._read_timeout)
                break
            except TimeoutError as error:
                waited += self._read_timeout
                if self._keep_waiting is not None and self._keep_waiting():
                    continue  # a long statement in a session; its host still serves
                self._drop_socket()
                raise ResponseTimeoutError(
                    f"the request was sent to {self._url} and no answer came within {waited:g}s"
                ) from error
            except Exception as error:
                self._drop_socket()
                raise ConnectionLostError(
                    f"reading from {self._url} failed: {_describe(error)}"
                ) from error
        if message.type == aiohttp.WSMsgType.BINARY:
            data: bytes = message.data
            return data
        if message.type == aiohttp.WSMsgType.TEXT:
            return str(message.data).strip().encode("utf-8")
        self._drop_socket()
        if _too_big(message):
            raise AnswerNotReadableError(
                self._url,
                f"it is larger than this client's limit of {self._max_message_bytes} bytes",
                "ask for less at once (limit(), range(), or fewer properties per element).",
            )
        detail = f": {message.extra}" if message.extra else ""
        raise ConnectionLostError(
            f"connection to {self._url} was closed by the server ({message.type.name}{detail})"
        )

    def _open(self) -> None:
        async def open_socket() -> None:
            # Not ClientTimeout(total=...): aiohttp applies it to the WebSocket's whole life and
            # would cut a healthy connection after `connect_timeout`. `_run` bounds the handshake.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
            )
            headers = dict(self._headers or {})
            if self._sign is not None:
                headers.update(self._sign())
            self._websocket = await self._session.ws_connect(
                self._url,
                headers=headers or None,
                max_msg_size=self._max_message_bytes,
                ssl=ssl_option(self._ssl),
            )
            sock = self._websocket.get_extra_info("socket")
            self._fileno = sock.fileno() if sock is not None else -1

        try:
            self._run(open_socket(), self._connect_timeout)
        except Exception as error:
            self._drop_socket()
            text = f"cannot connect to {self._url}: {_describe(error)}"
            if isinstance(error, aiohttp.WSServerHandshakeError) and error.status == 429:
                # Neptune over its connection limit: busy, not down (the sidecar alike)
                raise UpgradeBusyError(f"{text} (429 on the upgrade: busy, not down)") from error
            raise NotSentError(text) from error
        self._opened_at = self._last_activity = time.monotonic()

    def discard_socket(self) -> None:
        """Close the socket now (its stream is out of step, e.g. an answer was half read)."""
        with self._in_use():
            self._drop_socket()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        """Held while this thread runs the loop; a close() that came meanwhile is done after."""
        try:
            with self._guard:
                yield
        finally:
            self._close_if_asked()

    def _drop_socket(self) -> None:
        """Close the socket; the caller holds the guard, so no other thread runs the loop."""
        websocket, session = self._websocket, self._session
        self._websocket = None
        self._session = None
        self._fileno = -1

        async def close_socket() -> None:
            if websocket is not None and not websocket.closed:
                await websocket.close()
            if session is not None and not session.closed:
                await session.close()

        with contextlib.suppress(Exception):  # closing a broken socket may fail: nothing to do
            self._run(close_socket(), self._connect_timeout)

    def close(self) -> None:
        """Close now if no thread uses the transport, else as soon as the one using it is done
        (a retired connection's last read must not be cut, nor its loop closed under it)."""
        self._close_asked = True
        self._close_if_asked()

    def _close_if_asked(self) -> None:
        # Asked first, then the guard tried: either this thread gets the guard, or the thread
        # holding it sees the request after it lets go (see _in_use). Nobody waits.
        if not self._close_asked or not self._guard.acquire(blocking=False):
            return
        try:
            if not self._loop.is_closed():
                self._drop_socket()
                self._loop.close()
        finally:
            self._guard.release()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def __del__(self) -> None:
        if hasattr(self, "_close_asked"):  # not when __init__ failed half way
            self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise ConnectionLostError(f"the connection to {self._url} was closed")
        # One task per call: asyncio.wait_for would wrap the coroutine in a second one.
        bounded = _bounded(coroutine, timeout)
        try:
            return self._loop.run_until_complete(bounded)
        except BaseException:
            if inspect.getcoroutinestate(bounded) == inspect.CORO_CREATED:
                bounded.close()  # the loop refused it (closed, or busy): never started
                coroutine.close()
            raise


async def _bounded(coroutine: Coroutine[Any, Any, T], seconds: float) -> T:
    """`coroutine` within `seconds`, else TimeoutError."""
    async with asyncio.timeout(seconds):
        return await coroutine


def _refused_before_writing(error: BaseException) -> bool:
    """aiohttp checks the transport before handing bytes to the kernel and raises this then."""
    return isinstance(error, aiohttp.ClientConnectionResetError) and "closing transport" in str(
        error
    )


def _too_big(message: aiohttp.WSMessage) -> bool:
    error = message.data
    return (
        message.type is aiohttp.WSMsgType.ERROR
        and isinstance(error, aiohttp.WebSocketError)
        and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
