"""Network namespaces that play the part of pods: one address each on a private test bridge.

The apiserver refuses loopback addresses in EndpointSlices, so a Gremlin Server that should appear
in a slice runs in a network namespace of its own with an address from :data:`SUBNET`. Those
addresses exist only on the bridge :data:`BRIDGE` and inside namespaces this module creates: the
host holds :data:`GATEWAY` on the bridge, each namespace holds one address on a veth pair whose
other end is a bridge port, and no namespace has a default route. Nothing is forwarded anywhere
else (the host's ``ip_forward`` is left alone and no route or NAT rule is added).

Layout (``<pid>`` is the owning process, so concurrent test runs do not collide and a sweep can
tell leftovers of crashed runs from live ones)::

    host: glbr0 10.213.0.1/24 ── glv<pid>x<n> ═ veth ═ eth0 10.213.0.<k>/24 (in glb-<pid>-<n>)

Address leases live in :data:`STATE_DIR` (one file per address naming its owner pid), taken under
a file lock, so several processes share the bridge safely. :func:`sweep_stale` removes namespaces,
veths and leases whose owner is dead, and the bridge once nobody uses it; :class:`NetnsNetwork`
runs it on entry, so a crashed run is cleaned up by the next one.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ``ip`` tool from iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.devcluster.errors import NetnsError

log = logging.getLogger(__name__)

#: The private test subnet. Checked against this machine's addresses and routes before the bridge
#: is created (see :func:`subnet_conflicts`).
SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
#: The host's own address on the bridge: what a process in a namespace sees as "the host".
GATEWAY = ipaddress.IPv4Address("10.213.0.1")
#: First address handed to namespaces (10.213.0.2-9 are left for fixed uses).
FIRST_HOST = ipaddress.IPv4Address("10.213.0.10")
BRIDGE = "glbr0"
NETNS_PREFIX = "glb-"
VETH_PREFIX = "glv"
PEER_PREFIX = "glp"
#: Name of the namespace's end of the veth pair, inside the namespace.
NETNS_IFACE = "eth0"
STATE_DIR = Path("/run/gremlinlb-netns")

_NETNS_RE = re.compile(rf"^{re.escape(NETNS_PREFIX)}(\d+)-(\d+)$")
_VETH_RE = re.compile(rf"^(?:{VETH_PREFIX}|{PEER_PREFIX})(\d+)x(\d+)$")
_IP_TIMEOUT_S = 20.0
_host_index = itertools.count(1)
_thread_lock = threading.Lock()


def find_ip_tool() -> str:
    """Path of iproute2's ``ip``."""
    found = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise NetnsError("`ip` (iproute2) not found: install it, e.g. `apt-get install iproute2`")
    return found


def _ip(*args: str, check: bool = True, json_output: bool = False) -> str:
    argv = [find_ip_tool(), *(["-j"] if json_output else []), *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{' '.join(argv)}` timed out") from exc
    if check and done.returncode != 0:
        hint = ""
        if "Operation not permitted" in done.stderr:
            hint = " (network namespaces need root: CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}{hint}")
    return done.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip(*args, json_output=True).strip()
    if not out:
        return []
    data = json.loads(out)
    if not isinstance(data, list):
        raise NetnsError(f"unexpected output of `ip -j {' '.join(args)}`: {out[:200]}")
    return [item for item in data if isinstance(item, dict)]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def link_names() -> list[str]:
    """Names of the network interfaces in the host's namespace."""
    return [str(item.get("ifname", "")) for item in _ip_json("link", "show")]


def netns_names() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    names: list[str] = []
    for line in _ip("netns", "list").splitlines():
        if line.strip():
            names.append(line.split()[0])
    return names


def subnet_conflicts() -> list[str]:
    """Addresses and routes of this machine that overlap :data:`SUBNET`, other than our bridge's.

    An empty list means the subnet is private to us. The default route is not a conflict: the
    bridge's connected route is more specific and wins.
    """
    problems: list[str] = []
    for link in _ip_json("-4", "addr", "show"):
        ifname = str(link.get("ifname", ""))
        if ifname == BRIDGE:
            continue
        for info in link.get("addr_info", []):
            local = info.get("local")
            prefix = info.get("prefixlen", 32)
            if not isinstance(local, str):
                continue
            network = ipaddress.IPv4Network(f"{local}/{prefix}", strict=False)
            if network.overlaps(SUBNET):
                problems.append(f"address {local}/{prefix} on {ifname}")
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst")
        if not isinstance(dst, str) or dst == "default" or route.get("dev") == BRIDGE:
            continue
        try:
            network = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if network.overlaps(SUBNET):
            problems.append(f"route {dst} dev {route.get('dev')} ({route.get('table', 'main')})")
    return problems


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise bridge and lease changes between threads and processes."""
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _thread_lock, open(STATE_DIR / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lease_path(address: ipaddress.IPv4Address) -> Path:
    return STATE_DIR / f"lease-{address}"


def _read_lease(path: Path) -> int:
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return -1


def _live_leases() -> list[Path]:
    if not STATE_DIR.is_dir():
        return []
    return [p for p in STATE_DIR.glob("lease-*") if _pid_alive(_read_lease(p))]


def _ensure_bridge_locked() -> None:
    if BRIDGE not in link_names():
        conflicts = subnet_conflicts()
        if conflicts:
            raise NetnsError(
                f"test subnet {SUBNET} is already in use on this machine ({'; '.join(conflicts)}); "
                "refusing to create the test bridge"
            )
        _ip("link", "add", BRIDGE, "type", "bridge")
        log.info("created bridge %s", BRIDGE)
    # No IPv6 link-local address: the only address the host gains is GATEWAY.
    _ip("link", "set", "dev", BRIDGE, "addrgenmode", "none", check=False)
    have = {
        str(info.get("local"))
        for link in _ip_json("-4", "addr", "show", "dev", BRIDGE)
        for info in link.get("addr_info", [])
    }
    if str(GATEWAY) not in have:
        _ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", "dev", BRIDGE, "up")


def ensure_bridge() -> None:
    """Create :data:`BRIDGE` with :data:`GATEWAY` if missing (after checking for conflicts)."""
    with _state_lock():
        _ensure_bridge_locked()


def _kill_netns_processes(name: str) -> None:
    out = _ip("netns", "pids", name, check=False)
    for token in out.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(token), signal.SIGKILL)


def _remove_netns(name: str) -> None:
    if name in netns_names():
        _kill_netns_processes(name)
        _ip("netns", "delete", name, check=False)


def _remove_link(name: str) -> None:
    if name in link_names():
        _ip("link", "delete", name, check=False)


def _remove_bridge_if_unused_locked() -> bool:
    if _live_leases():
        return False
    if any(_NETNS_RE.match(n) for n in netns_names()):
        return False
    if BRIDGE in link_names():
        _ip("link", "delete", BRIDGE, check=False)
        log.info("removed bridge %s", BRIDGE)
    return True


def sweep_stale() -> list[str]:
    """Remove namespaces, veths and leases whose owning process is gone.

    Then remove the bridge if nothing live uses it. Returns what was removed. Safe to call while
    other processes use the network: their names carry their (live) pid.
    """
    removed: list[str] = []
    with _state_lock():
        for name in netns_names():
            match = _NETNS_RE.match(name)
            if match and not _pid_alive(int(match.group(1))):
                _remove_netns(name)
                removed.append(f"netns {name}")
        for name in link_names():
            base = name.split("@", 1)[0]
            match = _VETH_RE.match(base)
            if match and not _pid_alive(int(match.group(1))):
                _remove_link(base)
                removed.append(f"link {base}")
        if STATE_DIR.is_dir():
            for lease in STATE_DIR.glob("lease-*"):
                if not _pid_alive(_read_lease(lease)):
                    lease.unlink(missing_ok=True)
                    removed.append(f"lease {lease.name}")
        if _remove_bridge_if_unused_locked() and removed:
            removed.append(f"bridge {BRIDGE} (unused)")
    if removed:
        log.info("swept leftovers of dead test runs: %s", ", ".join(removed))
    return removed


class NetnsHost:
    """One network namespace with one address: a stand-in for a pod's network.

    Processes started with :meth:`popen` or :meth:`run` live inside the namespace: they can bind
    :attr:`address` (and the namespace's own loopback) and reach the rest of :data:`SUBNET`,
    including the host at :data:`GATEWAY`, and nothing else.
    """

    def __init__(
        self,
        name: str,
        address: ipaddress.IPv4Address,
        host_veth: str,
        *,
        owns_lease: bool = True,
    ) -> None:
        self.name = name
        self.address = address
        self.host_veth = host_veth
        #: False when the address belongs to a block leased by the network (see
        #: :meth:`NetnsNetwork.lease_block`): closing the host must not give it away.
        self.owns_lease = owns_lease
        self._processes: list[subprocess.Popen[bytes]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"NetnsHost(name={self.name!r}, address={str(self.address)!r})"

    @property
    def ip(self) -> str:
        """:attr:`address` as a string, as it goes into an EndpointSlice."""
        return str(self.address)

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` prefixed so that it runs inside this namespace."""
        return [find_ip_tool(), "netns", "exec", self.name, *command]

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the namespace to completion, capturing its output as text."""
        return subprocess.run(
            self.argv(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=dict(env) if env is not None else None,
        )

    def popen(
        self,
        command: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        stdout: int | Any = subprocess.DEVNULL,
        stderr: int | Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` inside the namespace in its own session; stopped by :meth:`close`."""
        if self._closed:
            raise NetnsError(f"{self.name} is closed")
        process = subprocess.Popen(
            self.argv(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._processes.append(process)
        return process

    def disconnect(self) -> None:
        """Cut this host off the bridge (connections to it now time out, as for a lost node)."""
        _ip("link", "set", "dev", self.host_veth, "down")

    def reconnect(self) -> None:
        """Undo :meth:`disconnect`."""
        _ip("link", "set", "dev", self.host_veth, "up")

    def addresses(self) -> list[str]:
        """Every IPv4 and IPv6 address inside the namespace, as ``addr/prefix`` (for checks)."""
        out = _ip("-n", self.name, "-j", "addr", "show")
        found: list[str] = []
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                found.append(f"{info.get('local')}/{info.get('prefixlen')}")
        return found

    def close(self) -> None:
        """Stop the processes started here, then remove the namespace, veth pair and lease."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            _terminate(process)
        with _state_lock():
            _remove_netns(self.name)
            _remove_link(self.host_veth)
            if self.owns_lease:
                _lease_path(self.address).unlink(missing_ok=True)


def _terminate(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)


class NetnsNetwork:
    """The test network: the shared bridge plus the namespaces this process creates on it.

    Use as a context manager (or call :meth:`open` and :meth:`close`). Entering sweeps leftovers
    of dead runs and makes sure the bridge exists; leaving removes this process's namespaces and
    the bridge if no other live process still uses it.
    """

    def __init__(self) -> None:
        self._hosts: list[NetnsHost] = []
        self._blocks: list[ipaddress.IPv4Network] = []
        self._opened = False

    def open(self) -> NetnsNetwork:
        if os.geteuid() != 0:
            raise NetnsError("network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
        find_ip_tool()
        sweep_stale()
        ensure_bridge()
        self._opened = True
        return self

    def __enter__(self) -> NetnsNetwork:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def hosts(self) -> list[NetnsHost]:
        return list(self._hosts)

    def add_host(self, address: str | ipaddress.IPv4Address | None = None) -> NetnsHost:
        """A new namespace with ``address`` (or the lowest free one) on the bridge."""
        if not self._opened:
            raise NetnsError("NetnsNetwork is not open")
        wanted = ipaddress.IPv4Address(address) if address is not None else None
        if wanted is not None:
            _check_host_address(wanted)
        pid = os.getpid()
        index = next(_host_index)
        name = f"{NETNS_PREFIX}{pid}-{index}"
        host_veth = f"{VETH_PREFIX}{pid}x{index}"
        peer = f"{PEER_PREFIX}{pid}x{index}"
        in_block = wanted is not None and any(wanted in block for block in self._blocks)
        with _state_lock():
            _ensure_bridge_locked()
            chosen = wanted if in_block and wanted is not None else self._lease_locked(wanted, pid)
            if in_block and any(h.address == chosen and not h._closed for h in self._hosts):
                raise NetnsError(f"{chosen} is already in use by another namespace of this run")
            host = NetnsHost(name, chosen, host_veth, owns_lease=not in_block)
            try:
                _ip("netns", "add", name)
                _ip("link", "add", host_veth, "type", "veth", "peer", "name", peer)
                _ip("link", "set", "dev", host_veth, "addrgenmode", "none", check=False)
                _ip("link", "set", "dev", host_veth, "master", BRIDGE)
                _ip("link", "set", "dev", peer, "netns", name)
                _ip("-n", name, "link", "set", "dev", peer, "name", NETNS_IFACE)
                _ip("-n", name, "link", "set", "dev", NETNS_IFACE, "addrgenmode", "none")
                _ip("-n", name, "addr", "add", f"{chosen}/{SUBNET.prefixlen}", "dev", NETNS_IFACE)
                _ip("-n", name, "link", "set", "dev", NETNS_IFACE, "up")
                _ip("-n", name, "link", "set", "dev", "lo", "up")
                _ip("link", "set", "dev", host_veth, "up")
            except BaseException:
                _remove_netns(name)
                _remove_link(host_veth)
                if not in_block:
                    _lease_path(chosen).unlink(missing_ok=True)
                raise
        self._hosts.append(host)
        log.info("netns %s has %s", name, chosen)
        return host

    def lease_block(self, prefixlen: int) -> ipaddress.IPv4Network:
        """Lease a whole aligned block of :data:`SUBNET` (every address in it) for this run.

        For a node's pod CIDR: kwok hands out its addresses, and :meth:`add_host` then brings
        up a namespace at each one. Two runs on one machine get disjoint blocks. The leases go
        with :meth:`close` (or with the process: :func:`sweep_stale`).
        """
        if not self._opened:
            raise NetnsError("NetnsNetwork is not open")
        pid = os.getpid()
        with _state_lock():
            for block in SUBNET.subnets(new_prefix=prefixlen):
                if block.network_address < FIRST_HOST or SUBNET.broadcast_address in block:
                    continue
                paths = [_lease_path(a) for a in block]
                if any(p.exists() and _pid_alive(_read_lease(p)) for p in paths):
                    continue
                for path in paths:
                    path.write_text(f"{pid} {time.time():.0f} {block}\n", encoding="ascii")
                self._blocks.append(block)
                log.info("leased block %s", block)
                return block
        raise NetnsError(f"no free /{prefixlen} block left in {SUBNET} (other test runs hold it)")

    def release_block(self, block: ipaddress.IPv4Network) -> None:
        """Give back a block taken with :meth:`lease_block`."""
        if block not in self._blocks:
            return
        self._blocks.remove(block)
        with _state_lock():
            for address in block:
                path = _lease_path(address)
                if _read_lease(path) == os.getpid():
                    path.unlink(missing_ok=True)

    def add_hosts(self, count: int) -> list[NetnsHost]:
        return [self.add_host() for _ in range(count)]

    def remove_host(self, host: NetnsHost) -> None:
        host.close()
        if host in self._hosts:
            self._hosts.remove(host)

    def close(self) -> None:
        """Remove every namespace this network created, then the bridge if nobody else uses it."""
        hosts, self._hosts = self._hosts, []
        errors: list[str] = []
        for host in hosts:
            try:
                host.close()
            except NetnsError as exc:  # keep going: the rest must still be removed
                errors.append(str(exc))
        for block in list(self._blocks):
            self.release_block(block)
        if self._opened:
            self._opened = False
            with _state_lock():
                _remove_bridge_if_unused_locked()
        if errors:
            raise NetnsError("; ".join(errors))

    @staticmethod
    def _lease_locked(wanted: ipaddress.IPv4Address | None, pid: int) -> ipaddress.IPv4Address:
        candidates = (
            [wanted] if wanted is not None else [a for a in SUBNET.hosts() if a >= FIRST_HOST]
        )
        for address in candidates:
            path = _lease_path(address)
            if path.exists():
                if _pid_alive(_read_lease(path)):
                    continue
                path.unlink(missing_ok=True)
            path.write_text(f"{pid} {time.time():.0f}\n", encoding="ascii")
            return address
        if wanted is not None:
            raise NetnsError(f"{wanted} is already leased by another live test process")
        raise NetnsError(f"no free address left in {SUBNET}")


def _check_host_address(address: ipaddress.IPv4Address) -> None:
    if address not in SUBNET:
        raise NetnsError(f"{address} is outside the test subnet {SUBNET}")
    if address in (SUBNET.network_address, SUBNET.broadcast_address, GATEWAY):
        raise NetnsError(f"{address} is reserved in {SUBNET} (network, broadcast or gateway)")
