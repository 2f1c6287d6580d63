"""One Gremlin Server JVM on 127.0.0.1, controllable the way fault-injection tests need.

The JVM is started directly (no shell script in between), so the pid we hold is the JVM itself
and SIGSTOP/SIGCONT/SIGKILL act on the server, not on a wrapper. Each server gets its own work
directory holding its YAML, graph properties, init script, logback config and ``server.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from gremlinlb.devservers import probe
from gremlinlb.devservers.errors import DevServerError, PortInUseError, ServerStartError
from gremlinlb.devservers.fetch import (
    DEFAULT_TINKERPOP_VERSION,
    ServerRuntime,
    fetch_runtime,
    file_lock,
    find_java,
)

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAIN_CLASS = "org.apache.tinkerpop.gremlin.server.GremlinServer"
LOG_NAME = "server.log"
ADDRESS_PROPERTY = "gremlinlb.server.address"

#: Small heap, serial GC and C1 only: several servers share two cores and start in seconds.
#: -XX:-UsePerfData skips the hsperfdata mmap file under /tmp.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
)

_CONFIG_FILES = ("graph.properties", "init.groovy", "logback.xml")


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port now.

    SO_REUSEADDR mirrors what the JVM sets on its listening socket, so connections of a killed
    predecessor in TIME_WAIT do not count as "in use"; a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_port_free(port: int, host: str = HOST) -> None:
    if not port_is_free(port, host):
        raise PortInUseError(port)


def find_free_port(start: int, *, exclude: Sequence[int] = (), attempts: int = 200) -> int:
    """First port >= ``start`` that is bindable and not in ``exclude``."""
    for port in range(start, min(start + attempts, 65536)):
        if port not in exclude and port_is_free(port):
            return port
    raise PortInUseError(start, f"and so are the next {attempts - 1} ports")


def ephemeral_port() -> int:
    """A port the kernel considers free right now (for throw-away servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_state(pid: int) -> str | None:
    """One-letter process state from /proc (R, S, T, Z...), None if the pid does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    return stat.rsplit(")", 1)[1].split()[0]


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def class_archive_path(runtime: ServerRuntime, java: str | None = None) -> Path:
    """Where the AppCDS archive for this runtime and this exact JVM binary lives.

    The archive is only valid for the JVM build that wrote it, so its name carries a hash of the
    java binary's resolved path, size and mtime; a JDK upgrade simply gets a new archive.
    """
    binary = Path(java or find_java()).resolve()
    info = binary.stat()
    key = hashlib.sha256(f"{binary}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:12]
    return runtime.home / "cds" / f"gremlin-server-{key}.jsa"


class GremlinServerProcess:
    """A Gremlin Server (TinkerTransactionGraph, ``g`` bound) listening on 127.0.0.1:``port``."""

    #: The JVM's main class; other server kinds (JanusGraph) subclass with their own.
    main_class: ClassVar[str] = MAIN_CLASS

    def __init__(
        self,
        port: int,
        work_dir: Path | None = None,
        *,
        runtime: ServerRuntime | None = None,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        extra_jvm_options: Sequence[str] = (),
        use_class_archive: bool = True,
        host: str = HOST,
        launcher: Sequence[str] = (),
        extra_config: str = "",
        extra_sources: Sequence[str] = (),
    ) -> None:
        """``host`` is the address to bind; ``launcher`` prefixes the JVM's command line, e.g.
        ``["ip", "netns", "exec", "ns1"]`` to run it in a network namespace that owns ``host``
        (``NetnsHost.argv([])`` gives that prefix). The launcher must exec the JVM, so the pid
        held is the JVM's. ``extra_config`` is appended to the server's YAML (``@WORK_DIR@`` is
        replaced), e.g. a ``metrics:`` section. ``extra_sources`` names more traversal sources
        (e.g. ``("g2",)``), each over a graph of its own, next to ``g``."""
        for source in extra_sources:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source) or source == "g":
                raise ValueError(
                    f"extra traversal source {source!r} must be a Groovy identifier other than g"
                )
        self._extra_sources = tuple(extra_sources)
        self.host = host
        self._extra_config = extra_config
        self._launcher = tuple(launcher)
        self.port = port
        self._owns_work_dir = work_dir is None
        self.work_dir = (
            work_dir
            if work_dir is not None
            else Path(tempfile.mkdtemp(prefix=f"gremlinlb-server-{port}-"))
        )
        self._runtime = runtime
        self._jvm_options = tuple(jvm_options)
        self._extra_jvm_options = tuple(extra_jvm_options)
        self._use_class_archive = use_class_archive
        self._popen: subprocess.Popen[bytes] | None = None
        self._attached_pid: int | None = None
        self._log_start = 0  # where this start's part of the (appended) log begins

    @classmethod
    def attach(cls, port: int, pid: int, work_dir: Path) -> GremlinServerProcess:
        """Handle on a server started by another process (e.g. ``dev-servers up --detach``)."""
        server = cls(port, work_dir)
        server._owns_work_dir = False
        server._attached_pid = pid
        return server

    def __repr__(self) -> str:
        return f"GremlinServerProcess({self.address}, pid={self.pid})"

    # -- identity ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return probe.ws_url(self.address)

    @property
    def pid(self) -> int | None:
        if self._popen is not None:
            return self._popen.pid
        return self._attached_pid

    @property
    def log_path(self) -> Path:
        return self.work_dir / LOG_NAME

    @property
    def runtime(self) -> ServerRuntime:
        if self._runtime is None:
            self._runtime = self._default_runtime()
        return self._runtime

    def _default_runtime(self) -> ServerRuntime:
        """The jars this kind of server runs when none were given (fetched on first use)."""
        return ensure_runtime()

    # -- state ---------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """The JVM exists (paused counts as running; a zombie does not)."""
        if self._popen is not None:
            return self._popen.poll() is None
        pid = self._attached_pid
        if pid is None:
            return False
        state = _proc_state(pid)
        if state is None or state == "Z":
            return False
        return self._is_our_jvm(pid)

    @property
    def returncode(self) -> int | None:
        """The JVM's exit code once it has exited (None while running or when attached)."""
        return self._popen.poll() if self._popen is not None else None

    def is_paused(self) -> bool:
        pid = self.pid
        return pid is not None and self.is_running() and _proc_state(pid) in ("T", "t")

    def answers(self, timeout: float = 5.0) -> bool:
        """A real traversal is answered within ``timeout`` seconds."""
        return probe.answers(self.address, timeout)

    def rss_bytes(self) -> int | None:
        pid = self.pid
        return rss_bytes(pid) if pid is not None and self.is_running() else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def _is_our_jvm(self, pid: int) -> bool:
        """Guards signals against a recycled pid: the command line must name this server."""
        cmdline = _proc_cmdline(pid)
        return self.main_class in cmdline and f"-D{ADDRESS_PROPERTY}={self.address}" in cmdline

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The JVM command line this server is started with."""
        java = find_java()
        options = [*self._jvm_options, *self._extra_jvm_options]
        if self._use_class_archive:
            archive = class_archive_path(self.runtime, java)
            if archive.is_file():
                options.append(f"-XX:SharedArchiveFile={archive}")
        return [
            *self._launcher,
            java,
            *options,
            f"-Dlogback.configurationFile={self.work_dir / 'logback.xml'}",
            f"-D{ADDRESS_PROPERTY}={self.address}",
            "-cp",
            self.runtime.classpath,
            self.main_class,
            str(self.work_dir / "gremlin-server.yaml"),
        ]

    def _write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        bundle = resources.files("gremlinlb.devservers").joinpath("resources")
        yaml = bundle.joinpath("gremlin-server.yaml").read_text(encoding="utf-8")
        yaml = yaml.replace("@PORT@", str(self.port)).replace("@WORK_DIR@", str(self.work_dir))
        yaml = yaml.replace("@HOST@", self.host)
        yaml += self._extra_config.replace("@WORK_DIR@", str(self.work_dir))
        graphs = "".join(
            f',\n  graph_{s}: "{self.work_dir}/graph.properties"' for s in self._extra_sources
        )
        yaml = yaml.replace('graph.properties"}', f'graph.properties"{graphs}}}', 1)
        (self.work_dir / "gremlin-server.yaml").write_text(yaml, encoding="utf-8")
        for name in _CONFIG_FILES:
            text = bundle.joinpath(name).read_text(encoding="utf-8")
            if name == "init.groovy":  # each extra source over its own graph
                text += "".join(
                    f"globals << [{s} : traversal().withEmbedded(graph_{s})]\n"
                    for s in self._extra_sources
                )
            (self.work_dir / name).write_text(text, encoding="utf-8")

    def start(self) -> None:
        """Launch the JVM and return at once; call wait_ready() to know it serves traversals."""
        if self.is_running():
            raise DevServerError(
                f"Gremlin Server {self.address} is already running (pid {self.pid})"
            )
        if self._attached_pid is not None:
            raise DevServerError(f"{self.address} was attached by pid; start a new handle instead")
        if not self._launcher:  # a launcher's namespace is not visible from here
            ensure_port_free(self.port, self.host)
        command = self.command()  # resolves java and the runtime first: clear errors early
        self._write_config()
        with self.log_path.open("ab") as log_file:
            log_file.write(f"\n--- gremlinlb: starting {self.address} at {time.ctime()}\n".encode())
            log_file.flush()
            self._log_start = log_file.tell()
            self._popen = subprocess.Popen(
                command,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C on the terminal must not reach the JVMs directly
            )
        log.debug("started Gremlin Server %s pid %d: %s", self.address, self._popen.pid, command)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server answers ``g.inject(1)``; raise ServerStartError otherwise."""
        deadline = time.monotonic() + timeout
        last_error: str = "port not open yet"
        while True:
            if not self.is_running():
                code = self._popen.returncode if self._popen is not None else None
                raise ServerStartError(
                    f"Gremlin Server {self.address} exited (code {code}) before answering; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Our own log must say the port is ours: otherwise a server of another process that
            # holds the port (a race between two test runs) would pass for this one.
            if self._bound() and probe.port_open(self.host, self.port, timeout=min(0.5, remaining)):
                try:
                    if probe.inject_one(self.address, timeout=max(0.1, min(10.0, remaining))) == [
                        1
                    ]:
                        return
                    last_error = "unexpected answer to g.inject(1)"
                except Exception as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise ServerStartError(
            f"Gremlin Server {self.address} did not answer a traversal within {timeout:.0f} s "
            f"({last_error}); last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _bound(self) -> bool:
        """Gremlin Server logs this line once it has bound its port (read since this start)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_start)
                text = log_file.read().decode("utf-8", errors="replace")
        except OSError:
            return False
        return f"Channel started at port {self.port}." in text

    def _signal(self, signum: signal.Signals) -> None:
        pid = self.pid
        if pid is None or not self.is_running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def terminate(self) -> None:
        """Ask for a graceful shutdown without waiting (lets a fleet stop servers in parallel)."""
        self._signal(signal.SIGTERM)
        self._signal(signal.SIGCONT)  # a paused JVM cannot run its shutdown hooks

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """Wait for the JVM to exit; SIGKILL it when ``timeout`` passes."""
        if self._popen is not None:
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.address, timeout)
                self._popen.kill()
                self._popen.wait()
            return
        deadline = time.monotonic() + timeout
        while self.is_running():
            if time.monotonic() >= deadline:
                self._signal(signal.SIGKILL)
                deadline = time.monotonic() + 5.0
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop: SIGTERM (and SIGCONT if paused), then SIGKILL after ``timeout``."""
        self.terminate()
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL, no shutdown hooks: the way a crashed or OOM-killed server disappears."""
        self._signal(signal.SIGKILL)
        self.wait_stopped(timeout=5.0)

    def pause(self) -> None:
        """SIGSTOP: the socket stays open but nothing is answered (a hung server, a GC pause)."""
        if not self.is_running():
            raise DevServerError(f"cannot pause {self.address}: not running")
        self._signal(signal.SIGSTOP)
        self._wait_state(paused=True)

    def resume(self) -> None:
        """SIGCONT: the paused server carries on, including requests that queued meanwhile."""
        self._signal(signal.SIGCONT)
        self._wait_state(paused=False)

    def _wait_state(self, *, paused: bool, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while self.is_paused() != paused and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (if running) and start again on the same port with a fresh, empty graph."""
        if self._attached_pid is not None:
            raise DevServerError(f"cannot restart {self.address}: it was attached by pid")
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def clear_graph(self, timeout: float = 10.0) -> None:
        """Drop every vertex and edge."""
        probe.drop_all(self.address, timeout)

    def add_name_vertex(self, timeout: float = 10.0) -> None:
        """Add a `server` vertex holding this server's address.

        A traversal through a balancer that reads it (`g.V().hasLabel('server').values('name')`)
        then says which server ran it: the server's own answer, not the balancer's bookkeeping.
        """
        address = self.address
        probe.with_traversal_source(
            address,
            lambda g: g.add_v("server").property("name", address).iterate(),
            timeout,
        )

    def remove_work_dir(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> GremlinServerProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._owns_work_dir:
            self.remove_work_dir()


def _exercise(server: GremlinServerProcess) -> None:
    """Run the request kinds tests use, so their classes land in the class-data archive."""

    def work(g: Any) -> None:
        g.add_v("warmup").property("k", 1).iterate()
        g.V().has("warmup", "k", 1).value_map().to_list()
        tx = g.tx()
        gtx = tx.begin()
        gtx.add_v("warmup").iterate()
        tx.commit()
        g.V().drop().iterate()

    probe.with_traversal_source(server.address, work, timeout=30.0)
    with urllib.request.urlopen(f"http://{server.address}/?gremlin=g.inject(1)", timeout=30) as r:
        r.read()


def build_class_archive(runtime: ServerRuntime, timeout: float = 120.0) -> Path | None:
    """Create the AppCDS archive that cuts JVM start-up by roughly a third (once per JDK).

    A throw-away server runs with -XX:ArchiveClassesAtExit, answers a few requests and stops
    gracefully (the JVM writes the archive while exiting). Best effort: on failure a ``.failed``
    marker stops further attempts and servers start without the archive.
    """
    java = find_java()
    target = class_archive_path(runtime, java)
    failed = target.with_suffix(".failed")
    if target.is_file():
        return target
    if failed.exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.with_suffix(".lock")):
        if target.is_file():
            return target
        partial = target.with_name(f"{target.stem}.partial-{os.getpid()}.jsa")
        partial.unlink(missing_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-cds-"))
        server = GremlinServerProcess(
            ephemeral_port(),
            work_dir,
            runtime=runtime,
            extra_jvm_options=(f"-XX:ArchiveClassesAtExit={partial}",),
            use_class_archive=False,
        )
        log.info("building the class-data archive for faster Gremlin Server start-up")
        started = time.monotonic()
        try:
            server.start()
            server.wait_ready(timeout)
            _exercise(server)
            server.stop(timeout=timeout)
        except Exception as exc:
            server.kill()
            log.warning("class-data archive not built (%s); servers start without it", exc)
            failed.write_text(f"{exc}\n{server.log_tail()}\n", encoding="utf-8")
            partial.unlink(missing_ok=True)
            return None
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        if not partial.is_file() or partial.stat().st_size == 0:
            log.warning("the JVM wrote no class-data archive; servers start without it")
            failed.write_text("no archive written\n", encoding="utf-8")
            return None
        partial.rename(target)
        log.info("class-data archive %s built in %.1f s", target, time.monotonic() - started)
        return target


def ensure_runtime(
    version: str = DEFAULT_TINKERPOP_VERSION,
    cache: Path | None = None,
    *,
    class_archive: bool = True,
) -> ServerRuntime:
    """Fetch the jars if needed and (best effort) build the start-up class archive."""
    runtime = fetch_runtime(version, cache)
    if class_archive:
        build_class_archive(runtime)
    return runtime
