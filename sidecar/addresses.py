"""What an address *is*, whatever its spelling.

Resolvers and browsers read many spellings as one IPv4 address: ``2130706433``, ``0x7f000001``,
``127.1`` and ``0177.0.0.1`` are all 127.0.0.1 (inet_aton's forms), ``0`` is 0.0.0.0,
``[::ffff:127.0.0.1]`` is an IPv4-mapped IPv6 address the kernel delivers to 127.0.0.1, and
``127.0.0.1.`` and ``localhost.`` end in the root label. A rule that compares spellings (the
sidecar's own ports are never a backend; a CIDR in ``--allowed-hosts``; the admin API's Host
check) is bypassed by any of them, so every rule asks :func:`address_of` and
:func:`canonical_name` first. Names that are loopback by definition (``localhost``,
``*.localhost``, Debian's ``ip6-localhost``) count as loopback without a lookup; other names
are looked up with the system resolver by :func:`resolve`, off the event loop and bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable

log = logging.getLogger(__name__)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names every resolver here answers with a loopback address (RFC 6761, Debian's /etc/hosts).
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
#: At most this many lookups of one check run at once, and all of them within this long.
RESOLVE_CONCURRENCY = 8
RESOLVE_TIMEOUT = 2.0

_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdef"}


def canonical_name(host: str) -> str:
    """A DNS name as it is compared: lower case, without brackets or the root's trailing dot."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name[:-1] if name.endswith(".") else name


def ipv4_of(text: str) -> ipaddress.IPv4Address | None:
    """inet_aton's reading of ``text``: 1 to 4 parts, each decimal, octal (leading 0) or hex
    (0x), the last one filling the bytes left (``127.1``, ``2130706433``); None otherwise."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or len(text) > 64:
        return None
    values: list[int] = []
    for part in parts:
        if not part:
            return None
        lower = part.lower()
        if lower.startswith("0x"):
            digits, base = lower[2:], 16
        elif len(lower) > 1 and lower.startswith("0"):
            digits, base = lower[1:], 8
        else:
            digits, base = lower, 10
        if not all(c in _DIGITS[base] for c in digits):
            return None
        values.append(int(digits or "0", base))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = sum(v << (8 * (3 - i)) for i, v in enumerate(head)) + last
    return ipaddress.IPv4Address(number)


def address_of(host: str) -> IP | None:
    """The IP address ``host`` spells in any form (brackets, a trailing dot, an IPv6 zone,
    IPv4-mapped IPv6 read as its IPv4 address, inet_aton's forms), or None for a name."""
    text = canonical_name(host)
    if ":" in text:
        try:
            found = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
        return found.ipv4_mapped or found
    return ipv4_of(text)


def is_local(address: IP) -> bool:
    """Loopback or unspecified: an address that reaches this machine whatever it is called."""
    return address.is_loopback or address.is_unspecified


def is_loopback_name(host: str) -> bool:
    """``localhost``, ``localhost.``, ``*.localhost``, ``ip6-localhost``, ``ip6-loopback``."""
    name = canonical_name(host)
    return name in LOOPBACK_NAMES or name.endswith(".localhost")


def identity(host: str) -> IP | str:
    """What ``host`` is: its address when it spells one, else its canonical name."""
    address = address_of(host)
    return canonical_name(host) if address is None else address


async def resolve(
    names: Iterable[str],
    within: float = RESOLVE_TIMEOUT,
    concurrency: int = RESOLVE_CONCURRENCY,
) -> dict[str, frozenset[IP]]:
    """The addresses the system resolver gives each name (empty when it fails), looked up in
    the loop's executor, ``concurrency`` at a time; names still unanswered after ``within``
    seconds are left out (a lookup thread cannot be stopped, only no longer waited for)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    found: dict[str, frozenset[IP]] = {}

    async def lookup(name: str) -> None:
        async with gate:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError):
                found[name] = frozenset()
                return
        addresses = (address_of(str(info[4][0])) for info in infos)
        found[name] = frozenset(a for a in addresses if a is not None)

    tasks = [asyncio.ensure_future(lookup(name)) for name in dict.fromkeys(names)]
    if not tasks:
        return found
    _, pending = await asyncio.wait(tasks, timeout=within)
    for task in pending:
        task.cancel()
    if pending:
        log.warning(
            "%d name lookups took over %.1fs; those names were not checked", len(pending), within
        )
    return found
