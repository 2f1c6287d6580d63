"""The sidecar process: wires core, backends, proxy, health loop and admin API together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from gremlinlb.sidecar.addresses import address_of, is_local
from gremlinlb.sidecar.admin import AdminApi
from gremlinlb.sidecar.backend import Backends
from gremlinlb.sidecar.backend_connection import background_closes
from gremlinlb.sidecar.config import Address, SidecarConfig
from gremlinlb.sidecar.health import HealthLoop
from gremlinlb.sidecar.hostcheck import HostCheck
from gremlinlb.sidecar.hostlist import HostList, HostRules, load_state
from gremlinlb.sidecar.memory import release_free_memory, tune_allocator
from gremlinlb.sidecar.metrics import NeptuneReadsCollector, SidecarMetrics
from gremlinlb.sidecar.proxy import Proxy
from gremlinlb.sidecar.trust import (
    ServingCertificate,
    TokenFile,
    default_token_path,
    new_token,
    write_token_file,
)
from gremlinlb.sidecar.watch import Watcher

from gremlinlb.core import Balancer, HostEvent
from gremlinlb.core.balancer import Listener
from gremlinlb.neptune import NeptuneTopology
from gremlinlb.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Sidecar:
    """`await start()`, serve, `await stop()`; or `run_until_signalled()` for the command."""

    def __init__(
        self, config: SidecarConfig, *, announce: Callable[[str], None] | None = None
    ) -> None:
        """``announce`` is told what a user must know at once (the command prints it): where
        a generated token was written."""
        self.config = config
        self._announce = announce
        #: The token PUT /v1/hosts requires at start: the configured one or a generated one.
        self.token = config.token or new_token()
        #: Where the generated token was written (None: the token came from --token-file).
        self.token_path: Path | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []
        self._gremlin_site: web.TCPSite | None = None
        self._stopping = False

    async def start(self) -> None:
        config = self.config
        tune_allocator()
        initial = self._initial_hosts()
        self.balancer = Balancer(
            initial.hosts, initial.settings, zone=config.zone, clients=initial.client_zones
        )
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
            trust_env=False,  # backends are reached directly, never through an HTTP proxy
        )
        self.backends = Backends(config.backend, self.http, lambda: self.balancer.settings)
        self.balancer.subscribe(_on_loop(self.backends.on_host_event))
        self.metrics = SidecarMetrics(self.balancer, self.backends.connection_counts)
        self.balancer.subscribe(_on_loop(self.metrics.on_host_event))
        self.proxy = Proxy(self.balancer, self.backends, self.metrics, config.proxy)
        self.balancer.subscribe(_on_loop(self.proxy.on_host_event))
        self.metrics.held_bytes.set_function(lambda: self.proxy.memory.used)
        self.metrics.paused_clients.set_function(lambda: len(self.proxy.paused))
        self.health = HealthLoop(
            self.balancer, self.backends, config.traversal_source, config.traversal_sources
        )
        self.proxy.check_alive = self.health.check_alive
        self.health.on_probe_failed = self.metrics.probe_failed
        self.balancer.subscribe(_on_loop(self.health.on_host_event))
        token = (
            TokenFile(config.token_file, config.token)
            if config.token_file is not None and config.token is not None
            else self.token
        )
        self.admin = AdminApi(
            self.balancer,
            self.metrics,
            initial,
            token=token,
            state_dir=config.state_dir,
            accepting=lambda: self.proxy.accepting,
            host_policy=config.host_policy,
            rules=self._host_rules,
            host_check=HostCheck(config.admin_allowed_hosts),
        )
        self._tasks = [
            asyncio.create_task(self.health.run(), name="gremlinlb-health"),
            asyncio.create_task(
                self.backends.sweep_forever(lambda: self.balancer.settings.request_timeout),
                name="gremlinlb-timeouts",
            ),
            asyncio.create_task(self._housekeeping(), name="gremlinlb-housekeeping"),
        ]
        self.topology: NeptuneTopology | None = None
        if config.neptune is not None:
            self.topology = NeptuneTopology(config.neptune, self.admin.follow)
            self.topology.watch(self.balancer, asyncio.get_running_loop())
            reads = self.topology.reads
            self.metrics.registry.register(NeptuneReadsCollector(lambda: reads))
            self.proxy.refresh_topology = self.topology.refresh_now
            self._tasks.append(asyncio.create_task(self.topology.run(), name="gremlinlb-neptune"))
        else:  # the list is pushed (or given by hand): wait for the next one (failover.py)
            self.proxy.refresh_topology = self.admin.pushed.refresh
        if config.operator is not None:  # lists come by the watch (pushes are still taken)
            self.watcher = Watcher(
                config.operator, self.admin, token if callable(token) else lambda: self.token
            )
            self._tasks.append(asyncio.create_task(self.watcher.run(), name="gremlinlb-watch"))
        gremlin = web.Application()
        gremlin.router.add_get("/gremlin", self.proxy.handle)
        # A connection that has not completed its upgrade by then is closed (aiohttp's
        # keep-alive timer runs from the connection's start until a request arrives).
        self._gremlin_site = await self._serve(
            gremlin, config.listen, keepalive_timeout=config.proxy.handshake_timeout
        )
        admin_tls = None if config.admin_tls is None else ServingCertificate(*config.admin_tls)
        await self._serve(
            self.admin.app(), config.admin, tls=None if admin_tls is None else admin_tls.context
        )
        self._admin_scheme = "http" if admin_tls is None else "https"
        if config.token is None:
            self._write_generated_token()
        log.info(
            "sidecar serving ws://%s/gremlin for %s; admin on %s://%s",
            self.address,
            ", ".join(e.address for e in initial.hosts) or "no hosts yet",
            self._admin_scheme,
            self.admin_address,
        )

    def _write_generated_token(self) -> None:
        """No --token-file: nobody may change the host list without the token this process
        generated, written owner-only where its user (and only they) can read it."""
        port = int(self.admin_address.rpartition(":")[2])
        path = self.config.generate_token_file or default_token_path(port)
        write_token_file(path, self.token)
        self.token_path = path
        message = (
            f"no --token-file given: PUT /v1/hosts needs the bearer token written to {path} "
            "(owner-only, removed at exit)"
        )
        log.info("%s", message)
        if self._announce is not None:
            self._announce(message)

    def _initial_hosts(self) -> HostList:
        config = self.config
        if config.state_dir is not None:
            saved = load_state(config.state_dir, config.settings, self._host_rules())
            refusal = None if saved is None else config.host_policy.refusal(saved.hosts)
            if refusal is not None:
                log.warning("ignoring the saved host list in %s: %s", config.state_dir, refusal)
            elif saved is not None:
                log.info(
                    "restored host list generation %d from %s", saved.generation, config.state_dir
                )
                return saved
        return HostList(0, config.endpoints, config.settings)

    def _host_rules(self) -> HostRules:
        """The ports this sidecar listens on are never a backend (bound ports once started)."""
        ports = {self.config.listen.port, self.config.admin.port}
        for runner in self._runners:
            ports.update(int(address[1]) for address in runner.addresses)
        ports.discard(0)
        addresses = {address_of(self.config.listen.host), address_of(self.config.admin.host)}
        addresses.update(address_of(str(a[0])) for r in self._runners for a in r.addresses)
        return HostRules(
            max_hosts=self.config.max_hosts,
            own_ports=frozenset(ports),
            own_addresses=frozenset(a for a in addresses if a is not None and not is_local(a)),
        )

    async def _housekeeping(self, tick: float = 0.25) -> None:
        """Measure how late the event loop runs a timer (a busy loop delays every request), and
        give memory back to the system after a burst of queued answers."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(tick)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - started - tick))
            if self.proxy.memory.burst_passed():  # off the loop: a trim walks the whole heap
                await loop.run_in_executor(None, release_free_memory)
                log.debug("returned free memory to the system after a burst")

    async def _serve(
        self,
        app: web.Application,
        address: Address,
        keepalive_timeout: float = 75.0,
        tls: ssl.SSLContext | None = None,
    ) -> web.TCPSite:
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            keepalive_timeout=keepalive_timeout,
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, address.host, address.port, reuse_address=True, ssl_context=tls)
        await site.start()
        return site

    @property
    def address(self) -> str:
        """host:port the Gremlin endpoint listens on (the real port when configured as 0)."""
        return _bound(self._runners[0])

    @property
    def admin_address(self) -> str:
        return _bound(self._runners[1])

    @property
    def url(self) -> str:
        return f"ws://{self.address}/gremlin"

    async def stop(self, grace: float | None = None) -> None:
        """Fail readiness, stop accepting connections, keep serving the open ones for `grace`
        seconds (closing each once idle), answer what is left, close."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.grace_period if grace is None else grace
        log.info("stopping: not ready, no new connections, open ones served for up to %.1fs", grace)
        self.proxy.accepting = False  # /readyz fails from here on
        if self._gremlin_site is not None:
            with contextlib.suppress(RuntimeError):
                await self._gremlin_site.stop()
        await self.proxy.drain(grace)
        await cancel_and_wait(*self._tasks)
        self.health.close()
        self.backends.close()
        self.proxy.close()
        self.balancer.close()
        await background_closes(within=2.0)
        for runner in self._runners:
            await runner.cleanup()
        await self.http.close()
        if self.token_path is not None:
            self.token_path.unlink(missing_ok=True)
        log.info("stopped")

    async def run_until_signalled(self) -> int:
        """The command's main: serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()
        return 0


def _on_loop(listener: Listener) -> Listener:
    """Host events come from whichever thread called the core (an embedding test, say); the
    sidecar's own objects are loop-bound, so events from elsewhere are handed to the loop."""
    loop = asyncio.get_running_loop()

    def deliver(event: HostEvent) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            listener(event)
        else:
            loop.call_soon_threadsafe(listener, event)

    return deliver


def _bound(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
