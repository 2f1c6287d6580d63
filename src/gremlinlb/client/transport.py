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
  server that is back is not marked down again for a socket of its previous life;
- bounds every phase and raises errors tagged with the core's `Outcome`, which is what safe
  retries need. An answer over the size limit is the request's own problem
  (`AnswerNotReadableError`, Outcome.CLIENT_ERROR), not a lost connection.

Sessions (`keep_waiting`): a statement without an answer after `read_timeout` is waited for
again as long as `keep_waiting()` says its host is still in service: a long statement inside a
transaction must not close the session (closing the socket would roll the transaction back).
The server's own evaluationTimeout ends such a statement with an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import aiohttp
from gremlin_python.driver.transport import AbstractBaseTransport

from gremlinlb.client.errors import AnswerNotReadableError
from gremlinlb.core import ConnectionLostError, NotSentError, ResponseTimeoutError

T = TypeVar("T")

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # Gremlin Server's maxContentLength


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
    ) -> None:
        """`reconnect=False` is for sessions: their state lives on the first socket, and a new
        one would silently start an empty session on the server."""
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._ssl = ssl_context
        self._max_message_bytes = max_message_bytes
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._websocket: aiohttp.ClientWebSocketResponse | None = None
        self._url = ""
        self._headers: dict[str, str] | None = None
        self._reconnect = reconnect
        self._opened_once = False
        self._keep_waiting = keep_waiting
        #: close() came while another thread ran the loop: that thread closes it.
        self._close_when_idle = False

    def connect(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        """Remember where to connect; the socket opens on the first write."""
        self._url = url
        self._headers = dict(headers) if headers else None

    def write(self, message: bytes) -> None:
        reused = self._websocket is not None and not self._websocket.closed
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
            self._websocket = await self._session.ws_connect(
                self._url,
                headers=self._headers,
                max_msg_size=self._max_message_bytes,
                ssl=self._ssl if self._ssl is not None else True,
            )

        try:
            self._run(open_socket(), self._connect_timeout)
        except Exception as error:
            self._drop_socket()
            raise NotSentError(f"cannot connect to {self._url}: {_describe(error)}") from error

    def discard_socket(self) -> None:
        """Close the socket now (its stream is out of step, e.g. an answer was half read)."""
        if not self._loop.is_closed():
            self._drop_socket()

    def _drop_socket(self) -> None:
        websocket, session = self._websocket, self._session
        self._websocket = None
        self._session = None

        async def close_socket() -> None:
            if websocket is not None and not websocket.closed:
                await websocket.close()
            if session is not None and not session.closed:
                await session.close()

        if self._loop.is_closed():
            return
        if self._loop.is_running():
            # Another thread is still reading on this socket (a connection closed after the
            # client gave up on its request): close it on that loop, which ends the read.
            asyncio.run_coroutine_threadsafe(close_socket(), self._loop)
            return
        with contextlib.suppress(Exception):  # closing a broken socket may fail: nothing to do
            self._run(close_socket(), self._connect_timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._drop_socket()
        if self._loop.is_running():
            self._close_when_idle = True  # the thread running it closes it when its run ends
        else:
            self._loop.close()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def __del__(self) -> None:
        if not self._loop.is_closed() and not self._loop.is_running():
            self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        if self._loop.is_closed():
            coroutine.close()
            raise ConnectionLostError(f"the connection to {self._url} was closed")
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout))
        finally:
            if self._close_when_idle and not self._loop.is_running():
                self._loop.close()


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
