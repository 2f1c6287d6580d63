"""What the admin API trusts: the token (re-read when its file changes) and which hosts a
pushed list may name.

A Kubernetes Secret mounted as a volume is updated in place: the kubelet writes the new files
into a fresh directory and swaps the ``..data`` symlink, so the token's path stays the same and
its content changes. :class:`TokenFile` notices that (a ``stat`` per authorization, cheap next
to a PUT), so a rotated token is accepted without a restart.

:class:`HostPolicy` keeps a token holder from pointing the sidecar anywhere: with TLS to the
backends configured, a ``ws://`` host (a downgrade that would send the SASL password in clear)
is refused, and with allowed host patterns, a host outside them is refused.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import secrets
import ssl
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gremlinlb.sidecar.addresses import address_of, canonical_name
from gremlinlb.sidecar.options import Network
from gremlinlb.sidecar.options import host_network as _network
from gremlinlb.sidecar.options import parse_allowed_hosts as parse_allowed_hosts  # moved there

from gremlinlb.core import Endpoint

log = logging.getLogger(__name__)


class TokenFile:
    """The bearer token in ``path``, re-read whenever the file (or the symlink it resolves
    through) changes. A file that is briefly missing or empty keeps the last good token."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int, int] | None:
        try:
            found = os.stat(self.path)  # follows ..data -> the current version
        except OSError:
            return None
        return (found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size)

    def __call__(self) -> str:
        identity = self._identity()
        if identity is None or identity == self._seen:
            return self._token
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except OSError as error:
            log.warning("token file %s unreadable (%s); keeping the last token", self.path, error)
            return self._token
        if not token:
            log.warning("token file %s is empty; keeping the last token", self.path)
            return self._token
        self._seen = identity
        if token != self._token:
            log.info("token file %s changed: the new token is in force", self.path)
            self._token = token
        return self._token


def runtime_dir() -> Path:
    """Where a sidecar keeps files for its own user: ``$XDG_RUNTIME_DIR/gremlinlb`` when the
    session has one, else ``gremlinlb-<uid>`` in the temporary directory."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / "gremlinlb"
    return Path(tempfile.gettempdir()) / f"gremlinlb-{os.getuid()}"


def default_token_path(admin_port: int) -> Path:
    """The generated token's file of the sidecar whose admin API listens on ``admin_port``."""
    return runtime_dir() / f"sidecar-{admin_port}.token"


def new_token() -> str:
    """A bearer token nobody can guess: 256 random bits."""
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only (0600, through a temporary file
    renamed over it). A directory this creates is 0700; an existing one must
    belong to this user and be writable by nobody else, or another user could swap the file."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = os.stat(parent)
    # Others may write in it only when it is sticky (they cannot replace our file); its owner
    # can always replace files, so it must be this user or root.
    if found.st_uid not in (os.getuid(), 0) or (
        found.st_mode & 0o022 and not found.st_mode & stat.S_ISVTX
    ):
        raise PermissionError(
            f"{parent} belongs to another user or others may replace files in it; give "
            "--generate-token-file in a directory of your own"
        )
    handle, temp = tempfile.mkstemp(prefix=".token-", dir=parent)  # created 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(token + "\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class ServingCertificate:
    """The admin API's TLS certificate, re-read when its files change (the operator renews it
    in the same mounted Secret as the token). Checked at each TLS handshake: the server's
    context hands the connection the current one."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        self.context.sni_callback = self._handshake
        self._current = self.context
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.cert_file)
        except OSError:
            return None
        return (found.st_ino, found.st_mtime_ns, found.st_size)

    def _handshake(self, connection: ssl.SSLObject, _name: str | None, _ctx: object) -> None:
        identity = self._identity()
        if identity is not None and identity != self._seen:
            fresh = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                fresh.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as error:  # mid-update: keep serving the last one
                log.warning("admin certificate %s not loaded: %s", self.cert_file, error)
            else:
                self._seen, self._current = identity, fresh
                log.info("admin certificate %s changed: serving the new one", self.cert_file)
        if self._current is not self.context:
            connection.context = self._current


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which backends a host list may name (checked at start and on every PUT)."""

    #: Backends are reached over TLS: only wss:// hosts are accepted.
    require_tls: bool = False
    #: CIDRs and DNS-name globs (``10.0.0.0/8``, ``*.gremlin.svc.cluster.local``); empty: any.
    allowed: tuple[str, ...] = ()

    def refusal(self, endpoints: Iterable[Endpoint], where: str = "hosts") -> str | None:
        """Why ``endpoints`` may not be used (naming the first offender), or None."""
        for index, endpoint in enumerate(endpoints):
            if self.require_tls and endpoint.scheme != "wss":
                return (
                    f"{where}[{index}]: {endpoint.url} is not wss://, but this sidecar reaches "
                    "its backends over TLS (--backend-tls or --backend-ca-file): give wss:// URLs"
                )
            if self.allowed and not self.allows(endpoint.host):
                return (
                    f"{where}[{index}]: {endpoint.address} is outside the hosts this sidecar may "
                    f"use (--allowed-hosts {','.join(self.allowed)})"
                )
        return None

    def allows(self, host: str) -> bool:
        """Whether ``host`` matches a pattern: by the address it spells, whatever the spelling
        (``0x0a000001`` is 10.0.0.1), else by its name (lower case, no trailing dot)."""
        address = address_of(host)
        name = canonical_name(host)
        for pattern in self.allowed:
            network = _network(pattern)
            if network is None:
                matched = address is None and fnmatch.fnmatchcase(name, canonical_name(pattern))
            else:
                matched = address is not None and _within(address, network)
            if matched:
                return True
        return False


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: Network) -> bool:
    return address.version == network.version and address in network
