"""An aiohttp application served on a thread and event loop of its own (issue 27): the
admission webhook and the sidecars' watch answer without waiting behind the operator's loop."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)


class ThreadedSite:
    """Serves ``app()`` on ``host:port`` (TLS when given) from its own thread once started:
    an application, or a bare ``web.Server`` (no router or middlewares: what a handler of one
    fixed path at thousands of requests per second needs)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        app: Callable[[], web.Application | web.Server],
    ) -> None:
        self.name = name
        self._host, self._tls, self._app = host, tls, app
        #: The port listened on (the bound one once started, when asked for port 0).
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    async def start(self) -> None:
        """Start the thread and wait until it listens (raises what kept it from listening)."""
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._started.wait)
        if self._failure is not None:
            raise self._failure

    def _serve(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        app = self._app()
        runner: web.BaseRunner = (
            web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            if isinstance(app, web.Application)
            else web.ServerRunner(app, shutdown_timeout=1.0)
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, self.port, ssl_context=self._tls)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
        except BaseException as error:
            self._failure = error
            self._started.set()
            loop.close()
            return
        self._started.set()
        log.info("%s serving on %s:%d (its own thread)", self.name, self._host, self.port)
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    async def run_on_thread(self, action: Callable[..., object], *args: object) -> None:
        """Run ``action(*args)`` on the site's thread, between requests: a TLS context is
        changed there, never under a handshake in progress."""
        loop = self.loop
        if loop is None or not loop.is_running():
            action(*args)
            return

        async def run() -> None:
            action(*args)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    async def stop(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10)
