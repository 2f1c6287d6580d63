"""Request ids for the backend side: unique by construction, so clients' ids never collide.

Clients choose their own ids (a driver may let the caller set one), so two clients can send
the same id. The sidecar gives each request a fresh id of its own: a random per-process prefix
and a counter, laid out as a version-4 UUID so every server accepts it.
"""

from __future__ import annotations

import itertools
import os

_COUNTER_MASK = (1 << 62) - 1


class IdSource:
    def __init__(self) -> None:
        prefix = bytearray(os.urandom(8))
        prefix[6] = (prefix[6] & 0x0F) | 0x40  # UUID version 4
        self._prefix = bytes(prefix)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        """16 bytes never handed out before by this source."""
        low = (next(self._counter) & _COUNTER_MASK) | (1 << 63)  # RFC 4122 variant bits 10
        return self._prefix + low.to_bytes(8, "big")
