"""Download Gremlin Server and its runtime jars into the local cache with Maven.

The jars come from the ordinary Maven client at its default settings (a small pom plus
``dependency:copy-dependencies``) so no repository address is hard-coded anywhere. The result is
``$GREMLINLB_CACHE/gremlin-server/<version>/lib/*.jar`` plus a ``.complete`` marker; a second call
finds the marker and returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gremlinlb.devservers.errors import FetchError, ToolMissingError

log = logging.getLogger(__name__)

#: Newest 3.8.x release on Maven Central when this was written (3.8.2 exists only for
#: gremlinpython). Pinned rather than resolved from a version range so every run gets the same jars.
DEFAULT_TINKERPOP_VERSION = "3.8.1"

CACHE_ENV = "GREMLINLB_CACHE"
MARKER_NAME = ".complete"
MAVEN_TIMEOUT_S = 900.0

#: Jars whose absence means a broken copy (logback-classic is optional in gremlin-server's pom).
_REQUIRED_JAR_PREFIXES = (
    "gremlin-server-",
    "tinkergraph-gremlin-",
    "gremlin-groovy-",
    "logback-classic-",
)


@dataclass(frozen=True)
class ServerRuntime:
    """A complete, fetched Gremlin Server: where its jars live and which version they are."""

    version: str
    home: Path

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    @property
    def classpath(self) -> str:
        """Java's directory wildcard: the JVM expands it, keeping the command line short."""
        return str(self.lib_dir / "*")


def find_repo_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding gremlinlb's pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            try:
                text = pyproject.read_text(encoding="utf-8")
            except OSError:
                continue
            if 'name = "gremlinlb"' in text:
                return candidate
    return None


def cache_dir() -> Path:
    """``$GREMLINLB_CACHE``, else ``<repo root>/.cache``, else ``./.cache``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    root = find_repo_root() or Path.cwd()
    return (root / ".cache").resolve()


def runtime_home(version: str = DEFAULT_TINKERPOP_VERSION, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "gremlin-server" / version


def find_java() -> str:
    """Path of the ``java`` launcher: ``$JAVA_HOME/bin/java`` if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise ToolMissingError(
            "java not found on PATH (and JAVA_HOME is unset or has no bin/java): Gremlin Server "
            "3.8 needs Java 11 or newer; install a JDK or JRE, e.g. "
            "`apt-get install openjdk-17-jre-headless`"
        )
    return found


def find_maven() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise ToolMissingError(
            "mvn (Apache Maven) not found on PATH: it downloads the Gremlin Server jars; "
            "install it, e.g. `apt-get install maven`"
        )
    return found


def find_runtime(
    version: str = DEFAULT_TINKERPOP_VERSION, cache: Path | None = None
) -> ServerRuntime | None:
    """The cached runtime if a previous fetch completed, else None (never touches the network)."""
    return _complete(runtime_home(version, cache), version)


def _complete(home: Path, version: str) -> ServerRuntime | None:
    """The runtime in ``home`` if a fetch completed there (its marker and lib/ exist)."""
    if (home / MARKER_NAME).is_file() and (home / "lib").is_dir():
        return ServerRuntime(version=version, home=home)
    return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so parallel test runs or CLI calls do not fetch twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _render_pom(version: str, output_dir: Path) -> str:
    template = resources.files("gremlinlb.devservers").joinpath("resources", "pom.xml")
    text = template.read_text(encoding="utf-8")
    return text.replace("@TINKERPOP_VERSION@", version).replace("@OUTPUT_DIR@", str(output_dir))


def _check_jars(lib_dir: Path, what: str, required_prefixes: Sequence[str]) -> None:
    names = [p.name for p in lib_dir.glob("*.jar")]
    missing = [
        prefix for prefix in required_prefixes if not any(n.startswith(prefix) for n in names)
    ]
    if missing:
        raise FetchError(
            f"Maven finished but {lib_dir} lacks {', '.join(p + '*.jar' for p in missing)} ({what})"
        )


def fetch_runtime(
    version: str = DEFAULT_TINKERPOP_VERSION,
    cache: Path | None = None,
    *,
    force: bool = False,
) -> ServerRuntime:
    """Make sure Gremlin Server ``version`` is in the cache and return it.

    Idempotent and fast when the marker exists. Runs Maven with a private local repository
    (``<cache>/m2``) so nothing outside the cache is written.
    """
    cache = cache or cache_dir()
    return maven_fetch(
        runtime_home(version, cache),
        version,
        cache,
        render_pom=lambda staging: _render_pom(version, staging),
        required_jar_prefixes=_REQUIRED_JAR_PREFIXES,
        what=f"Gremlin Server {version}",
        hint=f"is TinkerPop {version} on Maven Central and the registry reachable?",
        force=force,
    )


def maven_fetch(
    home: Path,
    version: str,
    cache: Path,
    *,
    render_pom: Callable[[Path], str],
    required_jar_prefixes: Sequence[str],
    what: str,
    hint: str,
    force: bool = False,
) -> ServerRuntime:
    """Copy the runtime jars of the pom ``render_pom(staging_dir)`` into ``home/lib``.

    Shared by every server kind the dev servers run (Gremlin Server, JanusGraph), so each gets
    the same guarantees: one fetch at a time (a file lock), a ``.complete`` marker written only
    after the jars are checked, and Maven's local repository under the cache.
    """
    if not force:
        existing = _complete(home, version)
        if existing is not None:
            log.debug("%s already in %s", what, existing.home)
            return existing

    find_java()  # fail early and clearly: jars without a JVM are useless
    mvn = find_maven()
    with file_lock(home.parent / f"{version}.lock"):
        if not force:
            existing = _complete(home, version)
            if existing is not None:  # another process finished while we waited for the lock
                return existing
        home.mkdir(parents=True, exist_ok=True)
        (home / MARKER_NAME).unlink(missing_ok=True)
        staging = home / f"lib.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        pom = home / "pom.xml"
        pom.write_text(render_pom(staging), encoding="utf-8")
        command = [
            mvn,
            "--batch-mode",
            "--no-transfer-progress",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={cache / 'm2'}",
            "dependency:copy-dependencies",
        ]
        log.info("fetching %s with Maven into %s", what, home)
        started = time.monotonic()
        try:
            completed = subprocess.run(
                command,
                cwd=home,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=MAVEN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise FetchError(f"Maven did not finish within {MAVEN_TIMEOUT_S:.0f} s") from exc
        if completed.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
            raise FetchError(
                f"Maven failed (exit {completed.returncode}) fetching {what}; {hint}\n{tail}"
            )
        log.debug("maven output:\n%s", completed.stdout)
        _check_jars(staging, what, required_jar_prefixes)
        lib = home / "lib"
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        jars = sorted(p.name for p in lib.glob("*.jar"))
        (home / MARKER_NAME).write_text(
            json.dumps({"version": version, "jars": jars}, indent=1) + "\n", encoding="utf-8"
        )
        log.info(
            "%s ready in %s (%d jars, %.1f s)", what, lib, len(jars), time.monotonic() - started
        )
    return ServerRuntime(version=version, home=home)
